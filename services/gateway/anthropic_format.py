"""Anthropic's Messages API shapes (pure functions): /v1/messages bodies as Ollama's native chat
bodies, and the native events as Anthropic messages and server-sent events, as Ollama's anthropic
package and middleware do.

Requests follow AnthropicMessagesMiddleware and FromMessagesRequest: Go's decoding errors for
wrongly typed fields, then "model is required", a positive `max_tokens` (it becomes num_predict),
a non-empty `messages`; content blocks flattened into native messages (text joined, base64 images,
tool_use as tool calls, tool_result as `tool` messages, the last thinking block as thinking;
unknown block types ignored); `thinking` enabled / disabled as think true / false, otherwise
`output_config.effort` as a think level. `tool_choice` and `metadata` are read and ignored, as
Ollama does. Ollama's built-in web search (web_search_* tools and their blocks) is not offered.

Responses follow ToMessagesResponse and StreamConverter: thinking, text, then tool_use blocks
(no signatures: Ollama has none to give), stop reasons from mapStopReason, and the stream's
message_start / content_block_* / message_delta / message_stop events (Ollama sends no `ping`).
Tool calls without an id get one as Ollama's server gives them (`call_` and 8 characters).
"""

from __future__ import annotations

import base64
import json
import random
import secrets
import string
from collections.abc import Sequence
from typing import Any

from services.gateway.gojson import json_kind
from services.gotemplate import marshal
from services.protocol import Chunk, Done, ToolCall

# anthropic.NewError's status → error type; anything else is an api_error.
ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error",
}  # fmt: skip
THINK_LEVELS = ("high", "medium", "low", "max")
# Go types of MessagesRequest's fields and of the structs inside it, for encoding/json's type errors.
REQUEST_FIELDS = {
    "model": "string", "max_tokens": "int", "messages": "[]anthropic.MessageParam", "stream": "bool",
    "temperature": "float64", "top_p": "float64", "top_k": "int", "stop_sequences": "[]string",
    "tools": "[]anthropic.Tool", "tool_choice": "anthropic.ToolChoice",
    "thinking": "anthropic.ThinkingConfig", "metadata": "anthropic.Metadata",
    "output_config": "anthropic.OutputConfig",
}  # fmt: skip
STRUCT_FIELDS = {
    "tool_choice": ("ToolChoice", {"type": "string", "name": "string", "disable_parallel_tool_use": "bool"}),
    "thinking": ("ThinkingConfig", {"type": "string", "budget_tokens": "int"}),
    "metadata": ("Metadata", {"user_id": "string"}),
    "output_config": ("OutputConfig", {"effort": "string"}),
}
TOOL_FIELDS = {"type": "string", "name": "string", "description": "string", "max_uses": "int"}
BLOCK_FIELDS = {
    "type": "string", "text": "string", "citations": "[]anthropic.Citation",
    "source": "anthropic.ImageSource", "id": "string", "name": "string",
    "input": "api.ToolCallFunctionArguments", "tool_use_id": "string", "is_error": "bool",
    "thinking": "string", "signature": "string",
}  # fmt: skip
SOURCE_FIELDS = {"type": "string", "media_type": "string", "data": "string", "url": "string"}
# What Go names when a message is not an object: MessageParam.UnmarshalJSON decodes into this struct.
MESSAGE_STRUCT = 'struct { Role string "json:\\"role\\""; Content json.RawMessage "json:\\"content\\"" }'
_GO_TYPES: dict[str, Any] = {"string": str, "bool": bool, "int": int, "float64": int | float}
_BASE64 = frozenset((string.ascii_letters + string.digits + "+/").encode())


class AnthropicRequestError(ValueError):
    """A request Ollama's Anthropic layer refuses with a 400; the message is its text."""


def error(status: int, message: str) -> dict[str, Any]:
    """anthropic.NewError: every error carries a fresh request id, as Anthropic's do."""
    kind = ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": _id("req")}


def message_id() -> str:
    """GenerateMessageID: `msg_` and 24 hex digits."""
    return _id("msg")


