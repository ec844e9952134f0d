"""Backward counts of the Mamba-2 mixer (mamba2, nemotron_h, granitemoehybrid, bamba, falcon_h1), Mamba-1
(mamba, jamba, falcon_mamba) and LFM2's short conv (lfm2, lfm2_moe): the chunked SSD scan of transformers'
torch path, op by op.

The reference (transformers 5.23, modeling_mamba2.py, eval mode with a cache object: ``Mamba2Mixer.forward``'s
torch path, ``mamba2_chunk_scan``) runs, per layer, T = B*S tokens, H heads of Pd, G groups of N states, the
conv over C = H*Pd + 2*G*N channels with kernel k, c = ceil(S / L) chunks of L, Tp = B*c*L padded tokens:
in_proj -> (gate, xBC, dt); xBC through the causal depthwise conv and silu -> (x, B, C); A = -exp(A_log);
dt = clamp(softplus(dt + dt_bias)); the SSD scan; the gated grouped RMSNorm, norm(x * silu(gate)); out_proj.

Backward, as autograd runs it (``tools/autograd/derivatives.yaml``; counted per aten op by the op table and
``training.backward.ATEN_BACKWARD``):

- the conv (``:conv``), ``convolution_backward`` (module docstring of ``training.backward``): grad input,
  grad weight and grad bias of the depthwise conv;
- the conv's silu (the mixer's own node): ``silu_backward``; x, B and C are each read twice by the scan (x by
  ``pad`` for the D skip and by ``x * dt``; the chunked B by G = C B^T and B * decay; C by G and C @ states):
  T*H*Pd + 2*Tp*H*N accumulation ADD, charged to this node (the views behind them end at the silu);
- ``:decay``, A = -exp(A_log): the neg (H ADD) and exp's ``grad * result`` (H MULT);
- ``:dt``: dt read twice (A * dt, x * dt): T*H ADD; clamp_backward (``ge``, ``le``, ``logical_and``: 3 CMP,
  a where); ``softplus_backward`` (MULT 2, EXP 1, ADD 1, DIV 1, CMP 1 per element); + dt_bias: the bias's
  gradient summed over T (H*(T - 1) ADD);
- ``:scan``, the chunked SSD: every einsum's bmm, both gradients (``matmul_backward`` on the recorded shapes);
  a product of two tensors that both need a gradient: two muls, and a sum over the broadcast dimension of the
  smaller (Y_off = CS * exp(A_cumsum): Pd; B * decay_states: N; A * dt over T; x * dt over Pd; D * pad(x) over
  Tp*Pd); M = G * L: two muls; exp: ``grad * result``, one mul; cumsum: a reversed cumsum, (n - 1) ADD per row
  (A_cumsum over L; both segment sums over their n = L or c + 1 rows); segment_sum's expand: its sum, (n - 1)
  ADD per row; masked_fill / tril / pad / slice / cat: moves; the sub A_cumsum[-1:] - A_cumsum: a neg of every
  element and the slice's sum over L; A_cumsum read four times (3 Tp*H ADD), A twice (Tp*H), the chunked x
  twice (Tp*H*Pd); B and C's repeat_interleave over the H / G heads of a group: summed back,
  T*G*N*(H/G - 1) ADD each;
- the gated grouped RMSNorm (``mixer.norm``): the eager RMSNorm's backward over T*norm_groups rows of
  I / norm_groups with the I-wide weight, its input read twice (T*I ADD), and x * silu(gate): two muls and
  ``silu_backward`` over T*I.

lfm2 (modeling_lfm2.py): short-conv layers, in_proj -> (B, C, x); B * x; the depthwise causal conv (no bias);
C * conv_out; out_proj: the two products of two tensors are two muls back each, the conv ``convolution_backward``;
attention layers norm q and k (``q_layernorm`` / ``k_layernorm``) BEFORE rope, so rope's fan-out (2 adds of the
rotated part) is on the norms; the MLP's activation node holds silu(w1) * w3: ``silu_backward`` and two muls.

Gradient accumulation of the stream: each layer is one pre-norm block (norm -> mixer -> residual): the stream
is read by the norm twice and by the residual add (2 ADD of T*h on its writer); the last layer's output by the
final norm twice (1).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from ..formula import B, Formula, S, ceil_div
from ..graph.node import Node, NodeKind
from ..graph.ssm import WEIGHTS_KIND
from ..metrics import ACT, ADD, DIV, EXP, MACS, MULT
from ..ops import Counts
from ..profile import ModelProfile
from . import backward as base
from .backward_moe import l2_norm_backward

CMP = "cmp"
SSM_TYPES: frozenset[str] = frozenset({"mamba2", "nemotron_h"})
_DT_NORMS = (".dt_layernorm", ".b_layernorm", ".c_layernorm")  # Mamba-1's norms on dt, B and C


def softplus_backward(n: Any) -> Counts:
    """aten softplus_backward, CPU kernel: z = exp(x * beta); x * beta > threshold ? g : g * z / (z + 1):
    MULT 2, EXP 1, ADD 1, DIV 1, CMP 1 per element."""
    return Counts({MULT: 2 * n, EXP: n, ADD: n, DIV: n, CMP: n, ACT: n})


def convolution_backward(grad_out: Any, inputs: Any, weight: Any, mask: Any, groups: int) -> Counts:
    """aten convolution_backward of a stride-1 conv whose every input element meets every tap (the causal
    convs, padding = kernel - 1): grad input, per input element a sum of (out / groups) * kernel products;
    grad weight, per weight element a sum over the batch and the Lout output positions of g * x (the padded
    input); grad bias, g summed over the batch and Lout."""
    out_ch, per_group, kernel = weight[0], weight[1], _prod(weight[2:])
    n_in, n_w, lout = _prod(inputs), _prod(weight), _prod(grad_out[2:]) * grad_out[0]
    taps = out_ch // groups * kernel
    out = Counts()
    if mask[0]:
        out = out + Counts({MACS: n_in * taps, MULT: n_in * taps, ADD: n_in * (taps - 1), ACT: n_in})
    if mask[1]:
        out = out + Counts({MACS: n_w * lout, MULT: n_w * lout, ADD: n_w * (lout - 1), ACT: n_w})
    if mask[2]:
        out = out + Counts({ADD: out_ch * (lout - 1), ACT: out_ch})
    del per_group
    return out


def _prod(xs: Any) -> Any:
    out = 1
    for x in xs:
        out = out * x
    return out


def aten_conv(args: tuple, kwargs: dict, out: Any) -> Counts:
    grad, inputs, weight = args[0], args[1], args[2]
    groups, mask = args[9], args[10]
    return convolution_backward(tuple(grad.shape), tuple(inputs.shape), tuple(weight.shape), mask, int(groups))


def aten_softplus(args: tuple, kwargs: dict, out: Any) -> Counts:
    return softplus_backward(base.numel(out))


def conv_backward(node: Node, ch: int, k: int, bias: bool) -> Counts:
    """A causal depthwise conv node of ``ch`` channels and kernel k backwards (``convolution_backward``), from
    its forward MACs, B*ch*Lout*k (Lout = L' + k - 1 outputs of the L' positions it convolves)."""
    macs = Formula.of(node.counts[MACS])
    lin = macs - B * ch * k * (k - 1)  # B*ch*L' input elements times k taps
    out = Counts({MACS: lin + macs, MULT: lin + macs, ADD: lin / k * (k - 1) + macs - ch * k, ACT: lin / k + ch * k})
    if bias:
        out = out + Counts({ADD: macs / k - ch, ACT: ch})
    return out


def scan_backward(node: Node, m: Any) -> Counts:
    """The chunked SSD scan backwards (module docstring), at P = 0."""
    H, Pd, N, G, L = m.heads, m.head_dim, m.state, m.groups, m.chunk
    t, c = B * S, ceil_div(S, L)
    tp = B * c * L
    bh = B * H
    out = base.matmul_backward(node)
    mult = (2 * tp * H * Pd + tp * H + bh * (c + 1) * (c + 1) + 2 * tp * H * N + tp * H + 2 * B * c * L * L * H
            + bh * c * L * L + 2 * t * H + 2 * t * H * Pd + 2 * tp * H * Pd)
    add = (tp * H * (Pd - 1) + 2 * bh * (c + 1) * c + 3 * tp * H + tp * H * (N - 1) + tp * H + bh * c * (L - 1)
           + tp * H * Pd + 2 * bh * c * L * (L - 1) + bh * c * (L - 1) + tp * H + H * (t - 1) + t * H * (Pd - 1)
           + tp * H * Pd - H + 2 * t * G * N * (H // G - 1))
    act = (2 * tp * H * Pd + tp * H + tp * H + 2 * bh * (c + 1) * (c + 1) + bh * (c + 1) + 3 * tp * H
           + 2 * tp * H * N + tp * H + tp * H + tp * H + bh * c + tp * H * Pd + 2 * B * c * L * L * H
           + 2 * bh * c * L * L + bh * c * L + bh * c * L + tp * H + 2 * t * H + H + 2 * t * H * Pd + t * H
           + 2 * tp * H * Pd + H + 2 * t * G * N)
    return Counts(out + Counts({MULT: mult, ADD: add, ACT: act}))


def gated_norm_backward(t: Formula, width: int, groups: int) -> Counts:
    """norm(x * silu(gate)) over T rows of I = width in ``groups`` groups (module docstring)."""
    n, rows, elems = width // groups, t * groups, t * width
    rms = Counts({MULT: 6 * elems + 4 * rows, ADD: width * (t - 1) + rows * (n - 1), DIV: elems, EXP: elems,
                  ACT: 8 * elems + width + 4 * rows})
    return Counts(rms + Counts({ADD: elems, ACT: elems}) + Counts({MULT: 2 * elems, ACT: 2 * elems})
                  + base.silu_backward(elems))


def ssm_node_backward(node: Node, spec: Any) -> Counts:
    m, c = _mamba2(spec), node.counts
    t = base.TOKENS
    if node.kind in (NodeKind.KV_CACHE, WEIGHTS_KIND):  # the cache; conv1d's weights (read by :conv)
        return Counts()
    if node.part == "conv":
        return conv_backward(node, m.heads * m.head_dim + 2 * m.groups * m.state, m.conv_kernel, m.conv_bias)
    if node.part == "decay":
        return Counts({MULT: Formula.of(c[EXP]), ADD: Formula.of(c[ADD]), ACT: 2 * Formula.of(c[EXP])})
    if node.part == "dt":
        n = t * m.heads
        return Counts(softplus_backward(n) + Counts({ADD: n + m.heads * (t - 1), CMP: 3 * n, ACT: 5 * n + m.heads}))
    if node.part == "scan":
        return scan_backward(node, m)
    if node.kind == NodeKind.ELEMENTWISE and node.part is None and node.path.endswith((".mixer", ".mamba")):
        tp = B * ceil_div(S, m.chunk) * m.chunk
        reads = t * m.heads * m.head_dim + 2 * tp * m.heads * m.state
        return Counts(base.silu_backward(Formula.of(c[EXP])) + Counts({ADD: reads, ACT: reads}))
    if node.kind == NodeKind.NORM and node.path.endswith((".mixer.norm", ".mamba.norm")):
        return gated_norm_backward(t, m.heads * m.head_dim, m.norm_groups)
    if node.kind == NodeKind.ACTIVATION and spec.activation == "relu2":
        return relu2_backward(Formula.of(c[CMP]))  # relu: one comparison per element
    group = spec.num_heads // spec.num_kv_heads if spec.num_kv_heads else 1
    return base.node_backward(node, spec.norm, spec.activation, group, spec if hasattr(spec, "num_experts") else None)


def _mamba2(spec: Any) -> Any:
    """The spec's Mamba-2 mixer dimensions (``mixer`` in mamba2; ``mamba`` in the hybrids)."""
    return getattr(spec, "mixer", None) or getattr(spec, "mamba", None)


