"""The JetMoE family (jetmoe-8b): a mixture of attention heads (MoA) and a mixture of MLP experts (MoE) in
every layer, both routed top-k by index (graph/scatter_experts.py)."""

from __future__ import annotations

from typing import Any

from .. import ops
from ..facts import TensorClass, Weight
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.moe import MoESpec
from ..graph.node import ATTN, MLP, NodeKind
from ..graph.scatter_experts import grouped_experts, topk_gating, weighted_scatter
from ..spec import ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate, decoder_fields, part, tiny_dims


@register
class JetMoe(DecoderTemplate):
    """jetmoe. Quirks (transformers JetMoeConfig / modeling_jetmoe; missing fields take its defaults):

    - heads: ``num_attention_heads`` is derived, ``num_key_value_heads * num_experts_per_tok`` (a config's own
      value is overwritten); head_dim is ``kv_channels``; hidden need not equal heads * head_dim.
    - attention (``self_attention``): the queries come from the MoA experts (``experts.router`` picks top-k of
      ``num_local_experts``; ``experts.input_linear`` maps hidden -> kv_heads*head_dim per routed pair; the
      pairs are scattered back with index_add, so each token has top_k * kv_heads query heads); k and v from
      ``kv_proj``; k / v repeated top_k times (a copy) for the eager attention; the output per pair through
      ``experts.output_linear``, times the gate, scattered back, + the MoA bias.
    - MLP (``mlp``): the same routing (its own router); ``input_linear`` hidden -> 2*intermediate per pair,
      act(first half) * second half, ``output_linear``, times the gate, scattered back, + the MoE bias.
    - routers: top-k of the logits, then a softmax over those k; ``activation_function`` (silu).
    - tied embeddings by default; no sliding window.
    """

    name = "jetmoe"
    model_types = ("jetmoe",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "jetmoe")
        kv, top_k = f.int("num_key_value_heads", default=16), f.int("num_experts_per_tok", default=2)
        derived = {**data, "num_attention_heads": kv * top_k, "head_dim": f.int("kv_channels", "head_dim", default=128),
                   "hidden_act": f.str("activation_function", default="silu")}
        defaults = {"hidden_size": 2048, "num_hidden_layers": 12, "vocab_size": 32000, "intermediate_size": 5632}
        common = decoder_fields(Fields({**defaults, **{k: v for k, v in derived.items() if v is not None}}, "jetmoe"),
                                self.name, name, tie_default=True)
        experts = f.int("num_local_experts", default=8)
        return MoESpec(**{**common, "num_kv_heads": kv, "rotary_dim": common["head_dim"]}, num_experts=experts,
                       experts_per_token=top_k, moe_intermediate_size=common["intermediate_size"],
                       norm_topk_prob=False)

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, MoESpec)
        h, H, KV, D = spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim
        E, k, t = spec.num_experts, spec.experts_per_token, blk.TOKENS
        a, x, keys = ".self_attention", ".self_attention.experts", self.keys(spec, layer)
        bias = blk.with_params(ops.Counts(), h).with_facts(weights=(Weight("bias", (h,), TensorClass.VECTOR),))
        return [
            part(f"{x}.router.layer", NodeKind.LINEAR, blk.linear(t, h, E, False), ATTN),
            part(f"{x}.router", NodeKind.ROUTER, topk_gating(t, E, k), ATTN),
            part(f"{x}.input_linear", NodeKind.EXPERTS, grouped_experts(t * k, h, KV * D, E, k), ATTN),
            part(f"{a}:moa_map", NodeKind.ELEMENTWISE, ops.index_add(t * k * KV * D), ATTN),
            part(f"{a}.kv_proj", NodeKind.LINEAR, blk.linear(t, h, 2 * KV * D, False), ATTN),
            part(f"{a}:rope", NodeKind.ROPE, blk.apply_rope(H, D) + blk.apply_rope(KV, D), ATTN),
            part(f"{a}:kv_cache", NodeKind.KV_CACHE, blk.kv_cache(KV, D, self.cached(spec, layer)), ATTN),
            part(f"{a}:scores", NodeKind.ATTN_SCORES, blk.attn_scores(H, D, keys, kv_heads=KV), ATTN),
            part(f"{a}:softmax", NodeKind.ATTN_SOFTMAX, blk.attn_softmax(H, keys), ATTN),
            part(f"{a}:context", NodeKind.ATTN_CONTEXT, blk.attn_context(H, D, keys, kv_heads=KV), ATTN),
            part(f"{x}.output_linear", NodeKind.EXPERTS, grouped_experts(t * k, KV * D, h, E, k), ATTN),
            part(f"{a}:moa_reduce", NodeKind.ELEMENTWISE, weighted_scatter(t * k, h, t, bias=True), ATTN),
            part(x, NodeKind.ELEMENTWISE, bias, ATTN),  # the MoA bias parameter (added in moa_reduce)
        ]

    def moe_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, MoESpec)
        h, inter, E, k, t = spec.hidden_size, spec.moe_intermediate_size, spec.num_experts, spec.experts_per_token, blk.TOKENS
        own = ops.elementwise("mul", t * k * inter) + weighted_scatter(t * k, h, t, bias=True)  # act * up, scatter
        own = blk.with_params(own, h).with_facts(weights=(Weight("bias", (h,), TensorClass.VECTOR),))
        return [
            part(".mlp.router.layer", NodeKind.LINEAR, blk.linear(t, h, E, False), MLP),
            part(".mlp.router", NodeKind.ROUTER, topk_gating(t, E, k), MLP),
            part(".mlp.input_linear", NodeKind.EXPERTS, grouped_experts(t * k, h, 2 * inter, E, k), MLP),
            part(".mlp.activation", NodeKind.ACTIVATION, blk.activation(spec.activation, t * k * inter), MLP),
            part(".mlp.output_linear", NodeKind.EXPERTS, grouped_experts(t * k, inter, h, E, k), MLP),
            part(".mlp", NodeKind.ELEMENTWISE, own, MLP),
        ]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = tiny_dims({k: v for k, v in data.items() if k != "num_attention_heads"}, num_key_value_heads=2,
                        kv_channels=24, num_local_experts=4,
                        num_experts_per_tok=min(2, int(data.get("num_experts_per_tok") or 2)))
        out.pop("num_attention_heads", None)
        out.pop("head_dim", None)
        return out
