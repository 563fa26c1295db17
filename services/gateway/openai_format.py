"""OpenAI's API shapes (pure functions): their requests as Ollama's native bodies, and the
native events as their responses and server-sent events, as Ollama's openai package does.

Request translation follows Ollama's FromChatRequest / FromCompleteRequest: sampling defaults
of 1.0 for temperature and top_p, `stop` as a string or list, `max_tokens` (and the newer
`max_completion_tokens`) as num_predict, `response_format` json_object / json_schema as
`format`, `reasoning_effort` as `think`. Responses follow ToChatCompletion, ToStreamChunks,
FinishChunk, ToCompletion and the chunk writers: ids `chatcmpl-N` / `cmpl-N`, system
fingerprint `fp_ollama`, tool call arguments as JSON strings, a finish chunk with an empty
delta, usage on request, then `data: [DONE]`.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import struct
import time
from collections.abc import Sequence
from typing import Any

from services.gateway.gojson import json_kind
from services.protocol import Chunk, Done, Logprob, ToolCall

FINGERPRINT = "fp_ollama"
# OpenAI's efforts mapped onto Ollama's think levels (openai.thinkFromReasoningEffort).
EFFORTS: dict[str, bool | str] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
    "xhigh": "max",
    "ultra": "max",
}


class OpenAIRequestError(ValueError):
    """A request Ollama's OpenAI layer refuses with a 400; the message is its text."""


def error(status: int, message: str) -> dict[str, Any]:
    """openai.NewError: the error object OpenAI's clients read."""
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def new_id(prefix: str) -> str:
    return f"{prefix}-{random.randrange(999)}"


# ---- requests


def chat_body(data: dict[str, Any]) -> dict[str, Any]:
    """A /v1/chat/completions body as an /api/chat body."""
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise OpenAIRequestError("[] is too short - 'messages'")
    if data.get("n") not in (None, 1):
        raise OpenAIRequestError("n other than 1 is not supported")
    tools = data.get("tools")
    choice = data.get("tool_choice")
    if choice == "none":
        tools = None
    elif choice not in (None, "auto"):
        raise OpenAIRequestError('tool_choice other than "auto" or "none" is not supported')
    body: dict[str, Any] = {
        "model": data.get("model", ""),
        "messages": [m for message in messages for m in _messages(message, messages)],
        "stream": bool(data.get("stream")),
        "options": _options(data, ("max_tokens", "max_completion_tokens")),
        "tools": tools,
        "format": _format(data.get("response_format")),
        "think": think_from(data),
        "logprobs": bool(data.get("logprobs")),
        "top_logprobs": data.get("top_logprobs") or 0,
        "keep_alive": data.get("keep_alive"),
    }
    return {k: v for k, v in body.items() if v is not None}


def completion_body(data: dict[str, Any]) -> dict[str, Any]:
    """A /v1/completions body as an /api/generate body."""
    prompt = data.get("prompt", "")
    if not isinstance(prompt, str):
        raise OpenAIRequestError("prompt must be a string")
    logprobs = data.get("logprobs")
    body: dict[str, Any] = {
        "model": data.get("model", ""),
        "prompt": prompt,
        "suffix": data.get("suffix") or None,
        "stream": bool(data.get("stream")),
        "options": _options(data, ("max_tokens",)),
        "logprobs": bool(logprobs),
        "top_logprobs": logprobs if isinstance(logprobs, int) and not isinstance(logprobs, bool) else 0,
        "keep_alive": data.get("keep_alive"),
    }
    return {k: v for k, v in body.items() if v is not None}


def _messages(message: Any, every: list[Any]) -> list[dict[str, Any]]:
    if not isinstance(message, dict):
        raise OpenAIRequestError("invalid message format")
    role = str(message.get("role", ""))
    role = "system" if role == "developer" else role  # OpenAI's newer name for the system role
    extra: dict[str, Any] = {}
    if message.get("reasoning"):
        extra["thinking"] = message["reasoning"]
    if message.get("tool_calls"):
        if not isinstance(message["tool_calls"], list):
            kind = json_kind(message["tool_calls"])
            raise OpenAIRequestError(
                f"json: cannot unmarshal {kind} into Go struct field Message.messages.tool_calls "
                "of type []openai.ToolCall"
            )
        extra["tool_calls"] = [_tool_call(call) for call in message["tool_calls"]]
    if role == "tool":
        extra["tool_name"] = message.get("name") or _tool_name(every, message.get("tool_call_id"))
    if message.get("tool_call_id"):
        extra["tool_call_id"] = message["tool_call_id"]
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content, **extra}]
    if isinstance(content, list):
        parts = [_part(role, part) for part in content]
        if parts and extra:
            parts[-1].update(extra)
        return parts
    if content is None and message.get("tool_calls"):
        return [{"role": role, "content": "", **extra}]
    raise OpenAIRequestError(f"invalid message content type: {_go_type(content)}")


