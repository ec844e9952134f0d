"""The time of one engine step for an exact mixed batch: prefill chunks at their (S, P) and decodes at their
contexts, from the roofline of the model's compiled traffic formulas under an execution profile.

The model (the same roofline as ``perf``, applied to a step instead of a uniform batch):

- every node of the graph runs once per step over the whole batch; its time is
  ``max(FLOPs / peak, bytes / bandwidth)`` and the step's time is the sum over the nodes (``perf``'s rule);
- a node's FLOPs and bytes for the step are, for each field, the per-sequence part summed over the step's
  sequences (sequence i contributes f1(S_i, P_i), the coefficient of B in the node's formula, which every
  formula but a routed-experts weight read is linear in), plus the per-forward part once (f0 = the formula
  at B = 0: the position ids and rotary tables, shared by the batch; taken at the step's largest S and P);
- the weights are read once per step, not once per sequence: the node's weight formula at one sequence of
  all the step's T tokens, W(1, T, 0) (dense matrices: a constant; an embedding lookup: T rows; routed
  experts: min(E, T x top-k) experts, the formula's own upper bound);
- prefill chunks take the formulas of a prefill forward, decodes (one token, or 1 + k when verifying k
  drafted tokens) those of a decode forward (``perf.phase_model``: they differ only where the engine runs
  MLA absorbed for decode).

For one sequence this is exactly ``perf.phase_report``'s forward (the same nodes, the same formulas at
B = 1), which the tests check. For a uniform batch (B sequences of the same S and P) it is exactly the
batched forward, since sum_i f1 + f0 = B f1 + f0.

Caching: decode rows are tabulated over the context P once (one vectorised evaluation per decode width S),
weights over the step's token count, prefill chunks by (S, P) in a dictionary, so a step costs a gather and
a few numpy operations over the node groups.

A tensor-parallel plan would plug in here: a plan rewrites each node's FLOPs and bytes per device (weights
and heads divided, plus the collective's time per node); ``StepCost`` would take the plan's per-device
traffic formulas instead of ``model_traffic``'s and add the communication term to each node's time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..engines import VLLM, ExecutionProfile, get_engine
from ..errors import QueryError
from ..formula import Formula, compile_formulas
from ..perf import Settings, phase_model, settings, with_quantization
from ..phases import DECODE, PREFILL
from ..profile import ModelProfile, profile_model
from ..traffic import CATEGORIES, ModelTraffic, NodeTraffic, model_traffic

_B, _S = Formula.symbol("B"), Formula.symbol("S")
TABLE_MAX = 1 << 17  # rows of a context / token-count table at most; beyond, rows are evaluated per call
_STREAM = CATEGORIES[1:]  # act_read, act_written, kv_read, kv_written: per sequence (weights: per step)


def _split(f: Formula, where: str) -> tuple[Formula, Formula]:
    """(f0, f1) with f = f0 + B * f1, or a QueryError naming the node when f is not linear in B."""
    f0 = f.substitute({"B": 0})
    f1 = f.substitute({"B": 1}) - f0
    if f.substitute({"B": 7}) != f0 + 7 * f1:
        raise QueryError(f"{where}: the formula is not linear in the batch, so a mixed step cannot be summed "
                         f"per sequence: {f}")
    return f0, f1


def _weights_per_step(f: Formula, where: str) -> Formula:
    """The weight bytes of a step of T tokens as a formula in S (= T): W(1, T, 0); checked to equal W(B, S, P)
    at T = B * S (dense weights are constant; lookups and routed experts depend on the tokens only)."""
    step = f.substitute({"B": 1, "P": 0})
    if step.substitute({"S": _B * _S}) != f:
        raise QueryError(f"{where}: the weight traffic depends on more than the step's token count: {f}")
    return step


class StepCost:
    """Roofline time of one engine step of a mixed batch (see the module docstring)."""

    def __init__(self, source: Any, device: Any = "h100", engine: str | ExecutionProfile | None = VLLM, *,
                 weight_dtype: str | None = None, act_dtype: str = "bf16", kv_dtype: str | None = None,
                 compute_dtype: str | None = None, flops_efficiency: float = 1.0,
                 bandwidth_efficiency: float = 1.0, quantization: Any = "config") -> None:
        self.engine = get_engine(engine, default=VLLM)
        self.base = source if isinstance(source, ModelProfile) else profile_model(source)
        st = device if isinstance(device, Settings) else settings(
            device, weight_dtype, act_dtype, kv_dtype, compute_dtype, flops_efficiency, bandwidth_efficiency,
            quantization)
        self.settings, self.notes = with_quantization(st, self.base if isinstance(source, ModelProfile) else source)
        self.lm_head = self.engine.lm_head
        self.prefill_model = phase_model(self.base, PREFILL, self.engine)
        self.decode_model = phase_model(self.base, DECODE, self.engine)
        self._build()
        self._decode_tables: dict[int, np.ndarray] = {}
        self._f0_tables: dict[tuple[str, int, int], np.ndarray] = {}
        self._weights = np.zeros((0, len(self.multiplicity)))
        self._prefill: dict[tuple[int, int], np.ndarray] = {}
        self._first_chunks = np.zeros((0, len(self.multiplicity), 2))

    # --- formulas ---------------------------------------------------------------------------------
    def _traffic(self, model: ModelProfile) -> tuple[ModelTraffic, dict[str, NodeTraffic]]:
        mt = model_traffic(model, self.settings.dtypes, self.lm_head)
        return mt, {node.path: t for nodes, t in mt.groups for node in nodes}

    def _build(self) -> None:
        """Node groups shared by the prefill and decode views (layers share formulas), and per group the
        per-sequence, per-forward and per-step formulas of FLOPs and bytes, compiled."""
        pre, pre_by = self._traffic(self.prefill_model)
        dec, dec_by = self._traffic(self.decode_model)
        pre_paths = [n.path for n in self.prefill_model.nodes]
        if pre_paths != [n.path for n in self.decode_model.nodes]:
            raise QueryError("the prefill and decode forwards of this engine have different nodes; a mixed step "
                             "cannot be costed node by node")
        groups: dict[tuple[int, int], int] = {}
        members: list[tuple[NodeTraffic, NodeTraffic, str]] = []
        mult: list[int] = []
        for path in pre_paths:
            tp, td = pre_by[path], dec_by[path]
            key = (id(tp), id(td))
            if key not in groups:
                groups[key] = len(members)
                members.append((tp, td, path))
                mult.append(0)
            mult[groups[key]] += 1
        self.multiplicity = np.array(mult, dtype=np.float64)
        self.group_paths = [m[2] for m in members]
        per_seq: dict[str, list[Formula]] = {PREFILL: [], DECODE: []}
        per_fwd: dict[str, list[Formula]] = {PREFILL: [], DECODE: []}
        weights: list[Formula] = []
        for tp, td, path in members:
            for kind, t in ((PREFILL, tp), (DECODE, td)):
                f0f, f1f = _split(t.flops, f"{path} flops")
                parts = [_split(t.get(c), f"{path} {c}") for c in _STREAM]
                per_seq[kind] += [f1f, sum((p[1] for p in parts), Formula())]
                per_fwd[kind] += [f0f, sum((p[0] for p in parts), Formula())]
            wp = _weights_per_step(tp.weights, f"{path} weights")
            if wp != _weights_per_step(td.weights, f"{path} weights"):
                raise QueryError(f"{path}: prefill and decode forwards read different weights; not supported")
            weights.append(wp)
        self._per_seq = {k: compile_formulas(v) for k, v in per_seq.items()}
        self._per_fwd = {k: compile_formulas(v) for k, v in per_fwd.items()}
        self._f0_uses_past = {k: any(f.depends_on("P") for f in v) for k, v in per_fwd.items()}
        self._weights_fn = compile_formulas(weights)

    def _rows(self, kind: str, seq: Any, past: Any, per_forward: bool = False) -> np.ndarray:
        """(len, groups, 2) float64: FLOPs and bytes per sequence (or per forward) of a chunk of ``seq``
        tokens at context ``past`` (arrays broadcast)."""
        fn = (self._per_fwd if per_forward else self._per_seq)[kind]
        seq_a, past_a = np.broadcast_arrays(np.atleast_1d(np.asarray(seq, dtype=np.int64)),
                                            np.atleast_1d(np.asarray(past, dtype=np.int64)))
        values = fn(1, seq_a, past_a)
        n, g = seq_a.shape[0], len(self.multiplicity)
        out = np.empty((n, g, 2))
        for j, v in enumerate(values):
            out[:, j // 2, j % 2] = v
        return out

    # --- tables -----------------------------------------------------------------------------------
    def _decode_table(self, width: int, context: int) -> np.ndarray:
        """Per-sequence rows of decode chunks of ``width`` tokens at every context 0 .. >= context."""
        table = self._decode_tables.get(width)
        if table is None or table.shape[0] <= context:
            size = max(1024, 1 << int(context).bit_length())
            table = self._rows(DECODE, width, np.arange(size))
            self._decode_tables[width] = table
        return table

    def _f0(self, kind: str, seq: int, past: int) -> np.ndarray:
        """The per-forward rows at the step's largest S and P (most engines' are free of P: cached by S)."""
        key = (kind, seq, past if self._f0_uses_past[kind] else 0)
        row = self._f0_tables.get(key)
        if row is None:
            if len(self._f0_tables) > 100_000:
                self._f0_tables.clear()
            row = self._f0_tables[key] = self._rows(kind, seq, key[2], per_forward=True)[0]
        return row

    def _weights_at(self, tokens: int) -> np.ndarray:
        if tokens >= TABLE_MAX:
            return np.array([float(v) for v in self._weights_fn(1, tokens, 0)])
        if self._weights.shape[0] <= tokens:
            size = max(1024, 1 << int(tokens).bit_length())
            values = self._weights_fn(1, np.arange(size, dtype=np.int64), 0)
            self._weights = np.stack([np.broadcast_to(np.asarray(v, dtype=np.float64), (size,)) for v in values],
                                     axis=1)
        return self._weights[tokens]

    def prefill_rows(self, seq: int, past: int) -> np.ndarray:
        if past == 0 and seq <= 16384:  # first chunks of prompts: tabulated over S
            table = self._first_chunks
            if table.shape[0] <= seq:
                size = max(1024, 1 << int(seq).bit_length())
                table = self._first_chunks = self._rows(PREFILL, np.arange(size), 0)
            return table[seq]
        key = (seq, past)
        row = self._prefill.get(key)
        if row is None:
            if len(self._prefill) > 200_000:
                self._prefill.clear()
            row = self._prefill[key] = self._rows(PREFILL, seq, past)[0]
        return row

    # --- a step -----------------------------------------------------------------------------------
    def step(self, decode_contexts: np.ndarray | None = None, prefill: list[tuple[int, int]] | None = None,
             decode_width: int = 1) -> tuple[float, float, float]:
        """(seconds, FLOPs, bytes) of one step: decodes of ``decode_width`` tokens (1; 1 + k when verifying
        k drafts) at contexts ``decode_contexts``, and prefill chunks ``(S, P)``."""
        t, flops, nbytes, _ = self.step_split(decode_contexts, prefill, decode_width)
        return t, flops, nbytes

    def step_split(self, decode_contexts: np.ndarray | None = None, prefill: list[tuple[int, int]] | None = None,
                   decode_width: int = 1) -> tuple[float, float, float, float]:
        """``step`` and the prefill chunks' share of its FLOPs (their per-sequence rows)."""
        ctx = np.zeros(0, dtype=np.int64) if decode_contexts is None else np.asarray(decode_contexts, dtype=np.int64)
        chunks = prefill or []
        n_dec = int(ctx.shape[0])
        tokens = n_dec * decode_width + sum(s for s, _ in chunks)
        if tokens == 0:
            return 0.0, 0.0, 0.0, 0.0
        acc = np.zeros((len(self.multiplicity), 2))
        for s, p in chunks:
            acc += self.prefill_rows(s, p)
        pre_flops = float(acc[:, 0] @ self.multiplicity) if chunks else 0.0
        if n_dec and int(ctx.max()) >= TABLE_MAX:
            acc += self._rows(DECODE, decode_width, ctx).sum(axis=0)
        elif n_dec:
            acc += self._decode_table(decode_width, int(ctx.max())).take(ctx, axis=0).sum(axis=0)
        top = int(ctx.max()) if n_dec else 0
        if chunks:
            acc += self._f0(PREFILL, max(max(s for s, _ in chunks), decode_width if n_dec else 0),
                            max(top, max(p for _, p in chunks)))
        else:
            acc += self._f0(DECODE, decode_width, top)
        flops = acc[:, 0]
        nbytes = acc[:, 1] + self._weights_at(tokens)
        st = self.settings
        t = np.maximum(flops / st.peak, nbytes / st.bandwidth)
        m = self.multiplicity
        return float(t @ m), float(flops @ m), float(nbytes @ m), pre_flops

    def decode_run(self, contexts: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """(seconds, FLOPs) of ``steps`` consecutive one-token decode steps of the same sequences, the first at
        ``contexts`` and each later one a token further: step j is ``step(contexts + j)``, vectorised over j."""
        ctx = np.asarray(contexts, dtype=np.int64)
        n = int(ctx.shape[0])
        grid = ctx[None, :] + np.arange(steps, dtype=np.int64)[:, None]
        if int(grid.max()) >= TABLE_MAX:  # past the tables: step by step
            out = [self.step(ctx + j) for j in range(steps)]
            return np.array([o[0] for o in out]), np.array([o[1] for o in out])
        table = self._decode_table(1, int(grid.max()))
        acc = table.take(grid.ravel(), axis=0).reshape(steps, n, -1, 2).sum(axis=1)  # (steps, groups, 2)
        if self._f0_uses_past[DECODE]:
            acc += np.stack([self._f0(DECODE, 1, int(ctx.max()) + j) for j in range(steps)])
        else:
            acc += self._f0(DECODE, 1, 0)
        st = self.settings
        t = np.maximum(acc[:, :, 0] / st.peak, (acc[:, :, 1] + self._weights_at(n)) / st.bandwidth)
        return t @ self.multiplicity, acc[:, :, 0] @ self.multiplicity

    def decode_step(self, batch: int, context: int, width: int = 1) -> float:
        """Seconds of a step of ``batch`` decodes at one context (a uniform decode batch)."""
        return self.step(np.full(batch, context, dtype=np.int64), None, width)[0]


__all__ = ["StepCost"]
