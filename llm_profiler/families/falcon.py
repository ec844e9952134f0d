"""The Falcon family: falcon-7b (multi-query, one shared LayerNorm, parallel attention), falcon-40b / 180b
(``new_decoder_architecture``: grouped KV in one fused projection, ln_attn / ln_mlp) and falcon-rw (ALiBi,
sequential blocks, biases)."""

from __future__ import annotations

import math
from typing import Any

from .. import ops
from ..errors import ConfigError
from ..facts import StateKind
from ..formula import B, Formula, P, S
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.activations import read_activation
from ..graph.blocks import Part
from ..graph.node import ATTN
from ..ops import Counts
from ..spec import ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate, attention_core, part, plain_mlp

# Legacy RefinedWeb keys (the pre-transformers Hub revisions) -> the FalconConfig names transformers reads.
LEGACY_KEYS = {"n_head": "num_attention_heads", "n_layer": "num_hidden_layers", "n_embed": "hidden_size",
               "n_head_kv": "num_kv_heads"}


class FalconSpec(ArchSpec):
    new_decoder_architecture: bool = False
    parallel_attn: bool = True
    num_ln_in_parallel_attn: int = 1  # 2: ln_attn + ln_mlp; 1: one input_layernorm for both
    alibi: bool = False
    cached_kv_heads: int = 1  # heads the KV cache holds (the new architecture caches k / v broadcast to all heads)


def falcon_linear(rows: Formula, in_features: int, out_features: int, bias: bool) -> Counts:
    """FalconLinear: ``x @ W.T`` then ``+ bias`` as a separate op (not a fused addmm): the same arithmetic as
    nn.Linear, but the bias addition writes its own rows x out elements."""
    out = ops.matmul(rows, out_features, in_features)
    if bias:
        out = out + ops.elementwise("add", rows * out_features)
    return blk.with_params(out, in_features * out_features + (out_features if bias else 0))


def alibi_counts(heads: int, head_dim: int) -> Counts:
    """ALiBi in FalconModel.forward (build_alibi_tensor, then folded into the mask), keys T = P + S:

    slopes = base ** arange: p POW (p = largest power of two <= heads), plus r more from a second base when
    heads is not a power of two (r = min(p, heads - p));
    (mask.cumsum(-1) - 1) * mask over B x T: a cumsum (T-1 ADD per row), B*T ADD, B*T MULT;
    slopes * positions: B*heads*T MULT;
    alibi / sqrt(head_dim): B*heads*T DIV; causal_mask < -1: B*S*T CMP (the masked_fill is a copy).
    """
    keys = P + S
    p = 2 ** math.floor(math.log2(heads))
    out = ops.elementwise("pow", p)
    if p != heads:
        out = out + ops.elementwise("pow", min(p, heads - p))
    out = out + ops.cumsum(B, keys) + ops.elementwise("sub", B * keys) + ops.elementwise("mul", B * keys)
    out = out + ops.elementwise("mul", B * heads * keys) + ops.elementwise("div", B * heads * keys)
    return out + ops.elementwise("cmp", B * S * keys)


