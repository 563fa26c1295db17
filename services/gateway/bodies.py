"""Request bodies of the native API, parsed with Ollama's rules and error texts.

Ollama decodes with Go's encoding/json: an empty body is "missing request body",
a wrong type names the Go struct field, unknown fields are ignored. Options are
checked key by key (api.Options.FromMap); unknown option keys are ignored.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

from services.gateway import jsonbody
from services.gateway.errors import BadRequest
from services.gateway.gojson import json_kind
from services.protocol import RUNNER_OPTIONS, ChatMessage, Options, option_type, parse_keep_alive
from services.protocol.messages import Think
from services.telemetry import log_event

log = logging.getLogger("corral.gateway")

THINK_LEVELS = ("high", "medium", "low", "max")
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
THINK_CHOICES = '"high", "medium", "low", "max", true, or false'


# Fields checked by hand (Ollama's texts): their types for the OpenAPI document only.
_OPTION_SCHEMAS: dict[type, dict[str, Any]] = {
    int: {"type": "integer", "minimum": INT32_MIN, "maximum": INT32_MAX},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    list: {"type": "array", "items": {"type": "string"}},
}
_OPTIONS = {  # unknown keys are ignored, as Ollama ignores them
    "anyOf": [
        {
            "type": "object",
            "properties": {
                name: _OPTION_SCHEMAS[kind]
                for name in (*Options.model_fields, *RUNNER_OPTIONS)
                if (kind := option_type(name)) is not None
            },
        },
        {"type": "null"},
    ]
}
GO_DURATION = r"^[-+]?([0-9]+(\.[0-9]*)?(ns|us|µs|ms|s|m|h))+$"  # "5m", "1h30m", "-1s"
_KEEP_ALIVE = {"anyOf": [{"type": "string", "pattern": GO_DURATION}, {"type": "number"}, {"type": "null"}]}
_FORMAT = {"anyOf": [{"enum": ["json", ""]}, {"type": "object"}, {"type": "null"}]}  # or a JSON Schema
_THINK = {"anyOf": [{"type": "boolean"}, {"enum": list(THINK_LEVELS)}, {"type": "null"}]}
_INPUT = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]}


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str = ""
    stream: bool | None = None
    options: Annotated[dict[str, Any] | None, WithJsonSchema(_OPTIONS)] = None
    keep_alive: Annotated[Any, WithJsonSchema(_KEEP_ALIVE)] = None


class _GenerationBody(_Body):
    format: Annotated[Any, WithJsonSchema(_FORMAT)] = None
    think: Annotated[Any, WithJsonSchema(_THINK)] = None
    logprobs: bool = False
    top_logprobs: int = 0
    truncate: bool | None = None
    shift: bool | None = None
    debug_render_only: bool = Field(False, alias="_debug_render_only")  # the prompt, not an answer


class GenerateBody(_GenerationBody):
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    template: str | None = None
    context: list[int] | None = None
    suffix: str | None = None
    images: list[str] | None = None


class ToolCallFunctionBody(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    index: int | None = None
    name: str = ""
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCallBody(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    id: str | None = None
    function: ToolCallFunctionBody = Field(default_factory=ToolCallFunctionBody)


class ChatMessageBody(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    role: str = ""
    content: str = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCallBody] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class ChatBody(_GenerationBody):
    messages: list[ChatMessageBody] | None = None
    tools: list[dict[str, Any]] | None = None


class EmbedBody(_Body):
    input: Annotated[Any, WithJsonSchema(_INPUT)] = None
    truncate: bool | None = None
    dimensions: int | None = None


class EmbeddingsBody(_Body):
    prompt: str = ""


class CopyBody(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    source: str = ""
    destination: str = ""


class DeleteBody(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str = ""
    name: str = ""  # Ollama's deprecated alias of `model`


class ShowBody(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str = ""
    name: str = ""  # Ollama's deprecated alias of `model`
    system: str = ""
    verbose: bool = False


class TransferBody(BaseModel):
    """/api/pull and /api/push (Ollama's PullRequest, PushRequest)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str = ""
    name: str = ""  # Ollama's deprecated alias of `model`
    insecure: bool = False
    stream: bool | None = None


class CreateBody(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str = ""
    name: str = ""  # Ollama's deprecated alias of `model`
    from_: str = Field("", alias="from")
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    draft_files: dict[str, str] | None = None
    template: str = ""
    system: str = ""
    license: str | list[str] | None = None
    parameters: dict[str, Any] | None = None
    messages: list[ChatMessageBody] | None = None
    stream: bool | None = None
    quantize: str = ""
    quantization: str = ""  # Ollama's deprecated alias of `quantize`
    renderer: str = ""
    parser: str = ""
    requires: str = ""


BodyT = TypeVar("BodyT", bound=BaseModel)
# When a route means to answer 503, as its document says.
QUEUED = "the request queue is full (OLLAMA_MAX_QUEUE): try again later"
REMOTE = "the remote registry could not be reached"
RAW_BODY: dict[str, Any] = {  # /api/blobs/{digest}: the blob's bytes, streamed to the store
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def documented(model: type[BaseModel], unavailable: str = "") -> dict[str, Any]:
    """A route's `openapi_extra` for the body it parses by hand with `model`: FastAPI sees no body
    parameter, so its OpenAPI document would show none. Nested models are inlined (a pydantic
    `$ref` to `#/$defs/...` would point into the OpenAPI document, not the schema). `unavailable`
    says when the route means to answer 503 (QUEUED, REMOTE)."""
    schema = model.model_json_schema(by_alias=True)
    extra: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inlined(schema, schema.pop("$defs", {}))}},
        }
    }
    if unavailable:
        extra["responses"] = {"503": {"description": unavailable}}
    return extra