def tool_use_id() -> str:
    """Ollama's server-side toolCallId, for tool calls the model emitted without one."""
    return "call_" + "".join(random.choices(string.ascii_lowercase + string.digits, k=8))


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# ---- requests


def chat_body(data: dict[str, Any]) -> dict[str, Any]:
    """A /v1/messages body as an /api/chat body (raises AnthropicRequestError with Ollama's text)."""
    _check_request(data)
    if not data.get("model"):
        raise AnthropicRequestError("model is required")
    max_tokens = data.get("max_tokens") or 0
    if max_tokens <= 0:
        raise AnthropicRequestError("max_tokens is required and must be positive")
    messages = data.get("messages") or []
    if not messages:
        raise AnthropicRequestError("messages is required")
    options: dict[str, Any] = {"num_predict": max_tokens}
    for name in ("temperature", "top_p", "top_k"):
        if data.get(name) is not None:
            options[name] = data[name]
    if data.get("stop_sequences"):
        options["stop"] = data["stop_sequences"]
    # Ollama's built-in web search (it runs the searches itself) is not offered.
    tools = [_tool(t) for t in filter(None, data.get("tools") or []) if not _web_search(t)]
    body: dict[str, Any] = {
        "model": data["model"],
        "messages": _system(data.get("system")) + [m for msg in messages for m in _message(msg or {})],
        "stream": bool(data.get("stream")),
        "options": options,
        "tools": tools or None,
        "think": _think(data),
        "keep_alive": data.get("keep_alive"),
    }
    return {k: v for k, v in body.items() if v is not None}


def _web_search(tool: dict[str, Any]) -> bool:
    return str(tool.get("type") or "").startswith("web_search")


def _check_request(data: dict[str, Any]) -> None:
    """The type errors Go's decoder reports for MessagesRequest (JSON null is always accepted)."""
    for name, value in data.items():
        if name in REQUEST_FIELDS:
            _check(value, REQUEST_FIELDS[name], f"MessagesRequest.{name}")
        if name in STRUCT_FIELDS and isinstance(value, dict):
            struct, fields = STRUCT_FIELDS[name]
            _check_fields(value, fields, f"{struct}.{name}")
    for tool in data.get("tools") or []:
        _check(tool, "anthropic.Tool", "MessagesRequest.tools")
        _check_fields(tool or {}, TOOL_FIELDS, "Tool.tools")
    for message in data.get("messages") or []:
        # MessageParam decodes itself, so errors inside it are placed under MessagesRequest.messages.
        _check(message, MESSAGE_STRUCT, "MessagesRequest.messages")
        _check((message or {}).get("role"), "string", "MessagesRequest.messages.role")
        for block in _blocks(message or {}):
            _check(block, "anthropic.ContentBlock", "MessagesRequest.messages")
            if block is None:
                continue
            _check_fields(block, BLOCK_FIELDS, "MessagesRequest.messages")
            if isinstance(block.get("source"), dict):
                _check_fields(block["source"], SOURCE_FIELDS, "MessagesRequest.messages.source")


def _check_fields(value: dict[str, Any], fields: dict[str, str], where: str) -> None:
    for name, go_type in fields.items():
        _check(value.get(name), go_type, f"{where}.{name}")


def _check(value: Any, go_type: str, where: str, go_value: bool = False) -> None:
    """encoding/json's UnmarshalTypeError, should `value` not fit `go_type` (null fits anything)."""
    want = _GO_TYPES.get(go_type, list if go_type.startswith("[]") else dict)
    numeric = go_type in ("int", "float64")
    if value is None or (isinstance(value, want) and not (numeric and isinstance(value, bool))):
        for item in value if go_type == "[]string" and value else ():
            _check(item, "string", where, go_value)
        return
    kind = f"number {value}" if go_type == "int" and isinstance(value, float) else json_kind(value)
    into = f"Go value of type {go_type}" if go_value else f"Go struct field {where} of type {go_type}"
    raise AnthropicRequestError(f"json: cannot unmarshal {kind} into {into}")


