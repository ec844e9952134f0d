"""State-space mixers: the Mamba-2 mixer graph every hybrid shares (nemotron_h, mamba2, falcon_h1, ...).

The counts follow the torch fallback transformers runs when the ``mamba_ssm`` / ``causal_conv1d`` kernels are
not installed (the module-level functions ``causal_conv1d_fn`` / ``causal_conv1d_update`` /
``mamba2_chunk_scan`` / ``mamba2_selective_state_update`` of each modeling file), op by op:

- ``in_proj``: hidden -> gate (I) + conv channels (I + 2 G N) + dt (H), I = heads x head_dim;
- ``:conv``: the depthwise causal conv1d (kernel K) over the conv channels, and the mixer's own ``silu`` of it;
  what it convolves depends on the cache: a prefill (P = 0) pads to max(S, K) and F.conv1d pads K - 1 more on
  both sides (max(S, K) + K - 1 outputs per channel); a later multi-token forward convolves the K cached
  columns and the S new ones (S + 2K - 1 outputs); a one-token forward with a cache is ``causal_conv1d_update``
  (K + 1 columns, no padding: 2 outputs, the last kept);
- ``:dt``: dt + dt_bias, softplus, clamp to the time-step limits;
- ``:scan``: the chunked SSD scan over c = ceil(S / chunk) chunks (intra-chunk segment sums and the four
  einsums, the inter-chunk recurrence over c + 1 states, the D skip over the padded length), or, for one
  token with a cache, the recurrent state update (exp(dt A), dt B x, state * dA + dBx, C state, D skip);
- ``.norm``: the gated RMSNorm (x * silu(gate), normalised per group of I / G), then ``out_proj``.

Which path runs is a function of (S, P), written with the formula atoms: ``fmin(P, 1)`` is 1 when the cache
holds a state, ``fmin(S - 1, 1)`` is 1 when more than one token comes; the decode path is taken when both a
state exists and S = 1. The cache holds, per Mamba layer, the conv state (B x conv channels x K) and the SSM
state (B x heads x head_dim x state size), as transformers' ``LinearAttentionLayer`` does.

What a CUDA-kernel engine computes differently (``mamba_ssm``'s ``mamba_chunk_scan_combined`` /
``selective_state_update``, ``causal_conv1d``; vLLM and SGLang use the same kernels): the same chunked SSD
algebra, fused, so nothing of the padded last chunk, of the (chunk x chunk) segment-sum masks or of the
intermediate einsum outputs is written (``act`` and traffic are far lower); the conv computes S outputs (not
max(S, K) + K - 1 with F.conv1d's symmetric padding); the gate, D skip and dt softplus are fused. The FLOPs of
the four chunk einsums and the state recurrence are the same. Mamba-1 differs more: transformers' torch scan is
a sequential loop over the tokens from a zero state (a multi-token forward after a prefill ignores the cached
SSM state), where ``selective_scan_fn`` is one parallel scan kernel starting from the cached state.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .. import ops
from ..facts import State, StateKind, TensorClass, Weight
from ..formula import ONE, ZERO, B, Formula, P, S, ceil_div, fmin
from ..metrics import ACT
from ..ops import Counts
from . import blocks as blk
from .blocks import TOKENS, Part, fusable
from .node import ATTN, NodeKind

CONV_KIND = "conv"  # node kinds of the mixer's own computation (NodeKind has no state-space kinds)
SCAN_KIND = "ssm_scan"
WEIGHTS_KIND = "weights"  # a module whose parameters the mixer reads in its own forward (conv1d, dt_proj)


class Mamba2(BaseModel):
    """The dimensions of a Mamba-2 mixer: ``heads`` x ``head_dim`` = I (the inner width), ``groups`` of
    B / C of ``state`` each, a conv of ``conv_kernel``, the scan's ``chunk``, and the biases."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    groups: int = Field(gt=0)
    state: int = Field(gt=0)
    conv_kernel: int = Field(gt=0)
    chunk: int = Field(gt=0)
    conv_bias: bool = True
    proj_bias: bool = False  # in_proj and out_proj
    norm_groups: int = Field(default=1, gt=0)  # the gated RMSNorm normalises I / norm_groups wide groups
    gated_norm: bool = True  # False: no norm module, the scan output times silu(gate) (falcon_h1's mamba_rms_norm off)
    out_bias: bool | None = None  # out_proj's bias when it differs from in_proj's (None: proj_bias)

    @property
    def inner(self) -> int:
        return self.heads * self.head_dim

    @property
    def conv_channels(self) -> int:
        return self.inner + 2 * self.groups * self.state


