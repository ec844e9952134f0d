"""Manifold-constrained hyper-connections (mHC, DeepSeek-V4): the residual stream is ``N = hc_mult`` parallel
streams of ``hidden`` features; before each block a learned map collapses them into the block's input, after
it the output is expanded back and mixed with the streams through a doubly-stochastic N x N matrix
(Sinkhorn-Knopp). Every function follows transformers 5.23's ``DeepseekV4HyperConnection`` /
``DeepseekV4HyperHead`` / ``DeepseekV4DecoderLayer`` op by op (fp32 casts are no-ops at float32) and
returns ``Counts`` (formulas in B, S, P)."""

from __future__ import annotations

from .. import ops
from ..facts import TensorClass, Weight
from ..ops import Counts
from .blocks import TOKENS, fusable, with_params


def stream_norm(streams: int, hidden: int) -> Counts:
    """``DeepseekV4UnweightedRMSNorm`` over the flattened streams (N*hidden per token), no weight:
    x^2, mean, + eps, rsqrt, x * rstd."""
    n = streams * hidden
    return fusable(ops.rms_norm(TOKENS, n, weight=False), TOKENS * n, TOKENS * n)


def hyper_connection(streams: int, hidden: int, sinkhorn_iters: int) -> Counts:
    """``DeepseekV4HyperConnection.forward`` own ops (its input_norm is a submodule), t = B*S, N = streams:

    the mixes F.linear(x, fn): (t x N*hidden) @ (N*hidden x (2+N)*N);
    pre = sigmoid(w * scale + b) + eps: t*N MULT, ADD, sigmoid, ADD;
    post = 2 * sigmoid(w * scale + b): t*N MULT, ADD, sigmoid, MULT;
    comb = softmax(w * scale + b) + eps over N: t*N^2 MULT, ADD, softmax of t*N rows, ADD;
    Sinkhorn: 2*iters - 1 normalisations comb / (comb.sum(dim) + eps): a sum over N into t*N, t*N ADD,
    t*N^2 DIV each;
    collapsed = (pre * streams).sum(streams): t*N*hidden MULT, t*hidden sums of N.
    params: fn ((2+N)*N x N*hidden), base ((2+N)*N), scale (3)."""
    t, n = TOKENS, streams
    mixes = (2 + n) * n
    out = ops.matmul(t, mixes, n * hidden)
    out = out + ops.elementwise("mul", t * n) + ops.elementwise("add", t * n) + ops.elementwise("sigmoid", t * n)
    out = out + ops.elementwise("add", t * n)
    out = out + ops.elementwise("mul", t * n) + ops.elementwise("add", t * n) + ops.elementwise("sigmoid", t * n)
    out = out + ops.elementwise("mul", t * n)
    out = out + ops.elementwise("mul", t * n * n) + ops.elementwise("add", t * n * n) + ops.softmax(t * n, n)
    out = out + ops.elementwise("add", t * n * n)
    normalise = ops.reduce_sum(t * n, n) + ops.elementwise("add", t * n) + ops.elementwise("div", t * n * n)
    out = out + normalise * (2 * sinkhorn_iters - 1)
    out = out + ops.elementwise("mul", t * n * hidden) + ops.reduce_sum(t * hidden, n)
    fn = Weight("fn", (mixes, n * hidden), TensorClass.MATRIX)
    return with_params(out, mixes * n * hidden + mixes + 3).with_facts(weights=(fn,))


def hyper_head(streams: int, hidden: int) -> Counts:
    """``DeepseekV4HyperHead.forward`` own ops (the final collapse before the norm): F.linear(x, hc_fn):
    (t x N*hidden) @ (N*hidden x N); * hc_scale, + hc_base, sigmoid, + eps over t*N; (pre * x).sum over the
    streams: t*N*hidden MULT, t*hidden sums of N. params: hc_fn (N x N*hidden), hc_base (N), hc_scale (1)."""
    t, n = TOKENS, streams
    out = ops.matmul(t, n, n * hidden) + ops.elementwise("mul", t * n) + ops.elementwise("add", t * n)
    out = out + ops.elementwise("sigmoid", t * n) + ops.elementwise("add", t * n)
    out = out + ops.elementwise("mul", t * n * hidden) + ops.reduce_sum(t * hidden, n)
    fn = Weight("hc_fn", (n, n * hidden), TensorClass.MATRIX)
    return with_params(out, n * n * hidden + n + 1).with_facts(weights=(fn,))


def stream_update(streams: int, hidden: int, blocks: int = 2) -> Counts:
    """The decoder layer's own ops, once per block (attention, then MLP): post * block output
    (t*N*hidden MULT) + comb^T @ streams (a bmm of t (N x N) @ (N x hidden)), the sum (t*N*hidden ADD)."""
    t, n = TOKENS, streams
    one = (ops.elementwise("mul", t * n * hidden) + ops.matmul(n, hidden, n, batch=t)
           + ops.elementwise("add", t * n * hidden))
    return ops.total([one] * blocks)


__all__ = ["hyper_connection", "hyper_head", "stream_norm", "stream_update"]
