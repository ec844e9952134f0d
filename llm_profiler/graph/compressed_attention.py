"""Compressed attention (DeepSeek-V4's CSA and HCA): a KV compressor that pools every ``m`` tokens into one
entry, a lightning indexer that picks the top-k compressed entries per query, and the cache states both keep.

Every function follows the eager transformers 5.23 code (``modeling_deepseek_v4.py``) op by op and returns
``Counts`` (formulas in B, S, P), like ``graph.blocks``.

Counting the compressed entries. A compressor of ratio ``m`` buffers the projected tokens in its cache layer
(``DeepseekV4HCACache.store_compression_weights``) and closes one window per ``m`` tokens seen, whatever the
forward they arrived in; so after a forward at (B, S, P) the layer holds

- ``T = floor((P + S) / m)`` compressed entries (``compressed``), of which this forward emitted
  ``floor((P + S) / m) - floor(P / m)`` (``new_windows``), and
- ``(P + S) - m * T`` buffered tokens (``buffered``) waiting for their window to fill.

``floor(x / m)`` is written ``ceil_div(x - m + 1, m)`` (exact for every integer x >= 0): the formula
language's one rounding atom. ``present(x) = min(x, 1)`` is 1 when a count x >= 0 is positive, else 0: the
branches transformers takes on a shape (``if chunk_kv.shape[1] > 0``, ``if seq_len == 1 or
compressed_len == 0``) are products with it.

Cache states (what ``DeepseekV4HCACache`` / ``DeepseekV4CSACache`` hold per layer besides the sliding
window's keys): the compressed entries (``COMPRESSED``: the compressor's pooled KV and the indexer's pooled
keys, both in the cache layer's ``compressed_kv``), and the compressors' pending tokens and overlap slices
(``COMPRESSOR``: the projected kv and gate of the buffered tokens, ``buffer_kv`` / ``buffer_gate``, and a
CSA window's carried-over first-half kv and gate, ``overlap_kv`` / ``overlap_gate``). Validation maps those
attributes to these kinds (``validation.measure.STATE_ATTRIBUTES``).
"""

from __future__ import annotations

from .. import ops
from ..formula import B, Formula, P, S, ceil_div, fmin
from ..metrics import ACT, CMP
from ..ops import Counts
from .blocks import TOKENS, apply_rope, rms_norm, with_params


class CompressedStateKind:
    """Cache-state kinds of compressed attention (beside ``facts.StateKind``'s)."""

    COMPRESSED = "compressed"  # pooled entries, one per m tokens (the compressor's KV, the indexer's keys)
    COMPRESSOR = "compressor_state"  # tokens buffered until their window closes, and CSA's overlap slices


def floor_div(x: Formula, m: int) -> Formula:
    """floor(x / m) for an integer x >= 0, as the ceil_div atom: ceil((x - m + 1) / m)."""
    return ceil_div(x - (m - 1), m)


def present(count: Formula) -> Formula:
    """1 when an integer count >= 0 is positive, else 0."""
    return fmin(count, 1)


def compressed(m: int) -> Formula:
    """Compressed entries a ratio-m compressor holds after the forward: floor((P + S) / m)."""
    return floor_div(P + S, m)


def new_windows(m: int) -> Formula:
    """Windows this forward closes: floor((P + S) / m) - floor(P / m)."""
    return compressed(m) - floor_div(P, m)


def buffered(m: int) -> Formula:
    """Tokens waiting in the compressor's buffer after the forward: (P + S) mod m."""
    return P + S - m * compressed(m)


def topk_scan(rows: Formula, n: Formula, k: Formula) -> Counts:
    """``ops.topk`` for a symbolic k: k max scans over what is left, k*(2n - k - 1)/2 CMP per row; writes
    k values and k indices per row."""
    return Counts({CMP: rows * k * (2 * n - k - 1) / 2, ACT: 2 * rows * k})


