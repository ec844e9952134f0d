"""What the routed-MoE families (glm4_moe, minimax_m2, olmoe, ...) share: the template with
``graph.routers.routed_moe_parts`` as the MoE block, q / k norms over the whole projection where a family
has them, the partial-rotary reader and the checkpoint-only config fields dropped for the reference model.
(A helper module, not a family: the registry skips names starting with an underscore.)"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.routers import RoutedMoESpec, routed_moe_parts
from ..spec import ArchSpec, LayerSpec
from .fields import Fields
from .template import DecoderTemplate


def rotary_factor(f: Fields, default: float) -> float:
    """``partial_rotary_factor``, top level or inside ``rope_parameters`` (transformers 5 configs)."""
    rope = f.raw("rope_parameters")
    if isinstance(rope, dict) and rope.get("partial_rotary_factor") is not None:
        return Fields(rope, f.model_type).float("partial_rotary_factor")
    return f.float("partial_rotary_factor", default=default)


class RoutedMoEStyle(DecoderTemplate):
    """The template whose MoE layers run ``routed_moe_parts`` (the spec is a ``RoutedMoESpec``).

    ``whole_qk_norm``: q_norm / k_norm are RMSNorms over the full q (heads*head_dim) and k
    (kv_heads*head_dim) projections, one row per token (OLMo-2 style), not per head."""

    whole_qk_norm: ClassVar[bool] = False

    def moe_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, RoutedMoESpec)
        return routed_moe_parts(spec)

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        parts = super().attention_parts(spec, layer)
        if not self.whole_qk_norm:
            return parts
        widths = {".self_attn.q_norm": spec.num_heads * spec.head_dim,
                  ".self_attn.k_norm": spec.num_kv_heads * spec.head_dim}
        return [replace(p, counts=self.norm(spec, blk.TOKENS, widths[p.suffix])) if p.suffix in widths else p
                for p in parts]

    def hf_config(self, data: dict[str, Any]) -> dict[str, Any]:
        """Checkpoint-only fields out: an fp8 ``quantization_config`` (the reference runs float32) and
        ``auto_map`` (remote code is never run)."""
        return {k: v for k, v in data.items() if k not in ("quantization_config", "auto_map")}
