"""Maps aten ops to counts through the op table (llm_profiler.ops): the measuring side's half of the convention.

Each aten op falls in exactly one class: computing (mapped to an op-table function), view, move (a copy),
or create. Anything else is unknown and is reported by name, never counted as zero in silence.
"""

from __future__ import annotations

import math
from typing import Any

from .. import ops
from ..ops import Counts

# aten name (overload packet, trailing "_" of in-place variants removed) -> op table elementwise op
ELEMENTWISE_ATEN: dict[str, str] = {
    "add": "add", "sub": "sub", "rsub": "sub", "neg": "neg", "mul": "mul", "div": "div",
    "reciprocal": "reciprocal", "sqrt": "sqrt", "rsqrt": "rsqrt", "exp": "exp", "log": "log",
    "sin": "sin", "cos": "cos", "tanh": "tanh", "erf": "erf", "sigmoid": "sigmoid", "silu": "silu",
    "relu": "relu", "le": "cmp", "lt": "cmp", "ge": "cmp", "gt": "cmp", "eq": "cmp", "ne": "cmp",
    "maximum": "cmp", "minimum": "cmp", "bitwise_and": "logic", "bitwise_or": "logic", "bitwise_not": "logic",
    "logical_and": "logic", "logical_or": "logic", "logical_not": "logic", "where": "select",
    "gelu": "gelu", "abs": "abs", "floor": "floor", "floor_divide": "floor_divide", "log1p": "log1p",
    "embedding": "gather", "index_select": "gather", "gather": "gather", "_unsafe_index": "gather",
    "erfinv": "erfinv",  # gemma3n's activation sparsity: Normal(0, 1).icdf
}
ELEMENTWISE_ATEN["softplus"] = "softplus"  # Mamba's dt, deepseek_v4's router (ops.ELEMENTWISE["softplus"])
MATMUL_ATEN = frozenset({"mm", "addmm", "bmm", "baddbmm"})


def _numel(x: Any) -> int:
    return int(math.prod(x.shape))


def op_name(func: Any) -> str:
    """The aten op's name: its overload packet, the trailing "_" of an in-place elementwise op removed."""
    name = func.overloadpacket.__name__
    return name[:-1] if name.endswith("_") and name[:-1] in ELEMENTWISE_ATEN else name


_name = op_name


def classify(func: Any) -> str:
    """'compute', 'view', 'move', 'create' or 'unknown'."""
    name = _name(func)
    if name in ELEMENTWISE_ATEN or name in MATMUL_ATEN or name in _SPECIAL:
        return "compute"
    if name in ops.VIEW_OPS:
        return "view"
    if name in ops.MOVE_OPS:
        return "move"
    if name in ops.CREATE_OPS:
        return "create"
    return "unknown"


def _first_output(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) else out


def count(func: Any, args: tuple, kwargs: dict, out: Any) -> Counts:
    """Counts of one computing aten op (``classify(func) == 'compute'``)."""
    name = _name(func)
    result = _first_output(out)
    if name in MATMUL_ATEN:
        return _matmul(name, args, kwargs)
    if name in _SPECIAL:
        return _SPECIAL[name](args, kwargs, result)
    if name == "mul" and result.is_complex():  # complex rotary embeddings (DeepSeek-V2)
        return ops.complex_mul(_numel(result), _both_complex(args))
    if name == "gelu" and kwargs.get("approximate", args[1] if len(args) > 1 else "none") == "tanh":
        return ops.elementwise("gelu_tanh", _numel(result))
    return ops.elementwise(ELEMENTWISE_ATEN[name], _numel(result))


def _matmul(name: str, args: tuple, kwargs: dict | None = None) -> Counts:
    if name in ("addmm", "baddbmm"):  # beta * input + alpha * (a @ b); beta = 0 ignores the input
        alpha, beta = (kwargs or {}).get("alpha", 1), (kwargs or {}).get("beta", 1)
        a, b = args[1], args[2]
        m, n, k, batch = (a.shape[0], b.shape[1], a.shape[1], 1) if name == "addmm" else (
            a.shape[1], b.shape[2], a.shape[2], a.shape[0])
        return ops.scaled_matmul(m, n, k, batch=batch, bias=beta != 0, alpha=alpha != 1, beta=beta != 1)
    if name == "mm":
        a, b = args[0], args[1]
        return ops.matmul(a.shape[0], b.shape[1], a.shape[1])
    if name == "addmm":  # bias + a @ b
        a, b = args[1], args[2]
        return ops.matmul(a.shape[0], b.shape[1], a.shape[1], bias=True)
    if name == "bmm":
        a, b = args[0], args[1]
        return ops.matmul(a.shape[1], b.shape[2], a.shape[2], batch=a.shape[0])
    a, b = args[1], args[2]  # baddbmm
    return ops.matmul(a.shape[1], b.shape[2], a.shape[2], batch=a.shape[0], bias=True)


