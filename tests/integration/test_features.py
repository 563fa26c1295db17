"""The generation features clients rely on, end to end with the official ollama client and the
real model: batching, JSON mode and schemas, tool calls, thinking, embeddings, logprobs,
context, truncation, and Ollama's errors for what a model cannot do."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from tests.models import (
    JINJA_THINKING_TOOLS_TEMPLATE,
    THINKING_TOOLS_TEMPLATE,
    WEATHER,
    add_model,
    with_chat_template,
)
from tests.stack import MODEL, Stack

# Forces the answer into a call of get_weather: a small model then calls the tool every time.
WEATHER_CALL = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "enum": ["get_weather"]},
        "arguments": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris"]}},
            "required": ["city"],
        },
    },
    "required": ["name", "arguments"],
}
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def parallel(tmp_path_factory: pytest.TempPathFactory, nats_binary: Path) -> Iterator[Stack]:
    """Four sequences per instance, and a model with a thinking and tools template of its own."""
    root = tmp_path_factory.mktemp("features")
    add_model(root / "models", "thinker:test", THINKING_TOOLS_TEMPLATE)
    stack = Stack(root, nats_binary, {"OLLAMA_NUM_PARALLEL": "4"}).start()
    yield stack
    stack.stop()


def client(stack: Stack) -> ollama.Client:
    return ollama.Client(host=stack.url)


def test_four_concurrent_requests_match_each_alone(parallel: Stack) -> None:
    prompts = ["Tell me a story.", "Why is the sky blue?", "Name three fruits.", "What is rust?"]

    def ask(prompt: str) -> str:
        options = {"seed": 7, "temperature": 0.9, "num_predict": 40}
        return client(parallel).generate(model=MODEL, prompt=prompt, options=options).response

    alone = [ask(p) for p in prompts]
    together: list[str] = [""] * len(prompts)
    threads = [
        threading.Thread(target=lambda i=i: together.__setitem__(i, ask(prompts[i]))) for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert together == alone
    assert len(set(alone)) == 4


def test_json_mode_gives_valid_json(parallel: Stack) -> None:
    answer = client(parallel).generate(
        model=MODEL, prompt='Reply with JSON: {"ok": true}', format="json", options=GREEDY
    )
    assert answer.done_reason == "stop"
    assert isinstance(json.loads(answer.response), dict)


def test_a_json_schema_shapes_the_answer(parallel: Stack) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    answer = client(parallel).chat(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe a person."}],
        format=schema,
        options=GREEDY,
    )
    person = json.loads(answer.message.content)
    assert isinstance(person["name"], str) and isinstance(person["age"], int)


def test_a_bad_schema_is_a_400(parallel: Stack) -> None:
    body = {"model": MODEL, "prompt": "Hi", "format": {"type": "nonsense"}}
    response = httpx.post(f"{parallel.url}/api/generate", json=body, timeout=60)
    assert response.status_code == 400 and response.json()["error"].startswith("invalid JSON schema")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_tool_calls_come_back_as_tool_calls(parallel: Stack, stream: bool) -> None:
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    parts = client(parallel).chat(
        model="thinker:test",
        messages=messages,
        tools=[WEATHER],
        format=WEATHER_CALL,
        options=GREEDY,
        stream=stream,
        think=False,
    )
    replies = list(parts) if stream else [parts]
    calls = [call for reply in replies for call in reply.message.tool_calls or []]
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert "".join(r.message.content for r in replies) == ""
    raw = httpx.post(
        f"{parallel.url}/api/chat",
        json={"model": "thinker:test", "messages": messages, "tools": [WEATHER], "format": WEATHER_CALL,
              "options": GREEDY, "stream": False, "think": False},
        timeout=60,
    ).json()  # fmt: skip
    assert raw["message"]["tool_calls"][0]["id"].startswith("call_")


def test_a_conversation_with_tool_results_goes_on(parallel: Stack) -> None:
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "22 degrees and sunny", "tool_name": "get_weather"},
    ]  # fmt: skip
    for model in (MODEL, "thinker:test"):
        answer = client(parallel).chat(
            model=model,
            messages=messages,
            tools=[WEATHER],
            think=False,
            options={**GREEDY, "num_predict": 20},
        )
        assert answer.done and (answer.message.content.strip() or answer.message.tool_calls)


def test_a_model_without_tools_in_its_template_refuses_them(parallel: Stack, tmp_path: Path) -> None:
    add_model(parallel.root / "models", "plain:test", "{{ .Prompt }}")
    body = {"model": "plain:test", "messages": [{"role": "user", "content": "Hi"}], "tools": [WEATHER]}
    response = httpx.post(f"{parallel.url}/api/chat", json=body, timeout=60)
    assert response.status_code == 400
    assert response.json() == {"error": "registry.ollama.ai/library/plain:test does not support tools"}


def test_thinking_is_separated_from_the_answer(parallel: Stack) -> None:
    messages = [{"role": "user", "content": "Is 7 a prime number?"}]
    options = {**GREEDY, "num_predict": 40}
    thought = client(parallel).chat(model="thinker:test", messages=messages, think=True, options=options)
    assert thought.message.thinking and "<think>" not in thought.message.thinking
    plain = client(parallel).chat(model="thinker:test", messages=messages, think=False, options=options)
    assert not plain.message.thinking and plain.message.content
    # A thinking model thinks when not told otherwise (Ollama's default).
    default = client(parallel).chat(model="thinker:test", messages=messages, options=options)
    assert default.message.thinking


@pytest.fixture(scope="module")
def jinja_model(parallel: Stack, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The bundled GGUF with a Hugging Face chat template of its own (Qwen's style: tools, calls
    between <tool_call> tags, thinking), created from the file as a user would: no Ollama
    template layer, so its prompts go through the GGUF's own template."""
    path = with_chat_template(tmp_path_factory.mktemp("jinja") / "model.gguf", JINJA_THINKING_TOOLS_TEMPLATE)
    client(parallel).create("jinja:test", files={"model.gguf": client(parallel).create_blob(path)})
    return "jinja:test"


