"""The shape symbols as sympy symbols, for symbolic export and closed-form sums.

The graph's formulas are ``llm_profiler.formula.Formula`` objects over the same names (B, S, P); this module
is where they meet sympy, and only code that needs sympy imports it.
"""

from __future__ import annotations

import sympy

B = sympy.Symbol("B", integer=True, positive=True)  # batch: sequences processed together
S = sympy.Symbol("S", integer=True, positive=True)  # new tokens per sequence in this forward
P = sympy.Symbol("P", integer=True, nonnegative=True)  # tokens already in the KV cache
SHAPE_SYMBOLS: tuple[sympy.Symbol, ...] = (B, S, P)
_BY_NAME = {"B": B, "S": S, "P": P}


def sympy_symbol(name: str) -> sympy.Symbol:
    """The sympy symbol of a formula symbol name."""
    return _BY_NAME[name]
