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
- a longrope ``rope_parameters`` (the released checkpoint's): the init function with its ``ext_factors``
  (D/2 MULT more) and ``seq_len > original_max`` (1 CMP) every forward, plus phi3's
  ``longrope_frequency_update`` on ``model.rotary_emb:longrope`` (see LONGROPE_NOTE for what is left out).
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
from .phi3 import longrope_update
from .template import DecoderTemplate, decoder_fields, every_layer_window, part, tiny_dims


class PhimoeSpec(MoESpec):
    longrope: bool = False  # rope_type longrope (Phi-3.5-MoE's checkpoint)


def sparsemixer(rows: Any, experts: int) -> Counts:
    """One sparsemixer round per expert chosen (two): the row max (top-1), abs, clamp(min), max - scores,
    / factor, > 2 eps (rows*E each), softmax over E, the winner's probability gathered (rows)."""
    n = rows * experts
    round_ = (ops.topk(rows, experts, 1) + ops.elementwise("abs", n) + ops.clamp(n, 1) + ops.elementwise("sub", n)
              + ops.elementwise("div", n) + ops.elementwise("cmp", n) + ops.softmax(rows, experts)
              + ops.elementwise("gather", rows))
    return round_ + round_


LONGROPE_NOTE = ("phimoe longrope: model.rotary_emb counts the per-forward table choice (as phi3); when "
                 "transformers' longrope_frequency_update has not yet cached long_inv_freq it runs the rope init "
                 "once more (5 * head_dim/2 ops, not counted); transformers' longrope forward cannot run on the "
                 "meta device, so only the tiny model is validated")


def _is_longrope(data: dict[str, Any]) -> bool:
    rope = data.get("rope_parameters") or data.get("rope_scaling") or {}
    return isinstance(rope, dict) and rope.get("rope_type", rope.get("type")) in ("longrope", "su")


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
            moe_intermediate_size=common["intermediate_size"], longrope=_is_longrope(data), notes=(LONGROPE_NOTE,)
            if _is_longrope(data) else (),
        )

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        # seq_len = max(position_ids) + 1 (S - 1 CMP, one ADD); inv_freq rebuilt every forward by the rope
        # init function: arange / dim, base ** that, 1.0 / that (reciprocal, then * 1.0): D/2 each; the tables
        half = spec.rotary_dim // 2
        seq_len = (ops.reduce_max(1, S) + ops.elementwise("add", 1) + ops.elementwise("div", half)
                   + ops.elementwise("pow", half) + ops.elementwise("reciprocal", half) + ops.elementwise("mul", half))
        assert isinstance(spec, PhimoeSpec)
        if spec.longrope:  # seq_len > original_max (1 CMP) picks the mscale; the ext_factors product (D/2 MULT)
            seq_len = seq_len + ops.elementwise("cmp", 1) + ops.elementwise("mul", half)
        parts = [p if p.kind != NodeKind.ROTARY else replace(p, counts=seq_len + p.counts)
                 for p in super().head_of_model_parts(spec)]
        if spec.longrope:  # transformers' longrope_frequency_update, as phi3
            parts.append(part(f"{self.base}.rotary_emb:longrope", NodeKind.ROTARY, longrope_update(spec.rotary_dim)))
        return parts

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


    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = tiny_dims(data, num_local_experts=4)
        half = 64 // 4 // 2  # longrope's factor lists: one entry per rotary frequency of the tiny head_dim 16
        for key in ("rope_parameters", "rope_scaling"):
            rope = out.get(key)
            if isinstance(rope, dict):
                out[key] = {k: v[:1] * half if k in ("short_factor", "long_factor") and isinstance(v, list) else v
                            for k, v in rope.items()}
        return out