def _blocks(message: dict[str, Any]) -> list[Any]:
    """MessageParam.UnmarshalJSON: a string (or null) is one text block, else a list of blocks.
    A null message is an empty one ({} here, as chat_body passes it)."""
    if message and "content" not in message:
        raise AnthropicRequestError("unexpected end of JSON input")
    content = message.get("content")
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content or ""}]
    if not isinstance(content, list):
        raise AnthropicRequestError(
            f"json: cannot unmarshal {json_kind(content)} into Go struct field "
            "MessagesRequest.messages of type []anthropic.ContentBlock"
        )
    return content


def _system(system: Any) -> list[dict[str, Any]]:
    """A string, or the text of a list of text blocks; other shapes and empty text add nothing."""
    if isinstance(system, list):
        system = "".join(
            b["text"]
            for b in system
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        )
    return [{"role": "system", "content": system}] if isinstance(system, str) and system else []


def _message(message: dict[str, Any]) -> list[dict[str, Any]]:
    """convertMessage: one native message for text, images, tool calls and thinking, and one
    `tool` message per tool_result; a user's tool results come before its own message."""
    role = str(message.get("role") or "").lower()
    own: dict[str, Any] = {"role": role, "content": "", "thinking": "", "images": [], "tool_calls": []}
    results: list[dict[str, Any]] = []
    for block in _blocks(message):
        kind = block.get("type") if isinstance(block, dict) else None  # null: an empty block
        if kind == "text":
            own["content"] += block.get("text") or ""
        elif kind == "image":
            if block.get("source") is None:
                raise AnthropicRequestError("invalid image source")
            own["images"].append(_image(block["source"]))
        elif kind == "tool_use":
            for field in ("id", "name"):
                if not block.get(field):
                    raise AnthropicRequestError(f"tool_use block missing required '{field}' field")
            function = {"name": block["name"], "arguments": block.get("input") or {}}
            own["tool_calls"].append({"id": block["id"], "function": function})
        elif kind == "tool_result":
            content, images = _tool_result(block.get("content"))
            result = {"role": "tool", "content": content, "images": images}
            results.append(_omit_empty({**result, "tool_call_id": block.get("tool_use_id")}))
        elif kind == "thinking" and block.get("thinking") is not None:
            own["thinking"] = block["thinking"]  # the last one wins
    mine = [_omit_empty(own)] if any(v for k, v in own.items() if k != "role") else []
    return results + mine if role == "user" else mine + results


def _omit_empty(message: dict[str, Any]) -> dict[str, Any]:
    """api.Message's omitempty fields dropped (role and content are always written)."""
    return {k: v for k, v in message.items() if v or k in ("role", "content")}


def _tool_result(content: Any) -> tuple[str, list[str]]:
    """convertToolResultContent: a string, or the text and images of a list of blocks."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        return "", []
    text, images = [], []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            text.append(block["text"])
        elif block.get("type") == "image":
            source = block.get("source")
            if not isinstance(source, dict):
                raise AnthropicRequestError("invalid tool_result image source")
            images.append(_image({k: v for k, v in source.items() if isinstance(v, str)}))
    return "".join(text), images


def _image(source: dict[str, Any]) -> str:
    """resolveImageSource: base64 data only, checked as Go's decoder checks it, re-encoded clean."""
    kind = source.get("type") or ""
    if kind != "base64":
        raise AnthropicRequestError(f"invalid image source type: {kind}. Only base64 images are supported.")
    data = (source.get("data") or "").encode("utf-8", "surrogatepass")
    offset = _base64_error(data)
    if offset is not None:
        raise AnthropicRequestError(f"invalid base64 image data: illegal base64 data at input byte {offset}")
    return base64.b64encode(base64.b64decode(data.replace(b"\r", b"").replace(b"\n", b""))).decode()


