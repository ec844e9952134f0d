"""The GPT-2 family (model_type gpt2): learned positions, Conv1D projections, fused qkv, post-LN-free pre-LN.

Quirks, all from transformers' GPT2Config / modeling_gpt2.py (5.23):

- legacy field names: n_embd, n_layer, n_head, n_positions (aliases of hidden_size, num_hidden_layers,
  num_attention_heads, max_position_embeddings); ``n_inner: null`` means 4 * n_embd.
- Conv1D layers (c_attn, c_proj, c_fc): ``addmm(bias, x, W)`` with W stored (in, out): the same counts as
  a biased nn.Linear. c_attn is the fused q/k/v projection (hidden -> 3 * hidden).
- learned position embeddings ``wpe`` (embed scope): looked up for the S new positions only (1 x S rows,
  shared by the batch), then added to the token embeddings (B*S*hidden ADD, in the base model).
- ``activation_function`` (default gelu_new) is a Python expression of 8 aten ops (graph/activations.py).
- eager attention always multiplies the scores by ``scaling`` (1.0 without ``scale_attn_weights``), so the
  flag changes values, not counts. ``reorder_and_upcast_attn`` instead folds the scaling into a baddbmm
  (alpha) that has no bias (beta = 0): one MULT per score only where the scaling differs from 1.
- the LM head is tied to wte by default (``tie_word_embeddings``).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from .. import ops
from ..errors import ConfigError
from ..formula import B, S
from ..graph import NodeKind
from ..graph import blocks as blk
from ..graph.activations import read_activation
from ..graph.blocks import Part
from ..graph.node import ATTN
from ..spec import ArchSpec, LayerSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate, attention_core, embed_add_part, part, plain_mlp


class GPT2Spec(ArchSpec):
    max_positions: int  # rows of the learned position table wpe
    reorder_and_upcast_attn: bool = False
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False


@register
class GPT2(DecoderTemplate):
    name = "gpt2"
    model_types = ("gpt2",)
    base = "transformer"
    layer_prefix = "transformer.h."
    embed_name = "wte"
    final_norm_name = "ln_f"

    def spec(self, data: dict[str, Any], name: str = "") -> GPT2Spec:
        f = Fields(data, data["model_type"])
        hidden = f.int("n_embd", "hidden_size")
        heads = f.int("n_head", "num_attention_heads")
        f.divisible(hidden, heads, "n_embd must be a multiple of n_head")
        if f.bool("add_cross_attention", default=False):
            raise ConfigError("gpt2 config: add_cross_attention (an encoder-decoder GPT-2) is not supported; "
                              "profile the decoder-only model (add_cross_attention: false)")
        return GPT2Spec(
            model_type="gpt2", family=self.name, name=name, hidden_size=hidden,
            num_layers=f.int("n_layer", "num_hidden_layers"), num_heads=heads, num_kv_heads=heads,
            head_dim=hidden // heads, intermediate_size=f.int("n_inner", default=4 * hidden),  # null -> 4 * n_embd
            vocab_size=f.int("vocab_size", default=50257), norm="layernorm",
            activation=read_activation(f, "activation_function", default="gelu_new"), gated_mlp=False,
            qkv_bias=True, o_bias=True, mlp_bias=True, tie_word_embeddings=f.bool("tie_word_embeddings", default=True),
            max_positions=f.int("n_positions", "max_position_embeddings", default=1024),
            reorder_and_upcast_attn=f.bool("reorder_and_upcast_attn", default=False),
            scale_attn_weights=f.bool("scale_attn_weights", default=True),
            scale_attn_by_inverse_layer_idx=f.bool("scale_attn_by_inverse_layer_idx", default=False),
        )

    # --- graph ------------------------------------------------------------------------------------
    def layer_key(self, spec: ArchSpec, index: int, layer: LayerSpec) -> Hashable:
        """Whether the reordered attention's baddbmm alpha (the scaling) differs from 1 on this layer: layers
        differ only where it is 1 on some and not others."""
        assert isinstance(spec, GPT2Spec)
        if not spec.reorder_and_upcast_attn:
            return True  # eager path: the scaling is a separate multiplication on every layer
        scaling = spec.head_dim ** -0.5 if spec.scale_attn_weights else 1.0
        if spec.scale_attn_by_inverse_layer_idx:
            scaling /= float(index + 1)
        return scaling != 1.0

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        assert isinstance(spec, GPT2Spec)
        b, h = self.base, spec.hidden_size
        return [
            *super().head_of_model_parts(spec),
            # one row per new position (position_ids is 1 x S), shared by the batch
            part(f"{b}.wpe", NodeKind.EMBEDDING, blk.embedding(spec.max_positions, h, rows=S)),
            embed_add_part(b, h),
        ]

    def keyed_layer_parts(self, spec: ArchSpec, alpha_scaled: bool) -> list[Part]:
        assert isinstance(spec, GPT2Spec)
        h, H, D, t, keys = spec.hidden_size, spec.num_heads, spec.head_dim, blk.TOKENS, blk.keys_full()
        scores = None
        if spec.reorder_and_upcast_attn:  # baddbmm(empty, q, k^T, beta=0, alpha=scaling), then + mask
            scores = ops.scaled_matmul(S, keys, D, batch=B * H, bias=False, alpha=alpha_scaled)
            scores = scores + ops.elementwise("add", B * H * S * keys)
        a = ".attn"
        return [
            self.norm_part(spec, ".ln_1"),
            part(f"{a}.c_attn", NodeKind.LINEAR, blk.linear(t, h, 3 * h, True), ATTN),
            *attention_core(a, H, D, keys, blk.cached_full(), scores=scores),
            part(f"{a}.c_proj", NodeKind.LINEAR, blk.linear(t, h, h, True), ATTN),
            part(":residual", NodeKind.RESIDUAL, blk.residual(h)),
            self.norm_part(spec, ".ln_2"),
            *plain_mlp(spec, ".mlp.c_fc", ".mlp.act", ".mlp.c_proj"),
        ]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = {**data, "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 128, "n_positions": 64}
        for legacy in ("hidden_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings", "n_ctx"):
            out.pop(legacy, None)
        if data.get("n_inner") is not None:
            out["n_inner"] = 96  # keep an explicit inner size that differs from 4 * n_embd
        return out