def _inlined(schema: Any, defs: dict[str, Any]) -> Any:
    if isinstance(schema, list):
        return [_inlined(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref", "")
    if ref.startswith("#/$defs/"):
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return _inlined({**defs[ref.removeprefix("#/$defs/")], **rest}, defs)
    return {key: _inlined(value, defs) for key, value in schema.items()}


def parse_body(raw: bytes, model: type[BodyT], go_name: str) -> BodyT:
    return validate_body(decode_object(raw, go_name), model, go_name)


def decode_object(raw: bytes, go_name: str) -> dict[str, Any]:
    """A request body that must be a JSON object (Go's errors for anything else)."""
    if not raw.strip():
        raise BadRequest("missing request body")
    try:
        data = jsonbody.decode(raw)
    except jsonbody.InvalidJson as exc:
        raise BadRequest(str(exc)) from exc
    if not isinstance(data, dict):
        raise BadRequest(f"json: cannot unmarshal {json_kind(data)} into Go value of type api.{go_name}")
    return data


def translated_body(
    data: dict[str, Any],
    translate: Callable[[dict[str, Any]], dict[str, Any]],
    refused: type[Exception],
    model: type[BodyT],
    go_name: str,
) -> BodyT:
    """Another API's body (OpenAI, Anthropic) as the native `model`: `translate` maps it, its
    `refused` errors are 400s with their own text, then Ollama's rules apply to the result."""
    try:
        native = translate(data)
    except refused as exc:
        raise BadRequest(str(exc)) from exc
    return validate_body(native, model, go_name)


def validate_body(data: dict[str, Any], model: type[BodyT], go_name: str) -> BodyT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"] if not isinstance(p, int))
        value = error.get("input")
        raise BadRequest(
            f"json: cannot unmarshal {json_kind(value)} into Go struct field "
            f"{go_name}.{field} of type {_expected(error['type'])}"
        ) from exc


def parse_options(raw: dict[str, Any] | None) -> Options:
    """Known options with their types checked; unknown keys ignored, as Ollama does.

    A `num_ctx` of 0 or less means "not set": the scheduler applies OLLAMA_CONTEXT_LENGTH.
    Ollama's placement options (RUNNER_OPTIONS) are checked too, but corral places models
    itself: using one is logged, not silently dropped."""
    values: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        kind = option_type(key)
        if kind is None or value is None:
            continue
        checked = check_option(key, value, kind)
        if key in RUNNER_OPTIONS:
            log_event(log, "option_not_honoured", option=key)
        else:
            values[key] = checked
    options = Options.model_validate(values)
    if options.num_ctx is not None and options.num_ctx <= 0:
        options.num_ctx = None
    return options


def parse_keep_alive_field(value: Any) -> float | None:
    try:
        return parse_keep_alive(value)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


def parse_parameters(raw: dict[str, Any] | None) -> dict[str, Any]:
    """A params layer's values: Ollama's options type-checked (a wrong type is refused now, not
    when the model loads); keys Ollama does not know are kept, as it keeps them."""
    checked = {}
    for key, value in (raw or {}).items():
        kind = option_type(key)
        checked[key] = value if kind is None or value is None else check_option(key, value, kind)
    return checked


def parse_messages(bodies: list[ChatMessageBody]) -> list[ChatMessage]:
    allowed = {"system", "user", "assistant", "tool"}
    messages = []
    for message in bodies:
        role = message.role.lower()
        if role not in allowed:
            raise BadRequest(f"invalid role {message.role!r}: expected system, user, assistant or tool")
        messages.append(
            ChatMessage.model_validate(
                {**message.model_dump(exclude_none=True, exclude={"images"}), "role": role}
            )
        )
    return messages


def has_images(body: GenerateBody | ChatBody) -> bool:
    if isinstance(body, GenerateBody):
        return bool(body.images)
    return any(m.images for m in body.messages or [])


def parse_format(value: Any) -> str | dict[str, Any] | None:
    """Ollama's `format`: absent, null or "" for none, "json", or a JSON Schema object."""
    if value is None or value == "":
        return None
    if value == "json" or isinstance(value, dict):
        return value  # type: ignore[no-any-return]
    raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    raise BadRequest(f'invalid format: {json.dumps(raw)}; expected "json" or a valid JSON Schema object')


def parse_think(value: Any) -> Think | None:
    """`think`: a bool or one of Ollama's levels (api.ThinkValue.UnmarshalJSON's errors)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value not in THINK_LEVELS:
            raise BadRequest(f"invalid think value: {json.dumps(value)} (must be {THINK_CHOICES})")
        return value  # type: ignore[return-value]
    raise BadRequest(f"think must be a boolean or string ({THINK_CHOICES})")


def check_top_logprobs(value: int) -> int:
    if not 0 <= value <= 20:
        raise BadRequest("top_logprobs must be between 0 and 20")
    return value


def parse_embed_input(value: Any) -> list[str]:
    """`input`: a string or a list of strings; "" and [] embed nothing (but load the model)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise BadRequest("invalid input type")


def check_option(key: str, value: Any, kind: type) -> Any:
    """`value` as option `key` of type `kind` takes it, or the 400 Ollama answers."""
    if kind is bool:
        if not isinstance(value, bool):
            raise BadRequest(f'option "{key}" must be of type boolean')
        return value
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BadRequest(f'option "{key}" must be of an array of strings')
        return value
    if kind is int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value != int(value)
        ):
            raise BadRequest(f'option "{key}" must be of type integer')
        if not INT32_MIN <= value <= INT32_MAX:  # the engines take C ints
            raise BadRequest(f'option "{key}" is out of range')
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f'option "{key}" must be of type float32')
    return float(value)


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