# --- which path runs ----------------------------------------------------------------------------------
HAS_STATE = fmin(P, 1)  # 1 when the cache holds a state (a forward after a prefill), else 0
MANY = fmin(S - 1, 1)  # 1 when more than one new token comes, else 0
DECODE = HAS_STATE - HAS_STATE * MANY  # a state and one token: the recurrent update
CHUNKED = ONE - DECODE  # every other forward: the chunked scan


def conv_columns(k: int) -> tuple[Formula, Formula]:
    """(outputs of F.conv1d per channel, columns the activation sees per channel) for a kernel of ``k``."""
    prefill = S + k - fmin(S, k)  # the new tokens left-padded to at least k columns
    outputs = (ONE - HAS_STATE) * (prefill + k - 1) + HAS_STATE * MANY * (S + 2 * k - 1) + DECODE * 2
    activated = (ONE - HAS_STATE) * prefill + HAS_STATE * MANY * (S + k) + DECODE
    return outputs, activated


def conv_counts(m: Mamba2) -> Counts:
    """The depthwise causal conv1d (its weight held by the ``conv1d`` module: read here, tied), reading the
    cached conv state when there is one."""
    outputs, _ = conv_columns(m.conv_kernel)
    ch = m.conv_channels
    out = ops.conv(B * ch * outputs, m.conv_kernel, m.conv_bias)
    conv_state = State(StateKind.CONV, read=B * ch * m.conv_kernel * HAS_STATE)
    return out.with_facts(weights=_conv_weights(ch, m.conv_kernel, m.conv_bias), states=(conv_state,),
                          reads=B * ch * outputs)


def _conv_weights(channels: int, kernel: int, bias: bool, tied: bool = True) -> tuple[Weight, ...]:
    weight = Weight("weight", (channels, 1, kernel), TensorClass.VECTOR, tied=tied)
    return (weight, Weight("bias", (channels,), TensorClass.VECTOR, tied=tied)) if bias else (weight,)


def _conv_params(channels: int, kernel: int, bias: bool) -> Counts:
    """The ``conv1d`` module: its weight (channels x 1 x K) and bias, which the mixer passes to F.conv1d
    (the module's own forward never runs): parameters, no arithmetic."""
    n = channels * kernel + (channels if bias else 0)
    return blk.with_params(Counts(), n).with_facts(weights=_conv_weights(channels, kernel, bias, tied=False),
                                                   reads=ZERO)


def own_counts(m: Mamba2, act: str = "silu") -> Counts:
    """The mixer's own op outside the scan functions: the conv output's activation; its parameters A_log, D
    and dt_bias (H each)."""
    _, activated = conv_columns(m.conv_kernel)
    return blk.with_params(blk.activation(act, B * m.conv_channels * activated), 3 * m.heads)


def decay_counts(elements: int) -> Counts:
    """A = -exp(A_log) over its ``elements`` (H for Mamba-2, inner x state for Mamba-1): EXP and ADD (neg) each,
    once per forward whatever the batch."""
    n = Formula.const(elements)
    return ops.elementwise("exp", n) + ops.elementwise("neg", n)


def dt_counts(m: Mamba2) -> Counts:
    """dt + dt_bias, softplus, clamp(min, max) (chunked: per token and head); the one-token update broadcasts
    dt over head_dim first and does not clamp."""
    chunked, decode = TOKENS * m.heads * CHUNKED, TOKENS * m.heads * m.head_dim * DECODE
    return (ops.elementwise("add", chunked + decode) + ops.elementwise("softplus", chunked + decode)
            + ops.clamp(chunked, 2))


