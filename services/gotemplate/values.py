"""How Python data stands for Go values inside a template, and Go's notion of truth.

Plain Python values map to Go's dynamic ones: dict → map[string]any (fields `.Key` look up keys; a
missing key is nil, which prints `<no value>` and is false, as with Ollama's `missingkey=zero`),
list/tuple → slice, str/int/float/bool, None → nil, bytes → []byte.

Two wrappers carry what plain values cannot:

- `GoStruct` is a struct: a fixed, ordered set of capitalised fields. Asking for a field it lacks is
  an execution error (`can't evaluate field X in type T`), as in Go, and `encoding/json` names its
  fields through `json_tags`. Ollama hands templates its messages and tools as structs.
- `GoValue` is a value of a named Go type with methods: `string` is what its `String()` returns
  (printing uses it, as fmt does) and `json` what its `MarshalJSON()` returns. Everything else
  (fields, range, index, len, truth) sees `value`. Ollama's tool types print as their JSON this way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, eq=False)
class GoStruct:
    """A Go struct. `fields` keeps Go's field order, which `%v` prints in.

    `json_tags` maps a field name to its `json:"..."` tag ("name", "name,omitempty" or "-"); fields
    without a tag are marshalled under their Go name, as encoding/json does.
    """

    type_name: str
    fields: Mapping[str, Any]
    json_tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class GoValue:
    """A value whose Go type has a String() and/or MarshalJSON() method.

    `string`: the String() result, or None if the type has no such method.
    `json`: the raw MarshalJSON() result, or None to marshal `value` the ordinary way.
    """

    value: Any
    string: str | None = None
    json: str | None = None


def unwrap(value: Any) -> Any:
    """The value that fields, range, index, len and comparisons see."""
    while isinstance(value, GoValue):
        value = value.value
    return value


def truth(value: Any) -> bool:
    """Go template truth: false, 0, nil and empty strings, slices and maps are false; structs are true."""
    value = unwrap(value)
    if value is None:
        return False
    if isinstance(value, bool | int | float):
        return value != 0
    if isinstance(value, str | bytes | list | tuple | dict):
        return len(value) > 0
    return True


def go_type(value: Any) -> str:
    """The Go type name of a value, as error messages and `%!d(string=x)` spell it."""
    value = unwrap(value)
    if value is None:
        return "<nil>"
    if isinstance(value, GoStruct):
        return value.type_name
    for python_type, name in _TYPE_NAMES:
        if isinstance(value, python_type):
            return name
    return type(value).__name__


_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "bool"),
    (int, "int"),
    (float, "float64"),
    (str, "string"),
    (bytes, "[]uint8"),
    (list, "[]interface {}"),
    (tuple, "[]interface {}"),
    (dict, "map[string]interface {}"),
)