def _reduce(fn: Any) -> Any:
    def handler(args: tuple, kwargs: dict, result: Any) -> Counts:
        rows = _numel(result)
        k = _numel(args[0]) // rows if rows else 0
        return fn(rows, k)
    return handler


def _softmax(args: tuple, kwargs: dict, result: Any) -> Counts:
    x, dim = args[0], args[1]
    n = x.shape[dim]
    return ops.softmax(_numel(x) // n, n)


def _layer_norm(args: tuple, kwargs: dict, result: Any) -> Counts:
    x, shape = args[0], args[1]
    weight = args[2] if len(args) > 2 else kwargs.get("weight")
    bias = args[3] if len(args) > 3 else kwargs.get("bias")
    n = math.prod(shape)
    return ops.layer_norm(_numel(x) // n, n, weight is not None, bias is not None)


def _pow(args: tuple, kwargs: dict, result: Any) -> Counts:
    exponent = args[1]
    if not isinstance(exponent, (int, float)):  # tensor ** tensor or scalar ** tensor
        return ops.elementwise("pow", _numel(result))
    op = {2: "square", 3: "cube", 0.5: "sqrt", -1: "reciprocal", -0.5: "rsqrt"}.get(exponent, "pow")
    return ops.elementwise(op, _numel(result))


def _is_complex(x: Any) -> bool:
    return isinstance(x, complex) or (hasattr(x, "is_complex") and x.is_complex())


def _both_complex(args: tuple) -> bool:
    """complex * complex (4 MULT + 2 ADD) rather than complex * real (2 MULT)."""
    return _is_complex(args[0]) and _is_complex(args[1])


def _topk(args: tuple, kwargs: dict, result: Any) -> Counts:
    x, k = args[0], args[1]
    dim = args[2] if len(args) > 2 else kwargs.get("dim", -1)
    n = x.shape[dim]
    return ops.topk(_numel(x) // n if n else 0, n, k)


def _max(args: tuple, kwargs: dict, result: Any) -> Counts:
    """max(x): one max over all elements; max(x, dim) writes values and indices, as a top-1."""
    x = args[0]
    if len(args) > 1 and hasattr(args[1], "shape"):  # max(a, b): elementwise, like maximum
        return ops.elementwise("cmp", _numel(result))
    if len(args) < 2 and "dim" not in kwargs:
        return ops.reduce_max(1, _numel(x))
    n = x.shape[args[1] if len(args) > 1 else kwargs["dim"]]
    return ops.topk(_numel(x) // n if n else 0, n, 1)


def _polar(args: tuple, kwargs: dict, result: Any) -> Counts:
    return ops.polar(_numel(result))


def _cumsum(args: tuple, kwargs: dict, result: Any) -> Counts:
    x, dim = args[0], args[1]
    n = x.shape[dim] if x.dim() else 1
    return ops.cumsum(_numel(x) // n if n else 0, n)


def _clamp(args: tuple, kwargs: dict, result: Any) -> Counts:
    """clamp(x, min=None, max=None) (scalar or tensor bounds): one CMP per bound given."""
    lower = args[1] if len(args) > 1 else kwargs.get("min")
    upper = args[2] if len(args) > 2 else kwargs.get("max")
    return ops.clamp(_numel(result), (lower is not None) + (upper is not None))


def _convolution(args: tuple, kwargs: dict, result: Any) -> Counts:
    """aten.convolution(input, weight, bias, ...): each output a dot product over weight.shape[1:] (in_channels
    / groups x the kernel), plus the bias when given."""
    weight, bias = args[1], args[2] if len(args) > 2 else kwargs.get("bias")
    return ops.conv(_numel(result), math.prod(weight.shape[1:]), bias is not None)


def _solve_triangular(args: tuple, kwargs: dict, result: Any) -> Counts:
    """linalg_solve_triangular(A, B, *, upper, left=True, unitriangular=False), A (..., n, n): left, A X = B
    solves each of B's columns; right (left=False), X A = B each of its rows."""
    n = args[0].shape[-1]
    solved = result.shape[-1] if kwargs.get("left", True) else result.shape[-2]
    batch = _numel(result) // (n * solved) if n and solved else 0
    return ops.solve_triangular(batch, n, solved, bool(kwargs.get("unitriangular", False)))


_SPECIAL: dict[str, Any] = {
    "clamp": _clamp,
    "mean": _reduce(ops.reduce_mean),
    "sum": _reduce(ops.reduce_sum),
    "amax": _reduce(ops.reduce_max),
    "_softmax": _softmax,
    "native_layer_norm": _layer_norm,
    "pow": _pow,
    "cumsum": _cumsum,
    "topk": _topk,
    "polar": _polar,
    "max": _max,
    "std": _reduce(ops.std),  # gemma3n's activation sparsity
    "_is_all_true": _reduce(ops.reduce_max),  # all(): a min over booleans (torch.distributions' argument checks)
    "linalg_solve_triangular": _solve_triangular,
}
_SPECIAL["convolution"] = _convolution  # Mamba's short causal conv1d (F.conv1d)


def scaled_dot_product_attention(query: Any, key: Any, value: Any, attn_mask: Any = None,
                                 is_causal: bool = False) -> dict[str, Counts]:
    """``torch.nn.functional.scaled_dot_product_attention`` (one fused op on every backend but the math one)
    counted by PyTorch's documented definition (the reference implementation in its docs), split into the
    graph's three attention parts: ``scores`` = q @ k^T * scale (+ the mask), ``softmax`` over the keys,
    ``context`` = probabilities @ v.

    A fused kernel writes only its output: scores and softmax write nothing (act 0). ``is_causal``: the
    kernel masks by position (no arithmetic counted); a boolean ``attn_mask`` is a select (masked_fill: no
    arithmetic), a float one an add per score. Grouped KV heads (``enable_gqa``) are shared, never copied.
    """
    e, ev, keys = query.shape[-1], value.shape[-1], key.shape[-2]
    length = query.shape[-2]
    rows = _numel(query) // e  # batch * heads * queries
    heads = rows // length if length else 0
    scores = ops.matmul(length, keys, e, batch=heads) + ops.elementwise("mul", rows * keys)
    if attn_mask is not None:
        scores = scores + ops.elementwise("select" if attn_mask.dtype == _bool_dtype() else "add", rows * keys)
    return {
        "scores": scores.without_act(),
        "softmax": ops.softmax(rows, keys).without_act(),
        "context": ops.matmul(length, ev, keys, batch=heads),
    }


def _bool_dtype() -> Any:
    import torch

    return torch.bool


# --- ops of routers and experts that scatter by index (DBRX, JetMoE) and of Apertus' xIELU -------------------
ELEMENTWISE_ATEN["expm1"] = "expm1"  # Apertus' xIELU: expm1(min(x, eps)) (ops.ELEMENTWISE["expm1"]: 1 EXP)


def _sort(args: tuple, kwargs: dict, result: Any) -> Counts:
    """aten.sort(self, dim=-1, descending=False) or sort.stable(self, *, stable, dim, descending): n = the
    sorted dimension's size (ops.sort: n(n-1)/2 CMP per row, the topk convention with k = n)."""
    x = args[0]
    dim = kwargs.get("dim", args[1] if len(args) > 1 and isinstance(args[1], int) else -1)
    n = x.shape[dim] if x.dim() else 1
    return ops.sort(_numel(x) // n if n else 0, n)


def _index_add(args: tuple, kwargs: dict, result: Any) -> Counts:
    """aten.index_add(self, dim, index, source, *, alpha=1) and its in-place index_add_: one ADD per element of
    ``source`` (ops.index_add)."""
    source = args[3] if len(args) > 3 else kwargs["source"]
    alpha = kwargs.get("alpha", args[4] if len(args) > 4 else 1)
    return ops.index_add(_numel(source), alpha != 1)


def _vector_norm(args: tuple, kwargs: dict, result: Any) -> Counts:
    """aten.linalg_vector_norm(self, ord=2, dim=None, keepdim=False, *, dtype=None): rows = the output's
    elements, n = the reduced elements per row (ops.vector_norm by ``ord``). DBRX's router: torch.norm(top-k
    weights, p=moe_normalize_expert_weights, dim=-1)."""
    x = args[0]
    order = float(args[1] if len(args) > 1 else kwargs.get("ord", 2))
    rows = _numel(result)
    return ops.vector_norm(rows, _numel(x) // rows if rows else 0, order)


def _aminmax(args: tuple, kwargs: dict, result: Any) -> Counts:
    """aten.aminmax(self, *, dim=None, keepdim=False): min and max per row (ops.aminmax); F.one_hot runs it
    on its indices to check their range (DBRX's expert mask)."""
    x = args[0]
    rows = _numel(result)
    return ops.aminmax(rows, _numel(x) // rows if rows else 0)


_SPECIAL["sort"] = _sort  # JetMoE's router: the (token, expert) pairs grouped by expert
_SPECIAL["index_add"] = _index_add  # JetMoE: expert outputs scattered back to token order
_SPECIAL["index_add_"] = _index_add  # DBRX: the same, in place (op_name keeps its "_": not an elementwise op)
_SPECIAL["linalg_vector_norm"] = _vector_norm
_SPECIAL["aminmax"] = _aminmax
_SPECIAL["logsumexp"] = _reduce(ops.logsumexp)  # granite_swa's sink scale: logsumexp of the scores over the keys
