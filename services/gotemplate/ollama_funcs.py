"""The functions Ollama adds to every template (the FuncMap in Ollama's template/template.go)."""

from __future__ import annotations

import datetime
from typing import Any

from .builtins import Func
from .gojson import marshal
from .values import GoStruct, unwrap

TOOL_PROPERTY_TYPE = "api.ToolProperty"

_TS_TYPES = {
    "string": "string",
    "number": "number",
    "integer": "number",
    "boolean": "boolean",
    "array": "any[]",
    "object": "Record<string, any>",
    "null": "null",
}


def json_func(value: Any) -> str:
    """`json`: json.Marshal, and the empty string when Go's marshal fails (NaN), as Ollama ignores it."""
    try:
        return marshal(value)
    except ValueError:
        return ""


def current_date(*_format: str) -> str:
    """`currentDate`: today, YYYY-MM-DD in local time; Ollama accepts and ignores a format argument."""
    return datetime.date.today().isoformat()


def yesterday_date(*_format: str) -> str:
    return (datetime.date.today() - datetime.timedelta(days=1)).isoformat()


def to_typescript_type(value: Any) -> str:
    """`toTypeScriptType`: a tool property's JSON-schema type as TypeScript ("any" for anything else)."""
    value = unwrap(value)
    if not isinstance(value, GoStruct) or value.type_name != TOOL_PROPERTY_TYPE:
        return "any"
    any_of = unwrap(value.fields.get("AnyOf")) or []
    if any_of:
        return " | ".join(map(to_typescript_type, any_of))
    types = unwrap(value.fields.get("Type")) or []
    if not types:
        return "any"
    return " | ".join(_TS_TYPES.get(t, "any") for t in types)


OLLAMA_FUNCS: dict[str, Func] = {
    "json": Func(json_func, ("any",)),
    "currentDate": Func(current_date, (), "string"),
    "yesterdayDate": Func(yesterday_date, (), "string"),
    "toTypeScriptType": Func(to_typescript_type, ("any",)),
}
