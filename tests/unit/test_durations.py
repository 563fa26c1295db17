"""keep_alive as a request field (api.Duration.UnmarshalJSON)"""

from __future__ import annotations

import pytest

from services.protocol.durations import parse_keep_alive

CASES = [
    (None, None),
    (3600, 3600.0),
    (1.5, 1.5),
    (0, 0.0),
    (-1, -1.0),
    (-300, -1.0),
    ("10m", 600.0),
    ("24h", 86400.0),
    ("1h30m", 5400.0),
    ("500ms", 0.5),
    ("0", 0.0),
    ("-1m", -1.0),
    ("1.5h", 5400.0),
]


@pytest.mark.parametrize(("value", "seconds"), CASES, ids=[repr(c[0]) for c in CASES])
def test_keep_alive_values(value: object, seconds: float | None) -> None:
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("300", 'time: missing unit in duration "300"'),
        ("abc", 'time: invalid duration "abc"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        ("", 'time: invalid duration ""'),
        (True, "Unsupported type: 'bool'"),
        ([1], "Unsupported type: '[]interface {}'"),
        ({"a": 1}, "Unsupported type: 'map[string]interface {}'"),
    ],
    ids=["bare-number-string", "word", "days", "empty", "bool", "list", "object"],
)
def test_invalid_keep_alive_has_gos_message(value: object, error: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_keep_alive(value)
    assert str(info.value) == error
