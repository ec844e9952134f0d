"""The gated DeltaNet mixer (Qwen3-Next, Qwen3.5): projections, causal conv1d, gates, the gated delta rule.

Every formula follows transformers' torch path op by op (``Qwen3NextGatedDeltaNet.forward`` and the
functions it calls, 5.23), which is what runs without the ``causal-conv1d`` and ``flash-linear-attention``
kernels (they are looked up on the hub and fall back to these functions; validation runs the fallback):

- projections: ``in_proj_qkvz`` (2*key_dim + 2*value_dim) and ``in_proj_ba`` (2*value_heads) on
  Qwen3-Next; ``in_proj_qkv``, ``in_proj_z``, ``in_proj_b``, ``in_proj_a`` on Qwen3.5 (the same widths).
- the causal depthwise conv1d over the conv_dim = 2*key_dim + value_dim channels of q, k, v, then the
  activation (``hidden_act``). Which function runs depends on the cache:
  a prefill without a cache state (P = 0) convolves max(S, K) positions (the cache left-pads the S tokens to
  the kernel size K) with padding K - 1: max(S, K) + K - 1 outputs of K taps; a forward after a prefill
  (P > 0) with S > 1 convolves the K cached columns and the S new ones: S + 2K - 1 outputs; a decode step
  (P > 0, S = 1, ``causal_conv1d_update``) convolves K + 1 columns without padding: 2 outputs. The
  activation runs on the sliced outputs (max(S, K), S + K and 1 positions). The conv state holds the last K
  columns: B * conv_dim * K.
- gates: beta = sigmoid(b); g = -exp(A_log) * softplus(a + dt_bias) (the exp and the negation run over the
  value_heads parameters, once per forward).
- the delta rule runs on value_heads heads (q and k repeated from key_heads first), in float32:
  ``torch_recurrent_gated_delta_rule`` for a decode step (P > 0 and S = 1), else
  ``torch_chunk_gated_delta_rule`` with chunks of 64 (the function's default; S padded to N * 64 with
  N = ceil(S / 64)); both l2-normalise q and k (``l2norm``, over value_heads heads) and scale q by
  1 / sqrt(key_dim). The recurrent state is B * value_heads * key_dim * value_dim.
- the gated RMSNorm over value_dim per head: rmsnorm(x) * weight * act(z) (silu), then ``out_proj``.

Which branch runs is a formula too: p = min(P, 1) (a cache state exists) and d = p * (2 - min(S, 2))
(a decode step) are 0 / 1 indicators, so every count is one exact formula in B, S, P (and a generation, whose
steps are all decode steps, stays a closed form).

What a kernel engine computes differently (transformers with ``flash-linear-attention`` and ``causal-conv1d``
installed, vLLM, SGLang): the same projections, gates, gated norm and the same per-chunk algorithm (fla's
``chunk_gated_delta_rule``: l2norm, chunk-local cumsum, k_beta @ k^T, the triangular solve ``solve_tril``, the
WY recompute, the state pass, the output), but fused per chunk in on-chip memory: q / k reach the kernel with
key_heads heads (the repeat to value_heads is the torch fallback's), the tail chunk is masked rather than padded
to 64 in memory, and none of the chunk intermediates (pairwise decays, C x C systems) is written to HBM; the
``causal_conv1d_fn`` kernel convolves only the S new positions (S outputs of K taps per channel, not the padded
max(S, K) + K - 1 or S + 2K - 1), and decode is fused the same way. Arithmetic differs by those paddings and
repeats; activations and memory traffic differ far more (``act`` counts every intermediate the torch path
writes).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .. import ops
from ..facts import State, StateKind, TensorClass, Weight
from ..formula import ZERO, B, Formula, P, S, ceil_div, fmin
from ..ops import Counts
from ..spec import ArchSpec, LayerSpec, Mixer
from .activations import activation_counts
from .blocks import TOKENS, Part, fusable, linear, state_cache, with_params
from .moe import MoESpec
from .node import ATTN, NodeKind

LINEAR_ATTENTION = "linear_attention"  # the layer_types entry of a gated DeltaNet layer
CAUSAL_CONV = "causal_conv"  # node kind: the short causal convolution and its activation
DELTA_RULE = "delta_rule"  # node kind: the gated delta rule (chunked scan or recurrent step)
GATES = "linear_attention_gates"  # node kind: beta and the decay g


class DeltaNet(BaseModel):
    """A gated DeltaNet layer's dims: ``key_heads`` x ``key_dim`` for q and k, ``value_heads`` x
    ``value_dim`` for v (and z, the output gate), the conv ``kernel``, the delta rule's ``chunk``;
    ``fused_projections``: Qwen3-Next's in_proj_qkvz / in_proj_ba (else Qwen3.5's four projections)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_heads: int = Field(gt=0)
    value_heads: int = Field(gt=0)
    key_dim: int = Field(gt=0)
    value_dim: int = Field(gt=0)
    kernel: int = Field(gt=0)
    chunk: int = Field(default=64, gt=0)
    fused_projections: bool = True

    @property
    def key_width(self) -> int:
        return self.key_heads * self.key_dim

    @property
    def value_width(self) -> int:
        return self.value_heads * self.value_dim

    @property
    def conv_dim(self) -> int:
        return 2 * self.key_width + self.value_width


