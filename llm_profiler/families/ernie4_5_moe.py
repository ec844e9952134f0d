"""The ERNIE-4.5 MoE family (ERNIE-4.5-21B-A3B, ERNIE-4.5-300B-A47B): the ERNIE-4.5 decoder with a
softmax top-k MoE whose router clamps its renormalising sum.

What transformers 5.23 computes (modeling_ernie4_5_moe), where it differs from ernie4_5:

- layer i runs the MoE block when ``(i + 1) % moe_layer_interval == 0`` and ``moe_layer_start_index <= i <=
  moe_layer_end_index`` (-1: the last layer), else a gated MLP of ``intermediate_size``.
- ``mlp.gate`` (float32): logits = linear(x, weight) (E x hidden, no bias), softmax over the experts, then
  ``mlp.gate.moe_statics`` adds ``e_score_correction_bias`` (an E-sized *parameter*, requires_grad False,
  so counted in the parameters) to choose the top ``moe_k`` experts; their softmax weights are gathered and
  divided by ``clamp(sum, min=moe_norm_min)``.
- ``mlp.experts``: ``moe_num_experts`` gated experts of ``moe_intermediate_size`` (batched);
  ``mlp.shared_experts``: one gated MLP of ``moe_num_shared_experts * moe_intermediate_size``, added.
- ``use_bias`` on q/k/v/o, every MLP projection (the routed experts have none) and ``lm_head``; head_dim is
  hidden / heads unless given; tied embeddings by default; rotation over interleaved pairs.
Missing fields take Ernie4_5_MoeConfig's defaults (ERNIE-4.5-21B-A3B's dims).
"""

from __future__ import annotations

from typing import Any

from .. import ops
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.moe import MoESpec, expert_activation, gated_mlp_parts, routed_experts, shared_expert_mix
from ..graph.node import MLP
from ..spec import ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate, decoder_fields, tiny_dims


@register
class Ernie45Moe(DecoderTemplate):
    name = "ernie4_5_moe"
    model_types = ("ernie4_5_moe",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "ernie4_5_moe")
        common = decoder_fields(f, self.name, name, tie_default=True)
        n = common["num_layers"]
        start = f.int("moe_layer_start_index", default=1, minimum=0)
        end = f.int("moe_layer_end_index", default=-1, minimum=-1)
        end = n - 1 if end == -1 else end
        step = f.int("moe_layer_interval", default=1, minimum=1)
        dense = tuple(i for i in range(n) if not ((i + 1) % step == 0 and start <= i <= end))
        bias = f.bool("use_bias", default=False)
        inter = f.int("moe_intermediate_size", default=1536)
        return MoESpec(
            **{**common, "rotary_dim": common["head_dim"]}, qkv_bias=bias, o_bias=bias, mlp_bias=bias,
            num_experts=f.int("moe_num_experts", "num_experts", default=64),
            experts_per_token=f.int("moe_k", "num_experts_per_tok", default=6), moe_intermediate_size=inter,
            shared_expert_intermediate_size=f.int("moe_num_shared_experts", default=2, minimum=0) * inter,
            dense_layers=dense, lm_head_bias=bias,
        )

    def moe_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, MoESpec)
        h, E, k, inter, t = (spec.hidden_size, spec.num_experts, spec.experts_per_token,
                             spec.moe_intermediate_size, blk.TOKENS)
        # logits, softmax, top-k (of the biased scores), gather, sum of k, clamp(min), divide
        gate = (blk.linear(t, h, E, bias=False) + ops.softmax(t, E) + ops.topk(t, E, k)
                + ops.elementwise("gather", t * k) + ops.reduce_sum(t, k) + ops.clamp(t, 1)
                + ops.elementwise("div", t * k))
        statics = blk.with_params(ops.elementwise("add", t * E), E)  # scores + e_score_correction_bias
        parts = []
        if spec.shared_expert_intermediate_size:  # the shared experts run first
            parts += gated_mlp_parts(".mlp.shared_experts", h, spec.shared_expert_intermediate_size,
                                     spec.activation, bias=spec.mlp_bias)
        parts += [
            Part(".mlp.gate", ".mlp.gate", NodeKind.ROUTER, gate, MLP),
            Part(".mlp.gate.moe_statics", ".mlp.gate.moe_statics", NodeKind.ELEMENTWISE, statics, MLP),
            Part(".mlp.experts", ".mlp.experts", NodeKind.EXPERTS, routed_experts(h, inter, E, k), MLP),
            Part(".mlp.experts.act_fn", ".mlp.experts.act_fn", NodeKind.ACTIVATION,
                 expert_activation(spec.activation, inter, k), MLP),
        ]
        if spec.shared_expert_intermediate_size:
            parts.append(Part(".mlp:shared_mix", ".mlp", NodeKind.ELEMENTWISE, shared_expert_mix(h, False), MLP))
        return parts


    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        rest = {k: v for k, v in data.items() if k not in ("num_experts", "num_experts_per_tok")}
        return tiny_dims(rest, layers=3, moe_num_experts=4, moe_k=2, moe_intermediate_size=24)
