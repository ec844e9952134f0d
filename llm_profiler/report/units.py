"""Human units for counts: K, M, G, T, P (powers of 1000), and the seed's ``(10^e)`` exponent."""

from __future__ import annotations

_UNITS = ((10**15, "P"), (10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "K"))


def human(value: int, digits: int = 2) -> str:
    """4_096_000 -> '4.10M'; small values stay exact."""
    magnitude = abs(value)
    for base, suffix in _UNITS:
        if magnitude >= base:
            return f"{value / base:.{digits}f}{suffix}"
    return str(value)


def exponent(value: int) -> int:
    """The power of ten of the leading digit (0 for 0): 21_310_419_763_200 -> 13."""
    return len(str(abs(value))) - 1 if value else 0
