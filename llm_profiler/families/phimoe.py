"""The PhiMoE family (Phi-3.5-MoE): a Mixtral-shaped decoder with LayerNorms and the sparsemixer router.

What transformers 5.23 computes (modeling_phimoe), op by op where it differs from Mixtral:

- ``input_layernorm`` / ``post_attention_layernorm`` / ``norm`` are ``nn.LayerNorm`` with bias (eps from
  ``rms_norm_eps``); ``attention_bias`` on q/k/v/o; ``lm_head_bias`` on the output projection.
- the rotary embedding first takes ``max(position_ids) + 1`` (the sequence length that picks the long or
  short ``mscale`` of a longrope config) and recomputes ``inv_freq`` (the rope init function runs on every
  forward), then the Llama cos / sin tables.
- ``mlp.router`` (``PhimoeTopKRouter``, a bias-free linear to the experts) runs ``sparsemixer``, which
  always picks two experts, each in one round over the T x E logits: the row max (a top-1),
  ``|scores|.clamp(min=max)``, ``(max - scores) / factor > 2 * jitter_eps``, masked_fill, softmax over E and
  the chosen expert's probability gathered; the second round first scatters -inf on the first choice
  (``num_experts_per_tok`` is ignored: two experts per token whatever it says).
- ``mlp.experts``: ``num_local_experts`` gated SiLU experts of ``intermediate_size`` (batched).
Missing fields take PhimoeConfig's defaults, which mirror microsoft/Phi-3.5-MoE-instruct.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .. import ops
from ..errors import ConfigError
from ..formula import S
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.moe import MoESpec, expert_activation, routed_experts
from ..graph.node import MLP
from ..ops import Counts
from ..spec import ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate, decoder_fields, every_layer_window, tiny_dims


class PhimoeSpec(MoESpec):
    lm_head_bias: bool = False


def sparsemixer(rows: Any, experts: int) -> Counts:
    """One sparsemixer round per expert chosen (two): the row max (top-1), abs, clamp(min), max - scores,
    / factor, > 2 eps (rows*E each), softmax over E, the winner's probability gathered (rows)."""
    n = rows * experts
    round_ = (ops.topk(rows, experts, 1) + ops.elementwise("abs", n) + ops.clamp(n, 1) + ops.elementwise("sub", n)
              + ops.elementwise("div", n) + ops.elementwise("cmp", n) + ops.softmax(rows, experts)
              + ops.elementwise("gather", rows))
    return round_ + round_


@register
class Phimoe(DecoderTemplate):
    name = "phimoe"
    model_types = ("phimoe",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "phimoe")
        common = decoder_fields(f, self.name, name)
        if f.int("num_experts_per_tok", default=2) != 2:
            raise ConfigError("phimoe config field 'num_experts_per_tok' must be 2: the sparsemixer router of "
                              "transformers always routes each token to two experts")
        bias = f.bool("attention_bias", default=False)
        return PhimoeSpec(
            **{**common, "rotary_dim": common["head_dim"]}, **every_layer_window(f, common["num_layers"]),
            norm="layernorm", qkv_bias=bias, o_bias=bias, lm_head_bias=f.bool("lm_head_bias", default=False),
            num_experts=f.int("num_local_experts", default=16), experts_per_token=2,
            moe_intermediate_size=common["intermediate_size"],
        )

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        # seq_len = max(position_ids) + 1 (S - 1 CMP, one ADD); inv_freq rebuilt every forward by the rope
        # init function: arange / dim, base ** that, 1.0 / that (reciprocal, then * 1.0): D/2 each; the tables
        half = spec.rotary_dim // 2
        seq_len = (ops.reduce_max(1, S) + ops.elementwise("add", 1) + ops.elementwise("div", half)
                   + ops.elementwise("pow", half) + ops.elementwise("reciprocal", half) + ops.elementwise("mul", half))
        return [p if p.kind != NodeKind.ROTARY else replace(p, counts=seq_len + p.counts)
                for p in super().head_of_model_parts(spec)]

    def moe_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, PhimoeSpec)
        h, E, inter, t = spec.hidden_size, spec.num_experts, spec.moe_intermediate_size, blk.TOKENS
        router = blk.linear(t, h, E, bias=False) + sparsemixer(t, E)
        return [
            Part(".mlp.router", ".mlp.router", NodeKind.ROUTER, router, MLP),
            Part(".mlp.experts", ".mlp.experts", NodeKind.EXPERTS, routed_experts(h, inter, E, 2), MLP),
            Part(".mlp.experts.act_fn", ".mlp.experts.act_fn", NodeKind.ACTIVATION,
                 expert_activation(spec.activation, inter, 2), MLP),
        ]

    def tail_parts(self, spec: ArchSpec) -> list[Part]:
        assert isinstance(spec, PhimoeSpec)
        head = blk.lm_head(blk.TOKENS, spec.hidden_size, spec.vocab_size, spec.tie_word_embeddings,
                           bias=spec.lm_head_bias)
        return [p if p.kind != NodeKind.LM_HEAD else replace(p, counts=head)
                for p in super().tail_parts(spec)]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        return tiny_dims(data, num_local_experts=4)