def _base64_error(data: bytes) -> int | None:
    """Where base64.StdEncoding.DecodeString fails (padding required, CR and LF skipped), or None."""
    si, n = 0, len(data)
    while si < n:
        j = 0
        while j < 4:
            if si == n:
                return None if j == 0 else si - j
            ch = data[si]
            si += 1
            if ch in _BASE64:
                j += 1
            elif ch not in b"\r\n":
                if ch != ord("=") or j < 2:
                    return si - 1
                if j == 2:  # a second "=" must follow
                    while si < n and data[si] in b"\r\n":
                        si += 1
                    if si == n:
                        return n
                    if data[si] != ord("="):
                        return si - 1
                    si += 1
                while si < n and data[si] in b"\r\n":
                    si += 1
                return si if si < n else None
    return None


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    """convertTool: input_schema becomes the function's parameters (api.ToolFunctionParameters)."""
    name, schema = tool.get("name") or "", tool.get("input_schema")
    where = f"invalid input_schema for tool {json.dumps(name)}: "
    try:
        _check(schema, "api.ToolFunctionParameters", "", go_value=True)
        if isinstance(schema, dict):
            _check(schema.get("type"), "string", "ToolFunctionParameters.type")
            _check(schema.get("required"), "[]string", "ToolFunctionParameters.required")
    except AnthropicRequestError as exc:
        raise AnthropicRequestError(where + str(exc)) from exc
    function = {"name": name, "description": tool.get("description") or "", "parameters": schema or {}}
    return {"type": "function", "function": function}


def _think(data: dict[str, Any]) -> bool | str | None:
    kind = (data.get("thinking") or {}).get("type")
    if kind in ("enabled", "disabled"):
        return bool(kind == "enabled")
    output_config = data.get("output_config")
    if output_config is None:
        return None
    effort = str(output_config.get("effort") or "").strip().lower()
    effort = "high" if effort == "xhigh" else effort
    return effort if effort in THINK_LEVELS else None


def estimate_input_tokens(data: dict[str, Any]) -> int:
    """EstimateInputTokens (bytes / 4), message_start's input_tokens until the real count is known.
    Call it on a body chat_body accepted. input_schema's length is of its compact JSON, as the
    client's own bytes are gone."""
    messages, system = data.get("messages") or [], data.get("system")
    total = _count_any(system)
    for message in messages:
        blocks = _blocks(message or {})
        total += _len((message or {}).get("role") or "") + sum(_count_block(b) for b in blocks if b)
    for tool in filter(None, data.get("tools") or []):
        total += _len(tool.get("name") or "") + _len(tool.get("description") or "")
        if "input_schema" in tool:
            total += _len(json.dumps(tool["input_schema"], ensure_ascii=False, separators=(",", ":")))
    tokens = total // 4
    return 1 if tokens == 0 and (messages or system is not None) else tokens


