"""OpenAI's Responses API shapes (pure functions): /v1/responses bodies as Ollama's native chat
bodies, and the native events as Responses objects and server-sent events, as Ollama's
openai/responses.go and its ResponsesMiddleware do.

Requests follow FromResponsesRequest: `input` as a string (one user message) or a list of items
(messages with input_text / output_text / input_image parts, function_call, function_call_output
and reasoning items, merged into native messages as Ollama merges them); `instructions` as a
leading system message; function tools (and namespace tools, expanded to qualified names);
`text.format` json_schema as `format`; `reasoning.effort` as `think`; `max_output_tokens` as
num_predict; temperature 1.0 unless given; top_p only when given. Go's decoding errors come
first for wrongly typed fields, then Ollama's own texts.

Where corral goes further than Ollama, it says so rather than dropping a field silently:
`text.format` json_object is honoured (as "json"); `tool_choice` works as on /v1/chat/completions;
`truncation` "auto" / "disabled" set native `truncate`; `keep_alive` is honoured; a tool result
carries its function's name. Refused with a 400: previous_response_id and conversation (corral
keeps no responses), background, prompt, max_tool_calls, top_logprobs, include values other than
reasoning.encrypted_content, tools other than function / namespace, input_file parts, images by
file_id, and web_search_call items. Hints with nothing to act on are accepted and ignored: store
(every answer says `"store": false`), metadata, user, safety_identifier, prompt_cache_key,
service_tier, parallel_tool_calls, stream_options, text.verbosity and reasoning.summary.

Responses follow ToResponse and ResponsesStreamConverter: reasoning items (the thinking as
summary text and as encrypted_content, which comes back as thinking), message items with one
output_text part, function_call items, usage, and the stream's response.created /
response.in_progress / response.output_item.* / response.content_part.* /
response.output_text.* / response.reasoning_summary_text.* /
response.function_call_arguments.* events with sequence numbers. Unlike Ollama, an answer cut
short by its token limit is `"status": "incomplete"` (its stream ends with response.incomplete),
as OpenAI's are; each item is closed before the next opens, so text alongside tool calls is kept;
and one builder serves both the whole answer and the stream's last event.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from typing import Any

from services.gateway import jsonbody
from services.gateway.gojson import json_kind
from services.gateway.openai_format import OpenAIRequestError, error, image_base64, think_from, tool_calls
from services.protocol import Chunk, Done, ToolCall

# Go types of ResponsesRequest's fields and of the structs inside it, for encoding/json's type errors.
REQUEST_FIELDS = {
    "model": "string", "background": "bool", "include": "[]string", "instructions": "string",
    "max_output_tokens": "int", "reasoning": "openai.ResponsesReasoning", "temperature": "float64",
    "text": "*openai.ResponsesText", "top_p": "float64", "truncation": "*string",
    "tools": "[]openai.ResponsesTool", "stream": "*bool",
}  # fmt: skip
REASONING_FIELDS = {"effort": "string", "generate_summary": "string", "summary": "string"}
FORMAT_FIELDS = {"type": "string", "name": "string", "strict": "*bool"}
TOOL_FIELDS = {
    "type": "string", "name": "string", "description": "*string", "strict": "*bool",
    "parameters": "map[string]interface {}", "tools": "[]openai.ResponsesTool",
}  # fmt: skip
CALL_FIELDS = {"id": "string", "type": "string", "call_id": "string", "name": "string", "arguments": "string"}
# What Go names when an input item (or a content part) is not an object: the structs it peeks into.
ITEM_STRUCT = 'struct { Type string "json:\\"type\\""; Role string "json:\\"role\\"" }'
PART_STRUCT = 'struct { Type string "json:\\"type\\"" }'
PART_STRUCTS = {"input_text": "ResponsesTextContent", "output_text": "ResponsesOutputTextContent"}
# Fields corral cannot honour, refused when set (to anything but null, false, 0 or "").
UNSUPPORTED = {
    "previous_response_id": "previous_response_id is not supported: corral keeps no responses, "
    "send the whole conversation in input",
    "conversation": "conversation is not supported: corral keeps no conversations, "
    "send the whole conversation in input",
    "background": "background responses are not supported",
    "prompt": "prompt templates are not supported",
    "max_tool_calls": "max_tool_calls is not supported",
    "top_logprobs": "top_logprobs is not supported",
}
INCLUDABLE = ("reasoning.encrypted_content",)  # always included: it carries the thinking
TRUNCATION = {"auto": True, "disabled": False}
TOOL_CHOICE_ERROR = 'tool_choice other than "auto" or "none" is not supported'
_GO_TYPES: dict[str, Any] = {"string": str, "bool": bool, "int": int, "float64": int | float}

Event = tuple[str, dict[str, Any]]


def response_id() -> str:
    """`resp_` and 24 hex digits (Ollama's are `resp_` and up to 6 digits)."""
    return _id("resp")


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# ---- requests


def chat_body(data: dict[str, Any]) -> dict[str, Any]:
    """A /v1/responses body as an /api/chat body (raises OpenAIRequestError with Ollama's text)."""
    _check_request(data)
    items = _decode_input(data.get("input"))
    _refuse_unsupported(data)
    body: dict[str, Any] = {
        "model": data.get("model") or "",
        "messages": _instructions(data.get("instructions")) + _conversation(items),
        "stream": bool(data.get("stream")),
        "options": _options(data),
        "think": think_from({"reasoning": data.get("reasoning") or {}}),
        "tools": _tools(data) or None,
        "format": _format(data.get("text")),
        "truncate": _truncate(data.get("truncation")),
        "keep_alive": data.get("keep_alive"),
    }
    return {k: v for k, v in body.items() if v is not None}


def _check_request(data: dict[str, Any]) -> None:
    """The type errors Go's decoder reports for ResponsesRequest (JSON null is always accepted)."""
    for name, go_type in REQUEST_FIELDS.items():
        _check(data.get(name), go_type, f"ResponsesRequest.{name}")
    if isinstance(data.get("reasoning"), dict):
        _check_fields(data["reasoning"], REASONING_FIELDS, "ResponsesReasoning.reasoning")
    if isinstance(data.get("text"), dict):
        text_format = data["text"].get("format")
        _check(text_format, "*openai.ResponsesTextFormat", "ResponsesText.text.format")
        _check_fields(text_format or {}, FORMAT_FIELDS, "ResponsesTextFormat.text.format")
    _check_tools(data.get("tools") or [], "tools")


def _check_tools(tools: list[Any], where: str) -> None:
    for tool in tools:
        _check(tool, "openai.ResponsesTool", f"ResponsesRequest.{where}")
        _check_fields(tool or {}, TOOL_FIELDS, f"ResponsesTool.{where}")
        _check_tools((tool or {}).get("tools") or [], f"{where}.tools")


def _check_fields(value: dict[str, Any], fields: dict[str, str], where: str) -> None:
    for name, go_type in fields.items():
        _check(value.get(name), go_type, f"{where}.{name}")


def _check(value: Any, go_type: str, where: str) -> None:
    """encoding/json's UnmarshalTypeError, should `value` not fit `go_type` (null fits anything)."""
    base = go_type.lstrip("*")
    want = _GO_TYPES.get(base, list if base.startswith("[]") else dict)
    fits = isinstance(value, want) and not (base in ("int", "float64") and isinstance(value, bool))
    if value is None or fits:
        for item in value if base == "[]string" and value else ():
            _check(item, "string", where)
        return
    kind = f"number {value}" if base == "int" and isinstance(value, float) else json_kind(value)
    raise OpenAIRequestError(f"json: cannot unmarshal {kind} into Go struct field {where} of type {base}")


def _refuse_unsupported(data: dict[str, Any]) -> None:
    for name, message in UNSUPPORTED.items():
        if data.get(name):
            raise OpenAIRequestError(message)
    for value in data.get("include") or []:
        if value not in INCLUDABLE:
            raise OpenAIRequestError(f"include {json.dumps(value)} is not supported")


# -- input


Item = tuple[str, dict[str, Any]]  # an input item's type and its (type-checked) fields


def _decode_input(value: Any) -> list[Item]:
    """ResponsesInput.UnmarshalJSON: a string is one user message; a list holds input items.
    Decoding errors name the item (`input[1]: ...`), as Go's do."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [("message", {"role": "user", "content": [{"type": "input_text", "text": value}]})]
    if not isinstance(value, list):
        raise OpenAIRequestError(f"input must be a string or array: {_not_array(value)}")
    items = []
    for i, raw in enumerate(value):
        try:
            items.append(_decode_item(raw))
        except OpenAIRequestError as exc:
            raise OpenAIRequestError(f"input[{i}]: {exc}") from exc
    return items


def _not_array(value: Any) -> str:
    return f"json: cannot unmarshal {json_kind(value)} into Go value of type []json.RawMessage"


def _decode_item(raw: Any) -> Item:
    """unmarshalResponsesInputItem: an item without a type but with a role is a message."""
    if raw is not None and not isinstance(raw, dict):
        raise OpenAIRequestError(
            f"json: cannot unmarshal {json_kind(raw)} into Go value of type {ITEM_STRUCT}"
        )
    item = raw or {}
    _check_fields(item, {"type": "string", "role": "string"}, "")  # Go names no anonymous struct
    kind = item.get("type") or ("message" if item.get("role") else "")
    if kind == "message":
        return kind, {"role": item.get("role") or "", "content": _decode_content(item, "content")}
    if kind == "function_call":
        _check_fields(item, CALL_FIELDS, "ResponsesFunctionCall")
        return kind, item
    if kind == "function_call_output":
        _check(item.get("call_id"), "string", ".call_id")
        return kind, {"call_id": item.get("call_id") or "", "output": _decode_content(item, "output")}
    if kind == "reasoning":
        return kind, _decode_reasoning(item)
    if kind == "web_search_call":
        raise OpenAIRequestError("web_search_call items are not supported: corral runs no web searches")
    if not kind:
        raise OpenAIRequestError("input item missing required 'type' field")
    raise OpenAIRequestError(f"unknown input item type: {json.dumps(kind)}")


def _decode_content(item: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """A message's content or a tool result's output: a string (one text part; null is "") or a
    list of parts; absent, no parts."""
    if name not in item:
        return []
    value = item[name]
    if value is None or isinstance(value, str):
        return [{"type": "input_text", "text": value or ""}]
    if not isinstance(value, list):
        raise OpenAIRequestError(f"{name} must be a string or array: {_not_array(value)}")
    parts = []
    for i, part in enumerate(value):
        try:
            parts.append(_decode_part(part))
        except OpenAIRequestError as exc:
            raise OpenAIRequestError(f"{name}[{i}]: {exc}") from exc
    return parts


def _decode_part(raw: Any) -> dict[str, Any]:
    """unmarshalResponsesContent: input_text, output_text, input_image and input_file parts."""
    if raw is not None and not isinstance(raw, dict):
        raise OpenAIRequestError(
            f"json: cannot unmarshal {json_kind(raw)} into Go value of type {PART_STRUCT}"
        )
    part: dict[str, Any] = raw or {}
    kind = part.get("type")
    _check(kind, "string", ".type")
    if kind in PART_STRUCTS:
        _check(part.get("text"), "string", f"{PART_STRUCTS[kind]}.text")
    elif kind == "input_image":
        _check_fields(part, {"image_url": "string", "file_id": "string"}, "ResponsesImageContent")
    elif kind != "input_file":
        raise OpenAIRequestError(f"unknown content type: {kind or ''}")
    return part


def _decode_reasoning(item: dict[str, Any]) -> dict[str, Any]:
    """A reasoning item's thinking: its encrypted_content (where corral puts the thinking), or
    the text of its summary when a client sends that alone."""
    _check(item.get("encrypted_content"), "string", "ResponsesReasoningInput.encrypted_content")
    _check(item.get("summary"), "[]openai.ResponsesReasoningSummary", "ResponsesReasoningInput.summary")
    summary = "".join(str(s.get("text") or "") for s in item.get("summary") or [] if isinstance(s, dict))
    return {"thinking": item.get("encrypted_content") or summary}


def _instructions(instructions: Any) -> list[dict[str, Any]]:
    return [{"role": "system", "content": instructions}] if instructions else []


def _conversation(items: list[Item]) -> list[dict[str, Any]]:
    """FromResponsesRequest's loop: reasoning waits for the next assistant message or call;
    function calls join the assistant message before them; an assistant message replayed between
    a call and its output joins the call's message, so the result follows the call it answers."""
    messages: list[dict[str, Any]] = []
    pending, names = "", dict[str, str]()
    for i, (kind, item) in enumerate(items):
        if kind == "reasoning":
            pending = item["thinking"]
        elif kind == "message":
            message = _message(item["role"], item["content"])
            if message["role"] == "assistant" and pending:
                message["thinking"], pending = pending, ""
            if not _merged_after_call(messages, message, _answered_call(items, i + 1)):
                messages.append(message)
        elif kind == "function_call":
            call = _function_call(item)
            names[call["id"]] = call["function"]["name"]
            _add_call(messages, call, pending)
            pending = ""
        else:
            content, images = _content(item["output"])
            tool = {"role": "tool", "content": content, "images": images, "tool_call_id": item["call_id"]}
            messages.append({**tool, "tool_name": names.get(item["call_id"], "")})
    if pending:
        messages.append({"role": "assistant", "content": "", "thinking": pending})
    return [_omit_empty(m) for m in messages]


def _message(role: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """convertInputMessage; `developer` is OpenAI's newer name for the system role."""
    content, images = _content(parts)
    role = "system" if role == "developer" else role
    return {"role": role, "content": content, "thinking": "", "images": images, "tool_calls": []}


def _content(parts: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """convertResponsesContent: the text of the text parts, the images of the image parts."""
    text, images = [], []
    for part in parts:
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            text.append(part.get("text") or "")
        elif kind == "input_image":
            if not part.get("image_url"):
                raise OpenAIRequestError(
                    "input_image needs an image_url: images by file_id are not supported"
                )
            images.append(image_base64(part["image_url"]))
        else:
            raise OpenAIRequestError("file inputs are not currently supported")
    return "".join(text), images


def _answered_call(items: list[Item], index: int) -> str:
    """The call id of the function_call_output at `index`, if there is one there."""
    if index < len(items) and items[index][0] == "function_call_output":
        return str(items[index][1]["call_id"])
    return ""


def _merged_after_call(messages: list[dict[str, Any]], message: dict[str, Any], call_id: str) -> bool:
    """Join an assistant `message` to the previous assistant message when that holds `call_id`."""
    last = messages[-1] if messages else {}
    if message["role"] != "assistant" or not call_id or last.get("role") != "assistant":
        return False
    if not any(call.get("id") == call_id for call in last["tool_calls"]):
        return False
    last["content"] += "\n" if last["content"] and message["content"] else ""
    last["content"] += message["content"]
    last["images"] += message["images"]
    last["thinking"] = message["thinking"] or last["thinking"]
    return True


def _function_call(item: dict[str, Any]) -> dict[str, Any]:
    arguments: Any = {}
    if item.get("arguments"):
        try:
            arguments = jsonbody.decode(item["arguments"].encode())
        except jsonbody.InvalidJson as exc:
            raise OpenAIRequestError(f"failed to parse function call arguments: {exc}") from exc
    if not isinstance(arguments, dict):
        raise OpenAIRequestError(
            f"failed to parse function call arguments: json: cannot unmarshal {json_kind(arguments)} "
            "into Go value of type orderedmap.OrderedMap[string,interface {}]"
        )
    return {
        "id": item.get("call_id") or "",
        "function": {"name": item.get("name") or "", "arguments": arguments},
    }


def _add_call(messages: list[dict[str, Any]], call: dict[str, Any], pending: str) -> None:
    """A call joins the assistant message before it (or starts one), with the pending thinking."""
    if not messages or messages[-1]["role"] != "assistant":
        messages.append(_message("assistant", []))
    messages[-1]["tool_calls"].append(call)
    messages[-1]["thinking"] = pending or messages[-1]["thinking"]


def _omit_empty(message: dict[str, Any]) -> dict[str, Any]:
    """api.Message's omitempty fields dropped (role and content are always written); a call
    without an id has none."""
    for call in message.get("tool_calls") or []:
        if not call["id"]:
            del call["id"]
    return {k: v for k, v in message.items() if v or k in ("role", "content")}


# -- the rest of the request


def _options(data: dict[str, Any]) -> dict[str, Any]:
    """temperature defaults to 1.0 as OpenAI's does; top_p is left to the model unless given."""
    temperature = data.get("temperature")
    options: dict[str, Any] = {"temperature": 1.0 if temperature is None else temperature}
    if data.get("top_p") is not None:
        options["top_p"] = data["top_p"]
    if data.get("max_output_tokens") is not None:
        options["num_predict"] = data["max_output_tokens"]
    return options


def _truncate(truncation: Any) -> bool | None:
    """`truncation` as native `truncate`: "auto" cuts a long prompt, "disabled" refuses it."""
    if truncation is None or truncation in TRUNCATION:
        return TRUNCATION.get(truncation)
    raise OpenAIRequestError(f'truncation must be "auto" or "disabled", not {json.dumps(truncation)}')


def _tools(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Function tools as native ones; tool_choice "none" sends none (as /v1/chat/completions)."""
    choice = data.get("tool_choice")
    if choice not in (None, "auto", "none"):
        raise OpenAIRequestError(TOOL_CHOICE_ERROR)
    tools = [t for tool in data.get("tools") or [] for t in _tool(tool or {})]
    return [] if choice == "none" else tools


def _tool(tool: dict[str, Any]) -> list[dict[str, Any]]:
    """convertTools: a function, or a namespace's members under `namespace.` names (a member
    already so named keeps its name)."""
    kind, name = tool.get("type") or "", tool.get("name") or ""
    if kind == "namespace":
        members = [t for member in tool.get("tools") or [] for t in _tool(member or {})]
        for member in members:
            if name and not member["function"]["name"].startswith(name + "."):
                member["function"]["name"] = f"{name}.{member['function']['name']}"
        return members
    if kind != "function":
        raise OpenAIRequestError(
            f"tool type {json.dumps(kind)} is not supported: only function and namespace tools are"
        )
    function = {
        "name": name,
        "description": tool.get("description") or "",
        "parameters": tool.get("parameters") or {},
    }
    return [{"type": "function", "function": function}]


def _format(text: Any) -> Any:
    """`text.format`: text (none), json_object ("json") or json_schema (its schema)."""
    text_format = (text or {}).get("format")
    if text_format is None:
        return None
    kind = text_format.get("type") or ""
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        if not isinstance(text_format.get("schema"), dict):
            raise OpenAIRequestError("text.format json_schema needs a schema object")
        return text_format["schema"]
    raise OpenAIRequestError(
        f'text.format type {json.dumps(kind)} is not supported: use "text", "json_object" or "json_schema"'
    )


# ---- responses


def response(
    rid: str, model: str, data: dict[str, Any], parts: Sequence[Chunk], done: Done
) -> dict[str, Any]:
    """ToResponse: a whole answer, the same object the stream's last event carries."""
    converter = StreamConverter(rid, model, data)
    for part in parts:
        converter.process(part)
    return converter.process(done)[-1][1]["response"]  # type: ignore[no-any-return]


def _echo(data: dict[str, Any]) -> dict[str, Any]:
    """The request's settings as every response object repeats them (defaults where absent)."""
    reasoning = data.get("reasoning") or {}
    effort, summary = reasoning.get("effort") or None, reasoning.get("summary") or None
    return {
        "previous_response_id": None,
        "instructions": data.get("instructions") or None,
        "tools": data.get("tools") or [],
        "tool_choice": data.get("tool_choice") or "auto",
        "truncation": data.get("truncation") or "auto",
        "parallel_tool_calls": True,
        "text": {"format": (data.get("text") or {}).get("format") or {"type": "text"}},
        "top_p": 1.0 if data.get("top_p") is None else data["top_p"],
        "presence_penalty": 0,
        "frequency_penalty": 0,
        "top_logprobs": 0,
        "temperature": 1.0 if data.get("temperature") is None else data["temperature"],
        "reasoning": {"effort": effort, "summary": summary} if effort or summary else None,
        "max_output_tokens": data.get("max_output_tokens"),
        "max_tool_calls": None,
        "store": False,
        "background": False,
        "service_tier": "default",
        "metadata": {},
        "safety_identifier": None,
        "prompt_cache_key": None,
    }


# ResponsesResponse's fields, in its order.
RESPONSE_FIELDS = (
    "id", "object", "created_at", "completed_at", "status", "incomplete_details", "model",
    "previous_response_id", "instructions", "output", "error", "tools", "tool_choice", "truncation",
    "parallel_tool_calls", "text", "top_p", "presence_penalty", "frequency_penalty", "top_logprobs",
    "temperature", "reasoning", "usage", "max_output_tokens", "max_tool_calls", "store", "background",
    "service_tier", "metadata", "safety_identifier", "prompt_cache_key",
)  # fmt: skip


def usage(done: Done) -> dict[str, Any]:
    """ResponsesUsage; corral counts no cached or reasoning tokens apart, as Ollama does not
    (cache_write_tokens, which OpenAI's client now requires, is there too)."""
    return {
        "input_tokens": done.prompt_eval_count,
        "output_tokens": done.eval_count,
        "total_tokens": done.prompt_eval_count + done.eval_count,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


class StreamConverter:
    """ResponsesStreamConverter.Process: the Responses events for each native event of one answer.

    At most one item is open at a time, a reasoning item (thinking) or a message item (text);
    opening another closes it. Each tool call is a whole function_call item. The answer ends with
    response.completed, or response.incomplete when the token limit cut it short; an answer with
    neither text nor calls still has one (empty) message, as Ollama's ToResponse has.
    """

    def __init__(self, rid: str, model: str, data: dict[str, Any]) -> None:
        self.rid, self.model = rid, model
        self._echo = _echo(data)
        self._created = int(time.time())
        self._sequence = 0
        self._started = self._answered = False
        self._open: dict[str, Any] | None = None  # the open reasoning or message item
        self._text = ""  # the open item's text so far
        self._output: list[dict[str, Any]] = []  # closed items, in output order

    def process(self, event: Chunk | Done) -> list[Event]:
        events: list[Event] = []
        if not self._started:
            self._started = True
            for name in ("response.created", "response.in_progress"):
                events.append(self._event(name, response=self._response("in_progress", None)))
        if isinstance(event, Chunk):
            if event.thinking:
                self._reasoning(event.thinking, events)
            if event.text:
                self._message(event.text, events)
            self._calls(event.tool_calls or [], events)
        else:
            self._done(event, events)
        return events

    def error(self, status: int, message: str) -> Event:
        """An `error` event for a failure mid-stream; its code is openai.NewError's type."""
        code = error(status, message)["error"]["type"]
        return self._event("error", code=code, message=message, param=None)

    def _reasoning(self, thinking: str, events: list[Event]) -> None:
        if not self._is_open("reasoning"):
            self._open_item({"id": _id("rs"), "type": "reasoning", "summary": []}, events)
        self._text += thinking
        delta = self._event(
            "response.reasoning_summary_text.delta", **self._where(), summary_index=0, delta=thinking
        )
        events.append(delta)

    def _message(self, text: str, events: list[Event]) -> None:
        if not self._is_open("message"):
            self._open_message(events)
        self._text += text
        where = self._where()
        events.append(
            self._event("response.output_text.delta", **where, content_index=0, delta=text, logprobs=[])
        )

    def _open_message(self, events: list[Event]) -> None:
        item = {
            "id": _id("msg"),
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        self._open_item(item, events)
        events.append(
            self._event("response.content_part.added", **self._where(), content_index=0, part=_part(""))
        )

    def _calls(self, calls: Sequence[ToolCall], events: list[Event]) -> None:
        for call in tool_calls(calls):
            self._close(events)
            name, arguments = call["function"]["name"], call["function"]["arguments"]
            item = {"id": _id("fc"), "type": "function_call", "status": "in_progress", "call_id": call["id"]}
            item.update(name=name, arguments="")
            where = {"item_id": item["id"], "output_index": len(self._output)}
            events.append(
                self._event("response.output_item.added", output_index=len(self._output), item=item)
            )
            events.append(self._event("response.function_call_arguments.delta", **where, delta=arguments))
            events.append(self._event("response.function_call_arguments.done", **where, arguments=arguments))
            self._finish_item({**item, "status": "completed", "arguments": arguments}, events)

    def _done(self, done: Done, events: list[Event]) -> None:
        if not self._answered and not self._is_open("message"):
            self._open_message(events)
        self._close(events)
        status = "incomplete" if done.done_reason == "length" else "completed"
        events.append(self._event(f"response.{status}", response=self._response(status, done)))

    def _is_open(self, kind: str) -> bool:
        return self._open is not None and self._open["type"] == kind

    def _open_item(self, item: dict[str, Any], events: list[Event]) -> None:
        self._close(events)
        self._open, self._text = item, ""
        events.append(self._event("response.output_item.added", output_index=len(self._output), item=item))

    def _close(self, events: list[Event]) -> None:
        """Close the open item, if any, with its .done events."""
        if self._open is None:
            return
        item, text, where = self._open, self._text, self._where()
        self._open, self._text = None, ""
        if item["type"] == "reasoning":
            summary = [{"type": "summary_text", "text": text}]
            events.append(
                self._event("response.reasoning_summary_text.done", **where, summary_index=0, text=text)
            )
            self._finish_item({**item, "summary": summary, "encrypted_content": text}, events)
        else:
            events.append(
                self._event("response.output_text.done", **where, content_index=0, text=text, logprobs=[])
            )
            events.append(
                self._event("response.content_part.done", **where, content_index=0, part=_part(text))
            )
            self._finish_item({**item, "status": "completed", "content": [_part(text)]}, events)

    def _finish_item(self, item: dict[str, Any], events: list[Event]) -> None:
        events.append(self._event("response.output_item.done", output_index=len(self._output), item=item))
        self._output.append(item)
        self._answered = self._answered or item["type"] != "reasoning"

    def _where(self) -> dict[str, Any]:
        """The open item's id and output index, as its events name them."""
        assert self._open is not None
        return {"item_id": self._open["id"], "output_index": len(self._output)}

    def _response(self, status: str, done: Done | None) -> dict[str, Any]:
        """buildResponseObject: the response as it stands (its output and usage once done)."""
        fields = {
            **self._echo,
            "id": self.rid,
            "object": "response",
            "created_at": self._created,
            "completed_at": int(time.time()) if status == "completed" else None,
            "status": status,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "model": self.model,
            "output": list(self._output) if done else [],
            "error": None,
            "usage": usage(done) if done else None,
        }
        return {name: fields[name] for name in RESPONSE_FIELDS}

    def _event(self, name: str, **fields: Any) -> Event:
        """newEvent: the event's type, its fields, then its sequence number."""
        body = {"type": name, **fields, "sequence_number": self._sequence}
        self._sequence += 1
        return name, body
