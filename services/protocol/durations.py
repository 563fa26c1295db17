"""Go-style durations, as Ollama parses `keep_alive` and `OLLAMA_KEEP_ALIVE`.

Clients send Go duration strings ("5m", "1h30m", "-1m"), so the exact grammar and
error texts of Go's `time.ParseDuration` are part of the wire contract.
Durations are carried as float seconds; any negative value means "forever" and is
normalised to `FOREVER` (-1.0), as Ollama marshals it.
"""

from __future__ import annotations

import re

FOREVER = -1.0

_UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 micro sign
    "μs": 1e-6,  # U+03BC greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_TERM = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)")


def parse_go_duration(text: str) -> float:
    """Parse like Go's `time.ParseDuration`; return seconds, raising ValueError with Go's text."""
    original = text
    invalid = f'time: invalid duration "{original}"'
    sign = 1.0
    if text[:1] in "+-" and text:
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if text == "0":
        return 0.0
    if not text:
        raise ValueError(invalid)
    total = 0.0
    while text:
        match = _TERM.match(text)
        if match is None:  # unreachable: every part of the pattern is optional
            raise ValueError(invalid)
        whole, frac, unit = match.group(1), match.group(2), match.group(3)
        if not whole and not frac:
            raise ValueError(invalid)
        if not unit:
            raise ValueError(f'time: missing unit in duration "{original}"')
        if unit not in _UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{original}"')
        total += float(f"{whole or 0}.{frac or 0}") * _UNITS[unit]
        text = text[match.end() :]
    return normalise(sign * total)


def normalise(seconds: float) -> float:
    """Map every negative duration to FOREVER, keep the rest."""
    return FOREVER if seconds < 0 else seconds


def parse_keep_alive(value: object) -> float | None:
    """Parse a request's `keep_alive` JSON value (api.Duration.UnmarshalJSON).

    Numbers are seconds, strings are Go durations; `None` means "not set", so the
    model's sticky value or the server default applies.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("Unsupported type: 'bool'")
    if isinstance(value, int | float):
        return normalise(float(value))
    if isinstance(value, str):
        return parse_go_duration(value)
    raise ValueError(f"Unsupported type: '{_go_type_name(value)}'")


def _go_type_name(value: object) -> str:
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return type(value).__name__
