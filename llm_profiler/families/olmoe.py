"""The OLMoE family (allenai OLMoE-1B-7B): Llama attention with whole-projection q / k norms, every layer
a softmax top-k MoE."""

from __future__ import annotations

from typing import Any

from .. import ops
from ..errors import ConfigError
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.node import ATTN, NodeKind
from ..graph.routers import RoutedMoESpec, Router
from ..spec import ArchSpec, LayerSpec
from . import register
from ._moe_style import RoutedMoEStyle
from .fields import Fields
from .template import decoder_fields, tiny_dims


class OlmoeSpec(RoutedMoESpec):
    clip_qkv: float | None = None  # q, k and v clamped to [-clip, clip]


@register
class Olmoe(RoutedMoEStyle):
    """olmoe. Quirks (transformers OlmoeConfig / modeling_olmoe):

    - head_dim is hidden / heads (the config has no head_dim field; q_norm is sized hidden_size, so an
      explicit head_dim must agree); ``num_key_value_heads`` defaults to the heads.
    - q_norm / k_norm: RMSNorms over the whole q (hidden) and k (kv_heads*head_dim) projections.
    - ``attention_bias`` on q, k, v and o. ``clip_qkv``: q, k and v clamped in place (2 CMP per element;
      aten.clamp is not measured by the validation, so only clip_qkv null is validated).
    - every layer is MoE: ``num_experts`` experts of ``intermediate_size``, top ``num_experts_per_tok`` of
      a softmax, renormalised only with ``norm_topk_prob`` (false in OLMoE-1B-7B); no shared expert.
    - no sliding window (the base model builds the causal mask only).
    """

    name = "olmoe"
    model_types = ("olmoe",)
    whole_qk_norm = True

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, data.get("model_type") or "olmoe")  # flex_olmo reuses this spec
        common = decoder_fields(f, self.name, name)
        if common["num_heads"] * common["head_dim"] != common["hidden_size"]:
            raise ConfigError(f"olmoe config field 'head_dim' ({common['head_dim']}) must equal hidden_size / "
                              f"num_attention_heads ({common['hidden_size'] // common['num_heads']}): q_norm is "
                              "sized hidden_size")
        bias = f.bool("attention_bias", default=False)
        clip = f.float("clip_qkv", default=None)
        norm = f.bool("norm_topk_prob", default=False)
        notes = ("clip_qkv: the clamp of q, k and v is counted as 2 CMP per element (not validated)",) if clip else ()
        return OlmoeSpec(
            **common, qkv_bias=bias, o_bias=bias, qk_norm=True, clip_qkv=clip, notes=notes,
            num_experts=f.int("num_experts", "num_local_experts"), experts_per_token=f.int("num_experts_per_tok"),
            moe_intermediate_size=common["intermediate_size"], norm_topk_prob=norm,
            router=Router(scoring="softmax", normalize=norm),
        )

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        parts = super().attention_parts(spec, layer)
        assert isinstance(spec, OlmoeSpec)
        if not spec.clip_qkv:
            return parts
        width = (spec.num_heads + 2 * spec.num_kv_heads) * spec.head_dim  # q, k and v: clamp = max then min
        clip = Part(".self_attn:clip_qkv", ".self_attn", NodeKind.ELEMENTWISE,
                    ops.elementwise("cmp", 2 * blk.TOKENS * width), ATTN)
        index = next(i for i, p in enumerate(parts) if p.kind == NodeKind.ROPE)
        return [*parts[:index], clip, *parts[index:]]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = tiny_dims(data, intermediate_size=24, num_experts=8,
                        num_experts_per_tok=min(2, int(data.get("num_experts_per_tok") or 2)))
        out.pop("num_local_experts", None)
        out.pop("head_dim", None)
        return out
