"""Formulas in B, S, P without sympy: exact sparse polynomials over a few atoms.

Every count of the graph is a polynomial with integer coefficients in the shape symbols B (batch), S (new
tokens) and P (cached tokens), plus a few non-polynomial atoms that real layers need: ``Min(x, c)`` (a
sliding window caps the keys at ``window - 1``) and ``CeilDiv(x, d)`` (chunked scans). A ``Formula`` is a
dict from monomial to coefficient, so adding, scaling and multiplying is exact integer arithmetic, and
evaluating one at a shape is a few multiplications: the numeric path never imports sympy.

``to_sympy()`` (or ``sympy.sympify(formula)``, through ``_sympy_``) gives the same expression in sympy for
symbolic export and closed-form sums; ``compile_formula`` turns one into a Python function that is exact on
ints and vectorised on numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from fractions import Fraction
from typing import Any, TypeAlias

Coefficient: TypeAlias = "int | Fraction"
Atom: TypeAlias = "str | MinAtom | CeilDivAtom"
Monomial: TypeAlias = "tuple[tuple[Atom, int], ...]"  # ((atom, power), ...) sorted by the atom's key
SYMBOLS: tuple[str, ...] = ("B", "S", "P")


def _atom_key(atom: Atom) -> str:
    return atom if isinstance(atom, str) else atom.key


class MinAtom:
    """min(x, c) of a formula x and an integer c (the two arguments every window needs)."""

    __slots__ = ("arg", "cap", "key")

    def __init__(self, arg: Formula, cap: int) -> None:
        self.arg, self.cap = arg, cap
        self.key = f"Min({arg}, {cap})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MinAtom) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def value(self, env: Mapping[str, Any]) -> Any:
        return _min(self.arg.evaluate(env), self.cap)

    def substitute(self, mapping: Mapping[str, Formula]) -> Formula:
        return fmin(self.arg.substitute(mapping), self.cap)

    def to_sympy(self) -> Any:
        import sympy

        return sympy.Min(self.arg.to_sympy(), self.cap)

    def code(self, names: Mapping[str, str]) -> str:
        return f"_min({self.arg.code(names)}, {self.cap})"


class CeilDivAtom:
    """ceil(x / d) of a formula x and a positive integer d (chunks of a chunked scan or attention)."""

    __slots__ = ("arg", "divisor", "key")

    def __init__(self, arg: Formula, divisor: int) -> None:
        self.arg, self.divisor = arg, divisor
        self.key = f"ceiling(({arg})/{divisor})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CeilDivAtom) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def value(self, env: Mapping[str, Any]) -> Any:
        return -((-self.arg.evaluate(env)) // self.divisor)

    def substitute(self, mapping: Mapping[str, Formula]) -> Formula:
        return ceil_div(self.arg.substitute(mapping), self.divisor)

    def to_sympy(self) -> Any:
        import sympy

        return sympy.ceiling(self.arg.to_sympy() / self.divisor)

    def code(self, names: Mapping[str, str]) -> str:
        return f"(-((-({self.arg.code(names)})) // {self.divisor}))"


def _min(a: Any, b: Any) -> Any:
    if hasattr(a, "shape") or hasattr(b, "shape"):  # numpy arrays (a vectorised sweep): elementwise
        import numpy as np

        return np.minimum(a, b)
    return a if a < b else b  # arrays checked first: `a < b` raising on each array call was half a warm roofline


def _normal(c: Coefficient) -> Coefficient:
    if isinstance(c, Fraction) and c.denominator == 1:
        return int(c)
    return c


def _mul_monomials(a: Monomial, b: Monomial) -> Monomial:
    if not a:
        return b
    if not b:
        return a
    powers: dict[Atom, int] = dict(a)
    for atom, power in b:
        powers[atom] = powers.get(atom, 0) + power
    return tuple(sorted(powers.items(), key=lambda item: _atom_key(item[0])))


class Formula:
    """An exact polynomial over the atoms B, S, P, Min(x, c) and CeilDiv(x, d)."""

    __slots__ = ("terms", "_key")

    def __init__(self, terms: Mapping[Monomial, Coefficient] | None = None) -> None:
        self.terms: dict[Monomial, Coefficient] = {m: _normal(c) for m, c in (terms or {}).items() if c}
        self._key: str | None = None

    # --- construction ------------------------------------------------------------------------------
    @staticmethod
    def const(value: Coefficient) -> Formula:
        return Formula({(): value})

    @staticmethod
    def symbol(name: str) -> Formula:
        return Formula({((name, 1),): 1})

    @staticmethod
    def of(value: Any) -> Formula:
        if isinstance(value, Formula):
            return value
        if isinstance(value, (int, Fraction)) and not isinstance(value, bool):
            return Formula.const(value)
        raise TypeError(f"cannot make a formula of {value!r} ({type(value).__name__})")

    # --- arithmetic --------------------------------------------------------------------------------
    def __add__(self, other: Any) -> Formula:
        try:
            o = Formula.of(other)
        except TypeError:
            return NotImplemented
        if not o.terms:
            return self
        if not self.terms:
            return o
        out = dict(self.terms)
        for m, c in o.terms.items():
            out[m] = out.get(m, 0) + c
        return Formula(out)

    __radd__ = __add__

    def __neg__(self) -> Formula:
        return Formula({m: -c for m, c in self.terms.items()})

    def __sub__(self, other: Any) -> Formula:
        try:
            return self + (-Formula.of(other))
        except TypeError:
            return NotImplemented

    def __rsub__(self, other: Any) -> Formula:
        try:
            return Formula.of(other) + (-self)
        except TypeError:
            return NotImplemented

    def __mul__(self, other: Any) -> Formula:
        if isinstance(other, (int, Fraction)) and not isinstance(other, bool):
            if other == 1:
                return self
            return Formula({m: c * other for m, c in self.terms.items()})
        if not isinstance(other, Formula):
            return NotImplemented
        out: dict[Monomial, Coefficient] = {}
        for ma, ca in self.terms.items():
            for mb, cb in other.terms.items():
                m = _mul_monomials(ma, mb)
                out[m] = out.get(m, 0) + ca * cb
        return Formula(out)

    __rmul__ = __mul__

    def __pow__(self, power: int) -> Formula:
        out = Formula.const(1)
        for _ in range(power):
            out = out * self
        return out

    def __truediv__(self, divisor: int) -> Formula:
        """Division by an integer: exact (coefficients become fractions where they do not divide)."""
        if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor == 0:
            return NotImplemented
        return Formula({m: Fraction(c) / divisor for m, c in self.terms.items()})

    def __floordiv__(self, divisor: int) -> Formula:
        """Division by an integer that divides every coefficient (else a ValueError: not exact)."""
        if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor == 0:
            return NotImplemented
        if any(Fraction(c) % divisor for c in self.terms.values()):
            raise ValueError(f"{self} is not divisible by {divisor} term by term")
        return Formula({m: Fraction(c) / divisor for m, c in self.terms.items()})

    # --- comparison --------------------------------------------------------------------------------
    @property
    def key(self) -> str:
        if self._key is None:
            self._key = str(self)
        return self._key

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Formula):
            return self.terms == other.terms
        if isinstance(other, (int, Fraction)) and not isinstance(other, bool):
            return self.terms == ({(): other} if other else {})
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.key)

    def __bool__(self) -> bool:
        return bool(self.terms)

    def is_constant(self) -> bool:
        return all(not m for m in self.terms)

    def constant(self) -> Coefficient:
        """The value of a formula without symbols (ValueError otherwise)."""
        if not self.is_constant():
            raise ValueError(f"{self} is not a constant")
        return self.terms.get((), 0)

    def __int__(self) -> int:
        return int(self.constant())

    def __index__(self) -> int:
        value = self.constant()
        if isinstance(value, Fraction):
            raise ValueError(f"{self} is not an integer")
        return value

    def atoms(self) -> set[Atom]:
        return {atom for m in self.terms for atom, _ in m}

    def depends_on(self, name: str) -> bool:
        for atom in self.atoms():
            if atom == name or (not isinstance(atom, str) and atom.arg.depends_on(name)):
                return True
        return False

    # --- evaluation --------------------------------------------------------------------------------
    def evaluate(self, env: Mapping[str, Any]) -> Any:
        """The value at ``env`` (symbol -> int or numpy array): exact on Python ints."""
        values: dict[Atom, Any] = {}
        total: Any = 0
        for m, c in self.terms.items():
            term: Any = c
            for atom, power in m:
                v = values.get(atom)
                if v is None:
                    v = env[atom] if isinstance(atom, str) else atom.value(env)
                    values[atom] = v
                term = term * (v if power == 1 else v**power)
            total = total + term
        return total

    def __call__(self, batch: Any = 1, seq: Any = 1, past: Any = 0) -> Any:
        return self.evaluate({"B": batch, "S": seq, "P": past})

    def substitute(self, mapping: Mapping[str, Any]) -> Formula:
        """Replace symbols by formulas (or ints), e.g. ``{"S": 1}`` for the last position."""
        subs = {k: Formula.of(v) for k, v in mapping.items()}
        out = Formula()
        for m, c in self.terms.items():
            term = Formula.const(c)
            for atom, power in m:
                if isinstance(atom, str):
                    base = subs.get(atom, Formula.symbol(atom))
                else:
                    base = atom.substitute(subs)
                term = term * (base**power)
            out = out + term
        return out

    def subs(self, mapping: Mapping[Any, Any]) -> Formula:
        """sympy-style substitution: keys are symbol names or sympy symbols (``{B: 2, S: 3}``)."""
        return self.substitute({str(k): v for k, v in mapping.items()})

    # --- conversion --------------------------------------------------------------------------------
    def to_sympy(self) -> Any:
        import sympy

        from .symbols import sympy_symbol

        out = []
        for m, c in self.terms.items():
            factor: Any = sympy.Rational(c.numerator, c.denominator) if isinstance(c, Fraction) else sympy.Integer(c)
            for atom, power in m:
                base = sympy_symbol(atom) if isinstance(atom, str) else atom.to_sympy()
                factor = factor * base**power
            out.append(factor)
        return sympy.Add(*out)

    def _sympy_(self) -> Any:
        return self.to_sympy()

    def code(self, names: Mapping[str, str] | None = None) -> str:
        """Python source of the formula (symbols renamed by ``names``)."""
        names = names or {}
        parts = []
        for m, c in sorted(self.terms.items(), key=lambda t: _mono_str(t[0])):
            factors = [f"Fraction({c.numerator}, {c.denominator})" if isinstance(c, Fraction) else str(c)]
            for atom, power in m:
                base = names.get(atom, atom) if isinstance(atom, str) else atom.code(names)
                factors.extend([base] * power)
            parts.append("(" + "*".join(factors) + ")")
        return " + ".join(parts) if parts else "0"

    def __str__(self) -> str:
        if not self.terms:
            return "0"
        parts = []
        for m, c in sorted(self.terms.items(), key=lambda t: _mono_str(t[0]), reverse=True):
            mono = _mono_str(m)
            if not mono:
                parts.append(str(c))
            elif c == 1:
                parts.append(mono)
            elif c == -1:
                parts.append("-" + mono)
            else:
                parts.append(f"{c}*{mono}")
        return " + ".join(parts).replace("+ -", "- ")

    __repr__ = __str__


def _mono_str(m: Monomial) -> str:
    return "*".join(_atom_key(a) if p == 1 else f"{_atom_key(a)}**{p}" for a, p in m)


def fmin(arg: Any, cap: int) -> Formula:
    """min(arg, cap): a number when arg is one, else a Min atom."""
    f = Formula.of(arg)
    if f.is_constant():
        return Formula.const(min(f.constant(), cap))
    return Formula({((MinAtom(f, cap), 1),): 1})


def ceil_div(arg: Any, divisor: int) -> Formula:
    """ceil(arg / divisor): a number when arg is one, else a CeilDiv atom."""
    f = Formula.of(arg)
    if f.is_constant():
        value = f.constant()
        return Formula.const(-((-value) // divisor))
    return Formula({((CeilDivAtom(f, divisor), 1),): 1})


def total(formulas: Iterable[Any]) -> Formula:
    out = Formula()
    for f in formulas:
        out = out + f
    return out


def _integer_code(f: Formula) -> str:
    """Source of f with integer arithmetic only: rational coefficients are scaled by their common denominator
    and the sum divided back exactly (the formulas count things: integers at integer shapes), so numpy int64
    arrays stay int64 (no object arrays of fractions)."""
    denominator = 1
    for c in f.terms.values():
        if isinstance(c, Fraction):
            denominator = denominator * c.denominator // math.gcd(denominator, c.denominator)
    if denominator == 1:
        return f.code()
    return f"(({(f * denominator).code()}) // {denominator})"


def compile_formula(f: Formula) -> Callable[[Any, Any, Any], Any]:
    """A function (batch, seq, past) -> value: exact on ints, vectorised on numpy arrays."""
    source = f"def _f(B, S, P):\n    return {_integer_code(f)}\n"
    namespace: dict[str, Any] = {"_min": _min, "Fraction": Fraction}
    exec(compile(source, "<formula>", "exec"), namespace)  # our own generated source, from integers only
    fn: Callable[[Any, Any, Any], Any] = namespace["_f"]
    return fn


def compile_formulas(formulas: Iterable[Formula]) -> Callable[[Any, Any, Any], list[Any]]:
    """One function (batch, seq, past) -> [value of each formula]: exact on ints, vectorised on arrays."""
    body = ",\n        ".join(_integer_code(f) for f in formulas)
    source = f"def _f(B, S, P):\n    return [\n        {body}\n    ]\n"
    namespace: dict[str, Any] = {"_min": _min, "Fraction": Fraction}
    exec(compile(source, "<formulas>", "exec"), namespace)  # our own generated source, from integers only
    fn: Callable[[Any, Any, Any], list[Any]] = namespace["_f"]
    return fn


B = Formula.symbol("B")
S = Formula.symbol("S")
P = Formula.symbol("P")
ZERO = Formula()
ONE = Formula.const(1)

__all__ = ["B", "ONE", "P", "S", "ZERO", "CeilDivAtom", "Formula", "MinAtom", "ceil_div", "compile_formula", "compile_formulas",
           "fmin", "total"]
