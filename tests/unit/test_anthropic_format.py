"""Anthropic's Messages API as Ollama implements it, ported from ollama/anthropic/anthropic_test.go."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from services.gateway import anthropic_format as af
from services.gateway.bodies import ChatBody
from services.gateway.sse import sse
from services.protocol import Chunk, Done, ToolCall

IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNk+A8AAQUBAScY42YAAAAASUVORK5CYII="
IMAGE_BLOCK = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMAGE}}
WEATHER_SCHEMA = {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}


def cannot(kind: str, field: str, go_type: str) -> str:
    """encoding/json's type error, as Ollama passes it on."""
    return f"json: cannot unmarshal {kind} into Go struct field {field} of type {go_type}"


def request(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "test-model", "max_tokens": 1024, "messages": list(messages), **fields}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def call(name: str, arguments: dict[str, Any], cid: str | None = "call_123") -> ToolCall:
    return ToolCall.model_validate({"id": cid, "function": {"name": name, "arguments": arguments}})


# ---- requests


def test_basic_request() -> None:
    body = af.chat_body(request(user("Hello")))
    assert body == {
        "model": "test-model",
        "messages": [{"role": "user", "content": "Hello"}],
        "stream": False,
        "options": {"num_predict": 1024},
    }
    ChatBody.model_validate(body)  # what the routes validate it with


@pytest.mark.parametrize(
    ("data", "messages"),
    [
        (
            request(user("Hello"), system="You are a helpful assistant."),
            [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Hello"},
            ],
        ),
        (
            request(
                user("Hello"),
                system=[
                    {"type": "text", "text": "You are helpful."},
                    {"type": "text", "text": " Be concise."},
                ],
            ),
            [
                {"role": "system", "content": "You are helpful. Be concise."},
                {"role": "user", "content": "Hello"},
            ],
        ),
        (request(user("Hello"), system=""), [{"role": "user", "content": "Hello"}]),
        (
            request(user([{"type": "text", "text": "What's in this image?"}, IMAGE_BLOCK])),
            [{"role": "user", "content": "What's in this image?", "images": [IMAGE]}],
        ),
        (
            request(
                user("What's the weather in Paris?"),
                assistant(
                    [
                        {
                            "type": "tool_use",
                            "id": "call_123",
                            "name": "get_weather",
                            "input": {"location": "Paris"},
                        }
                    ]
                ),
            ),
            [
                {"role": "user", "content": "What's the weather in Paris?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": "call_123",
                            "function": {"name": "get_weather", "arguments": {"location": "Paris"}},
                        }
                    ],
                },
            ],
        ),
        (
            request(user([{"type": "tool_result", "tool_use_id": "call_123", "content": "Sunny, 22°C"}])),
            [{"role": "tool", "content": "Sunny, 22°C", "tool_call_id": "call_123"}],
        ),
        (
            request(
                user(
                    [
                        {
                            "type": "tool_result",
                            "tool_use_id": "call_img",
                            "content": [
                                {"type": "text", "text": "Attached image"},
                                IMAGE_BLOCK,
                            ],
                        }
                    ]
                )
            ),
            [{"role": "tool", "content": "Attached image", "images": [IMAGE], "tool_call_id": "call_img"}],
        ),
        (
            request(
                assistant(
                    [
                        {
                            "type": "tool_use",
                            "id": "call_read",
                            "name": "Read",
                            "input": {"file_path": "/a.png"},
                        }
                    ]
                ),
                user(
                    [
                        {"type": "text", "text": "Please describe it."},
                        {
                            "type": "tool_result",
                            "tool_use_id": "call_read",
                            "content": "Read image (311.5KB)",
                        },
                    ]
                ),
            ),
            [
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": "call_read",
                            "function": {"name": "Read", "arguments": {"file_path": "/a.png"}},
                        }
                    ],
                },
                {"role": "tool", "content": "Read image (311.5KB)", "tool_call_id": "call_read"},
                {"role": "user", "content": "Please describe it."},
            ],
        ),
        (
            request(
                assistant([{"type": "text", "text": "Done."}, {"type": "tool_result", "tool_use_id": "x"}])
            ),
            [{"role": "assistant", "content": "Done."}, {"role": "tool", "content": "", "tool_call_id": "x"}],
        ),
        (
            request(
                user("Hello"), assistant([{"type": "thinking", "thinking": "Let me think about this..."}])
            ),
            [
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "", "thinking": "Let me think about this..."},
            ],
        ),
        (
            request(
                user([{"type": "text", "text": "a"}, {"type": "document"}, {"type": "text", "text": "b"}])
            ),
            [{"role": "user", "content": "ab"}],
        ),
        (
            request(user(""), user(None), {"role": "User", "content": "hi"}),
            [{"role": "user", "content": "hi"}],
        ),
    ],
    ids=[
        "system-string",
        "system-blocks",
        "system-empty",
        "image",
        "tool-use",
        "tool-result",
        "tool-result-image",
        "user-tool-results-come-first",
        "assistant-tool-results-come-after",
        "thinking-only-block",
        "unknown-blocks-ignored",
        "empty-messages-dropped-role-lowercased",
    ],
)
def test_messages(data: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    body = af.chat_body(data)
    assert body["messages"] == messages
    ChatBody.model_validate(body)


@pytest.mark.parametrize(
    ("fields", "options"),
    [
        ({}, {"num_predict": 1024}),
        (
            {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "stop_sequences": ["\n", "END"]},
            {"num_predict": 1024, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "stop": ["\n", "END"]},
        ),
        ({"stop_sequences": []}, {"num_predict": 1024}),
    ],
    ids=["max-tokens-only", "sampling-and-stop-sequences", "no-stop-sequences"],
)
def test_options(fields: dict[str, Any], options: dict[str, Any]) -> None:
    assert af.chat_body(request(user("Hi"), **fields))["options"] == options


@pytest.mark.parametrize(
    ("fields", "think"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 1000}}, True),
        ({"thinking": {"type": "disabled"}}, False),
        ({"output_config": {"effort": "high"}}, "high"),
        ({"output_config": {"effort": " XHigh "}}, "high"),
        ({"thinking": {"type": "disabled"}, "output_config": {"effort": "high"}}, False),
        ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}}, "low"),
        ({"output_config": {"effort": "extreme"}}, None),
        ({}, None),
    ],
    ids=[
        "enabled",
        "disabled",
        "effort",
        "xhigh-is-high",
        "disabled-beats-effort",
        "adaptive-uses-effort",
        "unknown-effort",
        "absent",
    ],
)
def test_thinking(fields: dict[str, Any], think: bool | str | None) -> None:
    assert af.chat_body(request(user("Hi"), **fields)).get("think") == think


