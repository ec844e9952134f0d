"""The op table: what each primitive computation costs, per element, in each arithmetic category.

This is the single source of the counting convention. The analytical formulas (``llm_profiler.graph``)
and the measuring side (``llm_profiler.validation``, which maps every aten op it sees through
``ATEN_OPS`` below) both call these functions, so the two can only agree or disagree for a real reason.

Every function takes sizes (Python ints or sympy expressions) and returns ``Counts``, a mapping from
metric name to count. ``act`` is the number of elements the op writes (its output).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from .facts import NO_FACTS, Facts, Matmul
from .formula import Formula
from .metrics import ACT, ADD, CMP, DIV, EXP, MACS, MULT, SQRT

Number = Any  # int or sympy.Expr: the functions are generic over both


class Counts(dict):
    """metric -> count; adds and scales like a vector, missing metrics are zero.

    ``facts`` (optional) are the structured facts of the computation (``llm_profiler.facts.Facts``):
    the op table records each matmul's shape and what it reads; adding two Counts merges their facts.
    """

    facts: Facts | None = None

    def __add__(self, other: Mapping[str, Number]) -> Counts:
        out = Counts(self)
        for key, value in other.items():
            out[key] = out.get(key, 0) + value
        theirs = getattr(other, "facts", None)
        if self.facts is not None or theirs is not None:
            out.facts = merge_facts(self, other)
        return out

    __radd__ = __add__

    def __mul__(self, factor: Number) -> Counts:
        return Counts({key: value * factor for key, value in self.items()})

    __rmul__ = __mul__

    def without_act(self) -> Counts:
        return Counts({k: v for k, v in self.items() if k != ACT})

    def with_facts(self, **changes: Any) -> Counts:
        """A copy whose facts have ``changes`` (fields of ``Facts``) applied."""
        out = Counts(self)
        out.facts = replace(self.facts or NO_FACTS, **changes)
        return out


def reads_of(counts: Mapping[str, Number]) -> Any:
    """Activation elements a computation reads: its facts' reads, else one tensor of its output's size."""
    facts = getattr(counts, "facts", None)
    if facts is not None and facts.reads is not None:
        return facts.reads
    return counts.get(ACT, 0)


def merge_facts(a: Mapping[str, Number], b: Mapping[str, Number]) -> Facts:
    fa, fb = getattr(a, "facts", None) or NO_FACTS, getattr(b, "facts", None) or NO_FACTS
    fused = fa.fused_writes is not None and fb.fused_writes is not None
    return Facts(weights=fa.weights + fb.weights, matmuls=fa.matmuls + fb.matmuls,
                 reads=Formula.of(reads_of(a)) + Formula.of(reads_of(b)), states=fa.states + fb.states,
                 fused_reads=_add(fa.fused_reads, fb.fused_reads) if fused else None,
                 fused_writes=_add(fa.fused_writes, fb.fused_writes) if fused else None,
                 copies=_add_optional(fa.copies, fb.copies), cache_copies=_add_optional(fa.cache_copies, fb.cache_copies))


def _add_optional(a: Formula | None, b: Formula | None) -> Formula | None:
    return None if a is None and b is None else _add(a, b)


def _add(a: Formula | None, b: Formula | None) -> Formula:
    return Formula.of(a or 0) + Formula.of(b or 0)


def total(parts: Iterable[Mapping[str, Number]]) -> Counts:
    out = Counts()
    for part in parts:
        out = out + part
    return out


# --- elementwise ops: cost of one output element -------------------------------------------------
# silu(x) = x * sigmoid(x) = x / (1 + exp(-x)): the negation is folded into exp.
# gelu(x) = 0.5 * x * (1 + erf(x / sqrt(2))): x*(1/sqrt2), erf, +1, *x, *0.5.
# gelu_tanh(x) = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))): x^3 (2 MULT), *c, +x, *sqrt(2/pi),
#   tanh, +1, *x, *0.5.
# neg(x) = 0 - x: one ADD (rotate_half negates half of q and k).
# rsqrt(x) = 1 / sqrt(x): one SQRT and one DIV.
# relu(x) = max(x, 0): one CMP.
# softplus(x) = x if x > threshold else log1p(exp(x)): the threshold test (1 CMP), exp and log1p (2 EXP).
ELEMENTWISE: dict[str, dict[str, int]] = {
    "add": {ADD: 1},
    "sub": {ADD: 1},
    "neg": {ADD: 1},
    "mul": {MULT: 1},
    "square": {MULT: 1},
    "cube": {MULT: 2},
    "div": {DIV: 1},
    "reciprocal": {DIV: 1},
    "sqrt": {SQRT: 1},
    "rsqrt": {SQRT: 1, DIV: 1},
    "exp": {EXP: 1},
    "log": {EXP: 1},
    "pow": {EXP: 1},
    "sin": {EXP: 1},
    "cos": {EXP: 1},
    "tanh": {EXP: 1},
    "erf": {EXP: 1},
    "sigmoid": {EXP: 1, ADD: 1, DIV: 1},
    "silu": {EXP: 1, ADD: 1, DIV: 1, MULT: 1},
    "gelu": {EXP: 1, ADD: 1, MULT: 3},
    "gelu_tanh": {EXP: 1, ADD: 2, MULT: 6},
    "relu": {CMP: 1},
    "abs": {CMP: 1},  # a sign test (as relu)
    "floor": {CMP: 1},  # a rounding, counted with the other non-arithmetic ALU ops (relu, max)
    "floor_divide": {DIV: 1},
    "log1p": {EXP: 1},  # one transcendental evaluation, as log
    "erfinv": {EXP: 1},  # one transcendental evaluation, as erf (gemma3n's Normal(0, 1).icdf)
    "cmp": {CMP: 1},
    "logic": {CMP: 1},
    "select": {},  # where(cond, a, b): no arithmetic, writes its output
    "gather": {},  # embedding / index_select: no arithmetic, writes its output
    # softplus(x) = x if x > threshold else log1p(exp(x)) (beta 1): the threshold test (1 CMP), exp and log1p
    # (2 EXP; the + 1 is inside log1p, counted with it as log1p is): Mamba's dt, deepseek_v4's sqrtsoftplus scores.
    "softplus": {EXP: 2, CMP: 1},
}
# expm1(x) = exp(x) - 1, evaluated as one function (std::expm1 / Sleef's expm1 on the CPU kernel, which computes the
# small-x result directly rather than exp then subtract): one transcendental evaluation, as log1p (Apertus' xIELU).
ELEMENTWISE["expm1"] = {EXP: 1}


def elementwise(op: str, n: Number) -> Counts:
    """An elementwise op over ``n`` output elements."""
    per = ELEMENTWISE[op]
    out = Counts({k: c * n for k, c in per.items()})
    out[ACT] = n
    return out


def clamp(n: Number, bounds: int) -> Counts:
    """``x.clamp(min, max)`` over n elements: one CMP per bound given (1 or 2); writes n."""
    return Counts({CMP: bounds * n, ACT: n})


def matmul(m: Number, n: Number, k: Number, batch: Number = 1, bias: bool = False) -> Counts:
    """(m x k) @ (k x n), ``batch`` times; ``bias`` when the op also adds a bias (addmm).

    Each of the m*n outputs takes k products and k-1 additions to sum them, plus one more with a bias:
    MULT = MACs = batch*m*n*k, ADD = batch*m*n*(k-1) (+ batch*m*n with bias).
    """
    outputs = batch * m * n
    if isinstance(k, int) and k == 0:  # an empty product (a zero-width layer): no arithmetic but the bias
        out = Counts({MULT: 0, ADD: outputs if bias else 0, MACS: 0, ACT: outputs})
    else:
        out = Counts({MULT: outputs * k, ADD: outputs * (k if bias else k - 1), MACS: outputs * k, ACT: outputs})
    if _symbolic(m, n, k, batch):  # the graph's formulas record the shape; the measuring side needs no facts
        f = Formula.of
        out.facts = Facts(matmuls=(Matmul(f(m), f(n), f(k), f(batch), bias),), reads=f(batch * m * k))
    return out


def _symbolic(*sizes: Number) -> bool:
    return any(isinstance(x, Formula) for x in sizes)


def scaled_matmul(m: Number, n: Number, k: Number, batch: Number = 1, bias: bool = True,
                  alpha: bool = False, beta: bool = False) -> Counts:
    """beta * input + alpha * (a @ b) (aten addmm / baddbmm with their alpha / beta arguments).

    As ``matmul``, plus one MULT per output for a non-unit ``alpha`` and one for a non-unit ``beta``;
    ``bias`` False when beta = 0 (the input is ignored: no addition). Writes one output per element.
    """
    outputs = batch * m * n
    out = matmul(m, n, k, batch=batch, bias=bias)
    extra = (outputs if alpha else 0) + (outputs if bias and beta else 0)
    return out + Counts({MULT: extra}) if extra else out


def cumsum(rows: Number, k: Number) -> Counts:
    """Running sum over k per row: k-1 ADD each (the first output is a copy); writes rows * k."""
    return Counts({ADD: rows * (k - 1), ACT: rows * k})


def reduce_sum(rows: Number, k: Number) -> Counts:
    """Sum over k elements for each of ``rows`` outputs: k-1 ADD each."""
    return Counts({ADD: rows * (k - 1), ACT: rows})


def reduce_mean(rows: Number, k: Number) -> Counts:
    """Mean over k: k-1 ADD and one DIV per output."""
    return Counts({ADD: rows * (k - 1), DIV: rows, ACT: rows})


def std(rows: Number, k: Number) -> Counts:
    """Standard deviation over k per row (torch.std, any correction): the mean (k-1 ADD, 1 DIV), x - mean
    (k ADD), its square (k MULT), their sum (k-1 ADD), / (k - correction) (1 DIV), sqrt (1 SQRT)."""
    return Counts({ADD: rows * (3 * k - 2), MULT: rows * k, DIV: 2 * rows, SQRT: rows, ACT: rows})


def reduce_max(rows: Number, k: Number) -> Counts:
    """Max over k: k-1 CMP per output."""
    return Counts({CMP: rows * (k - 1), ACT: rows})


def logsumexp(rows: Number, n: Number) -> Counts:
    """log(sum(exp(x))) over n per row, stabilised as aten's kernel is: the max (n-1 CMP), x - max (n ADD), n EXP,
    their sum (n-1 ADD), the log (1 EXP) and the max added back (1 ADD). Writes one value per row (granite_swa's
    attention sinks)."""
    return Counts({CMP: rows * (n - 1), ADD: rows * 2 * n, EXP: rows * (n + 1), ACT: rows})


def softmax(rows: Number, n: Number) -> Counts:
    """Softmax over n, per row: max (n-1 CMP), subtract it (n ADD), n EXP, sum (n-1 ADD), n DIV."""
    return Counts({CMP: rows * (n - 1), ADD: rows * (2 * n - 1), EXP: rows * n, DIV: rows * n, ACT: rows * n})


def layer_norm(rows: Number, n: Number, weight: bool, bias: bool) -> Counts:
    """aten.native_layer_norm over n per row.

    mean: n-1 ADD + 1 DIV; centre: n ADD; variance: n MULT + (n-1) ADD + 1 DIV; + eps: 1 ADD;
    rsqrt: 1 SQRT + 1 DIV; normalise: n MULT; weight: n MULT; bias: n ADD.
    The op writes the normalised rows and, as its saved statistics, one mean and one rstd per row.
    """
    add = (n - 1) + n + (n - 1) + 1 + (n if bias else 0)
    mult = n + n + (n if weight else 0)
    return Counts({ADD: rows * add, MULT: rows * mult, DIV: rows * 3, SQRT: rows, ACT: rows * n + 2 * rows})


def rms_norm(rows: Number, n: Number, weight: bool = True, plus_one: bool = False) -> Counts:
    """The eager RMSNorm of Llama-style models, op by op:

    x.pow(2): n MULT; .mean(-1): n-1 ADD + 1 DIV; + eps: 1 ADD; rsqrt: 1 SQRT + 1 DIV; x * rstd: n MULT;
    weight * x: n MULT (Gemma's ``(1 + weight) * x`` adds n ADD for 1 + weight... over the n weights only).
    """
    out = elementwise("square", rows * n) + reduce_mean(rows, n) + elementwise("add", rows)
    out = out + elementwise("rsqrt", rows) + elementwise("mul", rows * n)
    if plus_one:
        out = out + elementwise("add", n)
    if weight:
        out = out + elementwise("mul", rows * n)
    return out


def topk(rows: Number, n: Number, k: Number) -> Counts:
    """Top k of n, per row, as k successive max scans over the elements still left:
    sum_{i<k} (n-1-i) = k*(2n-k-1)/2 CMP per row (k = 1 is a max). Writes k values and k indices per row."""
    return Counts({CMP: rows * (k * (2 * n - k - 1) // 2), ACT: 2 * rows * k})  # k*(2n-k-1) is even


def sort(rows: Number, n: Number) -> Counts:
    """Sort n elements per row (aten.sort: values and indices). Counted as ``topk`` with k = n, the same
    selection convention (n successive max scans over what is left): n(n-1)/2 CMP per row, whatever algorithm
    the kernel uses (the CPU kernel sorts with a comparison sort). Writes n values and n indices per row.
    n may be a formula (JetMoE sorts all B*S*k routed pairs in one row): n(n-1) is even, the halving exact."""
    pairs = n * (n - 1)
    return Counts({CMP: rows * (pairs // 2 if isinstance(pairs, int) else pairs / 2), ACT: 2 * rows * n})


def index_add(n: Number, alpha: bool = False) -> Counts:
    """``out.index_add_(dim, index, source)``: out[index[i]] += source[i] for the n elements of ``source``: n ADD
    (plus n MULT for alpha != 1). Writes the n sums; the rest of the output (out-of-place, a copy of ``self``) is
    data movement, as index_put / scatter. DBRX's and JetMoE's experts scatter their weighted outputs back
    into token order with it."""
    out = Counts({ADD: n, ACT: n})
    if alpha:
        out[MULT] = n
    return out


def aminmax(rows: Number, n: Number) -> Counts:
    """Min and max over n per row (aten.aminmax: one_hot's range check of its indices): 2(n-1) CMP per row;
    writes the two values."""
    return Counts({CMP: rows * 2 * (n - 1), ACT: 2 * rows})


def vector_norm(rows: Number, n: Number, order: float) -> Counts:
    """``torch.linalg.vector_norm(x, ord, dim)`` over n per row, as the CPU reduction kernel computes it
    (ReduceOpsKernel's norm ops; |x| is a sign test, counted as CMP like ``abs``):

    ord 2: sum of x*x, then sqrt: n MULT, n-1 ADD, 1 SQRT; ord 1: sum of |x|: n CMP, n-1 ADD;
    ord inf / -inf: max / min of |x|: n CMP + n-1 CMP; ord 0: count of x != 0: n CMP, n-1 ADD;
    any other p: sum of |x|^p, then ^(1/p): n CMP, n EXP (pow), n-1 ADD, 1 EXP. Writes one value per row."""
    if order == 2:
        per = {MULT: n, ADD: n - 1, SQRT: 1}
    elif order in (1, 0):
        per = {CMP: n, ADD: n - 1}
    elif order in (float("inf"), float("-inf")):
        per = {CMP: 2 * n - 1}
    else:
        per = {CMP: n, EXP: n + 1, ADD: n - 1}
    out = Counts({k: rows * v for k, v in per.items()})
    out[ACT] = rows
    return out


def complex_mul(n: Number, complex_factor: bool = True) -> Counts:
    """n complex products: (a+bi)(c+di) = (ac-bd) + (ad+bc)i is 4 MULT and 2 ADD; by a real factor
    (a+bi)*c is 2 MULT. ``act`` counts the reals written: 2 per complex element."""
    if complex_factor:
        return Counts({MULT: 4 * n, ADD: 2 * n, ACT: 2 * n})
    return Counts({MULT: 2 * n, ACT: 2 * n})


def conv(outputs: Number, k: Number, bias: bool) -> Counts:
    """A convolution (aten.convolution) writing ``outputs`` elements, each a dot product of ``k`` = in_channels
    / groups x kernel terms: k MULT (= MACs) and k-1 ADD per output, one more ADD with a bias. A depthwise
    conv1d (groups = channels: Mamba's short causal convolution) has k = kernel. Writes ``outputs``."""
    return Counts({MULT: outputs * k, ADD: outputs * (k if bias else k - 1), MACS: outputs * k, ACT: outputs})


def solve_triangular(batch: Number, n: Number, cols: Number, unit: bool) -> Counts:
    """X = A^-1 B for ``batch`` triangular n x n matrices A and n x ``cols`` right-hand sides B
    (aten.linalg_solve_triangular, left=True), by substitution: row i of each column subtracts i known
    products, x_i = (b_i - sum_{j<i} a_ij x_j) [/ a_ii]: n(n-1)/2 MULT and ADD per column (each a
    multiply-accumulate: MACs), plus n DIV per column unless ``unit`` (unit diagonal). Writes batch*n*cols.
    torch's FlopCounterMode has no formula for it (counts 0)."""
    pairs = batch * cols * (n * (n - 1) // 2)
    out = Counts({MULT: pairs, ADD: pairs, MACS: pairs, ACT: batch * n * cols})
    if not unit:
        out[DIV] = batch * cols * n
    return out


def polar(n: Number) -> Counts:
    """torch.polar(abs, angle) = abs*cos(angle) + i*abs*sin(angle) over n complex elements:
    2 EXP (cos, sin) and 2 MULT each; writes 2 reals per element."""
    return Counts({EXP: 2 * n, MULT: 2 * n, ACT: 2 * n})


# --- aten ops that do no arithmetic ---------------------------------------------------------------
# Views and aliases: no arithmetic, write nothing.
VIEW_OPS: frozenset[str] = frozenset(
    {
        "view", "_unsafe_view", "reshape", "expand", "transpose", "t", "permute", "unsqueeze", "squeeze",
        "slice", "select", "alias", "as_strided", "split", "split_with_sizes", "chunk", "unbind", "narrow",
        "detach", "lift_fresh", "_reshape_alias", "unflatten", "flatten", "diagonal", "movedim",
        "expand_as", "view_as", "unfold", "_unsafe_index", "lift_fresh_copy",
        "view_as_complex", "view_as_real",  # reinterpret pairs of reals as complex numbers and back
    }
)
# Data movement: no arithmetic, write a copy (counted in memory traffic, not in act).
MOVE_OPS: frozenset[str] = frozenset(
    {
        "clone", "_to_copy", "copy_", "copy", "cat", "stack", "contiguous", "index_copy_", "index_copy",
        "index_put_", "index_put", "slice_scatter", "select_scatter", "roll", "repeat", "pad",
        "constant_pad_nd", "flip", "masked_fill", "masked_fill_", "fill_", "zero_", "index", "scatter",
        "scatter_", "_index_put_impl_", "new_zeros", "new_empty", "new_ones", "new_full",
    }
)
# Creation: tensors made from nothing (ranges, constants): no arithmetic, not activations.
CREATE_OPS: frozenset[str] = frozenset(
    {"arange", "zeros", "ones", "full", "empty", "scalar_tensor", "zeros_like", "ones_like", "full_like",
     "empty_like", "empty_strided", "tensor", "_local_scalar_dense"}
)
# nonzero: the indices of the nonzero elements, a stream compaction whose output size depends on the data (a
# router's expert mask, DBRX). No arithmetic; its output, like index / index_put's, is data movement (not act).
MOVE_OPS = MOVE_OPS | frozenset({"nonzero"})
# tril / triu: a copy with the elements above / below a diagonal zeroed (no arithmetic): moves, as masked_fill
# (Mamba-2's chunked scan builds its causal masks with torch.tril).
MOVE_OPS = MOVE_OPS | frozenset({"tril", "triu"})
