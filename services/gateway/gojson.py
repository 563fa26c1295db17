"""Go's encoding/json words for a JSON value's kind, as its type errors name them
("json: cannot unmarshal number into Go struct field …")."""

from __future__ import annotations

from typing import Any

_KINDS: dict[type, str] = {
    str: "string",
    bool: "bool",
    int: "number",
    float: "number",
    list: "array",
    dict: "object",
    type(None): "null",
}


def json_kind(value: Any) -> str:
    """The kind of a decoded JSON value: string, bool, number, array, object or null."""
    return _KINDS.get(type(value), "value")
