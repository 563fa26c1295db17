"""Request fields parsed with Ollama's rules and error texts."""

from __future__ import annotations

from typing import Any

import pytest

from services.gateway.bodies import (
    check_top_logprobs,
    parse_embed_input,
    parse_format,
    parse_options,
    parse_think,
)
from services.gateway.errors import BadRequest


@pytest.mark.parametrize(
    ("value", "parsed"),
    [(None, None), ("", None), ("json", "json"), ({"type": "object"}, {"type": "object"})],
    ids=["absent", "empty", "json", "schema"],
)
def test_format(value: Any, parsed: Any) -> None:
    assert parse_format(value) == parsed


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("yaml", 'invalid format: "\\"yaml\\""; expected "json" or a valid JSON Schema object'),
        (5, 'invalid format: "5"; expected "json" or a valid JSON Schema object'),
    ],
    ids=["other-string", "number"],
)
def test_bad_format_has_ollamas_text(value: Any, error: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_format(value)
    assert info.value.message == error


@pytest.mark.parametrize("value", [None, True, False, "low", "medium", "high", "max"])
def test_think_values(value: Any) -> None:
    assert parse_think(value) == value


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("foo", 'invalid think value: "foo" (must be "high", "medium", "low", "max", true, or false)'),
        (1, 'think must be a boolean or string ("high", "medium", "low", "max", true, or false)'),
    ],
    ids=["bad-level", "number"],
)
def test_bad_think_has_ollamas_text(value: Any, error: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_think(value)
    assert info.value.message == error


@pytest.mark.parametrize("value", [-1, 21])
def test_top_logprobs_range(value: int) -> None:
    with pytest.raises(BadRequest, match="top_logprobs must be between 0 and 20"):
        check_top_logprobs(value)


@pytest.mark.parametrize(
    ("value", "inputs"), [(None, []), ("", []), ("a", ["a"]), (["a", "b"], ["a", "b"]), ([], [])]
)
def test_embed_input(value: Any, inputs: list[str]) -> None:
    assert parse_embed_input(value) == inputs


@pytest.mark.parametrize("value", [5, ["a", 1], {"a": 1}])
def test_bad_embed_input(value: Any) -> None:
    with pytest.raises(BadRequest, match="invalid input type"):
        parse_embed_input(value)


def test_options_keep_only_what_was_set() -> None:
    options = parse_options({"temperature": 0, "num_ctx": 0, "stop": ["x"], "unknown": 1})
    assert options.model_dump(exclude_none=True) == {"temperature": 0.0, "stop": ["x"]}
    with pytest.raises(BadRequest, match='option "num_keep" must be of type integer'):
        parse_options({"num_keep": 1.5})


def test_placement_hints_are_checked_but_not_options() -> None:
    assert parse_options({"num_thread": 4, "use_mmap": False}).model_dump(exclude_none=True) == {}
    with pytest.raises(BadRequest, match='option "use_mmap" must be of type boolean'):
        parse_options({"use_mmap": "yes"})
    with pytest.raises(BadRequest, match='option "num_gpu" must be of type integer'):
        parse_options({"num_gpu": "all"})
