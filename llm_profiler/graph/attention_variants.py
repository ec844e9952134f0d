"""Shared pieces of the 2025 attention and expert variants: attention sinks, chunked attention, the clamped
SwiGLU, and the few elementwise ops they run that the op table (``llm_profiler.ops``) does not name yet.

Every function follows the eager transformers 5.23 code op by op and returns ``Counts`` (formulas in B, S,
P), like ``graph.blocks``:

- sinks (gpt_oss ``eager_attention_forward``): a learned logit per head is joined to each row of scores as
  one more column (``cat``, a copy), the row maximum over keys + 1 is subtracted, the softmax runs over keys
  + 1 columns and the sink column is dropped (a view) before ``probs @ v``.
- chunked attention (llama4): the cache layer of a chunked layer is transformers' ``DynamicSlidingWindowLayer``
  with the chunk as its window, so it keeps the last chunk - 1 tokens and the eager scores cover them plus
  the new tokens, like a sliding window; only the mask differs (``chunked_causal_mask``). A query attends
  to the keys of its own chunk only, but transformers computes and masks all of them.
- the clamped SwiGLU of gpt_oss experts (``GptOssExperts._apply_gate``).

The elementwise ops these families add (``clamp``: one CMP per bound given; ``floor_divide``: one DIV;
``floor``: one CMP; ``log1p``: one EXP) are in the op table (``llm_profiler.ops``), which the measuring side
maps aten ops through as well.
"""

from __future__ import annotations

from .. import ops
from ..facts import TensorClass, Weight
from ..formula import B, Formula, P, S, fmin
from ..ops import Counts
from .blocks import with_params

# --- elementwise ops the op table does not name -----------------------------------------------------


def clamp(n: Formula, bounds: int) -> Counts:
    """``x.clamp(min, max)`` over n elements (the op table's ``ops.clamp``)."""
    return ops.clamp(n, bounds)


def floor_divide(n: Formula) -> Counts:
    return ops.elementwise("floor_divide", n)


def floor(n: Formula) -> Counts:
    return ops.elementwise("floor", n)


def log1p(n: Formula) -> Counts:
    return ops.elementwise("log1p", n)


# --- attention sinks ------------------------------------------------------------------------------


def sinks(heads: int, keys: Formula) -> Counts:
    """The sink column joined to the scores and the row maximum taken out (gpt_oss eager attention):

    ``cat([scores, sinks])`` is a copy (B*heads*S*(keys+1) written, no arithmetic); ``max(dim=-1)`` over
    keys + 1: keys CMP per row, writing a value and an index per row; ``combined - max``: B*heads*S*(keys+1)
    ADD. The learned sinks are ``heads`` parameters (one logit per head), read once per forward."""
    rows = B * heads * S
    out = ops.topk(rows, keys + 1, 1) + ops.elementwise("sub", rows * (keys + 1))
    weight = Weight("sinks", (heads,), TensorClass.VECTOR)
    return with_params(out, heads).with_facts(weights=(weight,))


def sink_softmax(heads: int, keys: Formula) -> Counts:
    """The softmax over keys + 1 columns (the keys and the sink) of every (batch, head, query) row; the sink
    column is then dropped (a view), so ``probs @ v`` sees keys columns."""
    return ops.softmax(B * heads * S, keys + 1)


# --- chunked attention ----------------------------------------------------------------------------


def keys_chunked(chunk: int) -> Formula:
    """Keys a chunked layer's eager scores cover: the min(P, chunk - 1) tokens its cache layer kept (a
    ``DynamicSlidingWindowLayer`` of window ``chunk``) plus the S new ones."""
    return fmin(P, chunk - 1) + S


def cached_chunked(chunk: int) -> Formula:
    """Tokens a chunked layer's cache holds after the forward: the last chunk - 1 of P + S."""
    return fmin(P + S, chunk - 1)


def chunked_causal_mask(keys: Formula, chunk: int) -> Counts:
    """transformers' ``create_chunked_causal_mask`` (eager, no padding mask), for ``keys`` key positions:

    q / kv positions: arange(S) + q_offset, arange(keys) + kv_offset: S + keys ADD;
    chunked overlay ``(kv - left_pad[b]) // chunk == (q - left_pad[b]) // chunk``: B*keys and B*S ADD and
    floor divisions, B*S*keys CMP (the left padding is per batch row, so the result spans the batch);
    ``and_masks``: all-true & overlay, then & causal (kv <= q: S*keys CMP): 2*B*S*keys logic;
    where(mask, 0, min): writes B*S*keys.
    """
    out = ops.elementwise("add", S) + ops.elementwise("add", keys)
    out = out + ops.elementwise("sub", B * keys) + floor_divide(B * keys)
    out = out + ops.elementwise("sub", B * S) + floor_divide(B * S)
    out = out + ops.elementwise("cmp", B * S * keys)
    out = out + ops.elementwise("logic", B * S * keys) + ops.elementwise("cmp", S * keys)
    out = out + ops.elementwise("logic", B * S * keys)
    return out + ops.elementwise("select", B * S * keys)


# --- the clamped SwiGLU ---------------------------------------------------------------------------


def clamped_swiglu(n: Formula) -> Counts:
    """gpt_oss ``_apply_gate`` on n (gate, up) pairs, one aten op at a time:

    gate.clamp(max=limit): n CMP; up.clamp(-limit, limit): 2n CMP; gate * alpha: n MULT; sigmoid: n;
    gate * sigmoid: n MULT; up + 1: n ADD; (up + 1) * glu: n MULT. Each writes n elements."""
    return (clamp(n, 1) + clamp(n, 2) + ops.elementwise("mul", n) + ops.elementwise("sigmoid", n)
            + ops.elementwise("mul", n) + ops.elementwise("add", n) + ops.elementwise("mul", n))


__all__ = [
    "cached_chunked", "chunked_causal_mask", "clamp", "clamped_swiglu", "floor",
    "floor_divide", "keys_chunked", "log1p", "sink_softmax", "sinks",
]
