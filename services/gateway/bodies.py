"""Request bodies of the native API, parsed with Ollama's rules and error texts.

Ollama decodes with Go's encoding/json: an empty body is "missing request body",
a wrong type names the Go struct field, unknown fields are ignored. Options are
checked key by key (api.Options.FromMap); unknown option keys are ignored.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from services.gateway.errors import BadRequest
from services.protocol import ChatMessage, Options, parse_keep_alive

_GO_TYPES = {
    str: "string",
    bool: "bool",
    int: "number",
    float: "number",
    list: "array",
    dict: "object",
    type(None): "null",
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str = ""
    stream: bool | None = None
    options: dict[str, Any] | None = None
    keep_alive: Any = None
    format: Any = None


class GenerateBody(_Body):
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    template: str | None = None
    context: list[int] | None = None
    suffix: str | None = None
    images: list[str] | None = None


BodyT = TypeVar("BodyT", bound=_Body)


class ChatMessageBody(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    role: str = ""
    content: str = ""
    images: list[str] | None = None


class ChatBody(_Body):
    messages: list[ChatMessageBody] | None = None
    tools: list[Any] | None = None


def parse_body(raw: bytes, model: type[BodyT], go_name: str) -> BodyT:
    if not raw.strip():
        raise BadRequest("missing request body")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON: {exc.msg} at offset {exc.pos}") from exc
    if not isinstance(data, dict):
        raise BadRequest(f"json: cannot unmarshal {_go_type(data)} into Go value of type api.{go_name}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"] if not isinstance(p, int))
        value = error.get("input")
        raise BadRequest(
            f"json: cannot unmarshal {_go_type(value)} into Go struct field "
            f"{go_name}.{field} of type {_expected(error['type'])}"
        ) from exc


def parse_options(raw: dict[str, Any] | None) -> Options:
    """Known options with their types checked; unknown keys ignored, as Ollama does.

    A `num_ctx` of 0 or less means "not set": the scheduler applies OLLAMA_CONTEXT_LENGTH."""
    values: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        field = Options.model_fields.get(key)
        if field is None or value is None:
            continue
        values[key] = _check_option(key, value, field.annotation)
    options = Options.model_validate(values)
    if options.num_ctx is not None and options.num_ctx <= 0:
        options.num_ctx = None
    return options


def parse_keep_alive_field(value: Any) -> float | None:
    try:
        return parse_keep_alive(value)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


def chat_messages(body: ChatBody) -> list[ChatMessage]:
    allowed = {"system", "user", "assistant", "tool"}
    messages = []
    for message in body.messages or []:
        role = message.role.lower()
        if role not in allowed:
            raise BadRequest(f"invalid role {message.role!r}: expected system, user, assistant or tool")
        messages.append(ChatMessage(role=role, content=message.content))  # type: ignore[arg-type]
    return messages


def _check_option(key: str, value: Any, annotation: Any) -> Any:
    text = str(annotation)
    if "list" in text:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BadRequest(f'option "{key}" must be of an array of strings')
        return value
    if "int" in text:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise BadRequest(f'option "{key}" must be of type integer')
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f'option "{key}" must be of type float32')
    return float(value)


def _go_type(value: Any) -> str:
    return _GO_TYPES.get(type(value), "value")


def _expected(error_type: str) -> str:
    for prefix, go in (
        ("string", "string"),
        ("bool", "bool"),
        ("int", "int"),
        ("float", "float64"),
        ("list", "[]"),
        ("dict", "map"),
    ):
        if error_type.startswith(prefix):
            return go
    return error_type