class LinearLayers:
    """Spec mixin: layers whose ``layer_types`` entry is ``linear_attention`` get a linear-attention mixer
    (chunked by ``delta_net.chunk``); the others stay as the ArchSpec derives them."""

    def default_layer(self, index: int) -> LayerSpec:
        layer: LayerSpec = super().default_layer(index)  # type: ignore[misc]
        if self.layer_type(index) == LINEAR_ATTENTION:  # type: ignore[attr-defined]
            chunk = self.delta_net.chunk  # type: ignore[attr-defined]
            return layer.model_copy(update={"mixer": Mixer(kind="linear_attention", chunk=chunk, rope=False)})
        return layer


class DeltaNetSpec(LinearLayers, ArchSpec):
    """A hybrid of gated DeltaNet and attention layers (``layer_types``) with dense MLPs."""

    delta_net: DeltaNet


class DeltaNetMoESpec(LinearLayers, MoESpec):
    """A hybrid of gated DeltaNet and attention layers with sparse MoE blocks (``MoESpec``)."""

    delta_net: DeltaNet


# --- which branch runs: 0 / 1 indicators --------------------------------------------------------------


def has_state() -> Formula:
    """1 when a prefill left a cache state (P > 0), else 0: min(P, 1)."""
    return fmin(P, 1)


def decode_step() -> Formula:
    """1 for a decode step (P > 0 and S = 1: the recurrent / update functions run), else 0."""
    return has_state() * (2 - fmin(S, 2))


# --- nodes ------------------------------------------------------------------------------------------


def conv_state(d: DeltaNet) -> Counts:
    """The conv state: the last K columns of the conv input, B * conv_dim * K, rewritten whole by every
    forward (the conv node reads it)."""
    held = B * d.conv_dim * d.kernel
    return state_cache(StateKind.CONV, held, appended=held)


def recurrent_state(d: DeltaNet) -> Counts:
    """The recurrent state: B * value_heads * key_dim * value_dim, rewritten whole by every forward (the
    delta rule reads it)."""
    held = B * d.value_heads * d.key_dim * d.value_dim
    return state_cache(StateKind.RECURRENT, held, appended=held)


def _conv_lengths(d: DeltaNet) -> tuple[Formula, Formula]:
    """(outputs, activated positions) per channel of the causal conv in its three branches (module docstring)."""
    K, p, dec = d.kernel, has_state(), decode_step()
    prefill = S + K - fmin(S, K)  # max(S, K): the new tokens left-padded to the kernel
    outputs = (1 - p) * (prefill + K - 1) + (p - dec) * (S + 2 * K - 1) + dec * 2
    activated = (1 - p) * prefill + (p - dec) * (S + K) + dec
    return outputs, activated


def causal_conv(d: DeltaNet) -> Counts:
    """The depthwise causal conv1d (F.conv1d in ``causal_conv1d_fn`` / ``causal_conv1d_update``): K taps per
    output; reads the conv state when a prefill left one."""
    outputs, _ = _conv_lengths(d)
    out = ops.conv(B * d.conv_dim * outputs, d.kernel, bias=False)
    state = State(StateKind.CONV, read=has_state() * B * d.conv_dim * d.kernel)
    return out.with_facts(states=(state,), reads=B * d.conv_dim * (S + has_state() * d.kernel))


def conv_activation(d: DeltaNet, activation: str) -> Counts:
    """The conv's activation (``hidden_act`` through ACT2FN, inside the conv function) on the kept positions."""
    _, activated = _conv_lengths(d)
    n = B * d.conv_dim * activated
    return fusable(activation_counts(activation, n), n, n)


def conv_weight(d: DeltaNet) -> Counts:
    """``conv1d.weight`` (conv_dim x 1 x K, no bias): the module never runs (its weight is passed to the
    conv function), so this node holds the weight and no arithmetic."""
    params = d.conv_dim * d.kernel
    return with_params(Counts(), params).with_facts(
        weights=(Weight("weight", (d.conv_dim, d.kernel), TensorClass.VECTOR),), reads=ZERO)