def chunk_scan_counts(m: Mamba2) -> Counts:
    """``mamba2_chunk_scan`` after dt, times ``CHUNKED`` (every size carries the factor so that the matmul
    facts keep their shapes)."""
    H, D, N, L = m.heads, m.head_dim, m.state, m.chunk
    on = CHUNKED
    c = ceil_div(S, L)  # chunks
    z = c + 1  # chunk states with the initial one
    padded = B * c * L * H  # (token, head) rows over the padded length
    ew = ops.elementwise
    out = ew("mul", padded * D * on)  # D_residual = D * pad(x)
    out = out + ew("mul", TOKENS * H * D * on) + ew("mul", TOKENS * H * on)  # x * dt, A * dt
    out = out + ops.cumsum(B * H * c * on, L)  # A_cumsum
    out = out + _segment_sum(B * H * c * on, L, on) + ew("exp", B * H * c * L * L * on)  # L = exp(segsum(A))
    out = out + ops.matmul(L, L, N, batch=B * c * H * on)  # G = C B^T per chunk
    out = out + ew("mul", padded * L * on)  # M = G * L
    out = out + ops.matmul(L, D, L, batch=B * c * H * on)  # Y_diag = M x
    out = out + ew("sub", padded * on) + ew("exp", padded * on)  # decay_states
    out = out + ew("mul", padded * N * on)  # B * decay_states
    out = out + ops.matmul(D, N, L, batch=B * c * H * on)  # states = (B decay)^T x
    out = out + _segment_sum(B * H * on, z, on) + ew("exp", B * H * z * z * on)  # decay_chunk
    out = out + ops.matmul(z, D * N, z, batch=B * H * on)  # new_states over the chunk boundaries
    out = out + ew("exp", padded * on)  # state_decay_out
    out = out + ops.matmul(L, D, N, batch=B * c * H * on)  # C_times_states
    out = out + ew("mul", padded * D * on) + ew("add", padded * D * on)  # Y_off, Y_diag + Y_off
    return out + ew("add", padded * D * on)  # + D_residual


def _segment_sum(rows: Formula, n: int | Formula, on: Formula) -> Counts:
    """segment_sum over ``n``: the two (n x n) triangular masks negated (2 n^2 logic), the cumsum of the
    masked (rows, n, n) expansion along its second-to-last axis (rows * n columns of n)."""
    n = Formula.of(n)
    return ops.elementwise("logic", 2 * n * n * on) + ops.cumsum(rows * n, n)


def recurrent_counts(m: Mamba2) -> Counts:
    """``mamba2_selective_state_update`` after dt (one token, a state), times ``DECODE``."""
    rows = TOKENS * m.heads * DECODE  # (sequence, head) pairs
    cells = rows * m.head_dim * m.state  # state elements
    ew = ops.elementwise
    out = ew("mul", cells) + ew("exp", cells)  # dA = exp(dt * A)
    out = out + ew("mul", cells) + ew("mul", cells)  # dB = dt * B, dBx = dB * x
    out = out + ew("mul", cells) + ew("add", cells)  # state * dA + dBx
    out = out + ops.matmul(m.head_dim, 1, m.state, batch=rows)  # state @ C
    return out + ew("mul", rows * m.head_dim) + ew("add", rows * m.head_dim)  # + x * D


def scan_counts(m: Mamba2) -> Counts:
    """The selective scan: chunked or recurrent (exactly one of them runs), reading the SSM state when the
    cache holds one."""
    ssm = State(StateKind.RECURRENT, read=B * m.heads * m.head_dim * m.state * HAS_STATE)
    return (chunk_scan_counts(m) + recurrent_counts(m)).with_facts(states=(ssm,))


