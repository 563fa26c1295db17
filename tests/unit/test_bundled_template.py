"""The bundled SmolLM2's own Ollama template: ChatML with tools (its GGUF's template has none)."""

from __future__ import annotations

from typing import Any

import pytest

from services.gotemplate import Message, ToolCall, parse, render_chat
from services.registry.bundled import BUNDLED_SYSTEM, BUNDLED_TEMPLATE
from tests.models import WEATHER

P = pytest.param
SMOLLM2 = BUNDLED_TEMPLATE


SMOLLM2_SYSTEM = BUNDLED_SYSTEM
SMOLLM2_CHAT = [
    Message("system", SMOLLM2_SYSTEM),
    Message("user", "What's the weather in Paris?"),
    Message("assistant", tool_calls=(ToolCall("get_weather", {"city": "Paris"}),)),
    Message("tool", "22"),
    Message("assistant", "It is 22 degrees."),
    Message("user", "And Toronto?"),
]
SMOLLM2_TOOLS_PROMPT = (
    "<|im_start|>system\n"
    "You are an expert in composing functions. You are given a question and a set of possible functions.\n"
    "Based on the question, you will need to make one or more function/tool calls to achieve the purpose.\n"
    "If none of the functions can be used, point it out and refuse to answer.\n"
    "If the given question lacks the parameters required by the function, also point it out.\n\n"
    "You have access to the following tools:\n"
    '<tools>[{"type":"function","function":{"name":"get_weather","description":"Get the weather in a city",'
    '"parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string"}}}}}]</tools>\n\n'
    "The output MUST strictly adhere to the following format, and NO other text MUST be included.\n"
    "The example format is as follows. Please make sure the parameter type is correct. "
    "If no function call is needed, please make the tool calls an empty list '[]'.\n"
    "<tool_call>[\n"
    '{"name": "func_name1", "arguments": {"argument1": "value1", "argument2": "value2"}},\n'
    "(more tool calls as required)\n"
    "]</tool_call><|im_end|>\n"
)
SMOLLM2_TURNS = (
    "<|im_start|>user\nWhat's the weather in Paris?<|im_end|>\n"
    "<|im_start|>assistant\n"
    '<tool_call>[\n{"name": "get_weather", "arguments": {"city":"Paris"}}\n]</tool_call><|im_end|>\n'
    "<|im_start|>user\n<tool_response>\n22\n</tool_response><|im_end|>\n"
    "<|im_start|>assistant\nIt is 22 degrees.<|im_end|>\n"
    "<|im_start|>user\nAnd Toronto?<|im_end|>\n"
    "<|im_start|>assistant\n"
)


@pytest.mark.parametrize(
    ("tools", "expected"),
    [
        P([WEATHER], SMOLLM2_TOOLS_PROMPT + SMOLLM2_TURNS, id="with-tools"),
        P(None, f"<|im_start|>system\n{SMOLLM2_SYSTEM}<|im_end|>\n" + SMOLLM2_TURNS, id="without-tools"),
    ],
)
def test_smollm2_template(tools: Any, expected: str) -> None:
    template = parse(SMOLLM2)
    assert render_chat(template, SMOLLM2_CHAT, tools=tools).text == expected


def test_smollm2_capabilities() -> None:
    template = parse(SMOLLM2)
    assert "tools" in template.variables()
    assert "suffix" not in template.variables()
    assert template.thinking_tags() == ("", "")


def test_smollm2_writes_tool_calls_after_its_tag() -> None:
    assert parse(SMOLLM2).tool_call_tag() == "<tool_call>["