def weather_call(city: str) -> dict:
    return {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": {"city": city}}}]}  # fmt: skip


def test_a_gguf_chat_template_says_what_the_model_can_do(parallel: Stack, jinja_model: str) -> None:
    assert client(parallel).show(jinja_model).capabilities == ["completion", "tools", "thinking"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_tool_calls_between_a_gguf_templates_tags(parallel: Stack, jinja_model: str, stream: bool) -> None:
    # Two calls in the history, rendered back through the template, show the model the way.
    messages = [
        {"role": "user", "content": "Weather in Paris?"}, weather_call("Paris"),
        {"role": "user", "content": "Weather in Rome?"}, weather_call("Rome"),
        {"role": "user", "content": "Weather in Oslo?"},
    ]  # fmt: skip
    parts = client(parallel).chat(
        model=jinja_model, messages=messages, tools=[WEATHER], options=GREEDY, stream=stream, think=False
    )
    replies = list(parts) if stream else [parts]
    calls = [call for reply in replies for call in reply.message.tool_calls or []]
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Oslo"})
    ]
    assert "<tool_call>" not in "".join(r.message.content for r in replies)


def test_thinking_through_a_gguf_template(parallel: Stack, jinja_model: str) -> None:
    messages = [{"role": "user", "content": "Is 7 a prime number?"}]
    options = {**GREEDY, "num_predict": 40}
    thought = client(parallel).chat(model=jinja_model, messages=messages, think=True, options=options)
    assert thought.message.thinking and "<think>" not in thought.message.thinking
    plain = client(parallel).chat(model=jinja_model, messages=messages, think=False, options=options)
    assert not plain.message.thinking and plain.message.content and "<think>" not in plain.message.content
    default = client(parallel).chat(model=jinja_model, messages=messages, options=options)
    assert default.message.thinking


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/api/generate", {"prompt": "Hi", "think": True}, '"smollm2:135m" does not support thinking'),
        ("/api/generate", {"prompt": "def f(", "suffix": "return 1"},
         "registry.ollama.ai/library/smollm2:135m does not support insert"),
        ("/api/generate", {"prompt": "What is this?", "images": ["aGVsbG8="]},
         "registry.ollama.ai/library/smollm2:135m does not support vision"),
        ("/api/chat", {"messages": [{"role": "user", "content": "What is this?", "images": ["aGVsbG8="]}]},
         "registry.ollama.ai/library/smollm2:135m does not support vision"),
        ("/api/generate", {"prompt": "Hi", "top_logprobs": 21}, "top_logprobs must be between 0 and 20"),
        ("/api/generate", {"prompt": "Hi", "format": "yaml"},
         'invalid format: "\\"yaml\\""; expected "json" or a valid JSON Schema object'),
    ],
    ids=["think", "suffix", "images", "chat-images", "top-logprobs", "format"],
)  # fmt: skip
def test_what_the_model_cannot_do_is_a_400(parallel: Stack, path: str, body: dict, error: str) -> None:
    response = httpx.post(f"{parallel.url}{path}", json={"model": MODEL, **body}, timeout=60)
    assert (response.status_code, response.json()) == (400, {"error": error})


@pytest.mark.parametrize("nothing", [[], ""], ids=["empty-list", "empty-string"])
def test_embedding_nothing_is_no_embeddings(parallel: Stack, nothing: list | str) -> None:
    response = httpx.post(f"{parallel.url}/api/embed", json={"model": MODEL, "input": nothing}, timeout=60)
    assert (response.status_code, response.json()) == (200, {"model": MODEL, "embeddings": []})


