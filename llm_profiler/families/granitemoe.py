"""The Granite-MoE family (IBM granite-3.x MoE): Mixtral-style decoder with muP multipliers, a top-k-then-
softmax router, and (granitemoeshared) a shared MLP beside the experts."""

from __future__ import annotations

from typing import Any

from .. import ops
from ..graph import blocks as blk
from ..graph.activations import activation_counts
from ..graph.blocks import Part
from ..graph.node import MLP, NodeKind
from ..graph.routers import RoutedMoESpec, Router, routed_moe_parts
from ..spec import ArchSpec, LayerSpec
from . import register
from ._granite_swa import SlidingSinks, swa_fields, with_sinks
from ._moe_style import RoutedMoEStyle
from .fields import Fields
from .template import decoder_fields, tiny_dims


@register
class GraniteMoe(RoutedMoEStyle):
    """granitemoe, granitemoeshared. Quirks (transformers GraniteMoe(Shared)Config / modeling):

    - muP multipliers, each an op whatever its value (1.0 included): ``embedding_multiplier`` (inputs_embeds
      * m in the base model: B*S*hidden MULT), ``residual_multiplier`` (each block's output * m before the
      residual add: 2*B*S*hidden MULT per layer), ``logits_scaling`` (logits / s in the CausalLM: B*S*vocab
      DIV); ``attention_multiplier`` replaces 1/sqrt(head_dim) (same count).
    - ``attention_bias`` on q, k, v and o; ``num_key_value_heads`` defaults to the heads; no q/k norm.
    - every layer's ``block_sparse_moe``: ``num_local_experts`` experts of ``intermediate_size``; the router
      (``block_sparse_moe.router``) takes the top-k logits, then a softmax over those k.
    - granitemoeshared: ``shared_intermediate_size`` > 0 adds ``shared_mlp`` (input_linear hidden -> 2I, act on
      one half times the other, output_linear I -> hidden) on the same input, added to the MoE output.
    """

    name = "granitemoe"
    model_types = ("granitemoe", "granitemoeshared")

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        model_type = data["model_type"]
        f = Fields(data, model_type)
        common = decoder_fields(f, self.name, name)
        bias = f.bool("attention_bias", default=False)
        shared = f.int("shared_intermediate_size", default=0, minimum=0) if model_type in ("granitemoeshared", "granitemoe_swa") else 0
        return RoutedMoESpec(
            **common, qkv_bias=bias, o_bias=bias, num_experts=f.int("num_local_experts", "num_experts"),
            experts_per_token=f.int("num_experts_per_tok"), moe_intermediate_size=common["intermediate_size"],
            norm_topk_prob=False, shared_expert_intermediate_size=shared, router=Router(scoring="topk_softmax"),
        )

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        b, mult = self.base, ops.elementwise("mul", blk.TOKENS * spec.hidden_size)
        return [*super().head_of_model_parts(spec), Part(f"{b}:embedding_multiplier", b, NodeKind.ELEMENTWISE, mult)]

    def moe_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, RoutedMoESpec)
        h, inter, t = spec.hidden_size, spec.shared_expert_intermediate_size, blk.TOKENS
        parts = routed_moe_parts(spec, block=".block_sparse_moe", router_name=".router", shared_name=None)
        if inter:
            s = ".shared_mlp"
            parts += [
                Part(f"{s}.input_linear", f"{s}.input_linear", NodeKind.LINEAR, blk.linear(t, h, 2 * inter, False), MLP),
                Part(f"{s}.activation", f"{s}.activation", NodeKind.ACTIVATION,
                     activation_counts(spec.activation, t * inter), MLP),
                Part(f"{s}:gate_mul", s, NodeKind.ELEMENTWISE, blk.gate_product(inter), MLP),
                Part(f"{s}.output_linear", f"{s}.output_linear", NodeKind.LINEAR, blk.linear(t, inter, h, False), MLP),
                Part(":shared_mix", "", NodeKind.ELEMENTWISE, ops.elementwise("add", t * h), MLP),  # moe + shared
            ]
        return parts

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        mult = ops.elementwise("mul", 2 * blk.TOKENS * spec.hidden_size)  # both block outputs * residual_multiplier
        return [*super().layer_parts(spec, layer), Part(":residual_multiplier", "", NodeKind.ELEMENTWISE, mult)]

    def tail_parts(self, spec: ArchSpec) -> list[Part]:
        scale = ops.elementwise("div", blk.TOKENS * spec.vocab_size)  # logits / logits_scaling, in the CausalLM
        return [*super().tail_parts(spec), Part(":logits_scaling", "", NodeKind.LM_HEAD, scale)]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = tiny_dims(data, intermediate_size=24, num_local_experts=8,
                        num_experts_per_tok=min(2, int(data.get("num_experts_per_tok") or 2)))
        out.pop("num_experts", None)
        if data.get("shared_intermediate_size"):
            out["shared_intermediate_size"] = 40
        return out


class GraniteMoeSWASpec(RoutedMoESpec):
    rope_tables: int = 1  # rotary embeddings run per forward: one per distinct non-zero layer_rope_theta
    nope_layers: tuple[int, ...] = ()  # layers whose layer_rope_theta is 0


@register
class GraniteMoeSWA(SlidingSinks, GraniteMoe):
    """granitemoe_swa: granitemoeshared (the shared MLP when ``shared_intermediate_size`` > 0) with
    sliding-window layers, attention sinks and per-layer RoPE bases (``_granite_swa``)."""

    name = "granitemoe_swa"
    model_types = ("granitemoe_swa",)  # type: ignore[assignment]  # GraniteMoe's holds two

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        base = super().spec(data, name)
        extra = swa_fields(Fields(data, "granitemoe_swa"), base.num_layers)
        return with_sinks(GraniteMoeSWASpec(**{**dict(base), **extra, "layers": ()}), extra["nope_layers"])
