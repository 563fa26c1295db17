"""Splitting answers into content, thinking and tool calls: Ollama's own parser tables
(thinking/parser_test.go, tools/tools_test.go), with tags inferred from the same templates."""

from __future__ import annotations

from typing import Any

import pytest

from services.gotemplate import parse
from services.worker.output import ModelParser
from services.worker.thinking import ThinkingParser
from services.worker.tools import ToolCallParser

P = pytest.param


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        P(["<think> internal </think> world"], [("internal ", "world")], id="whole"),
        P(["<think>a</think><think>b</think>c"], [("a", "<think>b</think>c")], id="one-block-only"),
        P(["no think"], [("", "no think")], id="no-thinking"),
        P(["  abc", "def"], [("", "  abc"), ("", "def")], id="content-first-keeps-whitespace"),
        P(["  abc <think>def</think> ghi"], [("", "  abc <think>def</think> ghi")], id="late-tag-is-content"),
        P(["  <th", "in", "k>a"], [("", ""), ("", ""), ("a", "")], id="opening-tag-in-parts"),
        P(["<think>abc</th", "ink>def"], [("abc", ""), ("", "def")], id="closing-tag-in-parts"),
        P(
            ["<think>abc</th", "ing>def", "ghi</thi", "nk>jkl"],
            [("abc", ""), ("</thing>def", ""), ("ghi", ""), ("", "jkl")],
            id="closing-tag-fakeout",
        ),
        P(["  <think>abc</think>\n\ndef"], [("abc", "def")], id="whitespace-after-closing"),
        P(["  <think>abc</think>", "\n\ndef"], [("abc", ""), ("", "def")], id="whitespace-across-steps"),
    ],
)
def test_thinking_parser(steps: list[str], expected: list[tuple[str, str]]) -> None:
    parser = ThinkingParser("<think>", "</think>")
    assert [parser.add(step) for step in steps] == expected


def test_thinking_left_open_is_flushed_as_thinking() -> None:
    parser = ThinkingParser("<think>", "</think>")
    assert parser.add("<think>still going </th") == ("still going ", "")
    assert parser.flush() == ("</th", "")


QWEN = (
    '{{if .ToolCalls}}<tool_call>{{range .ToolCalls}}{"name": "{{.Function.Name}}", '
    '"arguments": {{.Function.Arguments}}}{{end}}</tool_call>{{end}}'
)
MISTRAL = (
    '{{if .ToolCalls}}[TOOL_CALLS] [{{range .ToolCalls}}{"name": "{{.Function.Name}}", '
    '"arguments": {{.Function.Arguments}}}{{end}}][/TOOL_CALLS]{{end}}'
)
JSON = (
    '{{if .ToolCalls}}{{range .ToolCalls}}{"name": "{{.Function.Name}}", '
    '"arguments": {{.Function.Arguments}}}{{end}}{{end}}'
)
DEEPSEEK = (
    "{{if .ToolCalls}}<|tool▁calls▁begin|>{{range .ToolCalls}}<|tool▁call▁begin|>function<|tool▁sep|>"
    'get_current_weather\n```json\n{"location": "Tokyo"}\n```<|tool▁call▁end|>{{end}}'
    "<|tool▁calls▁end|><|end▁of▁sentence|>{{end}}"
)
TOOLS = [
    {"type": "function", "function": {"name": name}}
    for name in ("get_temperature", "get_conditions", "say_hello", "say_hello_world", "get_address", "add")
]


def calls_of(template: str, steps: list[str]) -> tuple[list[tuple[str, dict[str, Any], int]], str]:
    parser = ToolCallParser(parse(template).tool_call_tag(), TOOLS)
    calls, content = [], ""
    for step in steps:
        found, text = parser.add(step)
        calls += [(c["function"]["name"], c["function"]["arguments"], c["function"]["index"]) for c in found]
        content += text
    return calls, content + parser.flush()


