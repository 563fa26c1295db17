"""Go's fmt for the values templates print: `{{ x }}` (Sprint), `print`, `println` and `printf`.

`%v` prints slices as `[a b]`, maps as `map[k:v]` with sorted keys and structs as `{a b}`; a value
with a String() method (a GoValue with `string`) prints that instead, at any depth, as fmt does for
the verbs v, s, q, x and X. Verbs that do not fit the argument print Go's complaint, e.g.
`%!d(string=hi)`, and so do missing or extra arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .floats import format_shortest
from .gostr import from_bytes, quote, to_bytes
from .values import GoStruct, GoValue, go_type

_INT_VERBS = "vdboOxXcqU"
_FLOAT_VERBS = "vgGeEfF"


def format_value(value: Any, verb: str = "v", plus: bool = False) -> str:
    """One value as `%v` (or the given verb applied element-wise) prints it, without width or flags.

    A nil inside a slice, map or struct prints `<nil>` whatever the verb, as in Go.
    """
    if value is None:
        return "<nil>"
    if isinstance(value, GoValue):
        if value.string is not None and verb in "vsqxX":
            return _format_string(value.string, verb, None)
        return format_value(value.value, verb, plus)
    if isinstance(value, GoStruct):
        parts = (
            (f"{name}:" if plus else "") + format_value(v, verb, plus) for name, v in value.fields.items()
        )
        return "{" + " ".join(parts) + "}"
    if isinstance(value, list | tuple):
        return "[" + " ".join(format_value(v, verb, plus) for v in value) + "]"
    if isinstance(value, Mapping):
        items = sorted(value.items(), key=lambda item: _sort_key(item[0]))
        return (
            "map["
            + " ".join(f"{format_value(k, verb)}:{format_value(v, verb, plus)}" for k, v in items)
            + "]"
        )
    return _format_scalar(value, verb, None, "")


def sprint(args: Sequence[Any]) -> str:
    """fmt.Sprint: a space between two operands when neither is a string."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if i and not _is_string(arg) and not _is_string(args[i - 1]):
            out.append(" ")
        out.append(format_value(arg))
    return "".join(out)


def sprintln(args: Sequence[Any]) -> str:
    return " ".join(format_value(arg) for arg in args) + "\n"


def sprintf(template: str, args: Sequence[Any]) -> str:
    """fmt.Sprintf for flags `+- 0#`, a width, a precision and the common verbs."""
    out: list[str] = []
    i, used, size = 0, 0, len(template)
    while i < size:
        percent = template.find("%", i)
        if percent < 0:
            out.append(template[i:])
            break
        out.append(template[i:percent])
        i = percent + 1
        flags = ""
        while i < size and template[i] in "+-# 0":
            flags += template[i]
            i += 1
        width, i = _number(template, i)
        precision = None
        if i < size and template[i] == ".":
            precision, i = _number(template, i + 1)
            precision = precision or 0
        if i >= size:
            out.append("%!(NOVERB)")
            break
        verb = template[i]
        i += 1
        if verb == "%":
            out.append("%")
        elif used >= len(args):
            out.append(f"%!{verb}(MISSING)")
        else:
            out.append(_pad(_format_arg(args[used], verb, precision, flags), width, flags))
            used += 1
    if used < len(args):
        extra = ", ".join(_typed(arg) for arg in args[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _format_arg(arg: Any, verb: str, precision: int | None, flags: str) -> str:
    if isinstance(arg, GoValue) and arg.string is not None and verb in "vsqxX":
        return _format_string(arg.string, verb, precision)
    if isinstance(arg, GoValue | GoStruct | list | tuple | Mapping):
        return format_value(arg, verb, plus="+" in flags)
    return _format_scalar(arg, verb, precision, flags)


def _format_scalar(value: Any, verb: str, precision: int | None, flags: str) -> str:
    if value is None:
        return "<nil>" if verb == "v" else f"%!{verb}(<nil>)"
    if isinstance(value, bool):
        return ("true" if value else "false") if verb in "vt" else _bad(verb, value)
    if isinstance(value, int):
        return _sign(_format_int(value, verb), flags) if verb in _INT_VERBS else _bad(verb, value)
    if isinstance(value, float):
        return (
            _sign(_format_float(value, verb, precision), flags) if verb in _FLOAT_VERBS else _bad(verb, value)
        )
    if isinstance(value, str):
        return _format_string(value, verb, precision) if verb in "vsqxX" else _bad(verb, value)
    if isinstance(value, bytes):
        if verb in "sqxX":
            return _format_string(from_bytes(value), verb, precision)
        return "[" + " ".join(_format_int(b, verb) for b in value) + "]"
    return str(value)


def _format_int(value: int, verb: str) -> str:
    if verb == "c":
        return chr(value)
    if verb == "q":
        return quote(chr(value), "'")
    if verb == "U":
        return f"U+{value:04X}"
    spec = {"b": "b", "o": "o", "O": "o", "x": "x", "X": "X"}.get(verb, "d")
    text = format(abs(value), spec)
    return ("-" if value < 0 else "") + ("0o" if verb == "O" else "") + text


def _format_float(value: float, verb: str, precision: int | None) -> str:
    if verb in "vgG" and precision is None:
        text = format_shortest(value)
        return text.upper() if verb == "G" else text
    spec = "f" if verb == "F" else ("g" if verb == "v" else verb)
    return f"{value:.{6 if precision is None else precision}{spec}}"


def _format_string(text: str, verb: str, precision: int | None) -> str:
    if precision is not None:
        text = text[:precision]
    if verb == "q":
        return quote(text)
    if verb in "xX":
        hexed = to_bytes(text).hex()
        return hexed.upper() if verb == "X" else hexed
    return text


def _sign(text: str, flags: str) -> str:
    if text[:1] in "-+" or text[:1].isalpha():
        return text
    return ("+" if "+" in flags else " " if " " in flags else "") + text


def _pad(text: str, width: int | None, flags: str) -> str:
    if width is None or len(text) >= width:
        return text
    if "-" in flags:
        return text.ljust(width)
    if "0" in flags and text.lstrip("+- ")[:1].isdigit():
        sign = text[0] if text[0] in "+- " else ""
        return sign + text[len(sign) :].rjust(width - len(sign), "0")
    return text.rjust(width)


def _number(text: str, i: int) -> tuple[int | None, int]:
    start = i
    while i < len(text) and text[i].isdigit():
        i += 1
    return (int(text[start:i]) if i > start else None), i


def _bad(verb: str, value: Any) -> str:
    return f"%!{verb}({_typed(value)})"


def _typed(value: Any) -> str:
    return "<nil>" if value is None else f"{go_type(value)}={format_value(value)}"


def _is_string(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, GoValue) and isinstance(value.value, str))


def _sort_key(key: Any) -> tuple[int, Any]:
    """fmt sorts map keys: numbers by value, strings bytewise."""
    if isinstance(key, bool | int | float):
        return (0, key)
    return (1, to_bytes(str(key)))
