"""Chat messages and tools as Ollama's templates see them (Ollama's template/template.go, api/types.go).

Ollama decodes a request into its api types (dropping JSON keys they lack: a tool property keeps
only anyOf, type, items, description, enum, properties and required) and converts them to the
template types below. What the conversion keeps matters for rendering:

- messages are structs (`*template.templateMessage`): Role, Content, Thinking, Images, ToolCalls,
  ToolName, ToolCallID; any other field is an execution error;
- a tool call is {ID, Function: {Index, Name, Arguments}}, where Arguments is a map that prints
  as its JSON (keys sorted) and can be ranged over;
- tools print as their JSON: the list (`{{ .Tools }}`), each tool (`{{ . }}`), and its function
  and parameters (`{{ .Function }}`). Properties are a map of api.ToolProperty, ranged in sorted
  order, printing as JSON; a property's `.Type` prints as "string" (or "[string null]").

JSON numbers inside arguments, enums and schemas become floats, as Go's `any` holds them, so 3
prints as `3` and 1e6 as `1e+06`, as Ollama's do.

`{{ .Function }}` and `{{ .Function.Parameters }}` print JSON here as in Ollama before v0.14 and
as ollama/ollama#18391 restores; Ollama v0.14 up to that fix prints them as Go structs.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .gofmt import format_value
from .gojson import marshal, quote_json
from .ollama_funcs import TOOL_PROPERTY_TYPE
from .values import GoStruct, GoValue


@dataclass(frozen=True)
class ToolCall:
    """A tool call the assistant made. `arguments` None is a call whose JSON had no arguments."""

    name: str
    arguments: Mapping[str, Any] | None = None
    index: int = 0
    id: str = ""

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> ToolCall:
        function = data.get("function") or {}
        return cls(
            name=function.get("name") or "",
            arguments=function.get("arguments"),
            index=function.get("index") or 0,
            id=data.get("id") or "",
        )


@dataclass(frozen=True)
class Message:
    """One chat message, as api.Message holds it (images decoded to bytes)."""

    role: str
    content: str = ""
    thinking: str = ""
    images: tuple[bytes, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_name: str = ""
    tool_call_id: str = ""

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Message:
        """From Ollama's JSON: role lowercased as Ollama does, images base64-decoded."""
        return cls(
            role=str(data.get("role") or "").lower(),
            content=data.get("content") or "",
            thinking=data.get("thinking") or "",
            images=tuple(base64.b64decode(image) for image in data.get("images") or ()),
            tool_calls=tuple(ToolCall.from_api(call) for call in data.get("tool_calls") or ()),
            tool_name=data.get("tool_name") or "",
            tool_call_id=data.get("tool_call_id") or "",
        )


def go_any(value: Any) -> Any:
    """A JSON value as Go's `any` holds it after decoding: every number a float64."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): go_any(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [go_any(v) for v in value]
    return value


def _json_stringer(value: Any) -> GoValue:
    """A value whose type's String() returns its own JSON, as Ollama's template types do."""
    return GoValue(value, string=marshal(value))


def template_messages(messages: Sequence[Message]) -> list[GoStruct]:
    """Ollama's convertMessagesForTemplate."""
    return [_message(m) for m in messages]


def _message(message: Message) -> GoStruct:
    calls = [
        GoStruct(
            "template.templateToolCall",
            {
                "ID": call.id,
                "Function": GoStruct(
                    "template.templateToolCallFunction",
                    {"Index": call.index, "Name": call.name, "Arguments": _arguments(call.arguments)},
                ),
            },
        )
        for call in message.tool_calls
    ]
    fields = {
        "Role": message.role,
        "Content": message.content,
        "Thinking": message.thinking,
        "Images": list(message.images),
        "ToolCalls": calls,
        "ToolName": message.tool_name,
        "ToolCallID": message.tool_call_id,
    }
    return GoStruct("*template.templateMessage", fields)


def _arguments(arguments: Mapping[str, Any] | None) -> GoValue:
    """templateArgs: a map printing as its JSON, `{}` when absent."""
    if arguments is None:
        return GoValue(None, string="{}")
    return _json_stringer(go_any(arguments))


def template_tools(tools: Sequence[Mapping[str, Any]] | None) -> GoValue:
    """Ollama's convertToolsForTemplate: templateTools, a list printing as its JSON (`null` if None)."""
    if tools is None:
        return GoValue([], string="null", json="null")
    return _json_stringer([_json_stringer(_tool(tool)) for tool in tools])


def _tool(tool: Mapping[str, Any]) -> GoStruct:
    function = tool.get("function") or {}
    parameters = function.get("parameters") or {}
    properties = parameters.get("properties")
    props = None if properties is None else {name: _property(p) for name, p in properties.items()}
    params = GoStruct(
        "template.templateToolFunctionParameters",
        {
            "Type": parameters.get("type", ""),
            "Defs": go_any(parameters.get("$defs")),
            "Items": go_any(parameters.get("items")),
            "Required": list(parameters.get("required") or ()),
            "Properties": GoValue(props, string="{}" if props is None else marshal(props)),
        },
        {
            "Type": "type",
            "Defs": "$defs,omitempty",
            "Items": "items,omitempty",
            "Required": "required,omitempty",
            "Properties": "properties",
        },
    )
    func = GoStruct(
        "template.templateToolFunction",
        {
            "Name": function.get("name", ""),
            "Description": function.get("description", ""),
            "Parameters": _json_stringer(params),
        },
        {"Name": "name", "Description": "description", "Parameters": "parameters"},
    )
    return GoStruct(
        "template.templateTool",
        {"Type": tool.get("type", ""), "Items": go_any(tool.get("items")), "Function": _json_stringer(func)},
        {"Type": "type", "Items": "items,omitempty", "Function": "function"},
    )


def _property(data: Mapping[str, Any]) -> GoStruct:
    """api.ToolProperty; its nested properties keep their order in JSON (an ordered map in Ollama)."""
    nested = data.get("properties")
    properties = None
    if nested is not None:
        converted = {name: _property(p) for name, p in nested.items()}
        properties = GoValue(converted, json=marshal(converted, sort_keys=False))
    fields = {
        "AnyOf": [_property(p) for p in data.get("anyOf") or ()],
        "Type": _property_type(data.get("type")),
        "Items": go_any(data.get("items")),
        "Description": data.get("description", ""),
        "Enum": go_any(list(data.get("enum") or ())),
        "Properties": properties,
        "Required": list(data.get("required") or ()),
    }
    tags = {name: f"{name[0].lower()}{name[1:]},omitempty" for name in fields}
    return GoStruct(TOOL_PROPERTY_TYPE, fields, tags)


def _property_type(value: Any) -> GoValue:
    """api.PropertyType: a string or a list of them; prints as "string" or "[string null]"."""
    types = [] if value is None else [value] if isinstance(value, str) else [str(t) for t in value]
    string = "" if not types else types[0] if len(types) == 1 else format_value(types)
    return GoValue(types, string=string, json=quote_json(types[0]) if len(types) == 1 else None)
