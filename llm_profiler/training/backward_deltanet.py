"""Backward counts of the gated DeltaNet hybrids (qwen3_next, qwen3_5(_text), qwen3_5_moe(_text)): the torch
path of ``torch_chunk_gated_delta_rule`` and the causal conv1d fallback, op by op, and the gated attention.

The reference (transformers 5.23, modeling_qwen3_next.py / modeling_qwen3_5*.py, eval mode, ``use_cache=True``,
a prefill: ``Qwen3NextGatedDeltaNet.forward``) runs, per DeltaNet layer, T = B*S tokens, Hk key heads and
Hv value heads (r = Hv / Hk) of Dk and Dv, the conv over the 2*Hk*Dk + Hv*Dv channels with kernel K, chunks
of C = 64 (the function's default), N = ceil(S / C) chunks, L = N*C padded positions, b = B*Hv:
projections; the causal depthwise conv and its silu; beta = sigmoid(b), g = -exp(A_log) * softplus(a + dt_bias);
the chunked delta rule (q, k repeated to Hv heads, l2-normalised, q scaled); the gated RMSNorm; out_proj.

Backward, as autograd runs it (``tools/autograd/derivatives.yaml``; every op costed by the op table):

- ``:conv``: ``convolution_backward`` (``backward_ssm.conv_backward``); the conv's silu (the mixer's own node):
  ``silu_backward``; q and k, read three times each by ``l2norm`` (``x * x`` twice, ``x * inv_norm``): 2 adds of
  b*S*Dk each, charged to this node (the repeat, transpose and float copy behind them are views and moves);
- ``:gates``: sigmoid_backward (T*Hv); -exp(A_log) * softplus(...): two muls, A's side summed over T
  (Hv*(T - 1) ADD); the neg (Hv ADD) and exp's ``grad * result`` (Hv MULT); ``softplus_backward``; + dt_bias:
  its gradient summed over T; beta, padded to L, read twice (v * beta, k * beta): b*L ADD;
- ``:l2norm`` (q and k, rows b*S of Dk): x * inv: g * inv and sum_Dk(g * x); rsqrt: r^3 (2 MULT), * -0.5,
  * g; the sum: an expand; x * x: two muls; the padded key is read twice (k * beta and its reshape) and the
  reshaped key by the two transposes of k_beta @ k^T and q @ k^T, and (N >= 2) by the key decay: (2 + [N >= 2])
  adds of b*L*Dk;
- ``:delta_rule``, the chunked scan (b*N = blocks of C):
  the repeat_interleave of q and k: summed back, T*Hk*Dk*(r - 1) ADD each; q * scale: one mul;
  v * beta, k * beta: two muls each and the sum over Dv / Dk (beta broadcast); cumsum: a reversed cumsum
  (C - 1 ADD per chunk); cum_i - cum_j: the neg of the C x C grid and both broadcasts summed (C - 1 ADD per
  row each); exp: ``grad * result``; (k_beta @ k^T) * decay and (q @ k^T) * decay: two muls and two bmm
  gradients each; the decays read twice; k_beta * exp(cum) and q * exp(cum): exp back, two muls, the sum over
  Dk; each ``linalg_solve_triangular(A, X)``: A^-H grad (one unit triangular solve), -grad_X @ X^H (a bmm), the
  neg (``linalg_solve_triangular_backward``), A read by both solves (one add), k_beta and q read twice (one
  add each); cum read by both broadcasts and both exps (3 adds), with N >= 2 also by the key decay's sub (both
  operands) and the chunk decay's select (3 more);
  per chunk i: intra_i @ v_new_i and q_i @ state_i, k_cumdecay_i @ state_i (the state's gradient for i >= 1,
  the zero initial state has none), v_new = u - ...: a neg; the state update (i <= N - 2: the final state
  is only cached) state * decay_i (decay's gradient, a sum over Dk*Dv; the state's for i >= 1) and
  k_i^T @ v_new_i (both gradients), v_new read twice; the state read three times (1 <= i <= N - 2) or twice
  (i = N - 1); each per-chunk ``select`` of new_values, k_cumdecay, q, intra (N of them), k and chunk decay
  (N - 1) returns a full-size gradient: (selects - 1) adds of the whole tensor; with N >= 2 the key decay
  k * exp(cum_last - cum) (exp back, two muls, the sum over Dk, the sub's neg and the sum over the C
  positions the last cum broadcast to) and the chunk decay's exp;
  the output, read twice by the gated norm (x^2, x * rstd): T*Hv*Dv ADD;
- ``.norm`` (``RMSNormGated``: rmsnorm(x) * w * silu(z), w of Dv shared by the heads): the eager RMSNorm's
  backward over T*Hv rows of Dv, two muls and ``silu_backward`` over T*Hv*Dv.

Gated attention layers (``Qwen3NextAttention``): q_proj writes query and gate halves; only the query half is read
twice (by q_norm: T*H*D ADD on q_proj, not the whole output); rope slices q and k into the rotary part and the
rest (partial rotary), one more add of all of q (k) on q_norm (k_norm) besides the 2 adds of the rotated part;
``:output_gate``, attn * sigmoid(gate): sigmoid_backward and two muls over T*H*D. The zero-centred norms
(x * rstd * (1 + w)) count as the eager RMSNorm (the + 1 is an add: nothing back). The MoE blocks are
``training.backward``'s (softmax router, batched experts, the sigmoid-gated shared expert).
"""

