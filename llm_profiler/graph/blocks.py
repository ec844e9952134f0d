"""Building blocks shared by the families: each returns the counts of one node as formulas in B, S, P.

Every formula follows the eager transformers computation op by op (see docs/flops.md) and calls the op
table (llm_profiler.ops), the same table the measuring side maps aten ops through. A block returns a
``Part``: a node relative to its owner, so one layer's parts are built once and stamped onto every layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from .. import ops
from ..metrics import CACHE, PARAMS
from ..ops import Counts
from ..symbols import B, P, S
from .activations import activation_counts
from .node import ATTN, MLP, Node, NodeKind

TOKENS = B * S  # rows every token-wise op sees


def keys_full() -> sympy.Expr:
    """Keys a full-attention layer attends to: the cache (P) plus the new tokens (S)."""
    return P + S


def keys_sliding(window: int) -> sympy.Expr:
    """Keys a sliding-window layer attends to in transformers' DynamicSlidingWindowLayer.

    The layer keeps the last ``window - 1`` tokens, so after a prefill of P it holds min(P, window-1)
    and attends to those plus the S new ones.
    """
    return sympy.Min(P, window - 1) + S


def cached_full() -> sympy.Expr:
    return P + S


def cached_sliding(window: int) -> sympy.Expr:
    """Tokens a sliding-window layer holds after the forward: the last window-1 of P+S."""
    return sympy.Min(P + S, window - 1)


@dataclass(frozen=True, slots=True)
class Part:
    """A node relative to an owner prefix: ``suffix`` is appended to the prefix for the path,
    ``module_suffix`` for the module whose forward runs the ops."""

    suffix: str
    module_suffix: str
    kind: str
    counts: Counts
    block: str | None = None

    def at(self, prefix: str, layer: int | None = None) -> Node:
        return Node(
            path=_join(prefix, self.suffix),
            module=_join(prefix, self.module_suffix),
            kind=self.kind,
            counts=self.counts,
            layer=layer,
            block=self.block,
        )


def _join(prefix: str, suffix: str) -> str:
    if not prefix:
        return suffix.lstrip(".")
    return prefix + suffix


def with_params(counts: Counts, params: int) -> Counts:
    out = Counts(counts)
    out[PARAMS] = sympy.Integer(params)
    return out


# --- nodes --------------------------------------------------------------------------------------


def embedding(vocab: int, hidden: int, rows: sympy.Expr = TOKENS) -> Counts:
    """A lookup: no arithmetic, writes rows x hidden; vocab x hidden parameters."""
    return with_params(ops.elementwise("gather", rows * hidden), vocab * hidden)


def linear(rows: sympy.Expr, in_features: int, out_features: int, bias: bool) -> Counts:
    """nn.Linear on ``rows`` tokens: one (rows x in) @ (in x out) product, the bias fused (addmm)."""
    return with_params(ops.matmul(rows, out_features, in_features, bias=bias),
                       in_features * out_features + (out_features if bias else 0))


def rms_norm(rows: sympy.Expr, n: int, plus_one: bool = False) -> Counts:
    """Eager RMSNorm over n features for ``rows`` rows, with a learned scale of n parameters."""
    return with_params(ops.rms_norm(rows, n, weight=True, plus_one=plus_one), n)


def layer_norm(rows: sympy.Expr, n: int, bias: bool = True) -> Counts:
    """nn.LayerNorm (aten.native_layer_norm) over n features, weight and optional bias."""
    return with_params(ops.layer_norm(rows, n, weight=True, bias=bias), n * (2 if bias else 1))


def rotary_table(rotary_dim: int, rows: sympy.Expr = S) -> Counts:
    """cos / sin tables of the rotary embedding (LlamaRotaryEmbedding.forward), for ``rows`` positions:

    freqs = position_ids[..., None] * inv_freq: rows * rotary_dim/2 MULT;
    emb = cat(freqs, freqs) (a copy); cos(emb), sin(emb): 2 * rows * rotary_dim EXP;
    each times attention_scaling: 2 * rows * rotary_dim MULT.
    """
    half = rotary_dim // 2
    return (
        ops.elementwise("mul", rows * half)
        + ops.elementwise("cos", rows * rotary_dim) + ops.elementwise("mul", rows * rotary_dim)
        + ops.elementwise("sin", rows * rotary_dim) + ops.elementwise("mul", rows * rotary_dim)
    )


def apply_rope(heads: int, rotary_dim: int, rows: sympy.Expr = TOKENS) -> Counts:
    """apply_rotary_pos_emb for one of q / k with ``heads`` heads: x * cos + rotate_half(x) * sin.

    Per head and token: x * cos: d MULT; rotate_half negates half: d/2 ADD (neg); * sin: d MULT; +: d ADD.
    """
    n = rows * heads * rotary_dim
    return (
        ops.elementwise("mul", n) + ops.elementwise("neg", rows * heads * (rotary_dim // 2))
        + ops.elementwise("mul", n) + ops.elementwise("add", n)
    )


def kv_cache(kv_heads: int, head_dim: int, cached_tokens: sympy.Expr) -> Counts:
    """K and V of every cached token: 2 * B * kv_heads * head_dim * tokens elements (the update is a copy)."""
    return Counts({CACHE: 2 * B * kv_heads * head_dim * cached_tokens})


def attn_scores(heads: int, head_dim: int, keys: sympy.Expr, scale: bool = True, mask: bool = True) -> Counts:
    """Eager scores: (q @ k^T) per head as a bmm of B*heads (S x d) @ (d x keys), times the scaling,
    plus the additive mask: B*heads*S*keys MULT and ADD each."""
    out = ops.matmul(S, keys, head_dim, batch=B * heads)
    n = B * heads * S * keys
    if scale:
        out = out + ops.elementwise("mul", n)
    if mask:
        out = out + ops.elementwise("add", n)
    return out


def attn_softmax(heads: int, keys: sympy.Expr) -> Counts:
    """Softmax over the keys of every (batch, head, query) row."""
    return ops.softmax(B * heads * S, keys)


def attn_context(heads: int, head_dim: int, keys: sympy.Expr) -> Counts:
    """probs @ v per head: a bmm of B*heads (S x keys) @ (keys x d)."""
    return ops.matmul(S, head_dim, keys, batch=B * heads)


def causal_mask(keys: sympy.Expr, sliding_window: int | None = None) -> Counts:
    """One call of transformers' create_causal_mask / create_sliding_window_causal_mask (eager):

    cache_position = arange(S) + P: S ADD; kv_idx = arange(keys) + offset: keys ADD;
    causal: kv_idx <= q_idx over S x keys: S*keys CMP;
    sliding overlay: q_idx - window: S ADD; kv_idx > q_idx - window: S*keys CMP; two bitwise ANDs
    (with the all-true start and with the causal part): 2*S*keys CMP;
    where(mask, 0, min) expands over the batch: writes B*S*keys (no arithmetic).
    """
    out = ops.elementwise("add", S) + ops.elementwise("add", keys) + ops.elementwise("cmp", S * keys)
    if sliding_window is not None:
        out = out + ops.elementwise("sub", S) + ops.elementwise("cmp", S * keys) + ops.elementwise("logic", 2 * S * keys)
    return out + ops.elementwise("select", B * S * keys)


def position_ids() -> Counts:
    """position_ids = arange(S) + past_seen_tokens: S ADD (once per forward, in the base model)."""
    return ops.elementwise("add", S)


def residual(hidden: int, count: int = 2) -> Counts:
    """``count`` residual additions of B*S*hidden each."""
    return ops.elementwise("add", count * TOKENS * hidden)


def activation(name: str, n: sympy.Expr) -> Counts:
    """The Hugging Face activation ``name`` (graph.activations.HF_ACTIVATIONS) over n elements."""
    return activation_counts(name, n)


def gate_product(intermediate: int) -> Counts:
    """act(gate) * up in a gated MLP: B*S*intermediate MULT."""
    return ops.elementwise("mul", TOKENS * intermediate)


__all__ = ["ATTN", "MLP", "NodeKind", "Part"]
