"""OpenAI's Responses API (/v1/responses), driven by the official `openai` client, unmodified."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import ResponseFunctionToolCall

from tests.models import THINKING_TOOLS_TEMPLATE, add_model
from tests.stack import MODEL, Stack

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
# A schema only a call of get_weather for Paris fits: the model's answer is that call.
CALL_SCHEMA = {
    "type": "object",
    "properties": {"name": {"enum": ["get_weather"]}, "arguments": {
        "type": "object", "properties": {"city": {"enum": ["Paris"]}}, "required": ["city"]}},
    "required": ["name", "arguments"],
}  # fmt: skip
CALL_FORMAT: Any = {"format": {"type": "json_schema", "name": "call", "schema": CALL_SCHEMA}}
NAME_SCHEMA = {"type": "object", "properties": {"name": {"enum": ["Ada"]}}, "required": ["name"]}
NAME_FORMAT: Any = {"format": {"type": "json_schema", "name": "person", "schema": NAME_SCHEMA}}


@pytest.fixture(scope="module")
def v1(tmp_path_factory: pytest.TempPathFactory, nats_binary: Path) -> Iterator[tuple[Stack, openai.OpenAI]]:
    """A stack with a model that thinks and calls tools (the `stack` fixture has only MODEL)."""
    root = tmp_path_factory.mktemp("responses")
    add_model(root / "models", "thinker:test", THINKING_TOOLS_TEMPLATE)
    stack = Stack(root, nats_binary).start()
    yield stack, openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused")
    stack.stop()


def test_a_response(v1: tuple[Stack, openai.OpenAI]) -> None:
    _, client = v1
    response = client.responses.create(model=MODEL, input="Say hi", max_output_tokens=8, temperature=0)
    assert response.id.startswith("resp_") and response.object == "response" and response.model == MODEL
    assert response.output_text and response.output[0].type == "message"
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.output_tokens == 8
    assert response.usage.total_tokens == response.usage.input_tokens + 8 and response.usage.input_tokens > 0


def test_a_streamed_response(v1: tuple[Stack, openai.OpenAI]) -> None:
    _, client = v1
    events = list(client.responses.create(model=MODEL, input="Say hi", max_output_tokens=8, stream=True))
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.incomplete" and types.count("response.incomplete") == 1
    assert [event.sequence_number for event in events] == list(range(len(events)))
    final = events[-1].response  # type: ignore[union-attr]
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas and deltas == final.output_text
    assert final.usage is not None and final.usage.output_tokens == 8
    assert len({event.response.id for event in events if hasattr(event, "response")}) == 1


def test_a_streamed_response_that_completes(v1: tuple[Stack, openai.OpenAI]) -> None:
    """The client's own stream helper checks the events add up to the final response."""
    _, client = v1
    with client.responses.stream(
        model=MODEL, input='Reply with JSON: {"name": "Ada"}', text=NAME_FORMAT
    ) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert {"response.output_text.delta", "response.output_text.done", "response.content_part.done"} <= set(
        types
    )
    assert final.status == "completed" and json.loads(final.output_text) == {"name": "Ada"}


def test_instructions_are_a_system_message(v1: tuple[Stack, openai.OpenAI]) -> None:
    """The same prompt as a system message in the input: the same number of input tokens."""
    _, client = v1
    french = "Always answer in French."
    instructed = client.responses.create(
        model=MODEL, input="Say hi", instructions=french, max_output_tokens=1
    )
    system = [{"role": "system", "content": french}, {"role": "user", "content": "Say hi"}]
    as_input = client.responses.create(model=MODEL, input=system, max_output_tokens=1)  # type: ignore[arg-type]
    plain = client.responses.create(model=MODEL, input="Say hi", max_output_tokens=1)
    assert instructed.instructions == french and as_input.instructions is None
    assert instructed.usage is not None and as_input.usage is not None and plain.usage is not None
    assert instructed.usage.input_tokens == as_input.usage.input_tokens != plain.usage.input_tokens