def test_a_requests_template_and_system_replace_the_models(parallel: Stack) -> None:
    """`template` and `system` on a generate: the prompt becomes exactly what they render."""
    options = {**GREEDY, "num_predict": 8}
    templated = client(parallel).generate(
        model=MODEL,
        prompt="red, green,",
        system="Colours:",
        template="{{ .System }} {{ .Prompt }}",
        options=options,
    )
    raw = client(parallel).generate(model=MODEL, prompt="Colours: red, green,", raw=True, options=options)
    assert (templated.prompt_eval_count, templated.response) == (raw.prompt_eval_count, raw.response)
    default = client(parallel).generate(model=MODEL, prompt="red, green,", options=options)
    assert default.prompt_eval_count != raw.prompt_eval_count  # the model's own template and system


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream-asked"])
def test_debug_render_only_answers_the_prompt_and_generates_nothing(parallel: Stack, stream: bool) -> None:
    generate = {
        "model": MODEL,
        "prompt": "Hi",
        "system": "Be brief.",
        "stream": stream,
        "_debug_render_only": True,
    }
    answer = httpx.post(f"{parallel.url}/api/generate", json=generate, timeout=60).json()
    expected = (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert (answer["response"], answer["done"], answer["_debug_info"]) == (
        "",
        False,
        {"rendered_template": expected},
    )
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    chat = {"model": MODEL, "messages": messages, "stream": stream, "_debug_render_only": True}
    answer = httpx.post(f"{parallel.url}/api/chat", json=chat, timeout=60).json()
    assert (
        answer["message"] == {"role": "", "content": ""}
        and answer["_debug_info"]["rendered_template"] == expected
    )


def test_embeddings_are_deterministic_and_normalised(parallel: Stack) -> None:
    first = client(parallel).embed(model=MODEL, input=["The sky is blue.", "Grass is green."])
    again = client(parallel).embed(model=MODEL, input=["The sky is blue.", "Grass is green."])
    assert first.embeddings == again.embeddings
    assert len(first.embeddings) == 2 and first.embeddings[0] != first.embeddings[1]
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-5) for v in first.embeddings)
    short = client(parallel).embed(model=MODEL, input="The sky is blue.", dimensions=8)
    assert len(short.embeddings[0]) == 8
    assert math.isclose(sum(x * x for x in short.embeddings[0]), 1.0, rel_tol=1e-5)
    legacy = client(parallel).embeddings(model=MODEL, prompt="The sky is blue.").embedding
    norm = math.sqrt(sum(x * x for x in legacy))
    assert not math.isclose(norm, 1.0) and [x / norm for x in legacy] == pytest.approx(first.embeddings[0])


def test_embedding_input_too_long_without_truncate_is_a_400(parallel: Stack) -> None:
    body = {"model": MODEL, "input": "word " * 400, "truncate": False, "options": {"num_ctx": 128}}
    response = httpx.post(f"{parallel.url}/api/embed", json=body, timeout=60)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "the input length exceeds the context length"},
    )
    body["truncate"] = True
    assert len(httpx.post(f"{parallel.url}/api/embed", json=body, timeout=60).json()["embeddings"]) == 1


def test_logprobs_for_every_token(parallel: Stack) -> None:
    body = {"model": MODEL, "prompt": "Hi", "stream": False, "logprobs": True, "top_logprobs": 3,
            "options": {**GREEDY, "num_predict": 6}}  # fmt: skip
    answer = httpx.post(f"{parallel.url}/api/generate", json=body, timeout=60).json()
    logprobs = answer["logprobs"]
    assert len(logprobs) == answer["eval_count"]
    assert "".join(lp["token"] for lp in logprobs) == answer["response"]
    for lp in logprobs:  # greedy: the chosen token is the most likely one
        assert len(lp["top_logprobs"]) == 3 and lp["logprob"] <= 0
        assert lp["top_logprobs"][0]["logprob"] == pytest.approx(lp["logprob"])


def test_context_continues_a_generation(parallel: Stack) -> None:
    first = client(parallel).generate(
        model=MODEL, prompt="My name is Ada.", options={**GREEDY, "num_predict": 8}
    )
    assert first.context and len(first.context) == first.prompt_eval_count + first.eval_count
    second = client(parallel).generate(
        model=MODEL, prompt="What is my name?", context=first.context, options={**GREEDY, "num_predict": 8}
    )
    assert second.prompt_eval_count > len(first.context)


def test_a_prompt_longer_than_the_context(parallel: Stack) -> None:
    body = {"model": MODEL, "prompt": "word " * 400, "raw": True, "stream": False,
            "options": {"num_ctx": 128, "num_predict": 4}}  # fmt: skip
    cut = httpx.post(f"{parallel.url}/api/generate", json=body, timeout=60)
    assert cut.status_code == 200 and cut.json()["prompt_eval_count"] < 128
    refused = httpx.post(f"{parallel.url}/api/generate", json={**body, "truncate": False}, timeout=60)
    assert (refused.status_code, refused.json()) == (
        400,
        {"error": "the input length exceeds the context length"},
    )


def test_generation_past_a_full_context_shifts_unless_told_not_to(parallel: Stack) -> None:
    body = {"model": MODEL, "prompt": "1, 2, 3, 4, 5,", "raw": True, "stream": False,
            "options": {**GREEDY, "num_ctx": 64, "num_predict": 100}}  # fmt: skip
    shifted = httpx.post(f"{parallel.url}/api/generate", json=body, timeout=120).json()
    assert shifted["eval_count"] == 100
    stopped = httpx.post(f"{parallel.url}/api/generate", json={**body, "shift": False}, timeout=120).json()
    assert stopped["done_reason"] == "length" and stopped["eval_count"] < 64
