"""The OPT family (model_type opt): learned positions with an offset of 2, LayerNorm, fc1/fc2 ReLU MLP.

Quirks, all from transformers' OPTConfig / modeling_opt.py (5.23):

- position ids come from a cumulative sum over an all-ones mask of B x (P+S) (no attention mask given):
  cumsum, * mask, - 1, in the decoder; the positional embedding adds its offset of 2 (B*S ADD) and looks
  up B*S rows of a (max_position_embeddings + 2) x hidden table (embed scope).
- ``word_embed_proj_dim`` (null = hidden_size): token embeddings and the LM head live at that width;
  when it differs, ``project_in`` / ``project_out`` (no bias) map to and from hidden_size.
- q is scaled after q_proj (B*S*hidden MULT) and the eager attention still multiplies the scores by 1.0.
- ``do_layer_norm_before`` (pre- or post-LN) moves the norms, not their counts; the decoder's final
  LayerNorm exists only with pre-LN (and not ``_remove_final_layer_norm``).
- ``enable_bias`` on every projection and fc1/fc2; ``layer_norm_elementwise_affine`` false drops the
  LayerNorm weights and biases; ``activation_function`` (relu).
- the LM head is tied to embed_tokens by default.
"""

from __future__ import annotations

from typing import Any

from .. import ops
from ..formula import B, P, S
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.activations import activation_counts, read_activation
from ..graph.blocks import Part
from ..graph.node import ATTN, EMBED_GROUP, MLP
from ..ops import Counts
from ..spec import ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .gpt2 import embed_add, layer_norm
from .template import DecoderTemplate as LlamaStyle

POSITION_OFFSET = 2  # OPTLearnedPositionalEmbedding.offset


class OPTSpec(ArchSpec):
    max_positions: int
    word_embed_proj_dim: int
    enable_bias: bool = True
    layer_norm_affine: bool = True
    final_layer_norm: bool = True


def opt_positions(keys: Any) -> Counts:
    """OPTDecoder's position ids over the all-ones mask of B x (P+S), then the causal mask:
    cumsum along the sequence: B*(P+S-1) ADD; * mask: B*(P+S) MULT; - 1: B*(P+S) ADD."""
    n = B * (P + S)
    return (ops.cumsum(B, P + S) + ops.elementwise("mul", n) + ops.elementwise("sub", n)
            + blk.causal_mask(keys))


def learned_positions(max_positions: int, hidden: int) -> Counts:
    """position_ids + offset (B*S ADD), then a B*S-row lookup of the (max_positions + 2) x hidden table."""
    return ops.elementwise("add", B * S) + blk.embedding(max_positions + POSITION_OFFSET, hidden)


