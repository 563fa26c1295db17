"""OpenAI's Responses API as Ollama implements it, ported from ollama/openai/responses_test.go,
with corral's deliberate differences (refusals, incomplete answers, closed items) pinned too."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from services.gateway import responses_format as rf
from services.gateway.bodies import ChatBody
from services.gateway.openai_format import OpenAIRequestError
from services.protocol import Chunk, Done, ToolCall

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
WEATHER_ARGS = '{"city":"Paris"}'


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-oss:20b", **fields}


def messages(*items: dict[str, Any], **fields: Any) -> list[dict[str, Any]]:
    """The native messages of a request with these input items."""
    return rf.chat_body(body(input=list(items), **fields))["messages"]  # type: ignore[no-any-return]


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def assistant(text: Any) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text}] if isinstance(text, str) else text
    return {"type": "message", "role": "assistant", "content": content}


def call_item(call_id: str, name: str, arguments: str = "{}") -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


def output_item(call_id: str, output: Any) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def reasoning(thinking: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": "rs_1", "encrypted_content": thinking, "summary": []}


def native_call(call_id: str, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": call_id, "function": {"name": name, "arguments": arguments or {}}}


def tool_call(name: str, arguments: dict[str, Any], cid: str = "call_abc") -> ToolCall:
    return ToolCall.model_validate({"id": cid, "function": {"name": name, "arguments": arguments}})


def refused(data: dict[str, Any]) -> str:
    with pytest.raises(OpenAIRequestError) as caught:
        rf.chat_body(data)
    return str(caught.value)


# ---- requests


def test_string_input() -> None:
    translated = rf.chat_body(body(input="hello"))
    assert translated == {
        "model": "gpt-oss:20b",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": False,
        "options": {"temperature": 1.0},
    }
    ChatBody.model_validate(translated)  # what the route validates it with


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([user("hello")], [{"role": "user", "content": "hello"}]),
        (
            [{"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "hello"}, {"type": "input_text", "text": " world"}]}],
            [{"role": "user", "content": "hello world"}],
        ),
        (
            [{"type": "message", "role": "system",
              "content": [{"type": "input_text", "text": "you are helpful"}]}, user("hello")],
            [{"role": "system", "content": "you are helpful"}, {"role": "user", "content": "hello"}],
        ),
        ([{"role": "user", "content": "What is the weather in Tokyo?"}],
         [{"role": "user", "content": "What is the weather in Tokyo?"}]),
        ([{"type": "message", "role": "system", "content": "You are helpful"}],
         [{"role": "system", "content": "You are helpful"}]),
        ([{"role": "developer", "content": "Be brief"}], [{"role": "system", "content": "Be brief"}]),
        (
            [{"role": "user", "content": "Hello"}, assistant("Hi there!"),
             {"role": "user", "content": "How are you?"}],
            [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there!"},
             {"role": "user", "content": "How are you?"}],
        ),
        ([{"role": "user", "content": None}], [{"role": "user", "content": ""}]),
        (
            [{"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "What is in this image?"},
                {"type": "input_image", "detail": "auto", "image_url": f"data:image/png;base64,{PNG}"}]}],
            [{"role": "user", "content": "What is in this image?", "images": [PNG]}],
        ),
    ],
    ids=["text", "several-parts", "system-and-user", "shorthand", "string-content", "developer",
         "output-text-history", "null-content", "image"],
)  # fmt: skip
def test_input_messages(items: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert messages(*items) == expected


def test_instructions_lead_as_a_system_message() -> None:
    assert rf.chat_body(body(instructions="You are a helpful pirate.", input="Hello"))["messages"] == [
        {"role": "system", "content": "You are a helpful pirate."},
        {"role": "user", "content": "Hello"},
    ]


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (
            [user("what is the weather?"), call_item("call_abc123", "get_weather", WEATHER_ARGS),
             output_item("call_abc123", "sunny, 72F")],
            [{"role": "user", "content": "what is the weather?"},
             {"role": "assistant", "content": "", "tool_calls": [
                 native_call("call_abc123", "get_weather", {"city": "Paris"})]},
             {"role": "tool", "content": "sunny, 72F", "tool_call_id": "call_abc123",
              "tool_name": "get_weather"}],
        ),
        (
            [call_item("call_abc123", "get_weather"),
             output_item("call_abc123", [{"type": "input_text", "text": "sunny"},
                                         {"type": "input_text", "text": ", 72F"}])],
            [{"role": "assistant", "content": "", "tool_calls": [native_call("call_abc123", "get_weather")]},
             {"role": "tool", "content": "sunny, 72F", "tool_call_id": "call_abc123",
              "tool_name": "get_weather"}],
        ),
        (
            [call_item("call_abc123", "inspect_image"),
             output_item("call_abc123", [{"type": "input_text", "text": "attached image"},
                                         {"type": "input_image", "detail": "auto",
                                          "image_url": f"data:image/png;base64,{PNG}"}])],
            [{"role": "assistant", "content": "",
              "tool_calls": [native_call("call_abc123", "inspect_image")]},
             {"role": "tool", "content": "attached image", "images": [PNG], "tool_call_id": "call_abc123",
              "tool_name": "inspect_image"}],
        ),
        (
            [user("what is the weather?"), assistant("I'll check the weather for you."),
             call_item("call_abc123", "get_weather", WEATHER_ARGS)],
            [{"role": "user", "content": "what is the weather?"},
             {"role": "assistant", "content": "I'll check the weather for you.", "tool_calls": [
                 native_call("call_abc123", "get_weather", {"city": "Paris"})]}],
        ),
        (
            [user("check weather and time"), assistant("I'll check both."),
             call_item("call_1", "get_weather"), call_item("call_2", "get_time")],
            [{"role": "user", "content": "check weather and time"},
             {"role": "assistant", "content": "I'll check both.", "tool_calls": [
                 native_call("call_1", "get_weather"), native_call("call_2", "get_time")]}],
        ),
        (
            [user("do multiple things"), assistant("First batch."), call_item("call_1", "func_a"),
             call_item("call_2", "func_b"), assistant("Second batch."), call_item("call_3", "func_c")],
            [{"role": "user", "content": "do multiple things"},
             {"role": "assistant", "content": "First batch.", "tool_calls": [
                 native_call("call_1", "func_a"), native_call("call_2", "func_b")]},
             {"role": "assistant", "content": "Second batch.",
              "tool_calls": [native_call("call_3", "func_c")]}],
        ),
        (
            [user("think and act"), reasoning("Let me think..."), assistant("I thought about it."),
             call_item("call_1", "do_thing")],
            [{"role": "user", "content": "think and act"},
             {"role": "assistant", "content": "I thought about it.", "thinking": "Let me think...",
              "tool_calls": [native_call("call_1", "do_thing")]}],
        ),
        (
            [user("complex task"), reasoning("Thinking first..."),
             {"type": "message", "role": "assistant", "content": ""}, call_item("call_1", "think_action"),
             assistant("Now doing more."), call_item("call_2", "action_a"), call_item("call_3", "action_b")],
            [{"role": "user", "content": "complex task"},
             {"role": "assistant", "content": "", "thinking": "Thinking first...",
              "tool_calls": [native_call("call_1", "think_action")]},
             {"role": "assistant", "content": "Now doing more.", "tool_calls": [
                 native_call("call_2", "action_a"), native_call("call_3", "action_b")]}],
        ),
        (
            [{"role": "user", "content": "Find Ollama and inspect the current directory."},
             call_item("call_test", "exec_command", '{"cmd":"pwd"}'),
             assistant("I found Ollama and will inspect the directory."), output_item("call_test", "/tmp")],
            [{"role": "user", "content": "Find Ollama and inspect the current directory."},
             {"role": "assistant", "content": "I found Ollama and will inspect the directory.",
              "tool_calls": [native_call("call_test", "exec_command", {"cmd": "pwd"})]},
             {"role": "tool", "content": "/tmp", "tool_call_id": "call_test", "tool_name": "exec_command"}],
        ),
        (
            [call_item("call_1", "f"), assistant("Part one."), call_item("call_2", "g"),
             assistant("Part two."), output_item("call_2", "done")],
            [{"role": "assistant", "content": "", "tool_calls": [native_call("call_1", "f")]},
             {"role": "assistant", "content": "Part one.\nPart two.",
              "tool_calls": [native_call("call_2", "g")]},
             {"role": "tool", "content": "done", "tool_call_id": "call_2", "tool_name": "g"}],
        ),
    ],
    ids=["round-trip", "output-parts", "output-image", "call-joins-message", "two-calls-join",
         "new-message-new-group", "reasoning-message-call", "mixed-thinking-and-calls",
         "message-between-call-and-output", "message-after-other-call"],
)  # fmt: skip
def test_function_calls(items: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert messages(*items) == expected


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (
            [user("solve 2+2"),
             {"type": "reasoning", "id": "rs_123",
              "encrypted_content": "Let me think about this math problem...",
              "summary": [{"type": "summary_text", "text": "Thinking about math"}]},
             {"type": "message", "role": "assistant",
              "content": [{"type": "input_text", "text": "The answer is 4"}]}],
            [{"role": "user", "content": "solve 2+2"},
             {"role": "assistant", "content": "The answer is 4",
              "thinking": "Let me think about this math problem..."}],
        ),
        (
            [user("what is the weather?"), reasoning("I need to call a tool for this..."),
             call_item("call_abc", "get_weather", WEATHER_ARGS)],
            [{"role": "user", "content": "what is the weather?"},
             {"role": "assistant", "content": "", "thinking": "I need to call a tool for this...",
              "tool_calls": [native_call("call_abc", "get_weather", {"city": "Paris"})]}],
        ),
        (
            [user("What is the weather in Paris?"), reasoning("I need to call the weather API for Paris."),
             call_item("call_abc", "get_weather", WEATHER_ARGS), output_item("call_abc", "Sunny, 72°F"),
             reasoning("The weather API returned sunny and 72°F."),
             assistant("It's sunny and 72°F in Paris!"), user("What about London?")],
            [{"role": "user", "content": "What is the weather in Paris?"},
             {"role": "assistant", "content": "", "thinking": "I need to call the weather API for Paris.",
              "tool_calls": [native_call("call_abc", "get_weather", {"city": "Paris"})]},
             {"role": "tool", "content": "Sunny, 72°F", "tool_call_id": "call_abc",
              "tool_name": "get_weather"},
             {"role": "assistant", "content": "It's sunny and 72°F in Paris!",
              "thinking": "The weather API returned sunny and 72°F."},
             {"role": "user", "content": "What about London?"}],
        ),
        (
            [user("think about this"), reasoning("Still thinking...")],
            [{"role": "user", "content": "think about this"},
             {"role": "assistant", "content": "", "thinking": "Still thinking..."}],
        ),
        (
            [user("hi"),
             {"type": "reasoning", "summary": [{"type": "summary_text", "text": "From the summary"}]},
             assistant("hello")],
            [{"role": "user", "content": "hi"},
             {"role": "assistant", "content": "hello", "thinking": "From the summary"}],
        ),
    ],
    ids=["with-message", "with-call", "multi-turn-with-tools", "trailing", "summary-only"],
)  # fmt: skip
def test_reasoning_merges(items: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert messages(*items) == expected


@pytest.mark.parametrize(
    ("effort", "think"),
    [(None, None), ("", None), ("low", "low"), ("medium", "medium"), ("high", "high"), ("max", "max"),
     ("minimal", "low"), ("xhigh", "max"), ("ultra", "max"), ("none", False)],
)  # fmt: skip
def test_reasoning_effort(effort: str | None, think: bool | str | None) -> None:
    assert rf.chat_body(body(input="hi", reasoning={"effort": effort})).get("think") == think


@pytest.mark.parametrize(
    ("fields", "options"),
    [
        ({}, {"temperature": 1.0}),
        ({"max_output_tokens": 100}, {"temperature": 1.0, "num_predict": 100}),
        ({"temperature": 0.5, "top_p": 0.9}, {"temperature": 0.5, "top_p": 0.9}),
        ({"temperature": 0, "top_p": None}, {"temperature": 0}),
    ],
    ids=["defaults", "max-output-tokens", "sampling", "zero-temperature"],
)
def test_options(fields: dict[str, Any], options: dict[str, Any]) -> None:
    assert rf.chat_body(body(input="hi", **fields))["options"] == options


PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ({"format": {"type": "json_schema", "name": "person", "strict": True, "schema": PERSON}}, PERSON),
        ({"format": {"type": "text"}}, None),
        ({"format": {"type": "json_object"}}, "json"),
        ({}, None),
        (None, None),
    ],
    ids=["json-schema", "text", "json-object", "no-format", "null"],
)
def test_text_format(text: Any, expected: Any) -> None:
    assert rf.chat_body(body(input="hi", text=text)).get("format") == expected


SHELL = {
    "type": "function",
    "name": "shell",
    "description": "Runs a shell command",
    "strict": False,
    "parameters": {
        "type": "object",
        "properties": {"command": {"type": "array", "items": {"type": "string"}}},
        "required": ["command"],
    },
}


def test_function_tools() -> None:
    assert rf.chat_body(body(input="hello", tools=[SHELL]))["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "shell",
                "description": "Runs a shell command",
                "parameters": SHELL["parameters"],
            },
        }
    ]


def test_namespace_tools_expand_to_qualified_names() -> None:
    member = {"type": "function", "description": "Reads a file", "parameters": {"type": "object"}}
    namespace = {
        "type": "namespace",
        "name": "muse",
        "description": "Muse Code tool set.",
        "tools": [{**member, "name": "bash"}, {**member, "name": "muse.read_file"}],
    }
    plain = {"type": "function", "name": "plain", "parameters": None}
    tools = rf.chat_body(body(input="hello", tools=[namespace, plain]))["tools"]
    assert [(t["type"], t["function"]["name"]) for t in tools] == [
        ("function", "muse.bash"),
        ("function", "muse.read_file"),
        ("function", "plain"),
    ]
    assert tools[0]["function"]["description"] == "Reads a file" and tools[2]["function"]["parameters"] == {}


@pytest.mark.parametrize(
    ("choice", "sent"), [(None, True), ("auto", True), ("none", False)], ids=["absent", "auto", "none"]
)
def test_tool_choice(choice: str | None, sent: bool) -> None:
    assert ("tools" in rf.chat_body(body(input="hi", tools=[SHELL], tool_choice=choice))) is sent


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"stream": True}, {"stream": True}),
        ({"truncation": "auto"}, {"truncate": True}),
        ({"truncation": "disabled"}, {"truncate": False}),
        ({"keep_alive": "5m"}, {"keep_alive": "5m"}),
        ({"store": True, "metadata": {"k": "v"}, "user": "u", "parallel_tool_calls": False,
          "include": ["reasoning.encrypted_content"], "text": {"verbosity": "low"},
          "reasoning": {"summary": "auto"}, "background": False, "previous_response_id": None}, {}),
    ],
    ids=["stream", "truncation-auto", "truncation-disabled", "keep-alive", "ignored-hints"],
)  # fmt: skip
def test_other_fields(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    translated = rf.chat_body(body(input="hi", **fields))
    base = {"model": "gpt-oss:20b", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    assert translated == {**base, "options": {"temperature": 1.0}, **expected}


def test_no_input_is_no_messages() -> None:
    """As in Ollama: the chat has no messages, so the model is only loaded."""
    assert rf.chat_body(body())["messages"] == []
    assert rf.chat_body(body(input=""))["messages"] == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input": 123}, "input must be a string or array: json: cannot unmarshal number into Go value "
         "of type []json.RawMessage"),
        ({"input": [{"type": "unknown_type"}]}, 'input[0]: unknown input item type: "unknown_type"'),
        ({"input": [user("hi"), {"content": "hello"}]}, "input[1]: input item missing required 'type' field"),
        ({"input": [{"type": ""}]}, "input[0]: input item missing required 'type' field"),
        ({"input": [None]}, "input[0]: input item missing required 'type' field"),
        ({"input": ["hi"]}, 'input[0]: json: cannot unmarshal string into Go value of type struct { '
         'Type string "json:\\"type\\""; Role string "json:\\"role\\"" }'),
        ({"input": [{"type": 5}]}, "input[0]: json: cannot unmarshal number into Go struct field .type of "
         "type string"),
        ({"input": [{"type": "message", "role": "user", "content": [{"type": "unknown"}]}]},
         "input[0]: content[0]: unknown content type: unknown"),
        ({"input": [{"role": "user", "content": 5}]}, "input[0]: content must be a string or array: json: "
         "cannot unmarshal number into Go value of type []json.RawMessage"),
        ({"input": [output_item("c", [{"type": "bogus"}])]},
         "input[0]: output[0]: unknown content type: bogus"),
        ({"input": [{**call_item("c", "f"), "arguments": {"a": 1}}]}, "input[0]: json: cannot unmarshal "
         "object into Go struct field ResponsesFunctionCall.arguments of type string"),
        ({"input": [call_item("c", "f", "{nope")]}, "failed to parse function call arguments: invalid JSON: "
         "Expecting property name enclosed in double quotes at offset 1"),
        ({"input": [call_item("c", "f", "[1]")]}, "failed to parse function call arguments: json: cannot "
         "unmarshal array into Go value of type orderedmap.OrderedMap[string,interface {}]"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
         "file inputs are not currently supported"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/a.png"}]}]},
         "image URLs are not currently supported, please use base64 encoded data instead"),
        ({"input": [{"role": "user",
                     "content": [{"type": "input_image", "image_url": "data:image/gif;base64,R0"}]}]},
         "invalid image input"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
         "input_image needs an image_url: images by file_id are not supported"),
        ({"input": [{"type": "web_search_call", "id": "ws_1", "status": "completed"}]},
         "input[0]: web_search_call items are not supported: corral runs no web searches"),
        ({"input": "hi", "reasoning": {"effort": "extreme"}}, 'invalid reasoning value: "extreme" (must be '
         '"minimal", "low", "medium", "high", "xhigh", "ultra", "max", or "none")'),
        ({"input": "hi", "temperature": "hot"}, "json: cannot unmarshal string into Go struct field "
         "ResponsesRequest.temperature of type float64"),
        ({"input": "hi", "max_output_tokens": 1.5}, "json: cannot unmarshal number 1.5 into Go struct field "
         "ResponsesRequest.max_output_tokens of type int"),
        ({"input": "hi", "stream": "yes"}, "json: cannot unmarshal string into Go struct field "
         "ResponsesRequest.stream of type bool"),
        ({"input": "hi", "tools": [{"type": "function", "name": 3}]}, "json: cannot unmarshal number into Go "
         "struct field ResponsesTool.tools.name of type string"),
        ({"input": "hi", "tools": [{"type": "function", "name": "f", "parameters": "x"}]},
         "json: cannot unmarshal string into Go struct field ResponsesTool.tools.parameters of type "
         "map[string]interface {}"),
        ({"input": "hi", "reasoning": {"effort": 1}}, "json: cannot unmarshal number into Go struct field "
         "ResponsesReasoning.reasoning.effort of type string"),
        ({"input": "hi", "text": {"format": "json"}}, "json: cannot unmarshal string into Go struct field "
         "ResponsesText.text.format of type openai.ResponsesTextFormat"),
        ({"input": "hi", "include": [1]}, "json: cannot unmarshal number into Go struct field "
         "ResponsesRequest.include of type string"),
    ],
    ids=["input-number", "unknown-item", "missing-type", "empty-type", "null-item", "string-item",
         "number-type", "unknown-part", "content-number", "unknown-output-part", "arguments-object",
         "arguments-invalid", "arguments-array", "file", "image-url", "image-gif", "image-file-id",
         "web-search-call", "bad-effort", "temperature-type", "max-tokens-float", "stream-type",
         "tool-name-type", "tool-parameters-type", "effort-type", "format-type", "include-type"],
)  # fmt: skip
def test_ollamas_refusals(fields: dict[str, Any], message: str) -> None:
    assert refused(body(**fields)) == message


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id is not supported: corral keeps no "
         "responses, send the whole conversation in input"),
        ({"conversation": "conv_1"}, "conversation is not supported: corral keeps no conversations, "
         "send the whole conversation in input"),
        ({"background": True}, "background responses are not supported"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt templates are not supported"),
        ({"max_tool_calls": 2}, "max_tool_calls is not supported"),
        ({"top_logprobs": 3}, "top_logprobs is not supported"),
        ({"include": ["message.output_text.logprobs"]},
         'include "message.output_text.logprobs" is not supported'),
        ({"tool_choice": "required", "tools": [SHELL]},
         'tool_choice other than "auto" or "none" is not supported'),
        ({"tool_choice": {"type": "function", "name": "shell"}, "tools": [SHELL]},
         'tool_choice other than "auto" or "none" is not supported'),
        ({"tools": [{"type": "web_search"}]},
         'tool type "web_search" is not supported: only function and namespace tools are'),
        ({"tools": [None]}, 'tool type "" is not supported: only function and namespace tools are'),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}},
         "text.format json_schema needs a schema object"),
        ({"text": {"format": {"type": "grammar"}}},
         'text.format type "grammar" is not supported: use "text", "json_object" or "json_schema"'),
        ({"truncation": "middle"}, 'truncation must be "auto" or "disabled", not "middle"'),
    ],
    ids=["previous-response-id", "conversation", "background", "prompt", "max-tool-calls", "top-logprobs",
         "include", "tool-choice-required", "tool-choice-function", "web-search-tool", "null-tool",
         "schema-missing", "format-type", "truncation"],
)  # fmt: skip
def test_corrals_refusals(fields: dict[str, Any], message: str) -> None:
    assert refused(body(input="hi", **fields)) == message


# ---- responses


def stream(*events: Chunk | Done, data: dict[str, Any] | None = None) -> list[rf.Event]:
    converter = rf.StreamConverter("resp_123", "gpt-oss:20b", data or {})
    return [e for event in events for e in converter.process(event)]


def done(reason: str = "stop") -> Done:
    return Done.model_validate({"done_reason": reason, "prompt_eval_count": 10, "eval_count": 5})


def names(events: list[rf.Event]) -> list[str]:
    return [name.removeprefix("response.") for name, _ in events]


def test_response_with_text() -> None:
    answer = rf.response("resp_123", "gpt-oss:20b", {}, [Chunk(text="Hello"), Chunk(text=" World")], done())
    Response.model_validate(answer)
    assert answer["id"] == "resp_123" and answer["object"] == "response" and answer["model"] == "gpt-oss:20b"
    assert answer["status"] == "completed" and answer["incomplete_details"] is None
    assert answer["completed_at"] >= answer["created_at"] > 0
    [message] = answer["output"]
    assert message["id"].startswith("msg_") and message["type"] == "message"
    assert message["status"] == "completed" and message["role"] == "assistant"
    assert message["content"] == [
        {"type": "output_text", "text": "Hello World", "annotations": [], "logprobs": []}
    ]
    assert answer["usage"] == {
        "input_tokens": 10,
        "output_tokens": 5,
        "total_tokens": 15,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }


def test_response_fields_and_defaults_as_ollama_echoes_them() -> None:
    answer = rf.response("resp_123", "m", {}, [Chunk(text="hi")], done())
    assert list(answer) == list(rf.RESPONSE_FIELDS)
    settled = {k: v for k, v in answer.items() if k not in ("created_at", "completed_at", "output", "usage")}
    assert settled == {
        "id": "resp_123", "object": "response", "status": "completed", "incomplete_details": None,
        "model": "m", "previous_response_id": None, "instructions": None, "error": None, "tools": [],
        "tool_choice": "auto", "truncation": "auto", "parallel_tool_calls": True,
        "text": {"format": {"type": "text"}}, "top_p": 1.0, "presence_penalty": 0, "frequency_penalty": 0,
        "top_logprobs": 0, "temperature": 1.0, "reasoning": None, "max_output_tokens": None,
        "max_tool_calls": None, "store": False, "background": False, "service_tier": "default",
        "metadata": {}, "safety_identifier": None, "prompt_cache_key": None,
    }  # fmt: skip


def test_response_echoes_the_request() -> None:
    text = {"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}}
    data = body(
        instructions="Be brief.", tools=[SHELL], tool_choice="none", truncation="disabled", text=text,
        top_p=0.5, temperature=0.2, reasoning={"effort": "low"}, max_output_tokens=9,
    )  # fmt: skip
    answer = rf.response("resp_123", "m", data, [], done())
    Response.model_validate(answer)
    assert answer["instructions"] == "Be brief." and answer["tools"] == [SHELL]
    assert answer["tool_choice"] == "none" and answer["truncation"] == "disabled" and answer["text"] == text
    assert (answer["top_p"], answer["temperature"], answer["max_output_tokens"]) == (0.5, 0.2, 9)
    assert answer["reasoning"] == {"effort": "low", "summary": None}


def test_response_with_reasoning() -> None:
    parts = [Chunk(thinking="Analyzing the question..."), Chunk(text="The answer is 42")]
    answer = rf.response("resp_123", "gpt-oss:20b", {}, parts, done())
    Response.model_validate(answer)
    reasoning, message = answer["output"]
    assert reasoning["id"].startswith("rs_") and reasoning["type"] == "reasoning"
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Analyzing the question..."}]
    assert reasoning["encrypted_content"] == "Analyzing the question..."
    assert message["type"] == "message" and message["content"][0]["text"] == "The answer is 42"


def test_response_with_tool_calls_keeps_the_text() -> None:
    calls = [tool_call("get_weather", {"city": "Paris"}), tool_call("get_time", {}, "call_def")]
    answer = rf.response("resp_123", "m", {}, [Chunk(text="Checking."), Chunk(tool_calls=calls)], done())
    Response.model_validate(answer)
    message, weather, time = answer["output"]
    assert message["content"][0]["text"] == "Checking."
    assert weather == {
        "id": weather["id"], "type": "function_call", "status": "completed", "call_id": "call_abc",
        "name": "get_weather", "arguments": '{"city": "Paris"}',
    }  # fmt: skip
    assert weather["id"].startswith("fc_") and weather["id"] != time["id"]
    assert (time["call_id"], time["arguments"]) == ("call_def", "{}")


def test_response_with_only_a_tool_call_has_no_message() -> None:
    answer = rf.response("resp_123", "m", {}, [Chunk(tool_calls=[tool_call("f", {})])], done())
    assert [item["type"] for item in answer["output"]] == ["function_call"]


@pytest.mark.parametrize("parts", [[], [Chunk(thinking="hmm")]], ids=["nothing", "only-thinking"])
def test_an_empty_answer_still_has_a_message(parts: list[Chunk]) -> None:
    answer = rf.response("resp_123", "m", {}, parts, done())
    assert answer["output"][-1]["type"] == "message" and answer["output"][-1]["content"][0]["text"] == ""


def test_a_cut_short_answer_is_incomplete() -> None:
    answer = rf.response("resp_123", "m", {"max_output_tokens": 5}, [Chunk(text="Once upon")], done("length"))
    Response.model_validate(answer)
    assert answer["status"] == "incomplete" and answer["completed_at"] is None
    assert answer["incomplete_details"] == {"reason": "max_output_tokens"}
    assert answer["output"][0]["content"][0]["text"] == "Once upon"


TEXT_START = ["created", "in_progress", "output_item.added", "content_part.added", "output_text.delta"]
TEXT_END = ["output_text.done", "content_part.done", "output_item.done"]
CALL = [
    "output_item.added",
    "function_call_arguments.delta",
    "function_call_arguments.done",
    "output_item.done",
]
REASONING_END = ["reasoning_summary_text.done", "output_item.done"]


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([Chunk(text="Hello"), Chunk(text=" World"), done()],
         [*TEXT_START, "output_text.delta", *TEXT_END, "completed"]),
        ([Chunk(tool_calls=[tool_call("get_weather", {"city": "Paris"})]), done()],
         ["created", "in_progress", *CALL, "completed"]),
        ([Chunk(thinking="Let me think..."), Chunk(text="The answer is 42"), done()],
         ["created", "in_progress", "output_item.added", "reasoning_summary_text.delta", *REASONING_END,
          "output_item.added", "content_part.added", "output_text.delta", *TEXT_END, "completed"]),
        ([Chunk(thinking="a", text="b"), done()],
         ["created", "in_progress", "output_item.added", "reasoning_summary_text.delta", *REASONING_END,
          "output_item.added", "content_part.added", "output_text.delta", *TEXT_END, "completed"]),
        ([Chunk(thinking="Weather?"), Chunk(tool_calls=[tool_call("get_weather", {})]), done()],
         ["created", "in_progress", "output_item.added", "reasoning_summary_text.delta", *REASONING_END,
          *CALL, "completed"]),
        ([Chunk(text="Checking."), Chunk(tool_calls=[tool_call("f", {}), tool_call("g", {}, "call_2")]),
          Chunk(text="Done."), done()],
         [*TEXT_START, *TEXT_END, *CALL, *CALL, "output_item.added", "content_part.added",
          "output_text.delta", *TEXT_END, "completed"]),
        ([Chunk(text="Once"), done("length")], [*TEXT_START, *TEXT_END, "incomplete"]),
        ([done()],
         ["created", "in_progress", "output_item.added", "content_part.added", *TEXT_END, "completed"]),
    ],
    ids=["text", "tool-call", "reasoning-then-text", "one-chunk", "reasoning-then-call", "text-calls-text",
         "cut-short", "empty"],
)  # fmt: skip
def test_stream_sequences(events: list[Chunk | Done], expected: list[str]) -> None:
    streamed = stream(*events)
    assert names(streamed) == expected
    for _, data in streamed:
        EVENTS.validate_python(data)  # each as OpenAI's client types it


def test_stream_event_bodies() -> None:
    streamed = stream(Chunk(text="Hello"), Chunk(text=" World"), done())
    created, in_progress, added, part_added, delta, delta2, text_done, part_done, item_done, completed = (
        data for _, data in streamed
    )
    assert created["response"]["status"] == "in_progress" and created["response"]["output"] == []
    assert created["response"]["usage"] is None and in_progress["response"] == created["response"]
    item_id = added["item"]["id"]
    item = {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
    assert added == {
        "type": "response.output_item.added",
        "output_index": 0,
        "item": item,
        "sequence_number": 2,
    }
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    assert part_added == {"type": "response.content_part.added", **where, "part": empty, "sequence_number": 3}
    assert delta == {
        "type": "response.output_text.delta",
        **where,
        "delta": "Hello",
        "logprobs": [],
        "sequence_number": 4,
    }
    assert delta2["delta"] == " World" and delta2["sequence_number"] == 5
    assert text_done == {
        "type": "response.output_text.done",
        **where,
        "text": "Hello World",
        "logprobs": [],
        "sequence_number": 6,
    }
    whole = {**empty, "text": "Hello World"}
    assert part_done == {"type": "response.content_part.done", **where, "part": whole, "sequence_number": 7}
    message = {
        "id": item_id,
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [whole],
    }
    assert item_done == {
        "type": "response.output_item.done",
        "output_index": 0,
        "item": message,
        "sequence_number": 8,
    }
    assert completed["type"] == "response.completed" and completed["sequence_number"] == 9
    assert completed["response"]["status"] == "completed" and completed["response"]["output"] == [message]
    assert completed["response"]["usage"]["total_tokens"] == 15


def test_stream_reasoning_bodies() -> None:
    streamed = [data for _, data in stream(Chunk(thinking="Let me "), Chunk(thinking="think..."), done())]
    added, delta = streamed[2], streamed[3]
    item_id = added["item"]["id"]
    assert added["item"] == {"id": item_id, "type": "reasoning", "summary": []}
    where = {"item_id": item_id, "output_index": 0, "summary_index": 0}
    assert delta == {
        "type": "response.reasoning_summary_text.delta",
        **where,
        "delta": "Let me ",
        "sequence_number": 3,
    }
    text_done, item_done = streamed[5], streamed[6]
    assert text_done == {
        "type": "response.reasoning_summary_text.done",
        **where,
        "text": "Let me think...",
        "sequence_number": 5,
    }
    assert item_done["item"] == {
        "id": item_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": "Let me think..."}],
        "encrypted_content": "Let me think...",
    }  # fmt: skip


def test_stream_function_call_bodies() -> None:
    streamed = [data for _, data in stream(Chunk(tool_calls=[tool_call("get_weather", {"city": "Paris"})]))]
    added, delta, arguments_done, item_done = streamed[2:]
    item_id = added["item"]["id"]
    head = {"id": item_id, "type": "function_call", "call_id": "call_abc", "name": "get_weather"}
    assert added["item"] == {**head, "status": "in_progress", "arguments": ""}
    where = {"item_id": item_id, "output_index": 0}
    arguments = '{"city": "Paris"}'
    assert delta == {
        "type": "response.function_call_arguments.delta",
        **where,
        "delta": arguments,
        "sequence_number": 3,
    }
    assert arguments_done == {
        "type": "response.function_call_arguments.done",
        **where,
        "arguments": arguments,
        "sequence_number": 4,
    }
    assert item_done["item"] == {**head, "status": "completed", "arguments": arguments}


def test_stream_output_indexes_and_final_output_follow_the_items() -> None:
    streamed = stream(
        Chunk(thinking="plan"), Chunk(text="Checking."), Chunk(tool_calls=[tool_call("f", {})]), done()
    )
    finished = {
        data["output_index"]: data["item"] for name, data in streamed if name == "response.output_item.done"
    }
    added = [data["output_index"] for name, data in streamed if name == "response.output_item.added"]
    assert added == [0, 1, 2] and sorted(finished) == [0, 1, 2]
    assert streamed[-1][1]["response"]["output"] == [finished[0], finished[1], finished[2]]
    assert [data["sequence_number"] for _, data in streamed] == list(range(len(streamed)))


def test_stream_ends_incomplete_when_cut_short() -> None:
    name, data = stream(Chunk(text="Once"), done("length"))[-1]
    assert name == "response.incomplete" and data["type"] == "response.incomplete"
    assert data["response"]["status"] == "incomplete"
    assert data["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_created_response_echoes_the_request() -> None:
    data = body(instructions="Be brief.", reasoning={"effort": "high", "summary": "auto"})
    created = stream(Chunk(text="hi"), data=data)[0][1]["response"]
    assert created["instructions"] == "Be brief." and created["model"] == "gpt-oss:20b"
    assert created["reasoning"] == {"effort": "high", "summary": "auto"}


@pytest.mark.parametrize(
    ("status", "code"), [(400, "invalid_request_error"), (404, "not_found_error"), (500, "api_error")]
)
def test_error_event_continues_the_sequence(status: int, code: str) -> None:
    converter = rf.StreamConverter("resp_123", "m", {})
    converter.process(Chunk(text="Hel"))
    name, data = converter.error(status, "the worker went away")
    assert name == "error"
    assert data == {
        "type": "error", "code": code, "message": "the worker went away", "param": None, "sequence_number": 5
    }  # fmt: skip
    EVENTS.validate_python(data)


def test_ids() -> None:
    assert rf.response_id().startswith("resp_") and rf.response_id() != rf.response_id()
