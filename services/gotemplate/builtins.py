"""Go's predefined template functions (text/template/funcs.go), with Go's error texts.

`and` and `or` are not here: they short-circuit, so the executor evaluates them itself. `call` is not
provided: template data here holds no functions.
"""

from __future__ import annotations

import html as _html
import urllib.parse
from dataclasses import dataclass
from typing import Any, Literal

from .gofmt import format_value, sprint, sprintf, sprintln
from .gostr import from_bytes, go_len, to_bytes
from .values import GoStruct, go_type, truth, unwrap

# What a parameter accepts: anything (nil included), or a string only.
ParamKind = Literal["any", "string"]


class FuncError(Exception):
    """A function's own failure; the executor reports it as `error calling NAME: MESSAGE`."""


@dataclass(frozen=True)
class Func:
    fn: Any
    params: tuple[ParamKind, ...]
    variadic: ParamKind | None = None


def _kind(value: Any) -> str | None:
    """Go's basicKind: the comparable scalar kinds; None for anything else (slices, maps, structs)."""
    value = unwrap(value)
    if value is None:
        return "nil"
    for python_type, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string")):
        if isinstance(value, python_type):
            return name
    return None


def eq(first: Any, *others: Any) -> bool:
    """first == any of others. Scalars of different kinds are an error unless one side is nil."""
    if not others:
        raise FuncError("missing argument for comparison")
    first = unwrap(first)
    kind = _kind(first)
    for other in map(unwrap, others):
        if kind != _kind(other):
            if first is not None and other is not None:
                raise FuncError("incompatible types for comparison")
            continue
        if kind is None:
            if not isinstance(other, GoStruct):
                raise FuncError(f"non-comparable type {format_value(other, 's')}: {go_type(other)}")
            if first is other or (isinstance(first, GoStruct) and dict(first.fields) == dict(other.fields)):
                return True
        elif first == other:
            return True
    return False


def ne(left: Any, right: Any) -> bool:
    return not eq(left, right)


def lt(left: Any, right: Any) -> bool:
    left, right = unwrap(left), unwrap(right)
    kinds = (_kind(left), _kind(right))
    if any(k in (None, "nil", "bool") for k in kinds):
        raise FuncError("invalid type for comparison")
    if kinds[0] != kinds[1]:
        raise FuncError("incompatible types for comparison")
    return bool(left < right)


def le(left: Any, right: Any) -> bool:
    return lt(left, right) or eq(left, right)


def gt(left: Any, right: Any) -> bool:
    return not le(left, right)


def ge(left: Any, right: Any) -> bool:
    return not lt(left, right)


def not_(value: Any) -> bool:
    return not truth(value)


def length(value: Any) -> int:
    value = unwrap(value)
    if value is None:
        raise FuncError("len of nil pointer")
    if isinstance(value, str):
        return go_len(value)
    if isinstance(value, bytes | list | tuple | dict):
        return len(value)
    raise FuncError(f"len of type {go_type(value)}")


def _index_arg(index: Any, cap: int) -> int:
    index = unwrap(index)
    if index is None:
        raise FuncError("cannot index slice/array with nil")
    if not isinstance(index, int) or isinstance(index, bool):
        raise FuncError(f"cannot index slice/array with type {go_type(index)}")
    if not 0 <= index <= cap:
        raise FuncError(f"index out of range: {index}")
    return index


def index(item: Any, *indexes: Any) -> Any:
    """item[i][j]...: slices and strings by int (a string gives a byte), maps by key (missing: nil)."""
    item = unwrap(item)
    if item is None:
        raise FuncError("index of untyped nil")
    for key in indexes:
        item = unwrap(item)
        if item is None:
            raise FuncError("index of nil pointer")
        if isinstance(item, str):
            item = to_bytes(item)
        if isinstance(item, bytes | list | tuple):
            position = _index_arg(key, len(item))
            if position == len(item):
                raise FuncError(f"index out of range: {position}")
            item = item[position]
        elif isinstance(item, dict):
            key = unwrap(key)
            if not isinstance(key, str):
                raise FuncError(f"value has type {go_type(key)}; should be string")
            item = item.get(key)
        else:
            raise FuncError(f"can't index item of type {go_type(item)}")
    return item


def slice_(item: Any, *indexes: Any) -> Any:
    """item[i:j] (or item[i:j:k] for slices); strings are cut by bytes, as in Go."""
    item = unwrap(item)
    if item is None:
        raise FuncError("slice of untyped nil")
    if len(indexes) > 3:
        raise FuncError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise FuncError("cannot 3-index slice a string")
        return from_bytes(slice_(to_bytes(item), *indexes))
    if not isinstance(item, bytes | list | tuple):
        raise FuncError(f"can't slice item of type {go_type(item)}")
    bounds = [0, len(item), len(item)]
    for i, key in enumerate(indexes):
        bounds[i] = _index_arg(key, len(item))
    for low, high in ((bounds[0], bounds[1]), (bounds[1], bounds[2])):
        if low > high:
            raise FuncError(f"invalid slice index: {low} > {high}")
    return item[bounds[0] : bounds[1]]


def _text(args: tuple[Any, ...]) -> str:
    """The string the escaping functions work on: a lone string as is, anything else as print would."""
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return sprint(["<no value>" if arg is None else arg for arg in args])


def html(*args: Any) -> str:
    return (
        _html.escape(_text(args))
        .replace("&quot;", "&#34;")
        .replace("&#x27;", "&#39;")
        .replace("\0", "\ufffd")
    )


def js(*args: Any) -> str:
    out = []
    for ch in _text(args):
        if ch in "\\'\"":
            out.append("\\" + ch)
        elif ch in "<>&=" or ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04X}")
        elif ord(ch) >= 0x80 and not ch.isprintable():
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


def urlquery(*args: Any) -> str:
    return urllib.parse.quote_plus(to_bytes(_text(args)), safe="")


def printf(template: str, *args: Any) -> str:
    return sprintf(template, args)


BUILTINS: dict[str, Func] = {
    "not": Func(not_, ("any",)),
    "len": Func(length, ("any",)),
    "index": Func(index, ("any",), "any"),
    "slice": Func(slice_, ("any",), "any"),
    "eq": Func(eq, ("any",), "any"),
    "ne": Func(ne, ("any", "any")),
    "lt": Func(lt, ("any", "any")),
    "le": Func(le, ("any", "any")),
    "gt": Func(gt, ("any", "any")),
    "ge": Func(ge, ("any", "any")),
    "print": Func(lambda *args: sprint(args), (), "any"),
    "println": Func(lambda *args: sprintln(args), (), "any"),
    "printf": Func(printf, ("string",), "any"),
    "html": Func(html, (), "any"),
    "js": Func(js, (), "any"),
    "urlquery": Func(urlquery, (), "any"),
}
LAZY = frozenset({"and", "or"})