def _part(role: str, part: Any) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise OpenAIRequestError("invalid message format")
    if part.get("type") == "text" and isinstance(part.get("text"), str):
        return {"role": role, "content": part["text"]}
    if part.get("type") == "image_url":
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        if not isinstance(url, str):
            raise OpenAIRequestError("invalid message format")
        return {"role": role, "content": "", "images": [image_base64(url)]}
    if part.get("type") == "input_audio":
        _check_audio(part.get("input_audio"))
        raise OpenAIRequestError(NO_AUDIO)
    raise OpenAIRequestError("invalid message format")


NO_AUDIO = "audio input is not supported: corral has no engine for audio models"


def _check_audio(audio: Any) -> None:
    """Ollama's checks of an input_audio part, so a malformed one is told so first."""
    if not isinstance(audio, dict):
        raise OpenAIRequestError("invalid input_audio format")
    data = audio.get("data")
    if not isinstance(data, str):
        raise OpenAIRequestError("invalid input_audio format: missing data")
    try:
        base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise OpenAIRequestError(f"invalid input_audio base64 data: {exc}") from exc


def image_base64(url: str) -> str:
    """The base64 of a data: URL, as Ollama's decodeImageURL accepts them."""
    if url.startswith(("http://", "https://")):
        raise OpenAIRequestError(
            "image URLs are not currently supported, please use base64 encoded data instead"
        )
    for prefix in ("data:;base64,", *(f"data:image/{t};base64," for t in ("jpeg", "jpg", "png", "webp"))):
        if url.startswith(prefix):
            data = url.removeprefix(prefix)
            try:
                base64.b64decode(data, validate=True)
            except ValueError as exc:
                raise OpenAIRequestError("invalid image input") from exc
            return data
    raise OpenAIRequestError("invalid image input")


def _tool_call(call: Any) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        raise OpenAIRequestError("invalid tool call arguments")
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except (TypeError, json.JSONDecodeError) as exc:
        raise OpenAIRequestError("invalid tool call arguments") from exc
    if not isinstance(arguments, dict):
        raise OpenAIRequestError("invalid tool call arguments")
    result: dict[str, Any] = {"function": {"name": function.get("name", ""), "arguments": arguments}}
    if call.get("id"):
        result["id"] = call["id"]
    return result


def _tool_name(messages: list[Any], call_id: Any) -> str:
    """The function a tool result answers, found by its call id (the last such call wins)."""
    for message in reversed(messages):
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        for call in calls if isinstance(calls, list) else []:  # another kind is refused as that message's
            if isinstance(call, dict) and call.get("id") == call_id:
                return str((call.get("function") or {}).get("name", ""))
    return ""


def _options(data: dict[str, Any], limits: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {
        "temperature": data["temperature"] if data.get("temperature") is not None else 1.0,
        "top_p": data["top_p"] if data.get("top_p") else 1.0,
    }
    stop = data.get("stop")
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif isinstance(stop, list):
        if not all(isinstance(s, str) for s in stop):
            raise OpenAIRequestError("invalid type for 'stop' field")
        options["stop"] = stop
    for name in limits:
        if data.get(name) is not None:
            options["num_predict"] = data[name]
    for name in ("seed", "frequency_penalty", "presence_penalty"):
        if data.get(name) is not None:
            options[name] = data[name]
    return options


def _format(response_format: Any) -> Any:
    if not isinstance(response_format, dict):
        return None
    kind = str(response_format.get("type", "")).strip().lower()
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return schema if schema is not None else None
    return None


def think_from(data: dict[str, Any]) -> bool | str | None:
    """Ollama's `think` for an OpenAI body's `reasoning.effort` (or `reasoning_effort`)."""
    reasoning = data.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else data.get("reasoning_effort")
    if not effort:
        return None
    if effort not in EFFORTS:
        raise OpenAIRequestError(
            f'invalid reasoning value: "{effort}" (must be "minimal", "low", "medium", "high", '
            '"xhigh", "ultra", "max", or "none")'
        )
    return EFFORTS[effort]


def _go_type(value: Any) -> str:
    return {
        type(None): "<nil>",
        bool: "bool",
        int: "float64",
        float: "float64",
        dict: "map[string]interface {}",
    }.get(type(value), type(value).__name__)


# ---- responses


def usage(done: Done) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_eval_count,
        "completion_tokens": done.eval_count,
        "total_tokens": done.prompt_eval_count + done.eval_count,
    }


