"""The OpenAI-compatible routes, driven by the official `openai` client, unmodified."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.models import THINKING_TOOLS_TEMPLATE, WEATHER, add_model
from tests.stack import MODEL, Stack

HI = [{"role": "user", "content": "Say hi"}]


@pytest.fixture(scope="module")
def v1(tmp_path_factory: pytest.TempPathFactory, nats_binary: Path) -> Iterator[tuple[Stack, openai.OpenAI]]:
    root = tmp_path_factory.mktemp("openai")
    add_model(root / "models", "thinker:test", THINKING_TOOLS_TEMPLATE)
    stack = Stack(root, nats_binary).start()
    yield stack, openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused")
    stack.stop()


def test_chat_completion(v1: tuple[Stack, openai.OpenAI]) -> None:
    _, client = v1
    answer = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=8, temperature=0, seed=1)
    choice = answer.choices[0]
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.system_fingerprint == "fp_ollama" and answer.model == MODEL
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 8
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 8


def test_streamed_chat_with_usage(v1: tuple[Stack, openai.OpenAI]) -> None:
    _, client = v1
    stream = client.chat.completions.create(
        model=MODEL, messages=HI, max_completion_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in with_choices).strip()
    assert with_choices[-1].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1


def test_stop_and_the_same_seed(v1: tuple[Stack, openai.OpenAI]) -> None:
    _, client = v1
    kwargs = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Count to ten."}],
        "seed": 3,
        "max_tokens": 30,
    }
    assert client.chat.completions.create(**kwargs).choices[0].message.content == (
        client.chat.completions.create(**kwargs).choices[0].message.content
    )
    stopped = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "1, 2, 3, 4, 5,"}], stop=["7"], temperature=0
    )
    assert "7" not in (stopped.choices[0].message.content or "")


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "person", "schema": {
            "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}},
    ],
    ids=["json-object", "json-schema"],
)  # fmt: skip
def test_response_format(v1: tuple[Stack, openai.OpenAI], response_format: dict) -> None:
    _, client = v1
    messages = [{"role": "user", "content": 'Reply with JSON: {"name": "Ada"}'}]
    answer = client.chat.completions.create(
        model=MODEL, messages=messages, response_format=response_format, temperature=0
    )  # type: ignore[call-overload]
    assert isinstance(json.loads(answer.choices[0].message.content or ""), dict)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_tool_calls(v1: tuple[Stack, openai.OpenAI], stream: bool) -> None:
    _, client = v1
    schema = {
        "type": "object",
        "properties": {"name": {"enum": ["get_weather"]}, "arguments": {
            "type": "object", "properties": {"city": {"enum": ["Paris"]}}, "required": ["city"]}},
        "required": ["name", "arguments"],
    }  # fmt: skip
    answer = client.chat.completions.create(
        model="thinker:test",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],  # type: ignore[list-item]
        response_format={"type": "json_schema", "json_schema": {"name": "call", "schema": schema}},
        reasoning_effort="none",
        temperature=0,
        stream=stream,
    )  # type: ignore[call-overload]
    if stream:
        chunks = [c for c in answer if c.choices]
        calls = [t for c in chunks for t in c.choices[0].delta.tool_calls or []]
        reason = chunks[-1].choices[0].finish_reason
    else:
        calls, reason = answer.choices[0].message.tool_calls, answer.choices[0].finish_reason
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert calls[0].id.startswith("call_") and calls[0].type == "function"
    assert reason == "tool_calls"


def test_a_tool_result_conversation(v1: tuple[Stack, openai.OpenAI]) -> None:
    _, client = v1
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22 degrees"},
    ]  # fmt: skip
    answer = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=[WEATHER],
        max_tokens=10,
        temperature=0,  # type: ignore[arg-type]
    )
    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_reasoning_comes_back_for_a_thinking_model(v1: tuple[Stack, openai.OpenAI]) -> None:
    _, client = v1
    answer = client.chat.completions.create(
        model="thinker:test", messages=HI, reasoning_effort="low", max_tokens=20, temperature=0
    )
    extra = answer.choices[0].message.model_extra or {}
    assert extra.get("reasoning")


def test_legacy_completions(v1: tuple[Stack, openai.OpenAI]) -> None:
    _, client = v1
    answer = client.completions.create(model=MODEL, prompt="1, 2, 3,", max_tokens=5, temperature=0)
    assert answer.object == "text_completion" and answer.choices[0].text
    assert answer.choices[0].finish_reason == "length" and answer.usage is not None
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt="1, 2, 3,",
            max_tokens=5,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == answer.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_models(v1: tuple[Stack, openai.OpenAI]) -> None:
    _, client = v1
    listed = {m.id: m for m in client.models.list()}
    assert {MODEL, "thinker:test"} <= set(listed)
    assert listed[MODEL].owned_by == "library" and listed[MODEL].object == "model"
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope:1")


def test_embeddings(v1: tuple[Stack, openai.OpenAI]) -> None:
    _, client = v1
    floats = client.embeddings.create(model=MODEL, input=["The sky is blue.", "Grass is green."])
    assert [d.index for d in floats.data] == [0, 1] and floats.usage.prompt_tokens > 0
    vector = floats.data[0].embedding
    assert math.isclose(sum(x * x for x in vector), 1.0, rel_tol=1e-5)
    short = client.embeddings.create(model=MODEL, input="The sky is blue.", dimensions=16)
    assert len(short.data[0].embedding) == 16
    raw = httpx.post(
        f"{v1[0].url}/v1/embeddings",
        json={"model": MODEL, "input": "The sky is blue.", "encoding_format": "base64"},
        timeout=60,
    ).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(packed) // 4}f", packed)) == pytest.approx(vector, rel=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"model": "nope", "messages": HI}, 404, "model 'nope' not found"),
        ({"model": MODEL, "messages": []}, 400, "[] is too short - 'messages'"),
        ({"model": MODEL, "messages": HI, "reasoning_effort": "extreme"}, 400,
         'invalid reasoning value: "extreme" (must be "minimal", "low", "medium", "high", "xhigh", "ultra", '
         '"max", or "none")'),
        ({"model": MODEL, "messages": HI, "tool_choice": "required", "tools": [WEATHER]}, 400,
         'tool_choice other than "auto" or "none" is not supported'),
        ({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url",
          "image_url": {"url": "https://example.com/cat.png"}}]}]}, 400,
         "image URLs are not currently supported, please use base64 encoded data instead"),
        ({"model": MODEL, "messages": HI, "reasoning_effort": "high"}, 400,
         '"smollm2:135m" does not support thinking'),
        ({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "input_audio",
          "input_audio": {"data": "UklGRg==", "format": "wav"}}]}]}, 400,
         "audio input is not supported: corral has no engine for audio models"),
        ({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "input_audio",
          "input_audio": {"format": "wav"}}]}]}, 400, "invalid input_audio format: missing data"),
        ({"model": MODEL, "messages": [{"role": "tool", "content": "x"}, {"role": "user", "content": "y",
          "tool_calls": 7}]}, 400,
         "json: cannot unmarshal number into Go struct field Message.messages.tool_calls of type "
         "[]openai.ToolCall"),
    ],
    ids=["unknown-model", "no-messages", "bad-effort", "tool-choice", "image-url", "no-thinking", "audio",
         "audio-without-data", "tool-calls-not-a-list"],
)  # fmt: skip
def test_errors_have_openais_shape(
    v1: tuple[Stack, openai.OpenAI], body: dict, status: int, message: str
) -> None:
    response = httpx.post(f"{v1[0].url}/v1/chat/completions", json=body, timeout=60)
    kind = "not_found_error" if status == 404 else "invalid_request_error"
    assert response.status_code == status
    assert response.json() == {"error": {"message": message, "type": kind, "param": None, "code": None}}


def test_audio_transcription_is_refused_clearly(v1: tuple[Stack, openai.OpenAI]) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        v1[1].audio.transcriptions.create(model=MODEL, file=("a.wav", b"RIFF0000WAVE", "audio/wav"))
    assert refused.value.message.endswith(
        "audio input is not supported: corral has no engine for audio models"
    )
