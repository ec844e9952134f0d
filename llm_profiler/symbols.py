"""The shape symbols every formula is written in."""

from __future__ import annotations

import sympy

B = sympy.Symbol("B", integer=True, positive=True)  # batch: sequences processed together
S = sympy.Symbol("S", integer=True, positive=True)  # new tokens per sequence in this forward
P = sympy.Symbol("P", integer=True, nonnegative=True)  # tokens already in the KV cache
SHAPE_SYMBOLS: tuple[sympy.Symbol, ...] = (B, S, P)