def gates(d: DeltaNet) -> Counts:
    """beta = sigmoid(b); g = -exp(A_log) * softplus(a + dt_bias): exp and neg over the value_heads
    parameters, then add, softplus and mul over B*S*value_heads."""
    H, n = d.value_heads, TOKENS * d.value_heads
    out = (ops.elementwise("sigmoid", n) + ops.elementwise("exp", H) + ops.elementwise("neg", H)
           + ops.elementwise("add", n) + ops.elementwise("softplus", n) + ops.elementwise("mul", n))
    return with_params(out, 2 * H).with_facts(
        weights=(Weight("A_log", (H,), TensorClass.VECTOR), Weight("dt_bias", (H,), TensorClass.VECTOR)))


def l2norm(rows: Formula, n: int) -> Counts:
    """``l2norm(x)``: x * rsqrt(sum(x * x) + eps) over n per row."""
    return (ops.elementwise("mul", rows * n) + ops.reduce_sum(rows, n) + ops.elementwise("add", rows)
            + ops.elementwise("rsqrt", rows) + ops.elementwise("mul", rows * n))


def qk_l2norm(d: DeltaNet) -> Counts:
    """q and k l2-normalised over key_dim, after their repeat to value_heads heads."""
    return 2 * l2norm(B * d.value_heads * S, d.key_dim)


def chunk_rule(d: DeltaNet) -> Counts:
    """``torch_chunk_gated_delta_rule`` after the l2norm, for H = value_heads heads, C = chunk, N =
    ceil(S / C) chunks, L = N * C padded positions (padding is a copy):

    q * scale: B*H*S*Dk; v * beta, k * beta: B*H*L*(Dv + Dk) MULT; decay cumsum within chunks;
    pairwise decays cum_i - cum_j (B*H*N*C*C ADD) and their exp; (k_beta @ k^T) and (q @ k^T), each times
    the decays: two bmm of B*H*N (C x Dk) @ (Dk x C) and 2*B*H*N*C*C MULT; k_beta * exp(cum): B*H*L EXP
    + B*H*L*Dk MULT; two unit lower triangular solves (C x C) for Dv and Dk columns; q * exp(cum) and
    k * exp(cum_last - cum): B*H*L (2 EXP + 1 ADD) + 2*B*H*L*Dk MULT; exp(cum_last): B*H*N EXP;
    then per chunk (batch B*H): v_new = u - w @ state ((C x Dk) @ (Dk x Dv), C*Dv ADD); q @ state;
    out = inter + intra @ v_new ((C x C) @ (C x Dv), C*Dv ADD); state = state * decay (Dk*Dv MULT)
    + k^T @ v_new ((Dk x C) @ (C x Dv), Dk*Dv ADD)."""
    H, Dk, Dv, C = d.value_heads, d.key_dim, d.value_dim, d.chunk
    N = ceil_div(S, C)
    bh, L = B * H, ceil_div(S, C) * C
    blocks = bh * N  # (batch, head, chunk) triples
    out = ops.elementwise("mul", bh * S * Dk)
    out = out + ops.elementwise("mul", bh * L * Dv) + ops.elementwise("mul", bh * L * Dk)
    out = out + ops.cumsum(blocks, C)
    out = out + ops.elementwise("sub", blocks * C * C) + ops.elementwise("exp", blocks * C * C)
    for _ in range(2):  # ut system and intra-chunk attention
        out = out + ops.matmul(C, C, Dk, batch=blocks) + ops.elementwise("mul", blocks * C * C)
    out = out + ops.elementwise("exp", bh * L) + ops.elementwise("mul", bh * L * Dk)
    out = out + ops.solve_triangular(blocks, C, Dv, unit=True) + ops.solve_triangular(blocks, C, Dk, unit=True)
    out = out + ops.elementwise("exp", bh * L) + ops.elementwise("mul", bh * L * Dk)
    out = out + ops.elementwise("sub", bh * L) + ops.elementwise("exp", bh * L) + ops.elementwise("mul", bh * L * Dk)
    out = out + ops.elementwise("exp", blocks)
    out = out + ops.matmul(C, Dv, Dk, batch=blocks) + ops.elementwise("sub", blocks * C * Dv)
    out = out + ops.matmul(C, Dv, Dk, batch=blocks)
    out = out + ops.matmul(C, Dv, C, batch=blocks) + ops.elementwise("add", blocks * C * Dv)
    out = out + ops.elementwise("mul", blocks * Dk * Dv) + ops.matmul(Dk, Dv, C, batch=blocks)
    return out + ops.elementwise("add", blocks * Dk * Dv)


