"""The GPTBigCode family (SantaCoder, StarCoder 1, WizardCoder-15B): GPT-2 with multi-query attention."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.activations import read_activation
from ..graph.blocks import Part
from ..graph.node import ATTN
from ..spec import ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .gpt_neo import GPTNeo, GPTNeoSpec


@register
class GPTBigCode(GPTNeo):
    """gpt_bigcode. Quirks, all from transformers' GPTBigCodeConfig / modeling_gpt_bigcode:

    - legacy names ``n_embd`` / ``n_layer`` / ``n_head`` / ``n_positions`` / ``n_inner`` (null: 4 * n_embd).
    - ``multi_query`` (default true): one key/value head; the fused ``c_attn`` maps hidden -> hidden + 2 * kv
      heads * head_dim (biased); the cache holds the one head.
    - learned positions ``wpe`` added to the token embeddings; scores scaled by head_dim**-0.5 (1.0 without
      ``scale_attn_weights``: still one MULT per score), + mask.
    - biased ``c_proj``, MLP c_fc -> ``activation_function`` (gelu_pytorch_tanh) -> c_proj; ``ln_1`` / ``ln_2``
      / ``transformer.ln_f``; tied lm_head by default. ``add_cross_attention`` is not supported.
    """

    name = "gpt_bigcode"
    model_types = ("gpt_bigcode",)

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, "gpt_bigcode")
        if f.bool("add_cross_attention", default=False):
            raise ConfigError("gpt_bigcode config: add_cross_attention is not supported (decoder-only models only)")
        hidden = f.int("n_embd", "hidden_size")
        heads = f.int("n_head", "num_attention_heads")
        f.divisible(hidden, heads, "n_embd must be a multiple of n_head")
        return GPTNeoSpec(
            model_type="gpt_bigcode", family=self.name, name=name, hidden_size=hidden,
            num_layers=f.int("n_layer", "num_hidden_layers"), num_heads=heads,
            num_kv_heads=1 if f.bool("multi_query", default=True) else heads, head_dim=hidden // heads,
            intermediate_size=f.int("n_inner", default=4 * hidden), vocab_size=f.int("vocab_size"),
            norm="layernorm", activation=read_activation(f, "activation_function", default="gelu_pytorch_tanh"),
            gated_mlp=False, mlp_bias=True, tie_word_embeddings=f.bool("tie_word_embeddings", default=True),
            max_positions=f.int("n_positions", "max_position_embeddings", default=1024),
        )

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, H, KV, D, t, a = spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim, blk.TOKENS, ".attn"
        keys = blk.keys_full()
        return [
            Part(f"{a}.c_attn", f"{a}.c_attn", NodeKind.LINEAR, blk.linear(t, h, h + 2 * KV * D, True), ATTN),
            Part(f"{a}:kv_cache", a, NodeKind.KV_CACHE, blk.kv_cache(KV, D, blk.cached_full()), ATTN),
            Part(f"{a}:scores", a, NodeKind.ATTN_SCORES, blk.attn_scores(H, D, keys, kv_heads=KV), ATTN),
            Part(f"{a}:softmax", a, NodeKind.ATTN_SOFTMAX, blk.attn_softmax(H, keys), ATTN),
            Part(f"{a}:context", a, NodeKind.ATTN_CONTEXT, blk.attn_context(H, D, keys, kv_heads=KV), ATTN),
            Part(f"{a}.c_proj", f"{a}.c_proj", NodeKind.LINEAR, blk.linear(t, h, h, True), ATTN),
        ]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = {**data, "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 128, "n_positions": 64}
        if data.get("n_inner") is not None:
            out["n_inner"] = 96
        return out
