"""Go's float64 spellings: fmt's `%v` (3 → `3`, 1e6 → `1e+06`) and the pieces encoding/json reuses.

Python's repr already finds the shortest digits that round-trip, as Go's strconv does with precision
-1; only where the decimal point and exponent go differs.
"""

from __future__ import annotations

import math
from decimal import Decimal


def shortest_digits(value: float) -> tuple[str, int]:
    """Digits D and point P with |value| = 0.D × 10**P, D the shortest that round-trips; value != 0."""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    return digits.rstrip("0"), len(digits) + exponent


def fixed_form(digits: str, point: int) -> str:
    """The digits with the decimal point placed, no exponent: ("15", 1) → "1.5", ("1", 3) → "100"."""
    if point <= 0:
        return "0." + "0" * -point + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


def exponent_form(digits: str, point: int) -> str:
    """d.ddde±XX with at least two exponent digits: ("15", 7) → "1.5e+06"."""
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    exponent = point - 1
    return f"{mantissa}e{'+' if exponent >= 0 else '-'}{abs(exponent):02d}"


def format_shortest(value: float) -> str:
    """fmt's %v for a float64 (%g, shortest): exponent form when the exponent is < -4 or >= 6."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    digits, point = shortest_digits(value)
    sign = "-" if value < 0 else ""
    if not -4 <= point - 1 < 6:
        return sign + exponent_form(digits, point)
    return sign + fixed_form(digits, point)