from __future__ import annotations

from typing import Any

from .. import ops
from ..formula import B, Formula, S, ceil_div, fmin
from ..graph.linear_attention import CAUSAL_CONV, DELTA_RULE, GATES, DeltaNet
from ..graph.node import Node, NodeKind
from ..metrics import ACT, ADD, EXP, MULT
from ..ops import Counts
from ..profile import ModelProfile
from . import backward as base
from .backward_ssm import conv_backward, softplus_backward

# the spec's model types (a multimodal qwen3_5 / qwen3_5_moe config is profiled as its text model, _text)
DELTANET_TYPES: frozenset[str] = frozenset({"qwen3_next", "qwen3_5_text", "qwen3_5_moe_text"})


def _mm(a: Any, inner: Any, c: Any, batch: Any) -> Counts:
    """(a x inner) @ (inner x c), ``batch`` times."""
    return ops.matmul(a, c, inner, batch=batch)


def _acc(n: Any) -> Counts:
    """Gradient accumulation: one add of n elements."""
    return Counts({ADD: n, ACT: n})


def _mul(n: Any) -> Counts:
    return ops.elementwise("mul", n)


def _neg(n: Any) -> Counts:
    return ops.elementwise("neg", n)


def _bmul(n: Any, rows: Any, width: Any) -> Counts:
    """x * y with y broadcast over ``width``: two muls of n, y's gradient summed over ``width``."""
    return _mul(n) + _mul(n) + ops.reduce_sum(rows, width)


def chunks(d: DeltaNet) -> tuple[Formula, Formula, Formula]:
    """(N, [N >= 2], max(N - 2, 0)) for N = ceil(S / C) chunks."""
    n = ceil_div(S, d.chunk)
    two = fmin(n - 1, 1)
    return n, two, n - 1 - two


