"""Anthropic's Messages API, driven by the official `anthropic` client, unmodified."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest

from tests.models import THINKING_TOOLS_TEMPLATE, add_model
from tests.stack import MODEL, Stack

HI = [{"role": "user", "content": "Say hi"}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def messages_api(
    tmp_path_factory: pytest.TempPathFactory, nats_binary: Path
) -> Iterator[tuple[Stack, anthropic.Anthropic]]:
    root = tmp_path_factory.mktemp("anthropic")
    add_model(root / "models", "thinker:test", THINKING_TOOLS_TEMPLATE)
    stack = Stack(root, nats_binary).start()
    yield stack, anthropic.Anthropic(base_url=stack.url, api_key="unused")
    stack.stop()


def test_a_message(messages_api: tuple[Stack, anthropic.Anthropic]) -> None:
    _, client = messages_api
    # temperature 0: greedy, so the answer never ends before max_tokens on one run and not another
    message = client.messages.create(
        model=MODEL, max_tokens=8, system="Be brief.", messages=HI, extra_body={"temperature": 0}
    )
    assert message.id.startswith("msg_") and message.role == "assistant" and message.model == MODEL
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 8 and message.usage.input_tokens > 0


def test_a_streamed_message(messages_api: tuple[Stack, anthropic.Anthropic]) -> None:
    _, client = messages_api
    # temperature 0: greedy, so the answer (and where it ends) is the same on every run
    with client.messages.stream(
        model=MODEL, max_tokens=8, messages=HI, extra_body={"temperature": 0}
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text  # type: ignore[union-attr]
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 8


def test_thinking_comes_back_as_a_thinking_block(messages_api: tuple[Stack, anthropic.Anthropic]) -> None:
    _, client = messages_api
    message = client.messages.create(
        model="thinker:test",
        max_tokens=30,
        messages=HI,
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_body={"temperature": 0},  # greedy: random sampling could end before any thinking
    )
    assert message.content[0].type == "thinking" and message.content[0].thinking


def test_thinking_asked_of_a_model_that_cannot_is_ignored(
    messages_api: tuple[Stack, anthropic.Anthropic],
) -> None:
    """Ollama relaxes `thinking` on this API: the answer comes, without thinking."""
    _, client = messages_api
    message = client.messages.create(
        model=MODEL, max_tokens=5, messages=HI, thinking={"type": "enabled", "budget_tokens": 1024}
    )
    assert [block.type for block in message.content] == ["text"]


def test_tools_and_a_tool_result_conversation(messages_api: tuple[Stack, anthropic.Anthropic]) -> None:
    _, client = messages_api
    message = client.messages.create(
        model=MODEL,
        max_tokens=10,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather",
                                               "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1",
                                          "content": "22 degrees"}]},
        ],
    )  # fmt: skip
    assert message.stop_reason in ("end_turn", "max_tokens", "tool_use") and message.content


@pytest.mark.parametrize(
    ("body", "status", "kind", "text"),
    [
        ({"model": "nope", "max_tokens": 5, "messages": HI}, 404, "not_found_error",
         "model 'nope' not found"),
        ({"model": MODEL, "messages": HI}, 400, "invalid_request_error",
         "max_tokens is required and must be positive"),
        ({"model": MODEL, "max_tokens": 5, "messages": HI, "tools": [WEATHER_TOOL]}, 200, "", ""),
    ],
    ids=["unknown-model", "no-max-tokens", "tools-accepted"],
)  # fmt: skip
def test_errors_have_anthropics_shape(
    messages_api: tuple[Stack, anthropic.Anthropic], body: dict, status: int, kind: str, text: str
) -> None:
    response = httpx.post(f"{messages_api[0].url}/v1/messages", json=body, timeout=60)
    assert response.status_code == status
    if status != 200:
        error = response.json()
        assert error["type"] == "error" and error["error"] == {"type": kind, "message": text}
        assert error["request_id"].startswith("req_")
