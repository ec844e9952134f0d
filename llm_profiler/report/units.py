"""Human units for counts: K, M, G, T, P (powers of 1000); the seed's engineering notation ``59.02  (10^9)``;
and byte sizes (kB, MB, GB, TB; powers of 1000, as the roofline output prints them)."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

_UNITS = ((10**15, "P"), (10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "K"))
_BYTE_UNITS = ((10**15, "PB"), (10**12, "TB"), (10**9, "GB"), (10**6, "MB"), (10**3, "kB"))
_CENT = Decimal("0.01")


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


def engineering(value: int) -> tuple[str, int]:
    """The seed's notation: a mantissa with two decimals times a power of ten that is a multiple of 3.

    3_157_871_852_800 -> ('3.16', 12); 59_020_000_000 -> ('59.02', 9); 747_321_600 -> ('747.32', 6);
    600 -> ('600.00', 0); 0 -> ('0.00', 0). Exact decimal rounding (half to even) on the integer, and a
    mantissa that rounds up to 1000 moves to the next power: 999_999 -> ('1.00', 6).
    """
    power = exponent(value) // 3 * 3
    mantissa = Decimal(value).scaleb(-power).quantize(_CENT, rounding=ROUND_HALF_EVEN)
    if abs(mantissa) >= 1000:
        power += 3
        mantissa = Decimal(value).scaleb(-power).quantize(_CENT, rounding=ROUND_HALF_EVEN)
    return f"{mantissa:.2f}", power


def human_bytes(value: int, digits: int = 2) -> str:
    """104_857_600 -> '104.86 MB' (powers of 1000, like the roofline output); below 1000: '512 B'."""
    magnitude = abs(value)
    for base, suffix in _BYTE_UNITS:
        if magnitude >= base:
            return f"{value / base:.{digits}f} {suffix}"
    return f"{value} B"