def _count_any(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return _len(content)
    if isinstance(content, list):
        return sum(_count_block(b) for b in content if isinstance(b, dict))
    return _len(marshal(content))


def _count_block(block: dict[str, Any]) -> int:
    """countContentBlock: text and thinking, plus the whole JSON of tool_use and tool_result blocks."""
    total = sum(_len(block[k]) for k in ("text", "thinking") if isinstance(block.get(k), str))
    if block.get("type") in ("tool_use", "tool_result"):
        # As Go marshals ContentBlock: omitempty fields when set; pointers and interfaces when present.
        present = ("type", "text", "thinking", "input", "content", "source")
        kept = {
            k: v for k, v in block.items() if k in BLOCK_FIELDS and (v or (k in present and v is not None))
        }
        total += _len(marshal({"type": "", **kept}))
    return total


def _len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


# ---- responses


def stop_reason(done_reason: str, called_tools: bool) -> str:
    """mapStopReason: any tool call makes it tool_use; "" stays "" (and is then left out)."""
    if called_tools:
        return "tool_use"
    return {"stop": "end_turn", "length": "max_tokens", "": ""}.get(done_reason, "stop_sequence")


def message(mid: str, model: str, done: Done, parts: Sequence[Chunk]) -> dict[str, Any]:
    """ToMessagesResponse for a whole answer. Like Ollama's, `content` is null when the answer is
    empty, and stop_sequence is never written."""
    thinking, text = "".join(p.thinking for p in parts), "".join(p.text for p in parts)
    calls = [c for p in parts for c in p.tool_calls or []]
    content: list[dict[str, Any]] = []
    if thinking:
        content.append({"type": "thinking", "thinking": thinking})
    if text:
        content.append({"type": "text", "text": text})
    content += [_tool_use(call, call.id or tool_use_id(), call.function.arguments) for call in calls]
    reason = stop_reason(done.done_reason, bool(calls))
    body = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": content or None}
    usage = {"input_tokens": done.prompt_eval_count, "output_tokens": done.eval_count}
    return {**body, **({"stop_reason": reason} if reason else {}), "usage": usage}


def _tool_use(call: ToolCall, cid: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": cid, "name": call.function.name, "input": arguments}


Event = tuple[str, dict[str, Any]]


class StreamConverter:
    """StreamConverter.Process: the Anthropic events for each native event of one answer.

    Blocks open and close as the output moves between thinking, text and tool calls; each tool
    call is a whole block (its arguments in one input_json_delta). Thinking that comes back after
    text has followed thinking is dropped, as Ollama drops it.
    """

    def __init__(self, mid: str, model: str, input_tokens_estimate: int = 0) -> None:
        self.mid, self.model, self.estimate = mid, model, input_tokens_estimate
        self._first = True
        self._index = 0
        self._thinking_started = self._thinking_done = self._text_started = False
        self._sent: set[str] = set()

    def process(self, event: Chunk | Done) -> list[Event]:
        events: list[Event] = []
        if self._first:
            self._first = False
            tokens = event.prompt_eval_count if isinstance(event, Done) else 0
            usage = {"input_tokens": tokens or max(self.estimate, 0), "output_tokens": 0}
            head = {"id": self.mid, "type": "message", "role": "assistant", "model": self.model}
            start = {"type": "message_start", "message": {**head, "content": [], "usage": usage}}
            events.append(("message_start", start))
        if isinstance(event, Chunk):
            self._chunk(event, events)
        else:
            self._done(event, events)
        return events

    def _chunk(self, chunk: Chunk, events: list[Event]) -> None:
        if chunk.thinking and not self._thinking_done:
            if self._text_started:
                self._close(events)
                self._text_started = False
            if not self._thinking_started:
                self._thinking_started = True
                events.append(self._start({"type": "thinking", "thinking": ""}))
            events.append(self._delta({"type": "thinking_delta", "thinking": chunk.thinking}))
        if chunk.text:
            self._end_thinking(events)
            if not self._text_started:
                self._text_started = True
                events.append(self._start({"type": "text", "text": ""}))
            events.append(self._delta({"type": "text_delta", "text": chunk.text}))
        for call in chunk.tool_calls or []:
            cid = call.id or tool_use_id()
            if cid in self._sent:
                continue
            self._end_thinking(events)
            if self._text_started:
                self._close(events)
                self._text_started = False
            try:
                arguments = marshal(call.function.arguments, sort_keys=False)
            except ValueError:  # NaN or infinity: Ollama skips a call it cannot marshal
                continue
            events.append(self._start(_tool_use(call, cid, {})))
            events.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
            self._close(events)
            self._sent.add(cid)

    def _done(self, done: Done, events: list[Event]) -> None:
        if self._text_started or (self._thinking_started and not self._thinking_done):
            events.append(("content_block_stop", {"type": "content_block_stop", "index": self._index}))
        reason = stop_reason(done.done_reason, bool(self._sent))
        usage = {"input_tokens": done.prompt_eval_count, "output_tokens": done.eval_count}
        delta = {"stop_reason": reason} if reason else {}
        events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        events.append(("message_stop", {"type": "message_stop"}))

    def _end_thinking(self, events: list[Event]) -> None:
        if self._thinking_started and not self._thinking_done:
            self._thinking_done = True
            self._close(events)

    def _start(self, block: dict[str, Any]) -> Event:
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        return "content_block_start", start

    def _delta(self, delta: dict[str, Any]) -> Event:
        return "content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta}

    def _close(self, events: list[Event]) -> None:
        events.append(("content_block_stop", {"type": "content_block_stop", "index": self._index}))
        self._index += 1