def relu2_backward(n: Any) -> Counts:
    """relu(x).pow(2) (nemotron_h's MLP): pow back, g * 2 * y^1 (y^1 an aten pow: 1 EXP, then 2 MULT);
    threshold_backward, g where x > 0 (1 CMP)."""
    return Counts({EXP: n, MULT: 2 * n, CMP: n, ACT: 4 * n})


def prenorm_accumulations(model: ModelProfile) -> dict[str, Counts]:
    """Each layer one pre-norm block: the stream read by the (eager RMS) norm twice and the residual add; the
    norm's output read by the block's input linears (Mamba's in_proj; an MLP's up (and gate); attention's q,
    k, v): (readers - 1) adds on the norm. Rope is not among these layouts (no rope fan-out)."""
    spec: Any = model.spec  # the family's spec subclass (its extra fields)
    stream = base.TOKENS * spec.hidden_size
    reads = 2 if spec.norm == "rmsnorm" else 1
    out: dict[str, Counts] = {}

    add = partial(base.accumulate, out)

    writer = next(n for n in model.nodes if n.kind == NodeKind.EMBEDDING).path
    if spec.tie_word_embeddings:
        add(writer, Formula.const(spec.vocab_size * spec.hidden_size))
    for layer in sorted({n.layer for n in model.nodes if n.layer is not None}):
        nodes = [n for n in model.nodes if n.layer == layer]
        if any(n.kind == NodeKind.ROPE for n in nodes) or [n.kind for n in nodes].count(NodeKind.RESIDUAL) != 1:
            raise base.BackwardUnsupportedError(f"layer {layer}: not a single pre-norm block without rope")
        readers = sum(1 for n in nodes if n.kind == NodeKind.LINEAR
                      and n.path.rsplit(".", 1)[-1] not in base.OUTPUT_PROJECTIONS
                      and n.path.rsplit(".", 1)[-1] != "x_proj")  # Mamba-1's x_proj reads the conv's output
        add(writer, reads * stream)
        add(nodes[0].path, (readers - 1) * stream)
        writer = next(n.path for n in nodes if n.kind == NodeKind.RESIDUAL)
    add(writer, (reads - 1) * stream)
    return out