@pytest.mark.parametrize(
    "text",
    [{"format": {"type": "json_object"}}, NAME_FORMAT],
    ids=["json-object", "json-schema"],
)
def test_text_format_gives_json(v1: tuple[Stack, openai.OpenAI], text: Any) -> None:
    _, client = v1
    response = client.responses.create(
        model=MODEL, input='Reply with JSON: {"name": "Ada"}', text=text, temperature=0
    )
    assert isinstance(json.loads(response.output_text), dict)
    assert response.text.format.type == text["format"]["type"]  # type: ignore[union-attr]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_function_call_round_trip(v1: tuple[Stack, openai.OpenAI], stream: bool) -> None:
    _, client = v1
    ask: Any = [{"role": "user", "content": "Weather in Paris?"}]
    settings: Any = {"model": "thinker:test", "tools": [WEATHER], "reasoning": {"effort": "none"}}
    if stream:
        events = list(client.responses.create(input=ask, text=CALL_FORMAT, stream=True, **settings))
        types = [event.type for event in events]
        assert "response.function_call_arguments.done" in types and types[-1] == "response.completed"
        output = events[-1].response.output
    else:
        output = client.responses.create(input=ask, text=CALL_FORMAT, **settings).output
    [call] = [item for item in output if isinstance(item, ResponseFunctionToolCall)]
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    assert call.call_id.startswith("call_") and call.status == "completed"
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "22 degrees and sunny"}
    history: Any = [*ask, call, result]  # the call as the client returned it
    answer = client.responses.create(input=history, max_output_tokens=10, **settings)
    assert answer.status in ("completed", "incomplete") and answer.output


def test_reasoning_comes_back_as_a_reasoning_item(v1: tuple[Stack, openai.OpenAI]) -> None:
    _, client = v1
    response = client.responses.create(
        model="thinker:test", input="Say hi", reasoning={"effort": "low"}, max_output_tokens=20, temperature=0
    )
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary and reasoning.summary[0].text
    assert reasoning.encrypted_content == reasoning.summary[0].text
    assert response.reasoning is not None and response.reasoning.effort == "low"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_truncation_disabled_refuses_a_prompt_too_long(v1: tuple[Stack, openai.OpenAI], stream: bool) -> None:
    """The worker's refusal comes before any output, so even a stream answers with the HTTP error."""
    _, client = v1
    long = "word " * 3000  # past the default 2048-token context
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model=MODEL, input=long, truncation="disabled", max_output_tokens=1, stream=stream
        )
    assert caught.value.body["message"] == "the input length exceeds the context length"  # type: ignore[index]
    cut = client.responses.create(model=MODEL, input=long, truncation="auto", max_output_tokens=1)
    assert cut.truncation == "auto" and cut.usage is not None and cut.usage.input_tokens < 2048


def test_a_bad_request_is_the_clients_bad_request_error(v1: tuple[Stack, openai.OpenAI]) -> None:
    _, client = v1
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="Say hi", previous_response_id="resp_123")
    assert caught.value.status_code == 400
    assert caught.value.body == {
        "message": "previous_response_id is not supported: corral keeps no responses, "
        "send the whole conversation in input",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"model": "nope", "input": "hi"}, 404, "model 'nope' not found"),
        ({"model": MODEL, "input": [{"type": "bogus"}]}, 400, 'input[0]: unknown input item type: "bogus"'),
        ({"model": MODEL, "input": [{"content": "hi"}]}, 400,
         "input[0]: input item missing required 'type' field"),
        ({"model": MODEL, "input": 5}, 400, "input must be a string or array: json: cannot unmarshal number "
         "into Go value of type []json.RawMessage"),
        ({"model": MODEL, "input": "hi", "reasoning": {"effort": "high"}}, 400,
         '"smollm2:135m" does not support thinking'),
        ({"model": MODEL, "input": "hi", "tool_choice": "required", "tools": [WEATHER]}, 400,
         'tool_choice other than "auto" or "none" is not supported'),
        ({"input": "hi"}, 400, "model is required"),
    ],
    ids=["unknown-model", "unknown-item", "missing-type", "input-number", "no-thinking", "tool-choice",
         "no-model"],
)  # fmt: skip
def test_errors_have_openais_shape(
    v1: tuple[Stack, openai.OpenAI], body: dict[str, Any], status: int, message: str
) -> None:
    response = httpx.post(f"{v1[0].url}/v1/responses", json=body, timeout=60)
    kind = "not_found_error" if status == 404 else "invalid_request_error"
    assert response.status_code == status
    assert response.json() == {"error": {"message": message, "type": kind, "param": None, "code": None}}


def test_sse_framing(v1: tuple[Stack, openai.OpenAI]) -> None:
    """Each event is `event: <type>` then `data: <json>` whose type is the same."""
    body = {"model": MODEL, "input": "Say hi", "max_output_tokens": 2, "stream": True}
    with httpx.stream("POST", f"{v1[0].url}/v1/responses", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = [f for f in response.read().decode().split("\n\n") if f]
    for frame in frames:
        event, data = frame.split("\n")
        assert event.removeprefix("event: ") == json.loads(data.removeprefix("data: "))["type"]
