"""Closed forms over phases (sympy): one forward's formula, decode steps, and a whole generation summed.

See ``phases`` for what each phase is. Every graph formula is a ``Formula`` in B, S, P; here they meet sympy
so that a generation of N tokens is one closed form in B, S, P, N (``generation_sum``), not a loop.

Sliding windows put ``Min(P, w - 1)`` terms in the formulas; sympy sums those poorly, so ``sum_steps``
splits each sum at the window boundary (exact for integers, see ``_sum_min_term``); a count of blocks that
grows with the context (``ceil_div`` atoms: DeepSeek-V4's compressed entries, floor((P + S) / m)) is summed
through the antidifference of floor (``_sum_ceiling_term``); a term it cannot split (a product of two
windowed or blocked factors, say) is summed as an exact finite sum when N is a number, with a note saying so.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import sympy

from . import metrics as M
from .errors import QueryError
from .graph import Node
from .graph.node import HEAD_GROUP
from .phases import DECODE, GENERATE, LM_HEAD_ALL, LM_HEAD_LAST, PHASES, PREFILL, Phase, check_lm_head
from .profile import ModelProfile, metric_formula
from .scopes import TRANSFORMER, node_filter
from .symbols import B, P, S

N = sympy.Symbol("N", integer=True, positive=True)  # new tokens generated (generation phase)
STEP = sympy.Symbol("i", integer=True, nonnegative=True)  # decode step index in the generation sum


# --- per node --------------------------------------------------------------------------------------


def last_position(expr: sympy.Expr) -> sympy.Expr:
    """The lm_head on the last position only: its rows B*S become B (S -> 1)."""
    return sympy.sympify(expr).subs(S, 1)


def node_expr(node: Node, metric: str, lm_head: str = LM_HEAD_ALL) -> sympy.Expr:
    """A node's count of ``metric`` in B, S, P (the lm_head on the last position when lm_head='last')."""
    expr = metric_formula(node.counts, M.canonical(metric)).to_sympy()
    if check_lm_head(lm_head) == LM_HEAD_LAST and node.group == HEAD_GROUP:
        expr = last_position(expr)
    return expr


def phase_total(model: ModelProfile, metric: str, scope: str | None = TRANSFORMER,
                lm_head: str = LM_HEAD_ALL) -> sympy.Expr:
    """The count of one forward (prefill or decode step) in B, S, P over ``scope``."""
    pred = node_filter(scope or TRANSFORMER, model.nodes)
    multiplicity: dict[tuple[int, str], int] = defaultdict(int)
    first: dict[tuple[int, str], Node] = {}
    for node in model.nodes:
        if pred(node):
            key = (id(node.counts), node.kind)  # layers share Counts objects: one expression each
            multiplicity[key] += 1
            first.setdefault(key, node)
    return sympy.Add(*(k * node_expr(first[key], metric, lm_head) for key, k in multiplicity.items()))


# --- the generation sum ----------------------------------------------------------------------------


def decode_step(expr: sympy.Expr, step: sympy.Expr = STEP) -> sympy.Expr:
    """Decode step ``step`` of a generation: one token (S = 1) at context P + S + step."""
    return sympy.sympify(expr).subs({S: 1, P: P + S + step}, simultaneous=True)


@dataclass
class StepSum:
    """sum_{i=0}^{upper} of a formula: ``expr`` and whether it is a closed form (else notes say why)."""

    expr: sympy.Expr
    closed_form: bool = True
    notes: list[str] = field(default_factory=list)


def _as_min(atom: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr] | None:
    """(x, c) when ``atom`` is Min(x, c) (or Max, rewritten by the caller) with x = i + a and c free of i."""
    if not isinstance(atom, sympy.Min) or len(atom.args) != 2:
        return None
    x, c = atom.args
    if STEP in c.free_symbols:
        x, c = c, x
    if STEP in c.free_symbols or sympy.diff(x, STEP) != 1 or not sympy.diff(x, STEP, 2) == 0:
        return None
    return x, c


def _sum_min_term(coeff: sympy.Expr, x: sympy.Expr, c: sympy.Expr, upper: sympy.Expr) -> sympy.Expr:
    """sum_{i=0}^{upper} coeff(i) * Min(i + a, c), with a = x - i, exactly for integers.

    Min(i + a, c) = i + a while i < c - a, and c from there on; the boundary index, clamped to the range,
    is k = Min(Max(c - a, 0), upper + 1), so the sum is
    sum_{i=0}^{k-1} coeff(i) * (i + a) + sum_{i=k}^{upper} coeff(i) * c  (both polynomial sums).
    """
    k = sympy.Dummy("k", integer=True, nonnegative=True)
    head = sympy.summation(sympy.expand(coeff * x), (STEP, 0, k - 1))
    tail = sympy.summation(sympy.expand(coeff * c), (STEP, k, upper))
    a = sympy.expand(x - STEP)
    return (head + tail).subs(k, sympy.Min(sympy.Max(c - a, 0), upper + 1))


