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
from .template import DecoderTemplate, embed_add_part, part, plain_mlp, renamed

POSITION_OFFSET = 2  # OPTLearnedPositionalEmbedding.offset


class OPTSpec(ArchSpec):
    max_positions: int
    word_embed_proj_dim: int
    enable_bias: bool = True
    layer_norm_affine: bool = True
    final_layer_norm: bool = True


@register
class OPT(DecoderTemplate):
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
            model_type="opt", family=self.name, name=name, hidden_size=hidden,
            num_layers=f.int("num_hidden_layers"), num_heads=heads, num_kv_heads=heads, head_dim=hidden // heads,
            intermediate_size=f.int("ffn_dim"), vocab_size=f.int("vocab_size"), norm="layernorm",
            activation=read_activation(f, "activation_function", default="relu"), gated_mlp=False,
            qkv_bias=bias, o_bias=bias, mlp_bias=bias, tie_word_embeddings=f.bool("tie_word_embeddings", default=True),
            max_positions=f.int("max_position_embeddings", default=2048),
            word_embed_proj_dim=f.int("word_embed_proj_dim", default=hidden), enable_bias=bias,
            layer_norm_affine=f.bool("layer_norm_elementwise_affine", default=True),
            final_layer_norm=pre_ln and not f.bool("_remove_final_layer_norm", default=False),
        )

    # --- graph ------------------------------------------------------------------------------------
    def norm(self, spec: ArchSpec, rows: Formula, n: int) -> Counts:
        assert isinstance(spec, OPTSpec)
        if spec.layer_norm_affine:
            return blk.layer_norm(rows, n)
        return blk.with_params(ops.layer_norm(rows, n, weight=False, bias=False), 0)  # no weight, no bias

    def mask_counts(self, spec: ArchSpec) -> Counts:
        # position ids over the all-ones mask of B x (P+S): cumsum (B*(P+S-1) ADD), * mask, - 1; the causal mask
        n = B * (P + S)
        return ops.cumsum(B, P + S) + ops.elementwise("mul", n) + ops.elementwise("sub", n) + blk.causal_mask(P + S)

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        assert isinstance(spec, OPTSpec)
        b, h, proj = self.base, spec.hidden_size, spec.word_embed_proj_dim
        parts = [
            part(f"{b}.embed_tokens", NodeKind.EMBEDDING, blk.embedding(spec.vocab_size, proj)),
            part(f"{b}:positions", NodeKind.POSITIONS, self.mask_counts(spec)),
            # position_ids + offset (B*S ADD), then a B*S-row lookup of the (max_positions + 2) x hidden table
            part(f"{b}.embed_positions", NodeKind.EMBEDDING,
                 ops.elementwise("add", B * S) + blk.embedding(spec.max_positions + POSITION_OFFSET, h)),
        ]
        if proj != h:
            parts.append(part(f"{b}.project_in", NodeKind.LINEAR, blk.linear(blk.TOKENS, proj, h, bias=False)))
        return [*parts, embed_add_part(b, h)]

    def attention_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        a = ".self_attn"
        # q_proj(x) * scaling; eager attention is then called with scaling=1.0: that multiplication still runs
        q_scale = part(f"{a}:q_scale", NodeKind.ELEMENTWISE, ops.elementwise("mul", blk.TOKENS * spec.hidden_size), ATTN)
        parts = renamed(super().attention_parts(spec, layer), {f"{a}.o_proj": f"{a}.out_proj"})
        return [parts[0], q_scale, *parts[1:]]

    def mlp_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return plain_mlp(spec, ".fc1", ".activation_fn", ".fc2")

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        return [self.norm_part(spec, ".self_attn_layer_norm"), *self.attention_parts(spec, layer),
                part(":residual", NodeKind.RESIDUAL, blk.residual(spec.hidden_size)),
                self.norm_part(spec, ".final_layer_norm"), *self.ffn_parts(spec, layer)]

    def tail_parts(self, spec: ArchSpec) -> list[Part]:
        assert isinstance(spec, OPTSpec)
        b, h, proj, t = self.base, spec.hidden_size, spec.word_embed_proj_dim, blk.TOKENS
        parts = [self.norm_part(spec, f"{b}.final_layer_norm")] if spec.final_layer_norm else []
        if proj != h:
            parts.append(part(f"{b}.project_out", NodeKind.LINEAR, blk.linear(t, h, proj, bias=False)))
        return [*parts, part("lm_head", NodeKind.LM_HEAD, blk.lm_head(t, proj, spec.vocab_size, tied=spec.tie_word_embeddings))]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        proj = data.get("word_embed_proj_dim")
        # keep project_in / project_out where the real model has them
        return {**data, "hidden_size": 64, "ffn_dim": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
                "vocab_size": 128, "max_position_embeddings": 64,
                "word_embed_proj_dim": 32 if proj is not None and proj != data.get("hidden_size") else 64}
