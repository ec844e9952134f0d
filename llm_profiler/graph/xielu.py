"""The xIELU activation (Apertus: transformers' ``XIELUActivation``, arXiv 2411.13010), op by op.

transformers runs its Python version (the CUDA kernel is an optional wheel, used on CUDA tensors only):

    alpha_p = softplus(alpha_p_raw); alpha_n = beta + softplus(alpha_n_raw)
    where(x > 0, alpha_p * x * x + beta * x, (expm1(min(x, eps)) - x) * alpha_n + beta * x)

Both branches are computed for every element. Per element: x > 0 (1 CMP); alpha_p * x, * x, beta * x (3 MULT),
+ (1 ADD); min(x, eps) (aten.minimum: 1 CMP), expm1 (1 EXP), - x (1 ADD), * alpha_n, beta * x (2 MULT), + (1 ADD);
where (a select). Each of these 12 ops writes n elements. Once per call, on the two one-element parameters:
two softplus (2 EXP + 1 CMP each) and beta + _ (1 ADD), writing 3 elements. Parameters: alpha_p and alpha_n,
one element each (beta and eps are buffers).
"""

from __future__ import annotations

from .. import ops
from ..formula import Formula
from ..ops import Counts
from .blocks import fusable, with_params

# the aten ops over the n elements, in the order the module runs them (llm_profiler.ops.ELEMENTWISE names)
XIELU_OPS: tuple[str, ...] = ("cmp", "mul", "mul", "mul", "add", "cmp", "expm1", "sub", "mul", "mul", "add", "select")
XIELU_PARAMS = 2  # alpha_p, alpha_n


def xielu(n: Formula) -> Counts:
    """xIELU over n elements, with its two scalar parameters (see the module docstring)."""
    scalars = ops.elementwise("softplus", Formula.const(2)) + ops.elementwise("add", Formula.const(1))
    counts = ops.total(ops.elementwise(op, n) for op in XIELU_OPS) + scalars
    return fusable(with_params(counts, XIELU_PARAMS), n, n)


__all__ = ["XIELU_OPS", "XIELU_PARAMS", "xielu"]