def test_tools_stream_keep_alive_and_ignored_fields() -> None:
    body = af.chat_body(
        request(
            user("Hello"),
            tools=[
                {"name": "get_weather", "description": "Get current weather", "input_schema": WEATHER_SCHEMA},
                {"type": "custom", "name": "noop"},
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
            ],
            tool_choice={"type": "none"},
            metadata={"user_id": "u"},
            stream=True,
            keep_alive="5m",
        )
    )
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get current weather",
                "parameters": WEATHER_SCHEMA,
            },
        },
        {"type": "function", "function": {"name": "noop", "description": "", "parameters": {}}},
    ]
    assert body["stream"] is True and body["keep_alive"] == "5m"
    ChatBody.model_validate(body)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"max_tokens": 10, "messages": [user("Hi")]}, "model is required"),
        ({"model": "m", "messages": [user("Hi")]}, "max_tokens is required and must be positive"),
        (
            {"model": "m", "max_tokens": 0, "messages": [user("Hi")]},
            "max_tokens is required and must be positive",
        ),
        ({"model": "m", "max_tokens": 10, "messages": []}, "messages is required"),
        (
            request(assistant([{"type": "tool_use", "name": "get_weather"}])),
            "tool_use block missing required 'id' field",
        ),
        (
            request(assistant([{"type": "tool_use", "id": "call_123"}])),
            "tool_use block missing required 'name' field",
        ),
        (request(user([{"type": "image"}])), "invalid image source"),
        (
            request(user([{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}])),
            "invalid image source type: url. Only base64 images are supported.",
        ),
        (
            request(user([{"type": "image", "source": {"type": "base64", "data": "not base64!"}}])),
            "invalid base64 image data: illegal base64 data at input byte 3",
        ),
        (
            request(user([{"type": "tool_result", "content": [{"type": "image", "source": "x"}]}])),
            "invalid tool_result image source",
        ),
        (
            request(user("Hi"), tools=[{"name": "bad_tool", "input_schema": "{invalid json"}]),
            'invalid input_schema for tool "bad_tool": '
            "json: cannot unmarshal string into Go value of type api.ToolFunctionParameters",
        ),
        (
            {"model": "m", "max_tokens": 10.5, "messages": [user("Hi")]},
            cannot("number 10.5", "MessagesRequest.max_tokens", "int"),
        ),
        (
            {"model": 1, "max_tokens": 10, "messages": [user("Hi")]},
            cannot("number", "MessagesRequest.model", "string"),
        ),
        (
            request(user("Hi"), thinking={"type": True}),
            cannot("bool", "ThinkingConfig.thinking.type", "string"),
        ),
        (
            request(user("Hi"), stop_sequences=["a", 1]),
            cannot("number", "MessagesRequest.stop_sequences", "string"),
        ),
        (request({"role": "user"}), "unexpected end of JSON input"),
        (
            request(user(5)),
            cannot("number", "MessagesRequest.messages", "[]anthropic.ContentBlock"),
        ),
        (
            request(user([{"type": "text", "text": 5}])),
            cannot("number", "MessagesRequest.messages.text", "string"),
        ),
        (
            request(user(["Hi"])),
            cannot("string", "MessagesRequest.messages", "anthropic.ContentBlock"),
        ),
    ],
    ids=[
        "no-model",
        "no-max-tokens",
        "zero-max-tokens",
        "no-messages",
        "tool-use-without-id",
        "tool-use-without-name",
        "image-without-source",
        "image-url-source",
        "image-bad-base64",
        "tool-result-bad-image-source",
        "tool-schema-not-an-object",
        "fractional-max-tokens",
        "model-not-a-string",
        "thinking-type-not-a-string",
        "stop-sequence-not-a-string",
        "message-without-content",
        "content-a-number",
        "block-text-a-number",
        "block-not-an-object",
    ],
)
def test_refused_requests(data: dict[str, Any], message: str) -> None:
    with pytest.raises(af.AnthropicRequestError) as info:
        af.chat_body(data)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("data", "offset"),
    [
        ("abc", 0),
        ("abcde", 4),
        ("YQ=", 3),
        ("YQ==YQ==", 4),
        ("Y===", 1),
        ("YQ=x", 2),
        ("YW\nJj\r\n", None),
        ("", None),
    ],
    ids=[
        "short",
        "dangling-char",
        "half-padding",
        "after-padding",
        "early-padding",
        "bad-second-pad",
        "newlines",
        "empty",
    ],
)
def test_base64_as_go_decodes_it(data: str, offset: int | None) -> None:
    assert af._base64_error(data.encode()) == offset


