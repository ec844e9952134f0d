"""ChatGLM-6B (model_type ``chatglm``, the first generation): supported STATICALLY from its config.

transformers has no ChatGLM modeling code (the Hub model runs remote code, ``modeling_chatglm.py``), so
this family cannot be checked by the validation module. The graph follows THUDM's remote code op by op;
its parameter total is tested against the published 6,173,286,400 of chatglm-6b.

Fields: ``hidden_size``, ``num_layers``, ``num_attention_heads``, ``inner_hidden_size`` (default 4*hidden),
``vocab_size``, ``position_encoding_2d`` (default true), ``tie_word_embeddings`` (default true: the published
total counts the lm_head weight once, with the word embeddings). Quirks of the remote code:

- both residuals are ``normed_input * alpha + output`` with alpha = sqrt(2 * num_layers): the residual is
  the NORMED input. LayerNorms; biased ``attention.query_key_value`` (hidden -> 3*hidden), ``attention.dense``,
  ``mlp.dense_h_to_4h`` and ``mlp.dense_4h_to_h``; gelu in its tanh form (``gelu_impl``); no lm_head bias.
- Rotary (``position_encoding_2d``): each head's dims split in two halves of head_dim/2, each rotated
  (rotate_half) with its own position ids (positions and block positions): per half per q/k,
  x*cos + rotate_half(x)*sin; cos / sin rows are gathered per token (``F.embedding``). Without 2D, one
  rotation over the whole head_dim.
- Attention: q / (sqrt(head_dim) * (layer_id + 1)); scores as baddbmm with beta=0 (the empty input
  is ignored: a plain product, as the measuring side counts it); the mask is a masked_fill (no arithmetic); the scores
  * (layer_id + 1); softmax; probs @ v. Every head's K and V are cached.

Approximations (not checkable without the remote code): each layer's rotary table (``cos``/``sin`` of
positions x inv_freq) is counted for P + S positions on every forward, while the remote code caches it
per layer and recomputes only when the sequence grows (an upper bound); the prefix-LM mask built on the
prefill (``attention_mask < 0.5``) is counted as B*S*S CMP; its Python-side position ids are not counted.
ChatGLM2/3 configs (``multi_query_attention``, ``ffn_hidden_size``, ``padded_vocab_size``) are a different
architecture and are rejected with an error.
"""

from __future__ import annotations

from typing import Any

from .. import ops
from ..errors import ConfigError, ValidationUnavailableError
from ..facts import StateKind
from ..formula import B, P, S
from ..graph import blocks as blk
from ..graph.blocks import Part
from ..graph.node import ATTN, MLP, NodeKind
from ..ops import Counts
from ..spec import ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate, attention_core, part

_CHATGLM2_FIELDS = ("multi_query_attention", "ffn_hidden_size", "padded_vocab_size", "kv_channels")


class ChatGLMSpec(ArchSpec):
    position_encoding_2d: bool = True