def rotary_rows(rows: Formula, rotary_dim: int) -> Counts:
    """DeepseekV4RotaryEmbedding.forward for ``rows`` positions: freqs = positions * inv_freq, cos, sin,
    each times attention_scaling: 3 MULT and 2 EXP over rows * rotary_dim / 2 (no cat(freqs, freqs))."""
    n = rows * (rotary_dim // 2)
    return ops.total(ops.elementwise(op, n) for op in ("mul", "cos", "mul", "sin", "mul"))


def pooling(m: int, width: int, head_dim: int, overlap: bool) -> Counts:
    """One compressor's own forward (``DeepseekV4HCACompressor`` / ``DeepseekV4CSACompressor`` /
    ``DeepseekV4Indexer``) on the windows it closes, n = new_windows(m):

    gate + position_bias: B*n*m*width ADD; the gated pooling over the window's slots (m, or 2m with CSA's
    overlap: the previous window's first half joins the current second half, in head_dim-wide slots):
    softmax over the slots of B*n*head_dim rows, kv * probs (one MULT per slot element), sum over the
    slots (the entries' positions: ``entry_positions``)."""
    n = new_windows(m)
    slots = 2 * m if overlap else m
    rows = B * n * head_dim
    return (ops.elementwise("add", B * n * m * width) + ops.softmax(rows, slots)
            + ops.elementwise("mul", rows * slots) + ops.reduce_sum(rows, slots))


def entry_positions(m: int, mask: str | None = None) -> Counts:
    """What a compressor computes once per position, not per sequence (``parts`` rule ``entry_positions``):
    the new entries' positions arange(n) * m + first (n MULT, n ADD); ``mask`` "hca": HCA's causal mask over
    its entries (``hca_block_bias``); "indexer": the indexer's threshold and future mask (``indexer_mask``)."""
    n = new_windows(m)
    out = ops.elementwise("mul", n) + ops.elementwise("add", n)
    if mask == "hca":
        out = out + hca_block_bias(m)
    elif mask == "indexer":
        out = out + indexer_mask(m)
    return out


def indexer_mask(m: int) -> Counts:
    """The indexer's future mask when it holds T > 0 keys: the threshold, entry >= threshold over S x T (CMP;
    masked_fill: a copy)."""
    t = compressed(m)
    return causal_threshold(m) * present(t) + ops.elementwise("cmp", S * t)


def causal_threshold(m: int) -> Counts:
    """(position_ids + 1) // m: S ADD and S floor divisions (position_ids is one row for the batch)."""
    return ops.elementwise("add", S) + ops.elementwise("floor_divide", S)


def hca_block_bias(m: int) -> Counts:
    """HCA's mask over its compressed entries, built only when S > 1 and T > 0 (else the attention pads its
    mask with zeros, a copy): the threshold, then entry >= threshold over S x T (CMP); masked_fill copies."""
    t = compressed(m)
    when = present(S - 1) * present(t)
    return causal_threshold(m) * when + ops.elementwise("cmp", S * t * present(S - 1))


def compressor_parts_counts(m: int, width: int, head_dim: int, rotary_dim: int, overlap: bool,
                            params: int) -> dict[str, Counts]:
    """The submodules every compressor runs on its closed windows: ``kv_norm`` (RMSNorm over head_dim of the
    B*n pooled entries), ``rotary_emb`` (B*n positions), ``:rope`` (the entries' trailing rotary slice), and
    the compressor's own pooling (with its ``position_bias``, m x width parameters)."""
    n = B * new_windows(m)
    return {
        "own": with_params(pooling(m, width, head_dim, overlap), params),
        "kv_norm": rms_norm(n, head_dim),
        "rotary_emb": rotary_rows(n, rotary_dim),
        "rope": apply_rope(1, rotary_dim, rows=n),
    }


def indexer_selection(m: int, top_k: int) -> Counts:
    """The indexer's choice among its T compressed keys (``DeepseekV4Indexer.forward`` after scoring and the
    mask, ``indexer_mask``), with k = min(top_k, T): top-k of T per (batch, query) row, invalid = index >=
    threshold (B*S*k CMP) and where(invalid, -1, index) (B*S*k written); with T = 0 a top-0 of nothing."""
    t = compressed(m)
    k = fmin(t, top_k)
    rows = TOKENS
    return topk_scan(rows, t, k) + ops.elementwise("cmp", rows * k) + ops.elementwise("select", rows * k)


def csa_block_bias(m: int, top_k: int) -> Counts:
    """CSA's mask from the indexer's picks (``DeepseekV4CSACompressor.forward``): valid = index >= 0
    (B*S*k CMP), where(valid, index, T) (B*S*k written); new_full and scatter_ are copies."""
    k = fmin(compressed(m), top_k)
    return ops.elementwise("cmp", TOKENS * k) + ops.elementwise("select", TOKENS * k)


def indexer_scores(heads: int, head_dim: int, m: int) -> Counts:
    """``DeepseekV4IndexerScorer.forward`` own ops (weights_proj is its submodule), T = compressed(m):
    q @ k^T as a bmm of B*S (heads x head_dim) @ (head_dim x T); relu and * softmax_scale over B*S*heads*T;
    weights * weights_scaling (B*S*heads MULT); scores * weights (B*S*heads*T MULT); sum over the heads."""
    t = compressed(m)
    n = TOKENS * heads * t
    return (ops.matmul(heads, t, head_dim, batch=TOKENS) + ops.elementwise("relu", n) + ops.elementwise("mul", n)
            + ops.elementwise("mul", TOKENS * heads) + ops.elementwise("mul", n) + ops.reduce_sum(TOKENS * t, heads))


__all__ = [
    "CompressedStateKind", "buffered", "causal_threshold", "compressed", "compressor_parts_counts",
    "csa_block_bias", "entry_positions", "floor_div", "hca_block_bias", "indexer_mask", "indexer_scores",
    "indexer_selection", "new_windows",
    "pooling", "present", "rotary_rows", "topk_scan",
]
