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

Decode rows are polynomials in the context P for every node group of the bundled models but a few
(``decode_poly``, read off the formulas' own terms): a batch of decodes costs ``sum_m coef[m] sum_i P_i^m``,
i.e. it depends on the batch only through the number of decodes and the sum of their contexts (degree 1).
The other groups (a window's ``Min``, the online softmax's ``CeilDiv``) are tabulated over P; first prompt
chunks over S, other chunks cached by (S, P), the per-forward rows over S, the weights over the step's
tokens. ``decode_run`` computes a stretch of consecutive decode steps (sequences leaving as they finish) as
one product of the steps' power sums with the coefficient rows.

``PlanStepCost``: the same for one data-parallel replica of a parallel plan: every pipeline stage's rank on
its sharded forward (``parallel.shard.rank_model``), plus the plan's collectives timed on the system's
links, pp x the slowest stage (``perf``'s plan roofline with one micro-batch).
"""

from __future__ import annotations

import math
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
        self._init_tables()

    @classmethod
    def of_models(cls, prefill_model: ModelProfile, decode_model: ModelProfile, st: Settings,
                  engine: ExecutionProfile) -> StepCost:
        """A step cost over given prefill and decode forwards (one rank's, under a parallel plan), at settings
        already resolved."""
        self = cls.__new__(cls)
        self.engine, self.base, self.settings, self.notes = engine, prefill_model, st, []
        self.lm_head = engine.lm_head
        self.prefill_model, self.decode_model = prefill_model, decode_model
        self._build()
        self._init_tables()
        return self

    def _init_tables(self) -> None:
        g = len(self.multiplicity)
        self._decode_tables: dict[int, np.ndarray] = {}
        self._polys: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._rest_tables: dict[int, np.ndarray] = {}
        self._rest_scaled_table: np.ndarray | None = None
        self._run_cache: tuple[np.ndarray, np.ndarray, np.ndarray, bool] | None = None
        self._f0_rows: dict[tuple[str, int, int], np.ndarray] = {}
        self._f0_tables: dict[str, np.ndarray] = {}
        self._weights = np.zeros((0, g))
        self._prefill: dict[tuple[int, int], np.ndarray] = {}
        self._first_chunks = np.zeros((0, 2 * g))

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
        self._per_seq_formulas = per_seq
        self._per_seq = {k: compile_formulas(v) for k, v in per_seq.items()}
        self._per_fwd = {k: compile_formulas(v) for k, v in per_fwd.items()}
        self._f0_uses_past = {k: any(f.depends_on("P") for f in v) for k, v in per_fwd.items()}
        self._weights_formulas = weights
        self._weights_fn = compile_formulas(weights)

    def _rows(self, kind: str, seq: Any, past: Any, per_forward: bool = False) -> np.ndarray:
        """(len, 2 x groups) float64: the FLOPs of every node group, then their bytes, per sequence (or per
        forward) of a chunk of ``seq`` tokens at context ``past`` (arrays broadcast). Every row below has this
        flat layout."""
        fn = (self._per_fwd if per_forward else self._per_seq)[kind]
        seq_a, past_a = np.broadcast_arrays(np.atleast_1d(np.asarray(seq, dtype=np.int64)),
                                            np.atleast_1d(np.asarray(past, dtype=np.int64)))
        values = fn(1, seq_a, past_a)
        n, g = seq_a.shape[0], len(self.multiplicity)
        out = np.empty((n, 2 * g))
        for j, v in enumerate(values):
            out[:, j // 2 + (j % 2) * g] = v
        return out

    @staticmethod
    def _grown(size: int) -> int:
        return max(1024, 1 << int(size).bit_length())

    # --- tables -----------------------------------------------------------------------------------
    def _decode_table(self, width: int, context: int) -> np.ndarray:
        """Per-sequence rows of decode chunks of ``width`` tokens at every context 0 .. >= context."""
        table = self._decode_tables.get(width)
        if table is None or table.shape[0] <= context:
            table = self._decode_tables[width] = self._rows(DECODE, width, np.arange(self._grown(context)))
        return table

    def _f0(self, kind: str, seq: int, past: int) -> np.ndarray:
        """The per-forward row at the step's largest S and P: tabulated over S when it is free of P (most
        engines), else cached by (S, P)."""
        if not self._f0_uses_past[kind] and seq < TABLE_MAX:
            table = self._f0_tables.get(kind)
            if table is None or table.shape[0] <= seq:
                table = self._f0_tables[kind] = self._rows(kind, np.arange(self._grown(seq)), 0, per_forward=True)
            return table[seq]
        key = (kind, seq, past)
        row = self._f0_rows.get(key)
        if row is None:
            if len(self._f0_rows) > 100_000:
                self._f0_rows.clear()
            row = self._f0_rows[key] = self._rows(kind, seq, past, per_forward=True)[0]
        return row

    def _weights_at(self, tokens: int) -> np.ndarray:
        if tokens >= TABLE_MAX:
            return np.array([float(v) for v in self._weights_fn(1, tokens, 0)])
        if self._weights.shape[0] <= tokens:
            size = self._grown(tokens)
            values = self._weights_fn(1, np.arange(size, dtype=np.int64), 0)
            self._weights = np.stack([np.broadcast_to(np.asarray(v, dtype=np.float64), (size,)) for v in values],
                                     axis=1)
        return self._weights[tokens]

    def prefill_rows(self, seq: int, past: int) -> np.ndarray:
        if past == 0 and seq <= 16384:  # first chunks of prompts: tabulated over S
            table = self._first_chunks
            if table.shape[0] <= seq:
                table = self._first_chunks = self._rows(PREFILL, np.arange(self._grown(seq)), 0)
            return table[seq]
        key = (seq, past)
        row = self._prefill.get(key)
        if row is None:
            if len(self._prefill) > 200_000:
                self._prefill.clear()
            row = self._prefill[key] = self._rows(PREFILL, seq, past)[0]
        return row

    # --- decode rows as polynomials in the context ----------------------------------------------------
    def decode_poly(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(coef, cols): the per-sequence FLOPs and bytes of a decode chunk of ``width`` tokens at context P
        are ``sum_m coef[m] P^m`` for every node group whose formula at S = width is a polynomial in P, read
        off the formula's own terms; so a batch's sum over its sequences is ``sum_m coef[m] (sum_i P_i^m)``:
        it depends on the batch only through the power sums of its contexts (for the bundled models, degree
        1: the number of decodes and the sum of their contexts). ``cols``: the columns of the groups that
        are not polynomials in P (a window's ``Min(P, W)``, the online softmax's ``CeilDiv(P + 1, 128)``),
        summed row by row from the tables instead (their ``coef`` is 0)."""
        got = self._polys.get(width)
        if got is None:
            forms = self._per_seq_formulas[DECODE]
            g = len(self.multiplicity)
            terms: list[dict[int, float]] = []
            poly = np.ones(g, dtype=bool)
            for j, f in enumerate(forms):
                h = f.substitute({"S": width})
                if h.atoms() - {"P"}:
                    poly[j // 2] = False
                    terms.append({})
                else:
                    terms.append({dict(m).get("P", 0): float(c) for m, c in h.terms.items()})
            degree = max((max(t) for t in terms if t), default=0)
            coef = np.zeros((degree + 1, 2 * g))
            for j, t in enumerate(terms):
                if poly[j // 2]:
                    for power, c in t.items():
                        coef[power, j // 2 + (j % 2) * g] = c
            rest = np.flatnonzero(~poly)
            got = self._polys[width] = (coef, np.concatenate([rest, rest + g]))
        return got

    def _rest_table(self, width: int, context: int) -> np.ndarray:
        """The decode table's columns of the non-polynomial groups (``decode_poly``'s ``cols``)."""
        table = self._rest_tables.get(width)
        if table is None or table.shape[0] <= context:
            cols = self.decode_poly(width)[1]
            table = self._rest_tables[width] = np.ascontiguousarray(self._decode_table(width, context)[:, cols])
        return table

    def decode_rows(self, contexts: np.ndarray, width: int = 1) -> np.ndarray:
        """(2 x groups,): the per-sequence FLOPs and bytes of decodes of ``width`` tokens at ``contexts``,
        summed: the polynomial groups from the power sums, the others from the tables."""
        coef, cols = self.decode_poly(width)
        if coef.shape[0] == 2:
            acc = coef[0] * float(contexts.shape[0]) + coef[1] * float(contexts.sum())
        else:
            c = contexts.astype(np.float64)
            acc = coef[0] * float(contexts.shape[0])
            for m in range(1, coef.shape[0]):
                acc = acc + coef[m] * float((c**m).sum())
        if cols.shape[0]:
            top = int(contexts.max())
            if top >= TABLE_MAX:
                acc[cols] += self._rows(DECODE, width, contexts)[:, cols].sum(axis=0)
            else:
                acc[cols] += self._rest_table(width, top).take(contexts, axis=0).sum(axis=0)
        return acc

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
        chunks = prefill or ()
        n_dec = 0
        if decode_contexts is not None:
            ctx = np.asarray(decode_contexts, dtype=np.int64)
            n_dec = int(ctx.shape[0])
        tokens = n_dec * decode_width + sum(s for s, _ in chunks)
        if tokens == 0:
            return 0.0, 0.0, 0.0, 0.0
        g, m = len(self.multiplicity), self.multiplicity
        top = int(ctx.max()) if n_dec else 0
        pre_flops = 0.0
        if chunks:
            acc = self.prefill_rows(*chunks[0])
            for s, p in chunks[1:]:
                acc = acc + self.prefill_rows(s, p)
            pre_flops = float(acc[:g] @ m)
            acc = acc + self._f0(PREFILL, max(max(s for s, _ in chunks), decode_width if n_dec else 0),
                                 max(top, max(p for _, p in chunks)))
            if n_dec:
                acc += self.decode_rows(ctx, decode_width)
        else:
            acc = self.decode_rows(ctx, decode_width)
            acc += self._f0(DECODE, decode_width, top)
        flops = acc[:g]
        nbytes = acc[g:] + self._weights_at(tokens)
        st = self.settings
        t = np.maximum(flops / st.peak, nbytes / st.bandwidth)
        return float(t @ m), float(flops @ m), float(nbytes @ m), pre_flops

    def _run_parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """What ``decode_run`` multiplies, built once: rows (one per power sum of the contexts, then one for the
        per-forward part) of FLOPs / peak and bytes / bandwidth per group, with the weights folded in when every
        group's weight bytes are affine in the step's tokens (dense models: a constant, plus an embedding
        lookup's rows); the non-polynomial columns that carry anything, and their scale."""
        if self._run_cache is None:
            coef, cols = self.decode_poly(1)
            g = len(self.multiplicity)
            st = self.settings
            scale = np.concatenate([np.full(g, 1 / st.peak), np.full(g, 1 / st.bandwidth)])
            rows = np.vstack([coef, self._f0(DECODE, 1, 0)])
            affine = True
            w0, w1 = np.zeros(g), np.zeros(g)
            for i, f in enumerate(self._weights_formulas):
                if f.atoms() - {"S"} or any(p > 1 for m in f.terms for _, p in m):
                    affine = False
                    break
                for m, c in f.terms.items():
                    (w1 if m else w0)[i] = float(c)
            if affine:
                rows[0, g:] += w1  # per token: every decode is one token
                rows[-1, g:] += w0
            forms = self._per_seq_formulas[DECODE]
            keep = np.array([c for c in cols if forms[2 * (c % g) + c // g].substitute({"S": 1})], dtype=np.int64)
            self._run_cache = (rows * scale, keep, scale[keep], affine)
        return self._run_cache

    def _rest_scaled(self, context: int) -> np.ndarray:
        """``_run_parts``' non-polynomial columns of one-token decodes at contexts 0 .. >= context, scaled by
        1 / peak or 1 / bandwidth, and a zero row at the end (what a sequence that has left reads)."""
        _, cols, scale, _ = self._run_parts()
        table = self._rest_scaled_table
        if table is None or table.shape[0] - 1 <= context:
            full = self._decode_table(1, context)
            table = np.zeros((full.shape[0] + 1, cols.shape[0]))
            table[:-1] = full[:, cols] * scale
            self._rest_scaled_table = table
        return table

    def decode_run(self, contexts: np.ndarray, steps: int, left: np.ndarray | None = None,
                   with_active: bool = False) -> Any:
        """(seconds, FLOPs) of ``steps`` consecutive one-token decode steps of the same sequences, the first at
        ``contexts`` and each later one a token further: step j is ``step(contexts[active] + j)``, where
        sequence i takes part in the steps j < ``left[i]`` (default: all of them; every step must keep one).
        Vectorised over j: the polynomial groups from each step's power sums of the active contexts
        (``decode_poly``), the others gathered from the tables. ``with_active``: also the number of
        sequences in each step."""
        ctx = np.asarray(contexts, dtype=np.int64)
        n = int(ctx.shape[0])
        k = int(steps)
        lv = np.full(n, k, dtype=np.int64) if left is None else np.minimum(np.asarray(left, dtype=np.int64), k)
        if int(ctx.max()) + k - 1 >= TABLE_MAX or self._f0_uses_past[DECODE]:  # past the tables: step by step
            out = [self.step(ctx[lv > j] + j) for j in range(k)]
            t, fl = np.array([o[0] for o in out]), np.array([o[1] for o in out])
            if with_active:
                return t, fl, np.array([int((lv > j).sum()) for j in range(k)])
            return t, fl
        rows, cols, _, affine = self._run_parts()
        degree = rows.shape[0] - 2
        g = len(self.multiplicity)
        j = np.arange(k, dtype=np.int64)
        finite = left is not None and int(lv.min()) < k
        c = ctx.astype(np.float64)
        sums = np.ones((k, degree + 2))  # per step: sum over its sequences of (context + j)^m, m = 0..degree; 1
        if finite:
            active = n - np.cumsum(np.bincount(lv, minlength=k + 1)[:k])
            sums[:, 0] = active
        else:
            active = np.full(k, n)
            sums[:, 0] = n
        if degree == 1:
            s1 = float(c.sum())
            sums[:, 1] = (s1 - np.cumsum(np.bincount(lv, weights=c, minlength=k + 1)[:k]) if finite else s1) + j * sums[:, 0]
        elif degree > 1:  # base[p][j] = sum over the step's sequences of context^p; then the binomial theorem
            base = [sums[:, 0]]
            for p in range(1, degree + 1):
                w = c**p
                base.append(float(w.sum()) - np.cumsum(np.bincount(lv, weights=w, minlength=k + 1)[:k])
                            if finite else np.full(k, float(w.sum())))
            for mm in range(1, degree + 1):
                sums[:, mm] = sum(math.comb(mm, p) * j.astype(np.float64) ** (mm - p) * base[p] for p in range(mm + 1))
        acc = sums @ rows  # FLOPs / peak and bytes / bandwidth per group
        if cols.shape[0]:
            table = self._rest_scaled(int(ctx.max()) + k)
            grid = ctx[None, :] + j[:, None]
            if finite:  # a sequence that has left reads the table's zero row, the last
                grid = np.where(j[:, None] < lv[None, :], grid, table.shape[0] - 1)
            acc[:, cols] += table.take(grid, axis=0).sum(axis=1)
        if not affine:
            self._weights_at(n)  # the table covers every step's token count
            acc[:, g:] += self._weights[active] / self.settings.bandwidth
        t = np.maximum(acc[:, :g], acc[:, g:])
        seconds = t @ self.multiplicity
        flops = (acc[:, :g] @ self.multiplicity) * self.settings.peak
        return (seconds, flops, active) if with_active else (seconds, flops)

    def decode_step(self, batch: int, context: int, width: int = 1) -> float:
        """Seconds of a step of ``batch`` decodes at one context (a uniform decode batch)."""
        return self.step(np.full(batch, context, dtype=np.int64), None, width)[0]


class PlanStepCost:
    """The step time of one data-parallel replica of a parallel plan: every pipeline stage's rank runs the
    step's batch on its sharded nodes (a ``StepCost`` over ``parallel.shard.rank_model``'s forward, so the
    same per-node roofline), plus the collectives the plan inserts (``parallel.collectives``), timed on the
    system's links (``parallel.comm.collective_s``); as ``perf``'s plan roofline with one micro-batch, the
    step takes pp x the slowest stage's (roofline + communication) time.

    Collective payloads are per token or per sequence (B*S*hidden*act, or B rows of logits on the last
    position): for a step of T tokens over n sequences, a*T + b*n + c, from the payload formula's own
    coefficients. Context parallelism (a prefill's prompt split) and pipeline micro-batches are not modelled
    for a serving step: a ``PlanError``."""

    def __init__(self, source: Any, plan: Any, system: Any, engine: str | ExecutionProfile | None = VLLM, *,
                 device: Any = "h100", weight_dtype: str | None = None, act_dtype: str = "bf16",
                 kv_dtype: str | None = None, compute_dtype: str | None = None, flops_efficiency: float = 1.0,
                 bandwidth_efficiency: float = 1.0, quantization: Any = "config") -> None:
        from ..parallel.collectives import collectives
        from ..parallel.comm import link_for
        from ..parallel.plan import PlanError, check_plan
        from ..parallel.shard import rank_model

        self.plan, self.system = resolve_plan(plan, system, device)
        pl = self.plan
        if pl.cp > 1:
            raise PlanError(f"cp={pl.cp}: context parallelism splits one prefill's prompt over ranks; a serving "
                            "step mixes prefill chunks and decodes, which it does not split: use cp=1")
        if pl.micro_batches > 1:
            raise PlanError(f"micro_batches={pl.micro_batches}: a serving step runs its batch through the "
                            "pipeline as one micro-batch here: use micro_batches=1")
        self.engine = get_engine(engine, default=VLLM)
        self.base = source if isinstance(source, ModelProfile) else profile_model(source)
        plan_notes = check_plan(pl, self.base.spec)
        st = settings(self.system.device, weight_dtype, act_dtype, kv_dtype, compute_dtype, flops_efficiency,
                      bandwidth_efficiency, quantization)
        self.settings, notes = with_quantization(st, self.base if isinstance(source, ModelProfile) else source)
        self.notes = [*notes, *plan_notes]
        self.lm_head = self.engine.lm_head
        last = self.lm_head == "last"
        pre, dec = phase_model(self.base, PREFILL, self.engine), phase_model(self.base, DECODE, self.engine)
        self.stage_models = [(rank_model(pre, pl, s, last), rank_model(dec, pl, s, last)) for s in range(pl.pp)]
        self.stages = [StepCost.of_models(p, d, self.settings, self.engine) for p, d in self.stage_models]
        act, kv = self.settings.dtypes.act.bits // 8, self.settings.dtypes.kv.bits // 8
        span = {"tp": pl.tp, "cp": pl.tp * pl.cp, "ep": pl.tp * pl.cp * pl.ep, "pp": pl.devices}
        self.collectives: list[tuple[int, str, int, Any, float, float, float]] = []
        for c in collectives(pre.graph, pl, act, last_position=last, kv_bytes=kv):
            a, b, c0 = _payload_terms(c.payload, f"{c.kind} after {c.after}")
            self.collectives.append((c.stage, c.kind, c.ranks, link_for(self.system, span[c.group]), a, b, c0))
        self._comm: dict[tuple[int, int], np.ndarray] = {}

    def communication(self, tokens: int, sequences: int) -> np.ndarray:
        """Seconds of each stage's collectives in a step of ``tokens`` tokens over ``sequences`` sequences."""
        key = (tokens, sequences)
        got = self._comm.get(key)
        if got is None:
            from ..parallel.comm import collective_s

            got = np.zeros(self.plan.pp)
            for stage, kind, ranks, path, a, b, c0 in self.collectives:
                got[stage] += collective_s(kind, a * tokens + b * sequences + c0, ranks, path)
            if len(self._comm) > 100_000:
                self._comm.clear()
            self._comm[key] = got
        return got

    def step_split(self, decode_contexts: np.ndarray | None = None, prefill: list[tuple[int, int]] | None = None,
                   decode_width: int = 1) -> tuple[float, float, float, float]:
        """As ``StepCost.step_split``: pp x the slowest stage's time; FLOPs and bytes are that stage's rank's."""
        parts = [st.step_split(decode_contexts, prefill, decode_width) for st in self.stages]
        n_dec = 0 if decode_contexts is None else int(np.shape(decode_contexts)[0])
        chunks = prefill or ()
        tokens = n_dec * decode_width + sum(s for s, _ in chunks)
        if tokens == 0:
            return 0.0, 0.0, 0.0, 0.0
        comm = self.communication(tokens, n_dec + len(chunks))
        times = [p[0] + c for p, c in zip(parts, comm.tolist())]
        crit = max(range(len(times)), key=times.__getitem__)
        t, flops, nbytes, pre = parts[crit]
        return self.plan.pp * times[crit], flops, nbytes, pre

    def step(self, decode_contexts: np.ndarray | None = None, prefill: list[tuple[int, int]] | None = None,
             decode_width: int = 1) -> tuple[float, float, float]:
        t, flops, nbytes, _ = self.step_split(decode_contexts, prefill, decode_width)
        return t, flops, nbytes

    def decode_run(self, contexts: np.ndarray, steps: int, left: np.ndarray | None = None,
                   with_active: bool = False) -> Any:
        """As ``StepCost.decode_run``, each step pp x the slowest stage's (roofline + communication) time."""
        runs = [st.decode_run(contexts, steps, left, with_active=True) for st in self.stages]
        active = runs[0][2]
        values, where = np.unique(active, return_inverse=True)
        comm = np.stack([self.communication(int(v), int(v)) for v in values])[where]  # (steps, stages)
        times = np.stack([r[0] for r in runs], axis=1) + comm
        crit = np.argmax(times, axis=1)
        rows = np.arange(times.shape[0])
        seconds = self.plan.pp * times[rows, crit]
        flops = np.stack([r[1] for r in runs], axis=1)[rows, crit]
        return (seconds, flops, active) if with_active else (seconds, flops)

    def decode_step(self, batch: int, context: int, width: int = 1) -> float:
        return self.step(np.full(batch, context, dtype=np.int64), None, width)[0]


def _payload_terms(payload: Formula, where: str) -> tuple[float, float, float]:
    """(a, b, c) with payload = a*T + b*n + c for a step of T tokens over n sequences: the payload formula,
    linear in B, split as B*(a*S + b) + c; it must not depend on the context."""
    if payload.depends_on("P"):
        raise QueryError(f"{where}: a collective payload that depends on the context is not modelled in a serving step")
    f0, f1 = _split(payload, where)
    b = f1.substitute({"S": 0})
    a = f1.substitute({"S": 1}) - b
    if f1 != a * _S + b or not (a.is_constant() and b.is_constant() and f0.is_constant()):
        raise QueryError(f"{where}: the payload is not per token or per sequence: {payload}")
    return float(a.constant()), float(b.constant()), float(f0.constant())


def resolve_plan(plan: Any, system: Any, device: Any) -> tuple[Any, Any]:
    """(ParallelPlan, SystemSpec): ``plan`` a ``ParallelPlan`` or a dict of ``make_plan``'s arguments (None:
    one device); ``system`` a name, file or ``SystemSpec``, else ``plan.devices`` copies of ``device`` joined
    by its interconnect (as ``perf.phase_report``)."""
    from ..hardware.systems import get_system
    from ..parallel.comm import system_for
    from ..parallel.plan import ParallelPlan, PlanError, make_plan

    if isinstance(plan, ParallelPlan):
        pl = plan
    elif plan is None or isinstance(plan, dict):
        pl = make_plan(**(plan or {}))
    else:
        raise PlanError(f"plan must be a ParallelPlan or a dict of make_plan's arguments, got {type(plan).__name__}")
    if system is not None:
        return pl, get_system(system)
    return pl, system_for(device, pl.devices)


__all__ = ["PlanStepCost", "StepCost", "resolve_plan"]