@pytest.mark.parametrize(
    ("template", "steps", "calls", "content"),
    [
        P(QWEN, ["Hello, how can I help you today?"], [], "Hello, how can I help you today?", id="text"),
        P(QWEN, [""], [], "", id="empty"),
        P(
            QWEN,
            ['<tool_call>{"name": "get_conditions", "arguments": {"location": "San Francisco"}}</tool_call>'],
            [("get_conditions", {"location": "San Francisco"}, 0)],
            "",
            id="call",
        ),
        P(
            QWEN,
            ['<tool_call>{"name": "get_conditions", "arguments": {}}</tool_call>'],
            [("get_conditions", {}, 0)],
            "",
            id="empty-arguments",
        ),
        P(
            QWEN,
            [
                "Let me check the weather. "
                '<tool_call>{"name": "get_temperature", "arguments": {"city": "New York"}}'
            ],
            [("get_temperature", {"city": "New York"}, 0)],
            "Let me check the weather. ",
            id="text-before-call",
        ),
        P(
            QWEN,
            ["Let me say hello to the user. I'll use the say_hello tool. "],
            [],
            "Let me say hello to the user. I'll use the say_hello tool. ",
            id="tool-named-in-text",
        ),
        P(
            MISTRAL,
            [
                '[TOOL_CALLS] [{"name": "get_temperature", '
                '"arguments": {"city": "London", "format": "fahrenheit"}},'
                ' {"name": "get_conditions", "arguments": {"location": "Tokyo"}}][/TOOL_CALLS]'
            ],
            [
                ("get_temperature", {"city": "London", "format": "fahrenheit"}, 0),
                ("get_conditions", {"location": "Tokyo"}, 1),
            ],
            "",
            id="list-of-two",
        ),
        P(
            QWEN,
            [
                'Okay, both! <tool_call>{"name": "say_hello", "arguments": {}}</tool_call>'
                '<tool_call>{"name": "get_temperature", "arguments": {"city": "London"}}</tool_call>'
            ],
            [("say_hello", {}, 0), ("get_temperature", {"city": "London"}, 1)],
            "Okay, both! ",
            id="two-calls",
        ),
        P(
            DEEPSEEK,
            [
                "<think>Wait, I need",
                " to call a tool</think><|too",
                "l▁calls▁begin",
                "|>",
                "<|tool▁call▁begin|>function<|tool▁sep|>get_temperature\n",
                "```json\n",
                '{"city": "Tokyo"}\n',
                "```",
                "<|tool▁c",
                "all▁end|>",
                "<|tool▁calls▁end|>",
                "<|end▁of▁sentence|>",
            ],
            [("get_temperature", {"city": "Tokyo"}, 0)],
            "<think>Wait, I need to call a tool</think>",
            id="deepseek-incremental",
        ),
        P(
            JSON,
            ['{"name": "get_address", "arguments": {"location": "Tokyo"}}'],
            [("get_address", {"location": "Tokyo"}, 0)],
            "",
            id="bare-json",
        ),
        P(JSON, ['The answer is {"a": 1}'], [], 'The answer is {"a": 1}', id="bare-json-after-text-is-text"),
    ],
)
def test_tool_call_parser(template: str, steps: list[str], calls: list[Any], content: str) -> None:
    assert calls_of(template, steps) == (calls, content)


def test_model_parser_thinks_then_calls_tools_with_ids() -> None:
    parser = ModelParser(ThinkingParser("<think>", "</think>"), ToolCallParser("<tool_call>", TOOLS))
    parsed = parser.add('<think>hmm</think><tool_call>{"name": "add", "arguments": {"a": "1", "b": "2"}}')
    assert parsed.thinking == "hmm" and parsed.content == ""
    call = parsed.tool_calls[0]
    assert call["function"] == {"index": 0, "name": "add", "arguments": {"a": "1", "b": "2"}}
    assert call["id"].startswith("call_") and len(call["id"]) == 13