def _floor_power_antidifference(z: sympy.Expr, m: sympy.Integer, power: int) -> sympy.Expr:
    """G(z) = sum_{y=0}^{z-1} floor(y / m)^power for every integer z: with q = floor(z / m),
    G(z) = m * sum_{j<q} j^power + (z - m q) q^power; G(z + 1) - G(z) = floor(z / m)^power for every integer z
    (z = m q + r: the step adds q^power, also where r = m - 1 closes a block)."""
    q, j = sympy.floor(z / m), sympy.Dummy("j", integer=True)
    return m * sympy.summation(j**power, (j, 0, q - 1)) + (z - m * q) * q**power


def _as_ceiling(atom: sympy.Expr) -> tuple[sympy.Expr, sympy.Integer] | None:
    """(a, m) when ``atom`` is ceiling((i + a) / m) with a free of i and m a positive integer."""
    arg = atom.args[0]
    slope = sympy.diff(arg, STEP)
    if not slope.is_Rational or slope <= 0 or sympy.diff(arg, STEP, 2) != 0 or not (1 / slope).is_Integer:
        return None
    m = sympy.Integer(1 / slope)
    return sympy.expand(arg * m - STEP), m


def _ceiling_power_sum(a: sympy.Expr, m: sympy.Integer, count: sympy.Expr, power: int) -> sympy.Expr:
    """sum_{i=0}^{count-1} ceiling((i + a) / m)^power for integers a and count >= 0: ceiling(x / m) =
    floor((x + m - 1) / m), so the sum is G(count + a + m - 1) - G(a + m - 1) (``_floor_power_antidifference``)."""
    if power == 0:
        return count
    return (_floor_power_antidifference(count + a + m - 1, m, power)
            - _floor_power_antidifference(a + m - 1, m, power))


def _sum_ceiling_term(term: sympy.Expr, upper: sympy.Expr) -> sympy.Expr | None:
    """sum_{i=0}^{upper} of coeff * c^p * Min(c, K)^q with c = ceiling((i + a) / m) (a block count that grows with
    the context: ``Formula`` ceil_div atoms, e.g. DeepSeek-V4's compressed entries) and coeff, K free of i,
    exactly for integers; None for any other shape. Min(c, K) is c while i + a <= K m, then K: the sum splits
    at that step as ``_sum_min_term`` splits a window."""
    ceilings = [c for c in term.atoms(sympy.ceiling) if STEP in c.free_symbols]
    mins = _min_atoms(term)
    if len(ceilings) != 1 or len(mins) > 1:
        return None
    ceiling = ceilings[0]
    split = _as_ceiling(ceiling)
    if split is None:
        return None
    a, m = split
    own, capped, coeff = 0, 0, sympy.Integer(1)
    for factor in sympy.Mul.make_args(term):
        base, exponent = factor.as_base_exp()
        if base in (ceiling, *mins) and exponent.is_Integer and exponent > 0:
            own, capped = (own + int(exponent), capped) if base == ceiling else (own, capped + int(exponent))
        elif STEP in factor.free_symbols:
            return None
        else:
            coeff = coeff * factor
    if not capped:
        return coeff * _ceiling_power_sum(a, m, upper + 1, own)
    (atom,) = mins
    if not isinstance(atom, sympy.Min) or len(atom.args) != 2 or ceiling not in atom.args:
        return None
    cap = atom.args[0] if atom.args[1] == ceiling else atom.args[1]
    if STEP in cap.free_symbols:
        return None
    k = sympy.Min(sympy.Max(cap * m - a + 1, 0), upper + 1)  # steps whose ceiling is still <= cap
    head = _ceiling_power_sum(a, m, k, own + capped)
    tail = _ceiling_power_sum(a, m, upper + 1, own) - _ceiling_power_sum(a, m, k, own)
    return coeff * (head + cap**capped * tail)


def _min_atoms(term: sympy.Expr) -> list[sympy.Expr]:
    return [a for a in term.atoms(sympy.Min, sympy.Max) if STEP in a.free_symbols]


def _max_to_min(expr: sympy.Expr) -> sympy.Expr:
    """Max(x, c) = x + c - Min(x, c): one kind of atom for the splitter."""
    return expr.replace(lambda e: isinstance(e, sympy.Max) and len(e.args) == 2,
                        lambda e: e.args[0] + e.args[1] - sympy.Min(*e.args))


