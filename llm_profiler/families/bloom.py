"""The BLOOM family (model_type bloom): ALiBi, an embedding LayerNorm, fused qkv, Bloom's own gelu.

Quirks, all from transformers' BloomConfig / modeling_bloom.py (5.23):

- legacy field names: ``n_embed`` (wins over hidden_size, as BloomConfig does), ``n_layer`` /
  num_hidden_layers, ``n_head`` / num_attention_heads.
- no position embedding: ALiBi. The base model builds the slopes (one pow per head: H EXP) and the bias
  slopes x arange(P+S) (H*(P+S) MULT; repeated over the batch, a copy), besides the causal mask.
- scores are ``alibi.baddbmm(q, k^T, beta=1, alpha=1/sqrt(head_dim))``: the product, the alibi added
  (one ADD per score) and the scaling (one MULT per score), then the causal mask is added.
- ``word_embeddings_layernorm`` right after the token embedding; the MLP is always 4 * hidden
  (``n_inner`` is not read); ``gelu_impl`` is bloom_gelu_forward, 9 aten ops (graph/activations.py).
- the residual adds run inside the attention and MLP modules (dropout_add), one each.
- ``pretraining_tp`` > 1 with ``slow_but_exact`` splits the output projections into slices: not supported.
- the LM head is tied to word_embeddings by default.
"""

from __future__ import annotations

from typing import Any

from .. import ops
from ..errors import ConfigError
from ..facts import StateKind
from ..formula import B, S
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.node import ATTN
from ..ops import Counts
from ..spec import ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate, attention_core, part, plain_mlp


@register
class Bloom(DecoderTemplate):
    name = "bloom"
    model_types = ("bloom",)
    base = "transformer"
    layer_prefix = "transformer.h."
    embed_name = "word_embeddings"
    final_norm_name = "ln_f"

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        f = Fields(data, data["model_type"])
        hidden = f.int("n_embed", "hidden_size")  # BloomConfig: n_embed overrides hidden_size
        heads = f.int("n_head", "num_attention_heads")
        f.divisible(hidden, heads, "hidden size (n_embed / hidden_size) must be a multiple of n_head / num_attention_heads")
        if f.int("pretraining_tp", default=1) > 1 and f.bool("slow_but_exact", default=False):
            raise ConfigError("bloom config: slow_but_exact with pretraining_tp > 1 (sliced output projections) "
                              "is not supported; set slow_but_exact: false")
        return ArchSpec(
            model_type="bloom", family=self.name, name=name, hidden_size=hidden,
            num_layers=f.int("n_layer", "num_hidden_layers"), num_heads=heads, num_kv_heads=heads,
            head_dim=hidden // heads, intermediate_size=4 * hidden,  # BloomMLP: always 4 * hidden
            vocab_size=f.int("vocab_size", default=250880), norm="layernorm", activation="bloom_gelu",
            gated_mlp=False, qkv_bias=True, o_bias=True, mlp_bias=True,
            tie_word_embeddings=f.bool("tie_word_embeddings", default=True),
        )

    # --- graph ------------------------------------------------------------------------------------
    def mask_counts(self, spec: ArchSpec) -> Counts:
        # slopes = pow(base, arange(H)): H EXP; alibi = slopes[:, None, None] * arange(keys): H*keys MULT; the mask
        H, keys = spec.num_heads, blk.keys_full()
        return ops.elementwise("pow", H) + ops.elementwise("mul", H * keys) + blk.causal_mask(keys)

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        embed, *rest = super().head_of_model_parts(spec)
        return [embed, self.norm_part(spec, f"{self.base}.word_embeddings_layernorm", label="embedding norm"), *rest]

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        h, H, D, t, keys = spec.hidden_size, spec.num_heads, spec.head_dim, blk.TOKENS, blk.keys_full()
        a = ".self_attention"
        # baddbmm(alibi, q, k^T, beta=1, alpha=1/sqrt(d)): the bmm, + alibi and * alpha per score; + mask
        scores = (ops.scaled_matmul(S, keys, D, batch=B * H, bias=True, alpha=D != 1)
                  + ops.elementwise("add", B * H * S * keys) + blk.state_read(StateKind.KEYS_VALUES, B * H * keys * D))
        return [
            part(f"{a}.query_key_value", NodeKind.LINEAR, blk.linear(t, h, 3 * h, True), ATTN),
            *attention_core(a, H, D, keys, blk.cached_full(), scores=scores),
            part(f"{a}.dense", NodeKind.LINEAR, blk.linear(t, h, h, True), ATTN),
            part(f"{a}:residual", NodeKind.RESIDUAL, blk.residual(h, count=1)),  # dropout_add
        ]

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        m = ".mlp"
        return [*plain_mlp(spec, f"{m}.dense_h_to_4h", f"{m}.gelu_impl", f"{m}.dense_4h_to_h"),
                part(f"{m}:residual", NodeKind.RESIDUAL, blk.residual(spec.hidden_size, count=1))]  # dropout_add

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return [self.norm_part(spec, ".input_layernorm"), *self.attention_parts(spec, layer),
                self.norm_part(spec, ".post_attention_layernorm"), *self.ffn_parts(spec, layer)]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        # 6 heads (not a power of two) also runs the extra-slopes branch of the ALiBi slopes
        out = {k: v for k, v in data.items() if k not in ("hidden_size", "num_hidden_layers", "num_attention_heads")}
        return {**out, "n_embed": 96, "n_layer": 2, "n_head": 6, "vocab_size": 128}