def test_images_are_reencoded_without_newlines() -> None:
    source = {"type": "base64", "data": IMAGE[:40] + "\n" + IMAGE[40:]}
    body = af.chat_body(request(user([{"type": "image", "source": source}])))
    assert body["messages"][0]["images"] == [IMAGE]
    assert base64.b64decode(IMAGE)[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("data", "tokens"),
    [
        (request(user("Hello, world!")), 4),  # "user" + "Hello, world!" = 17 bytes
        (request(user("Hello"), system="You are a helpful assistant."), 9),
        (
            request(
                user("What's the weather?"),
                tools=[
                    {
                        "name": "get_weather",
                        "description": "Get the current weather for a location",
                        "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
                    }
                ],
            ),
            (4 + 19 + 11 + 38 + 60) // 4,
        ),
        (
            request(
                user("Hello"),
                assistant(
                    [
                        {"type": "thinking", "thinking": "Let me think about this carefully..."},
                        {"type": "text", "text": "Here is my response."},
                    ]
                ),
            ),
            (4 + 5 + 9 + 35 + 20) // 4,
        ),
        (
            request(assistant([{"type": "tool_use", "id": "c", "name": "f", "input": {"a": "<"}}])),
            (9 + len('{"id":"c","input":{"a":"\\u003c"},"name":"f","type":"tool_use"}')) // 4,
        ),
        (request(user("Hi")), 1),
        ({"messages": []}, 0),
    ],
    ids=["simple", "system", "tools", "thinking", "tool-use-block-as-go-json", "at-least-one", "empty"],
)
def test_estimate_input_tokens(data: dict[str, Any], tokens: int) -> None:
    assert af.estimate_input_tokens(data) == tokens


# ---- errors and ids


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
    ],
    ids=lambda v: str(v),
)
def test_error(status: int, kind: str) -> None:
    body = af.error(status, "test message")
    assert list(body) == ["type", "error", "request_id"]
    assert body["type"] == "error" and body["error"] == {"type": kind, "message": "test message"}
    assert re.fullmatch(r"req_[0-9a-f]{24}", body["request_id"])