def granitemoehybrid_backward(model: ModelProfile) -> dict[str, Counts]:
    """Mamba-2 or attention, then MoE + shared MLP, per layer: ``training.backward.accumulations`` (its
    attention-then-MLP blocks; the Mamba mixer reads the block's input through in_proj only; the shared MLP's
    ``output_linear`` is among ``OUTPUT_PROJECTIONS``, not a reader of the norm's output)."""
    spec: Any = model.spec  # the family's spec subclass (its extra fields)
    return base.family_counts(model, lambda n: ssm_node_backward(n, spec), base.accumulations(model))


def bamba_backward(model: ModelProfile) -> dict[str, Counts]:
    """bamba: ``granitemoehybrid_backward``'s rules (Mamba-2 or attention, then an MLP), with bamba's partial
    rotary: apply_rotary_pos_emb slices q and k into the rotary part and the rest, then concatenates, so q_proj's
    (k_proj's) output is read once more (one add of all of q, of k) beside rope's fan-out on the rotary part."""
    spec: Any = model.spec  # the family's spec subclass (its extra fields)
    out = granitemoehybrid_backward(model)
    for node in model.nodes:
        if node.kind == NodeKind.ROPE:
            attn = node.path.rsplit(":", 1)[0]
            for which, heads in (("q", spec.num_heads), ("k", spec.num_kv_heads)):
                n = base.TOKENS * heads * spec.head_dim
                out[f"{attn}.{which}_proj"] = Counts(out[f"{attn}.{which}_proj"] + Counts({ADD: n, ACT: n}))
    return out


