"""The MPT family (MPT-7B / 30B): ALiBi built every forward, fused Wqkv, weight-only LayerNorms, GELU MLP."""

from __future__ import annotations

import math
from typing import Any

from .. import ops
from ..errors import ConfigError
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.node import ATTN, MLP
from ..ops import Counts
from ..spec import ArchSpec, LayerSpec
from . import register
from ._dense import DenseSpec, DenseTemplate
from .fields import Fields


class MptSpec(DenseSpec):
    max_seq_len: int  # the ALiBi table spans this many key positions


def alibi_table(heads: int, length: int) -> Counts:
    """build_mpt_alibi_tensor(heads, max_seq_len), every forward (constant in B, S, P), for Hp = the next power
    of two of the heads: base * (8 / Hp): Hp MULT; pow(2, base): Hp EXP; 1.0 / _ (reciprocal, then * 1.0):
    Hp DIV + Hp MULT; positions * slopes: heads * max_seq_len MULT."""
    hp = 2 ** math.ceil(math.log2(heads))
    return (ops.elementwise("mul", hp) + ops.elementwise("pow", hp) + ops.elementwise("reciprocal", hp)
            + ops.elementwise("mul", hp) + ops.elementwise("mul", heads * length))


@register
class Mpt(DenseTemplate):
    """mpt. Quirks, all from transformers' MptConfig / modeling_mpt (which ignore ``alibi``, ``attn_type``,
    ``qk_ln``, ``learned_pos_emb``, ``logit_scale`` and ``no_bias``: the graph is always this one):

    - ``d_model`` / ``n_heads`` / ``n_layers`` / ``expansion_ratio`` (the MLP is hard-wired to 4 * d_model).
    - ALiBi: the base model rebuilds the (heads x ``max_seq_len``) bias on every forward; each layer adds its
      last P+S columns to the scores (one ADD per score); the causal mask is applied with masked_fill (a copy).
    - fused ``Wqkv`` (hidden -> 3 hidden) and ``out_proj`` without bias; scores * ``softmax_scale`` (default
      head_dim**-0.5); ``attn_config.clip_qkv`` clamps (aten.clamp: profiled with a note, not validated).
    - ``norm_1`` / ``norm_2`` / ``transformer.norm_f``: LayerNorm with weight, no bias.
    - ``ffn``: up_proj -> GELU (erf) -> down_proj, then + residual inside ``ffn``; tied lm_head.
    """

    name = "mpt"
    model_types = ("mpt",)
    base = "transformer"
    final_norm_name = "norm_f"
    layer_prefix = "transformer.blocks."

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "mpt")
        hidden, heads = f.int("d_model"), f.int("n_heads")
        f.divisible(hidden, heads, "d_model must be a multiple of n_heads")
        attn = f.raw("attn_config") or {}
        if not isinstance(attn, dict):
            raise ConfigError("mpt config field 'attn_config' must be an object")
        notes = ("mpt attn_config.clip_qkv: the clamp of Wqkv's output is counted as 2 CMP per element "
                 "(not validated)",) if attn.get("clip_qkv") else ()
        return MptSpec(
            model_type="mpt", family=self.name, name=name, hidden_size=hidden, num_layers=f.int("n_layers"),
            num_heads=heads, num_kv_heads=heads, head_dim=hidden // heads, intermediate_size=4 * hidden,
            vocab_size=f.int("vocab_size"), norm="layernorm", norm_bias=False, activation="gelu", gated_mlp=False,
            tie_word_embeddings=f.bool("tie_word_embeddings", default=True),
            max_seq_len=f.int("max_seq_len", default=2048), notes=notes,
        )

    def mask_counts(self, spec: ArchSpec) -> Counts:
        assert isinstance(spec, MptSpec)
        # create_causal_mask (no position ids: MptModel computes none), then the ALiBi table
        return blk.causal_mask(blk.keys_full()) + alibi_table(spec.num_heads, spec.max_seq_len)

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        b = self.base
        return [Part(f"{b}.wte", f"{b}.wte", NodeKind.EMBEDDING, blk.embedding(spec.vocab_size, spec.hidden_size)),
                Part(f"{b}:positions", b, NodeKind.POSITIONS, self.mask_counts(spec))]

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, H, D, t, a = spec.hidden_size, spec.num_heads, spec.head_dim, blk.TOKENS, ".attn"
        keys = blk.keys_full()
        parts = [Part(f"{a}.Wqkv", f"{a}.Wqkv", NodeKind.LINEAR, blk.linear(t, h, 3 * h, False), ATTN)]
        if spec.notes:  # clip_qkv
            parts.append(Part(f"{a}:clip_qkv", a, NodeKind.ELEMENTWISE, Counts({"cmp": 2 * t * 3 * h, "act": t * 3 * h}),
                              ATTN))
        return parts + [
            Part(f"{a}:kv_cache", a, NodeKind.KV_CACHE, blk.kv_cache(H, D, blk.cached_full()), ATTN),
            # q @ k^T * softmax_scale, + the ALiBi columns (one ADD per score); masked_fill is a copy
            Part(f"{a}:scores", a, NodeKind.ATTN_SCORES, blk.attn_scores(H, D, keys, kv_heads=H), ATTN),
            Part(f"{a}:softmax", a, NodeKind.ATTN_SOFTMAX, blk.attn_softmax(H, keys), ATTN),
            Part(f"{a}:context", a, NodeKind.ATTN_CONTEXT, blk.attn_context(H, D, keys, kv_heads=H), ATTN),
            Part(f"{a}.out_proj", f"{a}.out_proj", NodeKind.LINEAR, blk.linear(t, h, h, False), ATTN),
        ]

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, inter, t, m = spec.hidden_size, spec.intermediate_size, blk.TOKENS, ".ffn"
        return [
            Part(f"{m}.up_proj", f"{m}.up_proj", NodeKind.LINEAR, blk.linear(t, h, inter, False), MLP),
            Part(f"{m}.act", f"{m}.act", NodeKind.ACTIVATION, blk.activation("gelu", t * inter), MLP),
            Part(f"{m}.down_proj", f"{m}.down_proj", NodeKind.LINEAR, blk.linear(t, inter, h, False), MLP),
            Part(f"{m}:residual", m, NodeKind.RESIDUAL, blk.residual(h, count=1)),  # output + residual
        ]

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, t = spec.hidden_size, blk.TOKENS
        return [
            Part(".norm_1", ".norm_1", NodeKind.NORM, self.norm(spec, t, h)),
            *self.attention_parts(spec, layer),
            Part(":residual", "", NodeKind.RESIDUAL, blk.residual(h, count=1)),
            Part(".norm_2", ".norm_2", NodeKind.NORM, self.norm(spec, t, h)),
            *self.ffn_parts(spec, layer),
        ]


    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "d_model": 64, "n_heads": 4, "n_layers": 2, "vocab_size": 128, "max_seq_len": 64}


