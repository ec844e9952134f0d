"""The OLMo-3 family: OLMo-2 (post-norms, q / k norms over the whole projection) with sliding-window layers."""

from __future__ import annotations

from typing import Any

from ..spec import FULL_ATTENTION, SLIDING_ATTENTION, ArchSpec
from . import register
from ._dense import DenseSpec, DenseTemplate
from .fields import Fields
from .olmo2 import Olmo2
from .template import decoder_fields, tiny_dims


@register
class Olmo3(DenseTemplate, Olmo2):
    """olmo3. Quirks, all from transformers' Olmo3Config / modeling_olmo3:

    - everything of olmo2 (no input norm; ``post_attention_layernorm`` / ``post_feedforward_layernorm`` on the
      block outputs; RMSNorm q_norm / k_norm over the full q and k projections; ``attention_bias`` on q/k/v/o).
    - ``layer_types`` (default: three sliding layers then one full, repeated) with ``sliding_window``
      (default 4096); the base model builds both masks whatever the layer types.
    - one rotary table per distinct layer type (``rope_parameters`` per type; yarn / default change no count).
    - ``partial_rotary_factor`` is ignored (the rotary tables span head_dim).
    """

    name = "olmo3"
    model_types = ("olmo3",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "olmo3")
        common = decoder_fields(f, self.name, name)
        layers = common["num_layers"]
        window = f.int("sliding_window", default=4096, minimum=2)
        types = f.layer_types(layers) or tuple(
            FULL_ATTENTION if (i + 1) % 4 == 0 else SLIDING_ATTENTION for i in range(layers))
        bias = f.bool("attention_bias", default=False)
        return DenseSpec(
            **{**common, "rotary_dim": common["head_dim"]},
            qkv_bias=bias, o_bias=bias, qk_norm=True,
            sliding_window=window, layer_types=types if SLIDING_ATTENTION in types else (),
            rope_tables=len(set(types)), both_masks=True,
        )

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        return tiny_dims(data, sliding_window=4)