def test_ids() -> None:
    assert re.fullmatch(r"msg_[0-9a-f]{24}", af.message_id())
    assert af.message_id() != af.message_id()
    assert re.fullmatch(r"call_[a-z0-9]{8}", af.tool_use_id())


# ---- responses


@pytest.mark.parametrize(
    ("reason", "called_tools", "stop_reason"),
    [
        ("stop", False, "end_turn"),
        ("length", False, "max_tokens"),
        ("stop", True, "tool_use"),
        ("other", False, "stop_sequence"),
        ("", False, ""),
    ],
    ids=["stop", "length", "tool-calls", "other", "none"],
)
def test_stop_reason(reason: str, called_tools: bool, stop_reason: str) -> None:
    assert af.stop_reason(reason, called_tools) == stop_reason


def test_message_with_text() -> None:
    done = Done(done_reason="stop", prompt_eval_count=10, eval_count=5)
    assert af.message("msg_123", "test-model", done, [Chunk(text="Hello"), Chunk(text=" there!")]) == {
        "id": "msg_123",
        "type": "message",
        "role": "assistant",
        "model": "test-model",
        "content": [{"type": "text", "text": "Hello there!"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }


def test_message_with_thinking_text_and_tool_use() -> None:
    parts = [
        Chunk(thinking="Let me think about this..."),
        Chunk(text="The answer is 42."),
        Chunk(tool_calls=[call("get_weather", {"location": "Paris"})]),
    ]
    body = af.message("msg_123", "m", Done(done_reason="stop"), parts)
    assert body["content"] == [
        {"type": "thinking", "thinking": "Let me think about this..."},
        {"type": "text", "text": "The answer is 42."},
        {"type": "tool_use", "id": "call_123", "name": "get_weather", "input": {"location": "Paris"}},
    ]
    assert body["stop_reason"] == "tool_use"


def test_message_gives_tool_calls_without_an_id_one() -> None:
    body = af.message("msg_1", "m", Done(done_reason="stop"), [Chunk(tool_calls=[call("f", {}, None)])])
    assert re.fullmatch(r"call_[a-z0-9]{8}", body["content"][0]["id"])


def test_empty_message_has_null_content_like_ollama() -> None:
    body = af.message("msg_1", "m", Done(done_reason="length"), [])
    assert body["content"] is None and body["stop_reason"] == "max_tokens"


# ---- streams


def trace(converter: af.StreamConverter, *events: Chunk | Done) -> list[str]:
    """Each event as name, block kind (or delta kind) and index, as Ollama's tests print them."""
    out = []
    for event in events:
        for name, data in converter.process(event):
            kind = (data.get("content_block") or data.get("delta") or {}).get("type")
            if "index" in data:
                out.append(":".join(str(p) for p in (name, kind, data["index"]) if p is not None))
            else:
                out.append(name)
    return out


DONE = Done(done_reason="stop", prompt_eval_count=10, eval_count=5)


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        (
            [Chunk(text="Hello"), Chunk(text=" world!"), DONE],
            [
                "message_start",
                "content_block_start:text:0",
                "content_block_delta:text_delta:0",
                "content_block_delta:text_delta:0",
                "content_block_stop:0",
                "message_delta",
                "message_stop",
            ],
        ),
        (
            [Chunk(thinking="Hmm"), Chunk(thinking="..."), Chunk(text="Hi"), Chunk(thinking="late"), DONE],
            [
                "message_start",
                "content_block_start:thinking:0",
                "content_block_delta:thinking_delta:0",
                "content_block_delta:thinking_delta:0",
                "content_block_stop:0",
                "content_block_start:text:1",
                "content_block_delta:text_delta:1",
                "content_block_stop:1",
                "message_delta",
                "message_stop",
            ],
        ),
        (
            [Chunk(text="---\n"), Chunk(thinking="Let me think."), Chunk(text="The answer."), DONE],
            [
                "message_start",
                "content_block_start:text:0",
                "content_block_delta:text_delta:0",
                "content_block_stop:0",
                "content_block_start:thinking:1",
                "content_block_delta:thinking_delta:1",
                "content_block_stop:1",
                "content_block_start:text:2",
                "content_block_delta:text_delta:2",
                "content_block_stop:2",
                "message_delta",
                "message_stop",
            ],
        ),
        (
            [
                Chunk(thinking="I should call the tool."),
                Chunk(tool_calls=[call("ask_user", {"q": "cats?"}, "call_abc")]),
                DONE,
            ],
            [
                "message_start",
                "content_block_start:thinking:0",
                "content_block_delta:thinking_delta:0",
                "content_block_stop:0",
                "content_block_start:tool_use:1",
                "content_block_delta:input_json_delta:1",
                "content_block_stop:1",
                "message_delta",
                "message_stop",
            ],
        ),
        (
            [
                Chunk(text="Let me check."),
                Chunk(tool_calls=[call("a", {}, "c1"), call("b", {}, "c2")]),
                Chunk(tool_calls=[call("a", {}, "c1")]),
                DONE,
            ],
            [
                "message_start",
                "content_block_start:text:0",
                "content_block_delta:text_delta:0",
                "content_block_stop:0",
                "content_block_start:tool_use:1",
                "content_block_delta:input_json_delta:1",
                "content_block_stop:1",
                "content_block_start:tool_use:2",
                "content_block_delta:input_json_delta:2",
                "content_block_stop:2",
                "message_delta",
                "message_stop",
            ],
        ),
        ([DONE], ["message_start", "message_delta", "message_stop"]),
    ],
    ids=[
        "text-only",
        "thinking-then-text",
        "text-before-thinking",
        "thinking-then-tool-call",
        "text-then-tool-calls-once-each",
        "empty-answer",
    ],
)
def test_stream_sequences(events: list[Chunk | Done], expected: list[str]) -> None:
    assert trace(af.StreamConverter("msg_123", "test-model"), *events) == expected