@register
class ChatGLM(DecoderTemplate):
    """chatglm (ChatGLM-6B v1), from its config alone: no transformers implementation exists to validate
    against (see the module docstring)."""

    name = "chatglm"
    model_types = ("chatglm",)
    base = "transformer"
    layer_prefix = "transformer.layers."
    embed_name = "word_embeddings"
    final_norm_name = "final_layernorm"

    def spec(self, data: dict[str, Any], name: str = "") -> ChatGLMSpec:
        f = Fields(data, "chatglm")
        found = [k for k in _CHATGLM2_FIELDS if k in data]
        if found:
            raise ConfigError(
                f"chatglm config has {', '.join(repr(k) for k in found)}: that is a ChatGLM2/ChatGLM3 layout "
                "(multi-query attention, SwiGLU, RMSNorm), which is not supported; only ChatGLM-6B (v1) is"
            )
        hidden = f.int("hidden_size")
        heads = f.int("num_attention_heads")
        f.divisible(hidden, heads, "hidden_size must be a multiple of num_attention_heads")
        head_dim = hidden // heads
        two_d = f.bool("position_encoding_2d", default=True)
        rotary = head_dim // 2 if two_d else head_dim  # one rotary table's width
        if rotary % 2:
            raise ConfigError(f"chatglm config: the rotary width {rotary} (head_dim{'/2' if two_d else ''}, head_dim = "
                              "hidden_size / num_attention_heads) must be even: check hidden_size and num_attention_heads")
        return ChatGLMSpec(
            model_type="chatglm", family=self.name, name=name, hidden_size=hidden,
            num_layers=f.int("num_layers", "num_hidden_layers"), num_heads=heads, num_kv_heads=heads,
            head_dim=head_dim, intermediate_size=f.int("inner_hidden_size", default=4 * hidden),
            vocab_size=f.int("vocab_size"), norm="layernorm", activation="gelu_tanh", gated_mlp=False,
            qkv_bias=True, o_bias=True, mlp_bias=True, tie_word_embeddings=f.bool("tie_word_embeddings", default=True),
            rotary_dim=rotary, position_encoding_2d=two_d,
            notes=("chatglm: counted statically from THUDM's remote code (no transformers implementation to "
                   "validate against); its rotary table and prefill mask are approximations",),
        )

    # --- graph ------------------------------------------------------------------------------------
    def mask_counts(self, spec: ArchSpec) -> Counts:
        return ops.elementwise("cmp", B * S * S)  # prefix-LM mask of the prefill: (mask < 0.5) over B x S x S

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        return super().head_of_model_parts(spec)[:2]  # the embedding and the mask: each layer has its rotary table

    def rope(self, spec: ChatGLMSpec) -> Counts:
        """apply_rotary_pos_emb_index on q and k, once per half with 2D positions (else once)."""
        H, r, t = spec.num_heads, spec.rotary_dim, blk.TOKENS
        calls = 2 if spec.position_encoding_2d else 1
        # per call: cos and sin rows gathered per token (2 * t * r), then q and k rotated
        per_call = ops.elementwise("gather", 2 * t * r) + blk.apply_rope(H, r) + blk.apply_rope(H, r)
        return per_call * calls

    def layer_parts(self, spec: ArchSpec, layer: LayerSpec) -> list[Part]:
        assert isinstance(spec, ChatGLMSpec)
        h, H, D, inter, t = spec.hidden_size, spec.num_heads, spec.head_dim, spec.intermediate_size, blk.TOKENS
        keys = P + S
        a, m = ".attention", ".mlp"
        # freqs = einsum(positions, inv_freq): (P+S) * r/2 MULT; emb = cat(freqs, freqs); emb.cos(), emb.sin()
        r = spec.rotary_dim
        table = ops.elementwise("mul", keys * (r // 2)) + ops.elementwise("cos", keys * r) + ops.elementwise("sin", keys * r)
        scores = (
            ops.elementwise("div", t * H * D)  # q / (sqrt(d) * (layer_id + 1))
            + ops.matmul(S, keys, D, batch=B * H)  # baddbmm(empty, q, k^T, beta=0): beta=0 adds no bias
            + ops.elementwise("mul", B * H * S * keys)  # scores * (layer_id + 1)
            + blk.state_read(StateKind.KEYS_VALUES, B * H * keys * D)  # the cached keys
        )
        residual = ops.elementwise("mul", t * h) + ops.elementwise("add", t * h)  # normed_input * alpha + output
        return [
            self.norm_part(spec, ".input_layernorm"),
            part(f"{a}.query_key_value", NodeKind.LINEAR, blk.linear(t, h, 3 * h, True), ATTN),
            part(f"{a}.rotary_emb", NodeKind.ROTARY, table, ATTN),
            part(f"{a}:rope", NodeKind.ROPE, self.rope(spec), ATTN),
            *attention_core(a, H, D, keys, P + S, scores=scores),
            part(f"{a}.dense", NodeKind.LINEAR, blk.linear(t, h, h, True), ATTN),
            part(":residual_attn", NodeKind.RESIDUAL, residual),
            self.norm_part(spec, ".post_attention_layernorm"),
            part(f"{m}.dense_h_to_4h", NodeKind.LINEAR, blk.linear(t, h, inter, True), MLP),
            part(f"{m}:act", NodeKind.ACTIVATION, ops.elementwise("gelu_tanh", t * inter), MLP),
            part(f"{m}.dense_4h_to_h", NodeKind.LINEAR, blk.linear(t, inter, h, True), MLP),
            part(":residual_mlp", NodeKind.RESIDUAL, residual),
        ]

    # --- validation -------------------------------------------------------------------------------
    def hf_config(self, data: dict[str, Any]) -> dict[str, Any]:
        raise ValidationUnavailableError(
            "chatglm has no transformers implementation (the Hub model runs remote code), so it cannot be "
            "validated; it is counted statically and its params are tested against the published total"
        )

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        return self.hf_config(data)
