"""Go's encoding/json.Marshal output, byte for byte: what Ollama's `json` function and JSON String()s print.

It differs from Python's json.dumps: no spaces, map keys sorted, `<`, `>` and `&` escaped as \\u003c,
\\u003e and \\u0026, floats without a trailing `.0` (3.0 is `3`, 1e21 is `1e+21`), []byte as base64.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

from .floats import exponent_form, fixed_form, shortest_digits
from .values import GoStruct, GoValue, unwrap

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_ESCAPES.update({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def marshal(value: Any, *, sort_keys: bool = True) -> str:
    """json.Marshal(value). `sort_keys=False` keeps a top-level dict's order, as an ordered map would.

    Raises ValueError for NaN and infinities, which Go refuses too.
    """
    if isinstance(value, dict) and not sort_keys:
        return _object(value.items())
    return _marshal(value)


def _marshal(value: Any) -> str:
    if isinstance(value, GoValue):
        return value.json if value.json is not None else _marshal(value.value)
    if isinstance(value, GoStruct):
        return _struct(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json_float(value)
    if isinstance(value, str):
        return quote_json(value)
    if isinstance(value, bytes):
        return '"' + base64.b64encode(value).decode("ascii") + '"'
    if isinstance(value, list | tuple):
        return "[" + ",".join(map(_marshal, value)) + "]"
    if isinstance(value, Mapping):
        return _object(sorted(value.items(), key=lambda item: str(item[0])))
    raise ValueError(f"json: unsupported type: {type(value).__name__}")


def _object(items: Any) -> str:
    return "{" + ",".join(f"{quote_json(str(key))}:{_marshal(val)}" for key, val in items) + "}"


def _struct(value: GoStruct) -> str:
    members = []
    for name, val in value.fields.items():
        tag = value.json_tags.get(name, "")
        if tag == "-":
            continue
        key, _, options = tag.partition(",")
        if "omitempty" in options.split(",") and _empty(val):
            continue
        members.append((key or name, val))
    return _object(members)


def _empty(value: Any) -> bool:
    """encode/json's omitempty test: false, 0, nil and empty strings, slices and maps; never a struct."""
    value = unwrap(value)
    if value is None:
        return True
    if isinstance(value, bool | int | float):
        return value == 0
    if isinstance(value, str | bytes | list | tuple | Mapping):
        return len(value) == 0
    return False


def quote_json(text: str) -> str:
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif code < 0x20:
            out.append(f"\\u{code:04x}")
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8
            out.append("\\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def json_float(value: float) -> str:
    """encoding/json's float64: shortest digits, exponent only below 1e-6 or from 1e21 up."""
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"json: unsupported value: {value}")
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    digits, point = shortest_digits(value)
    sign = "-" if value < 0 else ""
    if 1e-6 <= abs(value) < 1e21:
        return sign + fixed_form(digits, point)
    text = exponent_form(digits, point)
    mantissa, _, exponent = text.partition("e")
    return f"{sign}{mantissa}e{exponent[0]}{int(exponent[1:])}"