def tool_calls(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    return [
        {
            "id": call.id or "",
            "index": call.function.index or 0,
            "type": "function",
            "function": {"name": call.function.name, "arguments": json.dumps(call.function.arguments)},
        }
        for call in calls
    ]


def finish_reason(done: Done, called_tools: bool) -> str:
    reason = done.done_reason if done.done_reason in ("stop", "length") else "stop"
    return "tool_calls" if reason == "stop" and called_tools else reason


def chat_completion(cid: str, model: str, done: Done, parts: Sequence[Chunk]) -> dict[str, Any]:
    calls = tool_calls([c for p in parts for c in p.tool_calls or []])
    message: dict[str, Any] = {"role": "assistant", "content": "".join(p.text for p in parts)}
    thinking = "".join(p.thinking for p in parts)
    if thinking:
        message["reasoning"] = thinking
    if calls:
        message["tool_calls"] = calls
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "finish_reason": finish_reason(done, bool(calls)),
    }
    logprobs = _logprobs([lp for p in parts for lp in p.logprobs or []])
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [choice],
        "usage": usage(done),
    }


def chat_chunks(cid: str, model: str, created: int, part: Chunk, first: bool) -> list[dict[str, Any]]:
    """ToStreamChunks: one chunk, or two when thinking and content (or calls) came together."""
    delta: dict[str, Any] = {"role": "assistant"} if first else {}
    calls = tool_calls(part.tool_calls or [])
    logprobs = _logprobs(part.logprobs or [])
    if part.thinking and (part.text or calls):
        reasoning = _chunk(cid, model, created, {**delta, "reasoning": part.thinking}, None, logprobs)
        rest = {"content": part.text, **({"tool_calls": calls} if calls else {})}
        return [reasoning, _chunk(cid, model, created, rest, None, None)]
    delta["content"] = part.text
    if part.thinking:
        delta["reasoning"] = part.thinking
    if calls:
        delta["tool_calls"] = calls
    return [_chunk(cid, model, created, delta, None, logprobs)]


def chat_finish(cid: str, model: str, created: int, done: Done, called_tools: bool) -> dict[str, Any]:
    return _chunk(cid, model, created, {}, finish_reason(done, called_tools), None)


def chat_usage(cid: str, model: str, created: int, done: Done) -> dict[str, Any]:
    chunk = _chunk(cid, model, created, {}, None, None)
    chunk["choices"] = []
    chunk["usage"] = usage(done)
    return chunk


def _chunk(
    cid: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    reason: str | None,
    logprobs: dict[str, Any] | None,
) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": reason}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [choice],
    }


def completion(cid: str, model: str, done: Done, parts: Sequence[Chunk]) -> dict[str, Any]:
    choice = _completion_choice("".join(p.text for p in parts), finish_reason(done, False))
    logprobs = _logprobs([lp for p in parts for lp in p.logprobs or []])
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return {**_completion_head(cid, model), "choices": [choice], "usage": usage(done)}


def completion_chunk(cid: str, model: str, text: str, reason: str | None) -> dict[str, Any]:
    return {**_completion_head(cid, model), "choices": [_completion_choice(text, reason)]}


def completion_usage(cid: str, model: str, done: Done) -> dict[str, Any]:
    return {**_completion_head(cid, model), "choices": [], "usage": usage(done)}


def _completion_head(cid: str, model: str) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": FINGERPRINT,
    }


def _completion_choice(text: str, reason: str | None) -> dict[str, Any]:
    return {"text": text, "index": 0, "finish_reason": reason}


def _logprobs(logprobs: Sequence[Logprob]) -> dict[str, Any] | None:
    if not logprobs:
        return None
    return {"content": [lp.model_dump(exclude_none=True) for lp in logprobs]}


def models(entries: Sequence[tuple[str, float, str]]) -> dict[str, Any]:
    """/v1/models from (name, modified_at, namespace) triples."""
    return {"object": "list", "data": [model(name, modified, owner) for name, modified, owner in entries]}


def model(name: str, modified_at: float, owner: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(modified_at), "owned_by": owner}


def embeddings(model: str, vectors: list[list[float]], base64_floats: bool, tokens: int) -> dict[str, Any]:
    data = [
        {"object": "embedding", "embedding": _base64(v) if base64_floats else v, "index": i}
        for i, v in enumerate(vectors)
    ]
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _base64(vector: list[float]) -> str:
    """Little-endian float32s, base64-encoded (OpenAI's encoding_format=base64)."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