def test_stream_event_bodies() -> None:
    converter = af.StreamConverter("msg_123", "test-model", 42)
    first = converter.process(Chunk(text="Hello"))
    assert first == [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_123",
                    "type": "message",
                    "role": "assistant",
                    "model": "test-model",
                    "content": [],
                    "usage": {"input_tokens": 42, "output_tokens": 0},
                },
            },
        ),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
        ),
    ]
    tool = converter.process(Chunk(tool_calls=[call("get_weather", {"location": "Paris", "unit": "c"})]))
    assert tool[1:] == [
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {
                    "type": "tool_use",
                    "id": "call_123",
                    "name": "get_weather",
                    "input": {},
                },
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {
                    "type": "input_json_delta",
                    "partial_json": '{"location":"Paris","unit":"c"}',
                },
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ]
    assert converter.process(DONE) == [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"input_tokens": 10, "output_tokens": 5},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_stream_thinking_block_starts_empty() -> None:
    events = af.StreamConverter("msg_1", "m").process(Chunk(thinking="let me think..."))
    assert events[1][1]["content_block"] == {"type": "thinking", "thinking": ""}
    assert events[2][1]["delta"] == {"type": "thinking_delta", "thinking": "let me think..."}


@pytest.mark.parametrize(
    ("estimate", "first", "input_tokens"),
    [(7, Chunk(text="a"), 7), (0, Chunk(text="a"), 0), (7, Done(done_reason="stop", prompt_eval_count=3), 3)],
    ids=["estimate", "no-estimate", "real-count-when-done-first"],
)
def test_message_start_input_tokens(estimate: int, first: Chunk | Done, input_tokens: int) -> None:
    name, data = af.StreamConverter("msg_1", "m", estimate).process(first)[0]
    assert name == "message_start" and data["message"]["usage"]["input_tokens"] == input_tokens


def test_stream_tool_calls_without_ids_get_distinct_ones() -> None:
    converter = af.StreamConverter("msg_1", "m")
    events = converter.process(Chunk(tool_calls=[call("f", {}, None), call("f", {}, None)]))
    ids = [data["content_block"]["id"] for name, data in events if name == "content_block_start"]
    assert len(ids) == 2 and ids[0] != ids[1]


def test_stream_skips_calls_go_cannot_marshal() -> None:
    converter = af.StreamConverter("msg_1", "m")
    events = converter.process(
        Chunk(tool_calls=[call("good", {"x": 1}, "a"), call("bad", {"x": float("nan")}, "b")])
    )
    names = [data["content_block"]["name"] for name, data in events if name == "content_block_start"]
    assert names == ["good"]


def test_sse() -> None:
    data = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a<b & é"}}
    assert sse("content_block_delta", data) == (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"a\\u003cb \\u0026 \xc3\xa9"}}\n\n'
    )
    assert json.loads(sse("x", data).split(b"data: ")[1]) == data