@register
class Falcon(DecoderTemplate):
    """falcon (and the legacy RefinedWeb / RefinedWebModel types). Quirks, from transformers' FalconConfig /
    modeling_falcon (5.23):

    - head_dim = hidden / heads; legacy keys n_head / n_layer / n_embed / n_head_kv are accepted (renamed
      for transformers, which no longer maps them).
    - fused ``query_key_value``: new architecture (heads + 2 ``num_kv_heads``) * head_dim wide; else
      multi_query (default true): hidden + 2 head_dim; else 3 hidden. ``bias`` on every FalconLinear, whose
      bias is a separate addition.
    - KV cache: the new architecture broadcasts k / v to every head before caching (heads, not
      num_kv_heads); multi_query caches 1 head; otherwise all heads.
    - norms (LayerNorm with bias): parallel_attn with num_ln_in_parallel_attn 2 (the new architecture's
      default): ln_attn + ln_mlp; parallel with 1: one input_layernorm; sequential: input_layernorm +
      post_attention_layernorm. Final ``transformer.ln_f``.
    - rotary: scores divided by sqrt(head_dim); alibi: scores + alibi, times 1/sqrt(head_dim), + mask (the
      mask itself holds the alibi too). The rotary tables are computed either way.
    - MLP: dense_h_to_4h (``ffn_hidden_size``, default 4 hidden) -> ``activation`` (gelu) -> dense_4h_to_h.
    - lm_head tied to the embedding unless ``tie_word_embeddings`` is false.
    """

    name = "falcon"
    model_types = ("falcon", "RefinedWeb", "RefinedWebModel")
    base = "transformer"
    layer_prefix = "transformer.h."
    embed_name = "word_embeddings"
    final_norm_name = "ln_f"

    def spec(self, data: dict[str, Any], name: str = "") -> ArchSpec:
        model_type = data["model_type"]
        f = Fields(data, model_type)
        hidden = f.int("hidden_size", "n_embed")
        heads = f.int("num_attention_heads", "n_head")
        f.divisible(hidden, heads, "hidden_size must be a multiple of num_attention_heads")
        head_dim = hidden // heads
        new_arch = f.bool("new_decoder_architecture", default=model_type == "RefinedWeb")
        multi_query = f.bool("multi_query", default=True)
        parallel = f.bool("parallel_attn", default=True)
        config_kv = f.int("num_kv_heads", "n_head_kv", default=heads)
        if new_arch:
            f.divisible(heads, config_kv, "num_attention_heads must be a multiple of num_kv_heads")
            kv_heads, cached = config_kv, heads
            if not parallel:
                raise ConfigError(f"{model_type} config: new_decoder_architecture needs parallel_attn true "
                                  "(transformers' FalconDecoderLayer has no other path)")
        elif multi_query:
            kv_heads = cached = 1
        else:
            kv_heads = cached = heads
        num_ln = f.int("num_ln_in_parallel_attn", default=2 if new_arch else 1)
        if num_ln not in (1, 2):
            raise ConfigError(f"{model_type} config field 'num_ln_in_parallel_attn' must be 1 or 2, got {num_ln}")
        if parallel and num_ln == 2 and not new_arch:
            raise ConfigError(f"{model_type} config: num_ln_in_parallel_attn 2 needs new_decoder_architecture "
                              "(transformers builds ln_attn / ln_mlp but the old layer reads input_layernorm)")
        bias = f.bool("bias", default=False)
        return FalconSpec(
            model_type=model_type, family=self.name, name=name, hidden_size=hidden,
            num_layers=f.int("num_hidden_layers", "n_layer"), num_heads=heads, num_kv_heads=kv_heads,
            head_dim=head_dim, intermediate_size=f.int("ffn_hidden_size", default=4 * hidden),
            vocab_size=f.int("vocab_size"), norm="layernorm", activation=read_activation(f, "activation", default="gelu"),
            gated_mlp=False, qkv_bias=bias, o_bias=bias, mlp_bias=bias,
            tie_word_embeddings=f.bool("tie_word_embeddings", default=True),
            rotary_dim=head_dim,  # FalconModel computes the cos / sin tables even with alibi
            new_decoder_architecture=new_arch, parallel_attn=parallel or new_arch,
            num_ln_in_parallel_attn=num_ln if (parallel or new_arch) else 1,
            alibi=f.bool("alibi", default=False), cached_kv_heads=cached,
        )

    def hf_config(self, data: dict[str, Any]) -> dict[str, Any]:
        out = {LEGACY_KEYS.get(k, k): v for k, v in data.items()}
        if data.get("model_type") == "RefinedWeb":
            out.setdefault("new_decoder_architecture", True)
        out["model_type"] = "falcon"
        return out

    def mask_counts(self, spec: ArchSpec) -> Counts:
        assert isinstance(spec, FalconSpec)
        out = super().mask_counts(spec)
        return out + alibi_counts(spec.num_heads, spec.head_dim) if spec.alibi else out

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, FalconSpec)
        h, H, D, t = spec.hidden_size, spec.num_heads, spec.head_dim, blk.TOKENS
        keys, n = blk.keys_full(), B * H * S * blk.keys_full()
        a = ".self_attention"
        qkv = falcon_linear(t, h, (H + 2 * spec.num_kv_heads) * D, spec.qkv_bias)
        parts = [part(f"{a}.query_key_value", NodeKind.LINEAR, qkv, ATTN)]
        if spec.alibi:  # scores + alibi, * 1/sqrt(head_dim), + mask
            scores = (ops.matmul(S, keys, D, batch=B * H) + ops.elementwise("add", n)
                      + ops.elementwise("mul", n) + ops.elementwise("add", n))
        else:  # rope on q and the cached k heads; scores / sqrt(head_dim), + mask
            rope = blk.apply_rope(H, D) + blk.apply_rope(spec.cached_kv_heads, D)
            parts.append(part(f"{a}:rope", NodeKind.ROPE, rope, ATTN))
            scores = ops.matmul(S, keys, D, batch=B * H) + ops.elementwise("div", n) + ops.elementwise("add", n)
        cached_kv = spec.cached_kv_heads  # K / V are cached per KV head (or group), then expanded to H heads
        scores = scores + blk.state_read(StateKind.KEYS_VALUES, B * cached_kv * keys * D)
        return [*parts, *attention_core(a, H, D, keys, blk.cached_full(), kv_heads=cached_kv, scores=scores),
                part(f"{a}.dense", NodeKind.LINEAR, falcon_linear(t, H * D, h, spec.o_bias), ATTN)]

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return plain_mlp(spec, ".mlp.dense_h_to_4h", ".mlp.act", ".mlp.dense_4h_to_h", linear=falcon_linear)

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, FalconSpec)
        if not spec.parallel_attn:  # x + attn(ln1(x)), then + mlp(ln2(.))
            norms = [".input_layernorm", ".post_attention_layernorm"]
        elif spec.num_ln_in_parallel_attn == 2:
            norms = [".ln_attn", ".ln_mlp"]
        else:
            norms = [".input_layernorm"]
        # parallel: mlp += attn, then + x; sequential: the same two additions, one after each block
        return [*(self.norm_part(spec, n) for n in norms), *self.attention_parts(spec, layer),
                *self.ffn_parts(spec, layer), part(":residual", NodeKind.RESIDUAL, blk.residual(spec.hidden_size))]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = {LEGACY_KEYS.get(k, k): v for k, v in data.items()}
        heads = out.get("num_attention_heads", 71)
        power_of_two = heads & (heads - 1) == 0
        # 6 heads (not a power of two) keep ALiBi's second slope base; 4 heads otherwise
        tiny_heads, tiny_hidden = (4, 64) if power_of_two or not out.get("alibi") else (6, 48)
        out.update({"hidden_size": tiny_hidden, "num_attention_heads": tiny_heads, "num_hidden_layers": 2,
                    "vocab_size": 128})
        if out.get("ffn_hidden_size") is not None:
            out["ffn_hidden_size"] = 96
        if out.get("num_kv_heads") is not None:
            out["num_kv_heads"] = tiny_heads if out["num_kv_heads"] == heads else 2
        return out
