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

from typing import Any

from .. import ops
from ..errors import ConfigError
from ..formula import B, Formula, S
from ..graph import Graph, Node, NodeKind
from ..graph import blocks as blk
from ..graph.activations import activation_counts, read_activation
from ..graph.blocks import Part
from ..graph.node import ATTN, EMBED_GROUP, MLP
from ..ops import Counts
from ..spec import ArchSpec
from . import register
from .fields import Fields
from .template import DecoderTemplate as LlamaStyle


class GPT2Spec(ArchSpec):
    max_positions: int  # rows of the learned position table wpe
    reorder_and_upcast_attn: bool = False
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False


def layer_norm(rows: Formula, n: int, affine: bool = True) -> Counts:
    """nn.LayerNorm over n features; ``affine`` False (elementwise_affine=False): no weight, no bias."""
    if affine:
        return blk.layer_norm(rows, n)
    return blk.with_params(ops.layer_norm(rows, n, weight=False, bias=False), 0)


def embed_add(hidden: int) -> Counts:
    """token embeddings + position embeddings: B*S*hidden ADD."""
    return ops.elementwise("add", B * S * hidden)


@register
class GPT2(LlamaStyle):
    name = "gpt2"
    model_types = ("gpt2",)
    base = "transformer"
    layer_prefix = "transformer.h."

    def spec(self, data: dict[str, Any], name: str = "") -> GPT2Spec:
        f = Fields(data, data["model_type"])
        hidden = f.int("n_embd", "hidden_size")
        heads = f.int("n_head", "num_attention_heads")
        f.divisible(hidden, heads, "n_embd must be a multiple of n_head")
        if f.bool("add_cross_attention", default=False):
            raise ConfigError("gpt2 config: add_cross_attention (an encoder-decoder GPT-2) is not supported; "
                              "profile the decoder-only model (add_cross_attention: false)")
        return GPT2Spec(
            model_type="gpt2",
            family=self.name,
            name=name,
            hidden_size=hidden,
            num_layers=f.int("n_layer", "num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=heads,
            head_dim=hidden // heads,
            intermediate_size=f.int("n_inner", default=4 * hidden),  # null -> 4 * n_embd
            vocab_size=f.int("vocab_size", default=50257),
            norm="layernorm",
            activation=read_activation(f, "activation_function", default="gelu_new"),
            gated_mlp=False,
            qkv_bias=True,
            o_bias=True,
            mlp_bias=True,
            tie_word_embeddings=f.bool("tie_word_embeddings", default=True),
            max_positions=f.int("n_positions", "max_position_embeddings", default=1024),
            reorder_and_upcast_attn=f.bool("reorder_and_upcast_attn", default=False),
            scale_attn_weights=f.bool("scale_attn_weights", default=True),
            scale_attn_by_inverse_layer_idx=f.bool("scale_attn_by_inverse_layer_idx", default=False),
        )

    # --- graph ------------------------------------------------------------------------------------
    def graph(self, spec: ArchSpec) -> Graph:
        # Layers differ only where the reordered attention's alpha is 1 on some layers and not others.
        nodes: list[Node] = [part.at("") for part in self.head_of_model_parts(spec)]
        templates: dict[bool, list[Part]] = {}
        for layer in range(spec.num_layers):
            key = self._alpha_scaled(spec, layer)
            if key not in templates:
                templates[key] = self.gpt2_layer_parts(spec, key)
            nodes.extend(part.at(f"{self.layer_prefix}{layer}", layer) for part in templates[key])
        nodes.extend(part.at("") for part in self.tail_parts(spec))
        return Graph(spec=spec, nodes=tuple(nodes), layer_prefix=self.layer_prefix)

    @staticmethod
    def _alpha_scaled(spec: ArchSpec, layer: int) -> bool:
        """Whether the reordered attention's baddbmm alpha (the scaling) differs from 1 on this layer."""
        assert isinstance(spec, GPT2Spec)
        if not spec.reorder_and_upcast_attn:
            return True  # eager path: the scaling is a separate multiplication on every layer
        scaling = spec.head_dim ** -0.5 if spec.scale_attn_weights else 1.0
        if spec.scale_attn_by_inverse_layer_idx:
            scaling /= float(layer + 1)
        return scaling != 1.0

    def head_of_model_parts(self, spec: ArchSpec) -> list[Part]:
        assert isinstance(spec, GPT2Spec)
        b, h = self.base, spec.hidden_size
        return [
            Part(f"{b}.wte", f"{b}.wte", NodeKind.EMBEDDING, blk.embedding(spec.vocab_size, h)),
            Part(f"{b}:positions", b, NodeKind.POSITIONS, self.mask_counts(spec)),
            # one row per new position (position_ids is 1 x S), shared by the batch
            Part(f"{b}.wpe", f"{b}.wpe", NodeKind.EMBEDDING, blk.embedding(spec.max_positions, h, rows=S)),
            Part(f"{b}:embed_add", b, NodeKind.ELEMENTWISE, embed_add(h), group=EMBED_GROUP, label="embed"),
        ]

    def gpt2_layer_parts(self, spec: ArchSpec, alpha_scaled: bool) -> list[Part]:
        assert isinstance(spec, GPT2Spec)
        h, H, D, inner, t = spec.hidden_size, spec.num_heads, spec.head_dim, spec.intermediate_size, blk.TOKENS
        keys = blk.keys_full()
        if spec.reorder_and_upcast_attn:
            # baddbmm(empty, q, k^T, beta=0, alpha=scaling), then + mask
            scores = ops.scaled_matmul(S, keys, D, batch=B * H, bias=False, alpha=alpha_scaled)
            scores = scores + ops.elementwise("add", B * H * S * keys)
        else:
            scores = blk.attn_scores(H, D, keys, kv_heads=H)
        a, m = ".attn", ".mlp"
        return [
            Part(".ln_1", ".ln_1", NodeKind.NORM, layer_norm(t, h)),
            Part(f"{a}.c_attn", f"{a}.c_attn", NodeKind.LINEAR, blk.linear(t, h, 3 * h, True), ATTN),
            Part(f"{a}:kv_cache", a, NodeKind.KV_CACHE, blk.kv_cache(H, D, blk.cached_full()), ATTN),
            Part(f"{a}:scores", a, NodeKind.ATTN_SCORES, scores, ATTN),
            Part(f"{a}:softmax", a, NodeKind.ATTN_SOFTMAX, blk.attn_softmax(H, keys), ATTN),
            Part(f"{a}:context", a, NodeKind.ATTN_CONTEXT, blk.attn_context(H, D, keys, kv_heads=H), ATTN),
            Part(f"{a}.c_proj", f"{a}.c_proj", NodeKind.LINEAR, blk.linear(t, h, h, True), ATTN),
            Part(":residual", "", NodeKind.RESIDUAL, blk.residual(h)),
            Part(".ln_2", ".ln_2", NodeKind.NORM, layer_norm(t, h)),
            Part(f"{m}.c_fc", f"{m}.c_fc", NodeKind.LINEAR, blk.linear(t, h, inner, True), MLP),
            Part(f"{m}.act", f"{m}.act", NodeKind.ACTIVATION, activation_counts(spec.activation, t * inner), MLP),
            Part(f"{m}.c_proj", f"{m}.c_proj", NodeKind.LINEAR, blk.linear(t, inner, h, True), MLP),
        ]

    def tail_parts(self, spec: ArchSpec) -> list[Part]:
        head = blk.lm_head(blk.TOKENS, spec.hidden_size, spec.vocab_size, tied=spec.tie_word_embeddings)
        return [
            Part(f"{self.base}.ln_f", f"{self.base}.ln_f", NodeKind.NORM, layer_norm(blk.TOKENS, spec.hidden_size)),
            Part("lm_head", "lm_head", NodeKind.LM_HEAD, head),
        ]

    def tiny(self, data: dict[str, Any]) -> dict[str, Any]:
        out = {**data, "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 128, "n_positions": 64}
        for legacy in ("hidden_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings"):
            out.pop(legacy, None)
        if data.get("n_inner") is not None:
            out["n_inner"] = 96  # keep an explicit inner size that differs from 4 * n_embd
        out.pop("n_ctx", None)
        return out