@register
class OPT(LlamaStyle):
    name = "opt"
    model_types = ("opt",)
    base = "model.decoder"
    layer_prefix = "model.decoder.layers."

    def spec(self, data: dict[str, Any], name: str = "") -> OPTSpec:
        f = Fields(data, data["model_type"])
        hidden = f.int("hidden_size")
        heads = f.int("num_attention_heads")
        f.divisible(hidden, heads, "hidden_size must be a multiple of num_attention_heads")
        pre_ln = f.bool("do_layer_norm_before", default=True)
        bias = f.bool("enable_bias", default=True)
        return OPTSpec(
            model_type="opt",
            family=self.name,
            name=name,
            hidden_size=hidden,
            num_layers=f.int("num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=heads,
            head_dim=hidden // heads,
            intermediate_size=f.int("ffn_dim"),
            vocab_size=f.int("vocab_size"),
            norm="layernorm",
            activation=read_activation(f, "activation_function", default="relu"),
            gated_mlp=False,
            qkv_bias=bias,
            o_bias=bias,
            mlp_bias=bias,
            tie_word_embeddings=f.bool("tie_word_embeddings", default=True),
            max_positions=f.int("max_position_embeddings", default=2048),
            word_embed_proj_dim=f.int("word_embed_proj_dim", default=hidden),
            enable_bias=bias,
            layer_norm_affine=f.bool("layer_norm_elementwise_affine", default=True),
            final_layer_norm=pre_ln and not f.bool("_remove_final_layer_norm", default=False),
        )

    # --- graph ------------------------------------------------------------------------------------
    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        assert isinstance(spec, OPTSpec)
        b, h, proj = self.base, spec.hidden_size, spec.word_embed_proj_dim
        parts = [
            Part(f"{b}.embed_tokens", f"{b}.embed_tokens", NodeKind.EMBEDDING, blk.embedding(spec.vocab_size, proj)),
            Part(f"{b}:positions", b, NodeKind.POSITIONS, opt_positions(blk.keys_full())),
            Part(f"{b}.embed_positions", f"{b}.embed_positions", NodeKind.EMBEDDING,
                 learned_positions(spec.max_positions, h)),
        ]
        if proj != h:
            parts.append(Part(f"{b}.project_in", f"{b}.project_in", NodeKind.LINEAR,
                              blk.linear(blk.TOKENS, proj, h, bias=False)))
        parts.append(Part(f"{b}:embed_add", b, NodeKind.ELEMENTWISE, embed_add(h), group=EMBED_GROUP, label="embed"))
        return parts

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, OPTSpec)
        h, H, D, ffn, t = spec.hidden_size, spec.num_heads, spec.head_dim, spec.intermediate_size, blk.TOKENS
        keys, bias, affine = blk.keys_full(), spec.enable_bias, spec.layer_norm_affine
        a = ".self_attn"
        return [
            Part(".self_attn_layer_norm", ".self_attn_layer_norm", NodeKind.NORM, layer_norm(t, h, affine)),
            Part(f"{a}.q_proj", f"{a}.q_proj", NodeKind.LINEAR, blk.linear(t, h, h, bias), ATTN),
            # q_proj(x) * scaling
            Part(f"{a}:q_scale", a, NodeKind.ELEMENTWISE, ops.elementwise("mul", t * h), ATTN),
            Part(f"{a}.k_proj", f"{a}.k_proj", NodeKind.LINEAR, blk.linear(t, h, h, bias), ATTN),
            Part(f"{a}.v_proj", f"{a}.v_proj", NodeKind.LINEAR, blk.linear(t, h, h, bias), ATTN),
            Part(f"{a}:kv_cache", a, NodeKind.KV_CACHE, blk.kv_cache(H, D, blk.cached_full()), ATTN),
            # eager attention is called with scaling=1.0: the multiplication still runs
            Part(f"{a}:scores", a, NodeKind.ATTN_SCORES, blk.attn_scores(H, D, keys, kv_heads=H), ATTN),
            Part(f"{a}:softmax", a, NodeKind.ATTN_SOFTMAX, blk.attn_softmax(H, keys), ATTN),
            Part(f"{a}:context", a, NodeKind.ATTN_CONTEXT, blk.attn_context(H, D, keys, kv_heads=H), ATTN),
            Part(f"{a}.out_proj", f"{a}.out_proj", NodeKind.LINEAR, blk.linear(t, h, h, bias), ATTN),
            Part(":residual", "", NodeKind.RESIDUAL, blk.residual(h)),
            Part(".final_layer_norm", ".final_layer_norm", NodeKind.NORM, layer_norm(t, h, affine)),
            Part(".fc1", ".fc1", NodeKind.LINEAR, blk.linear(t, h, ffn, bias), MLP),
            Part(".activation_fn", ".activation_fn", NodeKind.ACTIVATION,
                 activation_counts(spec.activation, t * ffn), MLP),
            Part(".fc2", ".fc2", NodeKind.LINEAR, blk.linear(t, ffn, h, bias), MLP),
        ]

    def tail_parts(self, spec: ArchSpec) -> list[Part]:
        assert isinstance(spec, OPTSpec)
        b, h, proj, t = self.base, spec.hidden_size, spec.word_embed_proj_dim, blk.TOKENS
        parts: list[Part] = []
        if spec.final_layer_norm:
            parts.append(Part(f"{b}.final_layer_norm", f"{b}.final_layer_norm", NodeKind.NORM,
                              layer_norm(t, h, spec.layer_norm_affine)))
        if proj != h:
            parts.append(Part(f"{b}.project_out", f"{b}.project_out", NodeKind.LINEAR,
                              blk.linear(t, h, proj, bias=False)))
        head = blk.lm_head(t, proj, spec.vocab_size, tied=spec.tie_word_embeddings)
        parts.append(Part("lm_head", "lm_head", NodeKind.LM_HEAD, head))
        return parts

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = {**data, "hidden_size": 64, "ffn_dim": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
               "vocab_size": 128, "max_position_embeddings": 64}
        proj = data.get("word_embed_proj_dim")
        if proj is not None and proj != data.get("hidden_size"):
            out["word_embed_proj_dim"] = 32  # keep project_in / project_out
        else:
            out["word_embed_proj_dim"] = 64
        return out