def sum_steps(expr: sympy.Expr, upper: sympy.Expr, upper_value: int | None = None) -> StepSum:
    """sum_{i=0}^{upper} expr(i), ``expr`` in STEP (and B, S, P, N). Polynomial terms go to
    ``sympy.summation``; a term linear in one Min(i + a, c) is split at the window boundary; anything else
    is summed term by term as an exact finite sum when ``upper_value`` (the number ``upper`` stands for)
    is given, else a QueryError says so."""
    out: list[sympy.Expr] = []
    notes: list[str] = []
    closed = True
    for term in sympy.Add.make_args(sympy.expand(_max_to_min(sympy.sympify(expr)))):
        atoms = _min_atoms(term)
        if not atoms and not any(STEP in c.free_symbols for c in term.atoms(sympy.ceiling)):
            out.append(sympy.summation(term, (STEP, 0, upper)))
            continue
        if len(atoms) == 1:
            split = _as_min(atoms[0])
            coeff = sympy.cancel(term / atoms[0]) if split else None
            if split and coeff is not None and not _min_atoms(coeff) and coeff.is_polynomial(STEP):
                out.append(_sum_min_term(coeff, *split, upper))
                continue
        summed = _sum_ceiling_term(term, upper)
        if summed is not None:
            out.append(summed)
            continue
        if upper_value is None:
            raise QueryError(f"no closed form for the generation sum of {term}; give the number of new tokens")
        closed = False
        notes.append(f"summed {term} as a finite sum of {upper_value + 1} steps (no closed form split)")
        out.append(sympy.Add(*(term.subs(STEP, j) for j in range(upper_value + 1))))
    return StepSum(sympy.Add(*out), closed, notes)


def generation_sum(forward: sympy.Expr, new_tokens: int | None = None) -> StepSum:
    """G(B, S, P, N) = forward(B, S, P) + sum_{i=0}^{N-2} forward(B, 1, P + S + i): a whole generation."""
    upper_value = None if new_tokens is None else new_tokens - 2
    steps = sum_steps(decode_step(forward), N - 2, upper_value)
    expr = sympy.sympify(forward) + steps.expr
    if new_tokens is not None and not steps.closed_form:
        expr = expr.subs(N, new_tokens)
    return StepSum(expr, steps.closed_form, steps.notes)


def compile_exact(expr: sympy.Expr) -> Callable[[int, int, int, int], int]:
    """A function (B, S, P, N) -> the exact integer value of a closed form with rational coefficients:
    the expression times the lcm of its denominators is evaluated with Python ints (Min / Max as min / max)
    and divided back exactly. Built once per closed form; a call costs microseconds."""
    expanded = sympy.expand(expr)
    denominator = int(sympy.ilcm(1, *(r.q for r in expanded.atoms(sympy.Rational))))
    fn = sympy.lambdify((B, S, P, N), expanded * denominator, modules=[{"Min": min, "Max": max}, "math"])

    def exact(b: int, s: int, p: int, n: int) -> int:
        scaled = fn(b, s, p, n)
        if isinstance(scaled, float) or scaled % denominator:
            raise QueryError(f"closed form did not evaluate to an integer at B={b}, S={s}, P={p}, N={n}")
        return int(scaled) // denominator

    return exact


def phase_expr(model: ModelProfile, metric: str, kind: str, scope: str | None = TRANSFORMER,
               lm_head: str = LM_HEAD_ALL) -> sympy.Expr:
    """The count of ``metric`` for a phase kind: in B, S, P (prefill, decode) or B, S, P, N (generate)."""
    forward = phase_total(model, metric, scope, lm_head)
    if kind in (PREFILL, DECODE):
        return forward
    if kind == GENERATE:
        return generation_sum(forward).expr
    raise QueryError(f"unknown phase {kind!r}; valid: {', '.join(PHASES)}")


def evaluate(expr: sympy.Expr, values: dict[sympy.Symbol, int]) -> int:
    """Exact integer value of a formula (rational arithmetic; Min / Max of numbers evaluate)."""
    value = sympy.sympify(expr).xreplace({k: sympy.Integer(v) for k, v in values.items()})
    value = sympy.nsimplify(value) if not value.is_Rational else value
    if not value.is_integer:
        raise QueryError(f"formula did not evaluate to an integer: {value}")
    return int(value)


def phase_count(model: ModelProfile, metric: str, phase: Phase, scope: str | None = TRANSFORMER) -> int:
    """The exact count of ``metric`` over a phase (generation: the closed form at its N)."""
    forward = phase_total(model, metric, scope, phase.lm_head)
    if phase.kind != GENERATE:
        return evaluate(forward, phase.values())
    return evaluate(generation_sum(forward, phase.new_tokens).expr, phase.values())


__all__ = ["N", "STEP", "StepSum", "compile_exact", "decode_step", "evaluate", "generation_sum", "last_position", "node_expr",
           "phase_count", "phase_expr", "phase_total", "sum_steps"]
