"""The Solar Open family (Upstage's Solar-Open-100B): GLM-4.5's MoE layers under a Llama attention."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..spec import ArchSpec
from . import register
from .glm4_moe import Glm4Moe


@register
class SolarOpen(Glm4Moe):
    """solar_open. What SolarOpenConfig / modeling_solar_open change from glm4_moe:

    - every layer is a MoE layer (the config has no ``first_k_dense_replace`` nor ``intermediate_size``);
    - RoPE over the whole head (glm4_moe: half): LlamaAttention rotates every channel, so a
      ``partial_rotary_factor`` below 1 in ``rope_parameters`` fails in transformers and is refused here;
    - no q / k norms (no ``use_qk_norm``); ``attention_bias`` on q / k / v, never on o_proj (as glm4_moe);
    - the router, routed and shared experts are Glm4MoeMoE's.
    """

    name = "solar_open"
    model_types = ("solar_open",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        rope = data.get("rope_parameters")
        factor = rope.get("partial_rotary_factor") if isinstance(rope, dict) else None
        # no dense layer reads intermediate_size: the experts' width stands in for it
        if factor not in (None, 1, 1.0):
            raise ConfigError(f"solar_open config field 'rope_parameters.partial_rotary_factor' = {factor!r}: "
                              "Solar Open rotates the whole head (transformers fails on a partial rotary table); "
                              "remove it or set 1.0")
        glm = {**data, "first_k_dense_replace": 0, "use_qk_norm": False,
               "intermediate_size": data.get("moe_intermediate_size"), "partial_rotary_factor": 1.0}
        return super().spec(glm, name)

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = super().tiny(data)
        out.pop("first_k_dense_replace", None)  # SolarOpenConfig refuses the field
        return out