def gated_norm(m: Mamba2) -> Counts:
    """The gated RMSNorm (norm after the gate): x * silu(gate), then RMSNorm per group of I / norm_groups,
    times its I weights."""
    n, g = m.inner, m.norm_groups
    rows = TOKENS * g
    out = ops.elementwise("silu", TOKENS * n) + ops.elementwise("mul", TOKENS * n)
    out = out + ops.rms_norm(rows, n // g)
    return fusable(blk.with_params(out, n), 2 * TOKENS * n, TOKENS * n)


def _ungated(m: Mamba2, path: Formula) -> Counts:
    """scan output * silu(gate) without a norm, on the forwards ``path`` (CHUNKED / DECODE) selects."""
    n = TOKENS * m.inner * path
    return ops.elementwise("silu", n) + ops.elementwise("mul", n)


def mamba2_parts(m: Mamba2, hidden: int, mixer: str, act: str = "silu", block: str = ATTN,
                 own_extra: Counts | None = None) -> list[Part]:
    """The Mamba-2 mixer at module ``mixer`` (e.g. ``.mixer``) of a layer; ``own_extra``: more of the mixer's
    own ops (falcon_h1's muP multipliers)."""
    t, ch = TOKENS, m.conv_channels
    proj = m.inner + ch + m.heads
    ssm_state = B * m.heads * m.head_dim * m.state
    conv_state = B * ch * m.conv_kernel
    own, scan = own_counts(m, act), scan_counts(m)
    if own_extra is not None:
        own = own + own_extra
    if not m.gated_norm:  # the gate: in the mixer's forward (chunked), inside the state update (decode)
        own, scan = own + _ungated(m, CHUNKED), (scan + _ungated(m, DECODE)).with_facts(
            states=scan.facts.states if scan.facts is not None else ())
    out_bias = m.proj_bias if m.out_bias is None else m.out_bias
    return [
        Part(f"{mixer}.in_proj", f"{mixer}.in_proj", NodeKind.LINEAR, blk.linear(t, hidden, proj, m.proj_bias), block),
        Part(f"{mixer}.conv1d", f"{mixer}.conv1d", WEIGHTS_KIND,
             _conv_params(ch, m.conv_kernel, m.conv_bias), block),
        Part(f"{mixer}:conv_state", mixer, NodeKind.KV_CACHE,
             blk.state_cache(StateKind.CONV, conv_state, conv_state), block),
        Part(f"{mixer}:conv", mixer, CONV_KIND, conv_counts(m), block),
        Part(f"{mixer}:decay", mixer, NodeKind.ELEMENTWISE, decay_counts(m.heads), block),
        Part(mixer, mixer, NodeKind.ELEMENTWISE, own, block),
        Part(f"{mixer}:dt", mixer, SCAN_KIND, dt_counts(m), block),
        Part(f"{mixer}:ssm_state", mixer, NodeKind.KV_CACHE,
             blk.state_cache(StateKind.RECURRENT, ssm_state, ssm_state), block),
        Part(f"{mixer}:scan", mixer, SCAN_KIND, scan, block),
        *([Part(f"{mixer}.norm", f"{mixer}.norm", NodeKind.NORM, gated_norm(m), block)] if m.gated_norm else []),
        Part(f"{mixer}.out_proj", f"{mixer}.out_proj", NodeKind.LINEAR, blk.linear(t, m.inner, hidden, out_bias),
             block),
    ]




# --- Mamba-1 (jamba, mamba) -----------------------------------------------------------------------------


class Mamba1(BaseModel):
    """The dimensions of a Mamba-1 mixer: ``inner`` channels (expand x hidden), a state of ``state`` per
    channel, a conv of ``conv_kernel``, dt of rank ``dt_rank``; ``dt_norms``: RMSNorms on dt, B, C (Jamba's with
    a learned scale; FalconMamba's weightless, ``dt_norms_weight`` false: a non-persistent buffer it never reads)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    inner: int = Field(gt=0)
    state: int = Field(gt=0)
    conv_kernel: int = Field(gt=0)
    dt_rank: int = Field(gt=0)
    conv_bias: bool = True
    proj_bias: bool = False  # in_proj and out_proj
    dt_norms: bool = False
    dt_norms_weight: bool = True


def mamba1_scan_counts(m: Mamba1) -> Counts:
    """``mamba_selective_scan`` (the sequential torch loop from a zero state) or, for one token with a state,
    ``mamba_selective_state_update``: the same ops per token, so one formula for both. Per (token, channel,
    state) cell: dA = exp(dt * A) (MULT, EXP), dB = dt * B, dB * x (2 MULT), state * dA + dBx (MULT, ADD);
    per token a bmm state @ C (channels x state @ state x 1); then + x * D and * silu(z) per (token, channel)."""
    rows = TOKENS * m.inner
    cells = rows * m.state
    ew = ops.elementwise
    out = ew("mul", cells) + ew("exp", cells) + ew("mul", cells) + ew("mul", cells)
    out = out + ew("mul", cells) + ew("add", cells) + ops.matmul(m.inner, 1, m.state, batch=TOKENS)
    out = out + ew("mul", rows) + ew("add", rows) + ew("silu", rows) + ew("mul", rows)
    return out.with_facts(states=(State(StateKind.RECURRENT, read=B * m.inner * m.state * HAS_STATE),))


def mamba1_dt_counts(m: Mamba1) -> Counts:
    """dt = dt_proj.weight @ dt_low_rank (the mixer's own matmul: the ``dt_proj`` module's weight, read
    here), + its bias, softplus: per token."""
    out = ops.matmul(TOKENS, m.inner, m.dt_rank) + ops.elementwise("add", TOKENS * m.inner)
    out = out + ops.elementwise("softplus", TOKENS * m.inner)
    return out.with_facts(weights=(Weight("weight", (m.inner, m.dt_rank), TensorClass.MATRIX, tied=True),
                                   Weight("bias", (m.inner,), TensorClass.VECTOR, tied=True)))


def mamba1_parts(m: Mamba1, hidden: int, mixer: str, act: str = "silu", block: str = ATTN) -> list[Part]:
    """The Mamba-1 mixer at module ``mixer`` (``.mamba`` in jamba, ``.mixer`` in mamba)."""
    t, ch, N = TOKENS, m.inner, m.state
    outputs, activated = conv_columns(m.conv_kernel)
    conv_state = B * ch * m.conv_kernel
    ssm_state = B * ch * N
    own = blk.with_params(blk.activation(act, B * ch * activated), ch * N + ch)  # A_log, D
    conv_ops = ops.conv(B * ch * outputs, m.conv_kernel, m.conv_bias).with_facts(
        weights=_conv_weights(ch, m.conv_kernel, m.conv_bias),
        states=(State(StateKind.CONV, read=conv_state * HAS_STATE),), reads=B * ch * outputs)
    dt_proj = blk.with_params(Counts(), ch * m.dt_rank + ch).with_facts(
        weights=(Weight("weight", (ch, m.dt_rank), TensorClass.MATRIX), Weight("bias", (ch,), TensorClass.VECTOR)),
        reads=ZERO)
    parts = [
        Part(f"{mixer}.in_proj", f"{mixer}.in_proj", NodeKind.LINEAR, blk.linear(t, hidden, 2 * ch, m.proj_bias), block),
        Part(f"{mixer}.conv1d", f"{mixer}.conv1d", WEIGHTS_KIND, _conv_params(ch, m.conv_kernel, m.conv_bias), block),
        Part(f"{mixer}:conv_state", mixer, NodeKind.KV_CACHE, blk.state_cache(StateKind.CONV, conv_state, conv_state),
             block),
        Part(f"{mixer}:conv", mixer, CONV_KIND, conv_ops, block),
        Part(f"{mixer}:decay", mixer, NodeKind.ELEMENTWISE, decay_counts(ch * N), block),
        Part(mixer, mixer, NodeKind.ELEMENTWISE, own, block),
        Part(f"{mixer}.x_proj", f"{mixer}.x_proj", NodeKind.LINEAR, blk.linear(t, ch, m.dt_rank + 2 * N, False), block),
    ]
    if m.dt_norms:
        def norm(n: int) -> Counts:
            return blk.rms_norm(t, n) if m.dt_norms_weight else blk.fusable(ops.rms_norm(t, n, weight=False), t * n,
                                                                              t * n)
        parts += [Part(f"{mixer}.{name}", f"{mixer}.{name}", NodeKind.NORM, norm(n), block)
                  for name, n in (("dt_layernorm", m.dt_rank), ("b_layernorm", N), ("c_layernorm", N))]
    return parts + [
        Part(f"{mixer}.dt_proj", f"{mixer}.dt_proj", WEIGHTS_KIND, dt_proj, block),
        Part(f"{mixer}:dt", mixer, SCAN_KIND, mamba1_dt_counts(m), block),
        Part(f"{mixer}:ssm_state", mixer, NodeKind.KV_CACHE, blk.state_cache(StateKind.RECURRENT, ssm_state, ssm_state),
             block),
        Part(f"{mixer}:scan", mixer, SCAN_KIND, mamba1_scan_counts(m), block),
        Part(f"{mixer}.out_proj", f"{mixer}.out_proj", NodeKind.LINEAR, _transposed_input_linear(ch, hidden, m.proj_bias),
             block),
    ]


# --- LFM2's gated short convolution ------------------------------------------------------------------------


def short_conv_parts(hidden: int, kernel: int, bias: bool, mixer: str, block: str = ATTN) -> list[Part]:
    """LFM2's ``Lfm2ShortConv`` at module ``mixer``: in_proj to B, C, x (3 x hidden), B * x, the depthwise causal
    conv1d (kernel ``kernel``, no activation; the same columns as a Mamba conv), C * y, out_proj; ``bias`` on
    the projections and the conv. Its cache holds the conv state (B x hidden x kernel) only."""
    t = TOKENS
    outputs, _ = conv_columns(kernel)
    conv_state = B * hidden * kernel
    conv_ops = ops.conv(B * hidden * outputs, kernel, bias).with_facts(
        weights=_conv_weights(hidden, kernel, bias), states=(State(StateKind.CONV, read=conv_state * HAS_STATE),),
        reads=B * hidden * outputs)
    return [
        Part(f"{mixer}.in_proj", f"{mixer}.in_proj", NodeKind.LINEAR, blk.linear(t, hidden, 3 * hidden, bias), block),
        Part(f"{mixer}.conv", f"{mixer}.conv", WEIGHTS_KIND, _conv_params(hidden, kernel, bias), block),
        Part(f"{mixer}:conv_state", mixer, NodeKind.KV_CACHE, blk.state_cache(StateKind.CONV, conv_state, conv_state),
             block),
        Part(f"{mixer}:conv", mixer, CONV_KIND, conv_ops, block),
        # B * x before the conv, C * y after it
        Part(mixer, mixer, NodeKind.ELEMENTWISE, ops.elementwise("mul", 2 * t * hidden), block),
        Part(f"{mixer}.out_proj", f"{mixer}.out_proj", NodeKind.LINEAR, blk.linear(t, hidden, hidden, bias), block),
    ]


def _transposed_input_linear(in_features: int, out_features: int, bias: bool) -> Counts:
    """nn.Linear on a transposed view, as Mamba-1's out_proj gets ``scan_output.transpose(1, 2)``: for more than
    one token the view is not contiguous and F.linear runs the product, then adds the bias as a separate op
    (the same arithmetic as one addmm, its output written twice); one token's view is contiguous (one addmm)."""
    out = blk.linear(TOKENS, in_features, out_features, bias)
    if not bias:
        return out
    extra = Counts({ACT: TOKENS * out_features * MANY})
    return (out + extra).with_facts(weights=out.facts.weights if out.facts else ())


__all__ = ["CHUNKED", "CONV_KIND", "DECODE", "HAS_STATE", "MANY", "SCAN_KIND", "WEIGHTS_KIND", "Mamba1", "Mamba2",
           "mamba1_parts", "mamba2_parts", "short_conv_parts"]