def recurrent_rule(d: DeltaNet) -> Counts:
    """``torch_recurrent_gated_delta_rule`` after the l2norm, per token (batch B*H, H = value_heads):
    q / sqrt(Dk); exp(g); state * decay; kv_mem = sum_k(state * k) (Dk*Dv MULT, Dv*(Dk-1) ADD);
    delta = (v - kv_mem) * beta (Dv ADD + Dv MULT); state += k * delta (Dk*Dv MULT + ADD);
    out = sum_k(state * q) (Dk*Dv MULT, Dv*(Dk-1) ADD)."""
    Dk, Dv = d.key_dim, d.value_dim
    t = B * d.value_heads * S  # (batch, head, token) triples
    out = ops.elementwise("div", t * Dk) + ops.elementwise("exp", t) + ops.elementwise("mul", t * Dk * Dv)
    out = out + ops.elementwise("mul", t * Dk * Dv) + ops.reduce_sum(t * Dv, Dk)
    out = out + ops.elementwise("sub", t * Dv) + ops.elementwise("mul", t * Dv)
    out = out + ops.elementwise("mul", t * Dk * Dv) + ops.elementwise("add", t * Dk * Dv)
    return out + ops.elementwise("mul", t * Dk * Dv) + ops.reduce_sum(t * Dv, Dk)


def delta_rule(d: DeltaNet) -> Counts:
    """The recurrent step on a decode step, the chunked scan otherwise; reads the recurrent state when a
    prefill left one."""
    dec = decode_step()
    out = Counts()
    for metric, value in chunk_rule(d).items():
        out[metric] = out.get(metric, ZERO) + (1 - dec) * value
    for metric, value in recurrent_rule(d).items():
        out[metric] = out.get(metric, ZERO) + dec * value
    held = B * d.value_heads * d.key_dim * d.value_dim
    # q, k (value_heads wide), v, g, beta; the state when there is one
    reads = B * S * d.value_heads * (2 * d.key_dim + d.value_dim + 2)
    return out.with_facts(states=(State(StateKind.RECURRENT, read=has_state() * held),), reads=reads)


def gated_norm(d: DeltaNet, activation: str = "silu") -> Counts:
    """``RMSNormGated`` over value_dim for each (token, value head): rmsnorm(x) * weight * silu(z)."""
    rows, n = TOKENS * d.value_heads, TOKENS * d.value_width
    out = ops.rms_norm(rows, d.value_dim, weight=True) + activation_counts(activation, n) + ops.elementwise("mul", n)
    return fusable(with_params(out, d.value_dim), 2 * n, n)


def deltanet_parts(d: DeltaNet, hidden: int, activation: str, a: str = ".linear_attn") -> list[Part]:
    """The parts of a gated DeltaNet module ``a`` in its forward's order. The conv (``:conv``) and its
    activation run in the module's own forward (the activation, through ACT2FN, has no part rule: it is the
    module path's node); the conv weight sits on ``.conv1d`` (a module that never runs)."""
    t, kw, vw, H = TOKENS, d.key_width, d.value_width, d.value_heads
    if d.fused_projections:
        proj = [Part(f"{a}.in_proj_qkvz", f"{a}.in_proj_qkvz", NodeKind.LINEAR, linear(t, hidden, 2 * kw + 2 * vw, False), ATTN),
                Part(f"{a}.in_proj_ba", f"{a}.in_proj_ba", NodeKind.LINEAR, linear(t, hidden, 2 * H, False), ATTN)]
    else:
        widths = (("qkv", 2 * kw + vw), ("z", vw), ("b", H), ("a", H))
        proj = [Part(f"{a}.in_proj_{n}", f"{a}.in_proj_{n}", NodeKind.LINEAR, linear(t, hidden, w, False), ATTN)
                for n, w in widths]
    return [
        *proj,
        Part(f"{a}:conv_state", a, NodeKind.KV_CACHE, conv_state(d), ATTN),
        Part(f"{a}.conv1d", f"{a}.conv1d", CAUSAL_CONV, conv_weight(d), ATTN),
        Part(f"{a}:conv", a, CAUSAL_CONV, causal_conv(d), ATTN),
        Part(a, a, NodeKind.ACTIVATION, conv_activation(d, activation), ATTN),
        Part(f"{a}:gates", a, GATES, gates(d), ATTN),
        Part(f"{a}:l2norm", a, NodeKind.NORM, qk_l2norm(d), ATTN),
        Part(f"{a}:delta_rule", a, DELTA_RULE, delta_rule(d), ATTN),
        Part(f"{a}:recurrent_state", a, NodeKind.KV_CACHE, recurrent_state(d), ATTN),
        Part(f"{a}.norm", f"{a}.norm", NodeKind.NORM, gated_norm(d), ATTN),
        Part(f"{a}.out_proj", f"{a}.out_proj", NodeKind.LINEAR, linear(t, vw, hidden, False), ATTN),
    ]


__all__ = ["CAUSAL_CONV", "DELTA_RULE", "GATES", "LINEAR_ATTENTION", "DeltaNet", "DeltaNetMoESpec", "DeltaNetSpec",
           "LinearLayers", "causal_conv", "chunk_rule", "conv_activation", "decode_step", "deltanet_parts",
           "delta_rule", "gated_norm", "has_state", "recurrent_rule"]
