"""The XGLM family (XGLM 564M - 7.5B): sinusoidal positions, scaled embeddings, queries scaled before the scores."""

from __future__ import annotations

from typing import Any

from .. import ops
from ..errors import ConfigError
from ..formula import B, S
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.activations import read_activation
from ..graph.blocks import Part
from ..graph.node import ATTN, EMBED_GROUP
from ..spec import ArchSpec, LayerSpec
from . import register
from ._dense import DenseSpec, DenseTemplate
from .fields import Fields
from .template import plain_mlp, renamed


@register
class XGLM(DenseTemplate):
    """xglm. Quirks, all from transformers' XGLMConfig / modeling_xglm:

    - ``d_model`` / ``num_layers`` / ``attention_heads`` / ``ffn_dim``; multi-head attention, every projection
      biased; LayerNorms with bias (``self_attn_layer_norm``, ``final_layer_norm``, ``model.layer_norm``).
    - ``embed_tokens`` multiplies the lookup by sqrt(d_model) (by 1.0 without ``scale_embedding``: still a MULT).
    - sinusoidal positions: position_ids + 2 (S ADD), an index_select of S rows from a precomputed buffer (no
      parameters; rebuilt when 2 + P + S exceeds ``max_position_embeddings`` + 2, beyond any test shape),
      added to the embeddings (B*S*hidden ADD).
    - attention: q_proj(x) * head_dim**-0.5 (one MULT per query element, not per score); scores + mask, then
      max(scores, min) (one CMP per score); softmax; no scaling of the scores themselves.
    - MLP fc1 -> ``activation_function`` (gelu) -> fc2; tied lm_head without bias.
    """

    final_norm_name = "layer_norm"

    name = "xglm"
    model_types = ("xglm",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "xglm")
        if f.bool("add_cross_attention", default=False):
            raise ConfigError("xglm config: add_cross_attention is not supported (decoder-only models only)")
        hidden, heads = f.int("d_model"), f.int("attention_heads")
        f.divisible(hidden, heads, "d_model must be a multiple of attention_heads")
        return DenseSpec(
            model_type="xglm", family=self.name, name=name, hidden_size=hidden, num_layers=f.int("num_layers"),
            num_heads=heads, num_kv_heads=heads, head_dim=hidden // heads, intermediate_size=f.int("ffn_dim"),
            vocab_size=f.int("vocab_size"), norm="layernorm",
            activation=read_activation(f, "activation_function", default="gelu"), gated_mlp=False,
            qkv_bias=True, o_bias=True, mlp_bias=True, tie_word_embeddings=f.bool("tie_word_embeddings", default=True),
        )

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        b, h = self.base, spec.hidden_size
        embed = blk.embedding(spec.vocab_size, h) + ops.elementwise("mul", blk.TOKENS * h)  # * embed_scale
        return [
            Part(f"{b}.embed_tokens", f"{b}.embed_tokens", NodeKind.EMBEDDING, embed),
            Part(f"{b}:positions", b, NodeKind.POSITIONS, blk.causal_mask(blk.keys_full())),
            Part(f"{b}.embed_positions:ids", f"{b}.embed_positions", NodeKind.POSITIONS,
                 ops.elementwise("add", S)),  # position_ids + 2
            Part(f"{b}.embed_positions", f"{b}.embed_positions", NodeKind.EMBEDDING,
                 ops.elementwise("gather", S * h)),  # index_select of S rows
            Part(f"{b}:embed_add", b, NodeKind.ELEMENTWISE, ops.elementwise("add", B * S * h), group=EMBED_GROUP,
                 label="embed"),
        ]

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, H, D, t, a = spec.hidden_size, spec.num_heads, spec.head_dim, blk.TOKENS, ".self_attn"
        keys = blk.keys_full()
        n = B * H * S * keys
        scores = blk.attn_scores(H, D, keys, scale=False, kv_heads=H) + ops.elementwise("cmp", n)  # max(_, min)
        return [
            Part(f"{a}.q_proj", f"{a}.q_proj", NodeKind.LINEAR, blk.linear(t, h, h, True), ATTN),
            Part(f"{a}:q_scaling", a, NodeKind.ELEMENTWISE, ops.elementwise("mul", t * h), ATTN),
            Part(f"{a}.k_proj", f"{a}.k_proj", NodeKind.LINEAR, blk.linear(t, h, h, True), ATTN),
            Part(f"{a}.v_proj", f"{a}.v_proj", NodeKind.LINEAR, blk.linear(t, h, h, True), ATTN),
            Part(f"{a}:kv_cache", a, NodeKind.KV_CACHE, blk.kv_cache(H, D, blk.cached_full()), ATTN),
            Part(f"{a}:scores", a, NodeKind.ATTN_SCORES, scores, ATTN),
            Part(f"{a}:softmax", a, NodeKind.ATTN_SOFTMAX, blk.attn_softmax(H, keys), ATTN),
            Part(f"{a}:context", a, NodeKind.ATTN_CONTEXT, blk.attn_context(H, D, keys, kv_heads=H), ATTN),
            Part(f"{a}.out_proj", f"{a}.out_proj", NodeKind.LINEAR, blk.linear(t, h, h, True), ATTN),
        ]

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return plain_mlp(spec, ".fc1", ".activation_fn", ".fc2")

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return renamed(super().layer_parts(spec, layer), {".input_layernorm": ".self_attn_layer_norm", ".post_attention_layernorm": ".final_layer_norm"})


    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "d_model": 64, "attention_heads": 4, "num_layers": 2, "ffn_dim": 96, "vocab_size": 128,
                "max_position_embeddings": 64}