def lfm2_backward(model: ModelProfile) -> dict[str, Counts]:
    """lfm2: short-conv layers (in_proj -> B, C, x; B * x; the depthwise causal conv; C * conv; out_proj) and
    attention layers, each then a SwiGLU MLP whose activation node holds silu(w1) * w3. lfm2_moe: the same,
    with MoE blocks past the dense ones: ``training.backward``'s router (sigmoid scores, the expert bias's
    gathered weights scattered back, the top-k renormalisation, the routed scaling) and batched experts, plus
    the experts' own silu (``F.silu``, no act_fn module: ``silu_backward`` over T*k*I on the experts node)."""
    spec: Any = model.spec  # the family's spec subclass (its extra fields)

    def rule(node: Node) -> Counts:
        c = node.counts
        if node.kind in (NodeKind.KV_CACHE, WEIGHTS_KIND):
            return Counts()
        if node.part == "conv":
            return conv_backward(node, spec.hidden_size, spec.conv_kernel, spec.conv_bias)
        if node.kind == NodeKind.ELEMENTWISE and node.path.endswith(".conv"):
            n = Formula.of(c[MULT])  # B * x and C * conv_out: two products of two tensors, two muls back each
            return Counts({MULT: 2 * n, ACT: 2 * n})
        if node.kind == NodeKind.ACTIVATION and node.path.endswith(".feed_forward"):
            n = Formula.of(c[EXP])  # silu(w1) * w3: silu_backward, the product's two muls
            return Counts(base.silu_backward(n) + Counts({MULT: 2 * n, ACT: 2 * n}))
        moe = spec if hasattr(spec, "num_experts") else None  # lfm2_moe: the router and experts' rules
        if node.kind == NodeKind.EXPERTS:  # lfm2_moe's act_fn is F.silu (no module): its backward is here
            return Counts(base.node_backward(node, spec_moe=moe) + base.silu_backward(Formula.of(c[EXP])))
        return base.node_backward(node, spec.norm, spec.activation, spec.num_heads // spec.num_kv_heads, moe)

    acc = base.accumulations(model)
    paths = {n.path for n in model.nodes}
    for node in model.nodes:  # rope reads q_layernorm's / k_layernorm's output (the generic rule: q_proj's)
        if node.kind == NodeKind.ROPE:
            attn = node.path.rsplit(":", 1)[0]
            for which, heads in (("q", spec.num_heads), ("k", spec.num_kv_heads)):
                if f"{attn}.{which}_layernorm" in paths:
                    n = 2 * base.TOKENS * heads * spec.rotary_dim
                    acc[f"{attn}.{which}_proj"] = acc[f"{attn}.{which}_proj"] + Counts({ADD: -n, ACT: -n})
                    acc[f"{attn}.{which}_layernorm"] = acc.get(f"{attn}.{which}_layernorm", Counts()) + Counts(
                        {ADD: n, ACT: n})
    return base.family_counts(model, rule, acc)


def falcon_h1_backward(model: ModelProfile) -> dict[str, Counts]:
    """falcon_h1: Mamba-2 and attention in parallel on every layer's normed input, then a SwiGLU MLP, with muP
    multipliers (each a multiply by a constant or a buffer: one mul back): the mamba input times
    ssm_in_multiplier and in_proj's output times mup_vector (on the mamba node), k times key_multiplier (the
    attention's own node, which rope then reads: the k rope fan-out is charged there, not to k_proj), the
    attention input times attention_in_multiplier and both outputs times their multipliers (the residual node),
    gate_proj's output times gate_multiplier and down_proj's output times down_multiplier (the MLP's own node,
    with up * act(gate), two muls back). The normed input is read twice (the two multiplies: 1 add on
    input_layernorm); the attention input by q, k and v (2 adds on the residual node that wrote it). Without
    ``mamba_rms_norm`` (the config default) the scan output times silu(gate) is on the mamba node: two muls
    and ``silu_backward``. With it, the grouped gated RMSNorm (``gated_norm_backward``: the same ops in either
    order), whose input read twice (x^2, x * rstd) is, with ``mamba_norm_before_gate`` (its default), the
    scan's output (T*I ADD on ``:scan``), else x * silu(gate), computed inside the norm module (on the norm)."""
    spec: Any = model.spec  # the family's spec subclass (its extra fields)
    m, t, h = _mamba2(spec), base.TOKENS, spec.hidden_size
    inner = m.heads * m.head_dim
    width = 2 * inner + 2 * m.groups * m.state + m.heads  # in_proj's output, times mup_vector

    def rule(node: Node) -> Counts:
        c = node.counts
        if node.kind == NodeKind.ELEMENTWISE and node.part is None and node.path.endswith(".mamba"):
            tp = B * ceil_div(S, m.chunk) * m.chunk
            reads = t * inner + 2 * tp * m.heads * m.state
            out = base.silu_backward(Formula.of(c[EXP])) + Counts({ADD: reads, ACT: reads})
            muls = t * width + t * h + (0 if m.gated_norm else 2 * t * inner)  # muP; the ungated product's two
            out = out + Counts({MULT: muls, ACT: muls})
            return Counts(out)
        if node.kind == NodeKind.NORM and node.path.endswith(".mamba.norm") and spec.mamba_norm_before_gate:
            # norm(x) * silu(gate): the norm's input x, the scan's output, read twice there (on :scan)
            n = t * inner
            return Counts(gated_norm_backward(t, inner, m.norm_groups) + Counts({ADD: -n, ACT: -n}))
        if node.part == "scan" and m.gated_norm and spec.mamba_norm_before_gate:
            n = t * inner
            return Counts(ssm_node_backward(node, spec) + Counts({ADD: n, ACT: n}))
        if node.kind == NodeKind.RESIDUAL:
            return Counts({MULT: Formula.of(c[MULT]), ACT: Formula.of(c[MULT])})
        if node.kind == NodeKind.ELEMENTWISE and node.path.endswith(".feed_forward"):
            n = t * spec.intermediate_size  # up * act(gate): its second mul back
            return Counts({MULT: Formula.of(c[MULT]) + n, ACT: Formula.of(c[MULT]) + n})
        return ssm_node_backward(node, spec)

    acc = base.accumulations(model)

    move = partial(base.accumulate, acc)

    for node in model.nodes:
        if node.path.endswith(".input_layernorm"):
            move(node.path, -2 * t * h)  # 2 readers (the two multiplies), not in_proj, q, k and v
        elif node.kind == NodeKind.RESIDUAL:
            move(node.path, 2 * t * h)  # the attention input (times attention_in_multiplier) read by q, k, v
        elif node.kind == NodeKind.ROPE:
            attn = node.path.rsplit(":", 1)[0]
            n = 2 * t * spec.num_kv_heads * spec.rotary_dim
            move(f"{attn}.k_proj", -n)
            move(attn, n)  # k times key_multiplier: the attention's own node wrote what rope reads
    return base.family_counts(model, rule, acc)


def mamba1_scan_backward(node: Node, m: Any) -> Counts:
    """Mamba-1's sequential scan (``MambaMixer.slow_forward``) backwards, B sequences of S steps, I channels, N
    states, T = B*S (module docstring of ``mamba_backward``)."""
    ch, N, t = m.inner, m.state, B * S
    step = B * ch * N  # one step's state
    mult = (2 * t * ch + 3 * t * ch + 2 * t * ch + (2 * S - 1) * step + 2 * t * ch * N + 2 * t * ch * N + t * ch * N
            + 2 * t * ch * N)
    add = (3 * t * ch + ch * (t - 1) + (S - 1) * step + 2 * (S - 1) * t * ch * N + t * ch * (N - 1)
           + t * ch * (N - 1) + t * N * (ch - 1) + t * ch * N - ch * N + t * ch * (N - 1))
    act = (2 * t * ch + t * ch + 2 * t * ch + ch + (2 * S - 1) * step + (S - 1) * step + 2 * (S - 1) * t * ch * N
           + 2 * t * ch * N + t * ch + 2 * t * ch * N + t * ch + t * N + t * ch * N + 2 * t * ch * N + ch * N + t * ch)
    return Counts(base.matmul_backward(node) + Counts({MULT: mult, ADD: add, EXP: t * ch, DIV: t * ch, ACT: act}))


def mamba_backward(model: ModelProfile) -> dict[str, Counts]:
    """mamba (Mamba-1, transformers' ``slow_forward``, the torch path):

    - ``:scan``: y * silu(gate) (two muls, ``silu_backward``); + x * D (two muls, D's gradient summed over T);
      per step i (reversed), y_i = state_i @ C_i (one bmm back each way) and state_i = dA_i * state_(i-1) +
      dBu_i (two muls, one at i = 0 whose previous state is a constant zero); state_i read twice (S - 1 adds
      of B*I*N); dA and dBu are read one step at a time (``select``): their S gradients summed, S - 1 adds of
      the whole B*I*S*N tensor each; dBu = dB * x (two muls, x's sum over N); dB = dt * B (two muls, sums over
      N and over I); dA = exp(A * dt) (exp back, two muls, A's sum over B*S, dt's over N);
    - ``:dt``: dt_proj's two matmul gradients, its bias summed over T, ``softplus_backward``, dt read twice;
    - the mixer's own node: the conv's silu back; x read twice (x * D and dBu) and in_proj's x half read twice
      (the cache update and the conv): T*I ADD each;
    - x_proj: C read one step at a time: S - 1 adds of B*S*N;
    - ``:conv``, ``:decay``: as Mamba-2's."""
    return _mamba1_model(model, prenorm=True)


def _mamba1_model(model: ModelProfile, prenorm: bool) -> dict[str, Counts]:
    spec: Any = model.spec  # the family's spec subclass (its extra fields)
    m, t = getattr(spec, "mixer", None) or spec.mamba, base.TOKENS  # type: ignore[attr-defined]

    def rule(node: Node) -> Counts:
        c = node.counts
        if node.kind in (NodeKind.KV_CACHE, WEIGHTS_KIND):
            return Counts()
        if node.part == "conv":
            return conv_backward(node, m.inner, m.conv_kernel, m.conv_bias)
        if node.part == "decay":
            return Counts({MULT: Formula.of(c[EXP]), ADD: Formula.of(c[ADD]), ACT: 2 * Formula.of(c[EXP])})
        if node.part == "dt":
            n = t * m.inner
            return Counts(base.matmul_backward(node) + softplus_backward(n)
                          + Counts({ADD: n + m.inner * (t - 1), ACT: n + m.inner}))
        if node.part == "scan":
            return mamba1_scan_backward(node, m)
        if node.kind == NodeKind.ELEMENTWISE and node.part is None and node.path.endswith((".mixer", ".mamba")):
            return Counts(base.silu_backward(Formula.of(c[EXP])) + Counts({ADD: 2 * t * m.inner, ACT: 2 * t * m.inner}))
        group = spec.num_heads // spec.num_kv_heads if spec.num_kv_heads else 1
        if node.kind == NodeKind.NORM and m.dt_norms and not m.dt_norms_weight and node.path.endswith(_DT_NORMS):
            n = m.dt_rank if node.path.endswith(".dt_layernorm") else m.state  # falcon_mamba's weightless norms
            out = l2_norm_backward(t, n)
        else:
            out = base.node_backward(node, spec.norm, spec.activation, group,
                                     spec if hasattr(spec, "num_experts") else None)
        # C read one step at a time (S - 1 adds of B*S*N): on x_proj, or on c_layernorm with dt_norms, whose
        # three RMSNorms (dt, B, C) each read their slice of x_proj's output twice (T*(R + 2N) on x_proj)
        selects = (S - 1) * t * m.state
        if node.path.endswith(".x_proj"):
            n = t * (m.dt_rank + 2 * m.state) if m.dt_norms else selects
            out = out + Counts({ADD: n, ACT: n})
        elif node.path.endswith(".c_layernorm"):
            out = out + Counts({ADD: selects, ACT: selects})
        return Counts(out)

    if prenorm:
        acc = prenorm_accumulations(model)
    else:  # attention-then-MLP blocks; x_proj reads the conv's output, not the block's input
        kept = tuple(n for n in model.nodes if not n.path.endswith(".x_proj"))
        acc = base.accumulations_over(model, kept)
    return base.family_counts(model, rule, acc)


def jamba_backward(model: ModelProfile) -> dict[str, Counts]:
    """jamba: Mamba-1 (with dt_norms: RMSNorms on dt, B and C) or attention, then an MLP or a MoE, per layer:
    ``mamba_backward``'s mixer rules and ``training.backward``'s for the rest, with its accumulations (x_proj
    reads the conv's output, not the block's input)."""
    return _mamba1_model(model, prenorm=False)


def ssm_backward(model: ModelProfile) -> dict[str, Counts]:
    spec: Any = model.spec  # the family's spec subclass (its extra fields)
    acc = prenorm_accumulations(model)
    return base.family_counts(model, lambda n: ssm_node_backward(n, spec), acc)


__all__ = ["SSM_TYPES", "bamba_backward", "falcon_h1_backward", "jamba_backward", "mamba_backward", "granitemoehybrid_backward", "lfm2_backward", "convolution_backward", "scan_backward", "softplus_backward", "ssm_backward"]