def chunk_rule_backward(d: DeltaNet) -> Counts:
    """``torch_chunk_gated_delta_rule`` after the l2norm, backwards (module docstring), at P = 0."""
    Hk, H, Dk, Dv, C = d.key_heads, d.value_heads, d.key_dim, d.value_dim, d.chunk
    N, two, mid = chunks(d)
    b = B * H
    L = N * C
    blocks = b * N
    out = Counts()
    if H != Hk:  # q and k repeated from Hk to Hv heads: each copy's gradient summed back
        out = out + ops.reduce_sum(B * S * Hk * Dk, H // Hk) * 2
    out = out + _mul(b * S * Dk)  # q * scale
    out = out + _bmul(b * L * Dv, b * L, Dv) + _bmul(b * L * Dk, b * L, Dk)  # v * beta, k * beta
    out = out + ops.cumsum(blocks, C)  # the reversed cumsum
    out = out + _neg(blocks * C * C) + ops.reduce_sum(blocks * C, C) * 2  # cum_i - cum_j
    out = out + _mul(blocks * C * C) + _acc(blocks * C * C)  # exp; the decays read twice
    for _ in range(2):  # (k_beta @ k^T) * decay and (q @ k^T) * decay
        out = out + _mul(blocks * C * C) * 2 + _mm(C, C, Dk, blocks) + _mm(Dk, C, C, blocks)
    for _ in range(2):  # k_beta * exp(cum) and q * exp(cum)
        out = out + _mul(b * L) + _bmul(b * L * Dk, b * L, Dk)
    out = out + _acc(b * L * Dk) * 2  # k_beta and the scaled q, each read twice
    for cols in (Dv, Dk):  # the two unit triangular solves: A^-H grad, -grad_X @ X^H
        out = out + ops.solve_triangular(blocks, C, cols, unit=True) + _mm(C, cols, C, blocks) + _neg(blocks * C * C)
    out = out + _acc(blocks * C * C)  # the system read by both solves
    out = out + _acc(b * L) * (3 + 3 * two)  # cum: 4 readers (7 with N >= 2)
    # N >= 2: k * exp(cum_last - cum) and the chunk decay exp(cum_last)
    key_decay = _mul(b * L) + _bmul(b * L * Dk, b * L, Dk) + _neg(b * L) + ops.reduce_sum(blocks, C) + _mul(blocks)
    out = out + key_decay * two
    # per chunk: always (N times), for i >= 1 (N - 1), for i <= N - 2 (N - 1), for 1 <= i <= N - 2
    every = _mm(C, Dv, C, b) + _mm(C, C, Dv, b) + _mm(C, Dv, Dk, b) * 2 + _neg(b * C * Dv)
    later = _mm(Dk, C, Dv, b) * 2
    update = (_mul(b * Dk * Dv) + ops.reduce_sum(b, Dk * Dv) + _mm(Dk, Dv, C, b) + _mm(C, Dk, Dv, b)
              + _acc(b * C * Dv))
    out = out + every * N + (later + update) * (N - 1) + _mul(b * Dk * Dv) * mid
    out = out + _acc(b * Dk * Dv) * (2 * mid + two)  # the states read three times or twice
    # the per-chunk selects' full-size gradients summed
    out = out + (_acc(b * L * Dv) + _acc(b * L * Dk) * 2 + _acc(blocks * C * C)) * (N - 1)
    out = out + (_acc(b * L * Dk) + _acc(blocks)) * mid
    out = out + _acc(B * S * H * Dv)  # the output, read twice by the gated norm
    return Counts(out)


def l2norm_backward(d: DeltaNet) -> Counts:
    """q and k l2-normalised over Dk (b*S rows each), backwards, and the padded key's reads (docstring)."""
    _, two, _ = chunks(d)
    rows = B * d.value_heads * S
    n = rows * d.key_dim
    rsqrt = Counts({MULT: 4 * rows, ACT: 3 * rows})  # -0.5 * g * r^3: the cube (2 MULT), two muls
    one = _bmul(n, rows, d.key_dim) + rsqrt + _mul(n) * 2  # x * inv_norm; rsqrt; x * x
    return Counts(one * 2 + _acc(B * d.value_heads * ceil_div(S, d.chunk) * d.chunk * d.key_dim) * (2 + two))


def gates_backward(d: DeltaNet) -> Counts:
    """beta = sigmoid(b), g = -exp(A_log) * softplus(a + dt_bias), backwards (module docstring)."""
    H, t = d.value_heads, base.TOKENS
    n = t * H
    out = base.sigmoid_backward(n) + _mul(n) + _mul(n) + ops.reduce_sum(H, t) + _neg(H) + _mul(H)
    out = out + softplus_backward(n) + ops.reduce_sum(H, t)
    return Counts(out + _acc(B * H * ceil_div(S, d.chunk) * d.chunk))


def gated_norm_backward(d: DeltaNet) -> Counts:
    """rmsnorm(x) * w * silu(z) over T*Hv rows of Dv: the eager RMSNorm, two muls, silu_backward."""
    rows = base.TOKENS * d.value_heads
    n = rows * d.value_dim
    return Counts(base.rms_norm_backward(rows, Formula.const(d.value_dim)) + _mul(n) * 2 + base.silu_backward(n))


def local_delta_nets(model: ModelProfile) -> dict[int, DeltaNet]:
    """layer -> the DeltaNet dims its nodes hold: the spec's, or a tensor-parallel rank's share of the heads
    (``parallel.shard`` splits A_log / dt_bias by value heads and the conv by channels, not ``spec.delta_net``):
    Hv from the gates' A_log, Hk from the conv's 2*Hk*Dk + Hv*Dv channels."""
    spec: Any = model.spec  # the family's spec subclass (delta_net)
    d: DeltaNet = spec.delta_net
    out: dict[int, DeltaNet] = {}
    for gates in model.nodes:
        if gates.kind != GATES or gates.layer is None:
            continue
        conv = next(n for n in model.nodes if n.layer == gates.layer and n.kind == CAUSAL_CONV and n.part is None)
        heads = gates.facts.weights[0].shape[0]
        channels = conv.facts.weights[0].shape[0]
        out[gates.layer] = d.model_copy(update={"value_heads": heads,
                                                "key_heads": (channels - heads * d.value_dim) // (2 * d.key_dim)})
    return out


def deltanet_node_backward(node: Node, spec: Any, d: DeltaNet | None = None) -> Counts:
    """One node's backward (accumulations on other nodes' tensors excluded: ``deltanet_backward``); ``d``: the
    layer's DeltaNet dims (``local_delta_nets``; default the spec's)."""
    d = d or spec.delta_net
    c = node.counts
    if node.kind == NodeKind.KV_CACHE or (node.kind == CAUSAL_CONV and node.part is None):
        return Counts()  # the conv / recurrent states; conv1d's weight (read by :conv)
    if node.part == "conv":
        return conv_backward(node, d.conv_dim, d.kernel, False)
    if node.kind == NodeKind.ACTIVATION and node.path.endswith(".linear_attn"):
        reads = 2 * 2 * B * S * d.value_heads * d.key_dim  # q and k read three times by l2norm
        return Counts(base.silu_backward(Formula.of(c[EXP])) + _acc(reads))
    if node.kind == GATES:
        return gates_backward(d)
    if node.part == "l2norm":
        return l2norm_backward(d)
    if node.kind == DELTA_RULE:
        return chunk_rule_backward(d)
    if node.kind == NodeKind.NORM and node.path.endswith(".linear_attn.norm"):
        return gated_norm_backward(d)
    if node.part == "output_gate":
        n = Formula.of(c[MULT])  # attn * sigmoid(gate): sigmoid back, the product's two muls
        return Counts(base.sigmoid_backward(n) + _mul(n) + _mul(n))
    group = spec.num_heads // spec.num_kv_heads
    return base.node_backward(node, spec.norm, spec.activation, group, spec if hasattr(spec, "num_experts") else None)


def deltanet_backward(model: ModelProfile) -> dict[str, Counts]:
    """Per node: ``deltanet_node_backward`` plus ``training.backward.accumulations``, corrected for the gated
    attention: q_proj's output is read twice only in its query half (q_norm), and rope's slicing of q and k
    into the rotary part and the rest reads each once more (on q_norm / k_norm)."""
    spec: Any = model.spec  # the family's spec subclass (delta_net)
    t, width = base.TOKENS, spec.num_heads * spec.head_dim
    acc = base.accumulations(model)

    def move(path: str, n: Formula) -> None:
        acc[path] = acc.get(path, Counts()) + _acc(n)

    for node in model.nodes:
        if node.path.endswith(".self_attn.q_proj"):
            move(node.path, -t * width)  # the gate half is read once
        elif node.kind == NodeKind.ROPE:
            attn = node.path.rsplit(":", 1)[0]
            move(f"{attn}.q_norm", t * width)
            move(f"{attn}.k_norm", t * spec.num_kv_heads * spec.head_dim)
    local = local_delta_nets(model)
    return base.family_counts(
        model, lambda n: deltanet_node_backward(n, spec, local.get(n.layer) if n.layer is not None else None), acc)


__all__ = ["DELTANET_TYPES", "chunk_rule_backward", "deltanet_backward", "deltanet_node_backward",
           "gated_norm_backward", "gates_backward", "l2norm_backward", "local_delta_nets"]
