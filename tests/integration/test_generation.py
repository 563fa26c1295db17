"""Real tokens through gateway → JetStream → scheduler → worker (llama.cpp) → client."""

from __future__ import annotations

import json
import socket

import httpx
import nats
import ollama
import pytest

from services.protocol import REPLY, Done, Failed, WorkerState, subjects
from services.version import OLLAMA_API_VERSION, corral_version
from tests.stack import MODEL, Stack
from tests.watch import first

STATS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


def ndjson(response: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in response.iter_lines() if line]


def test_generate_streams_ndjson_ending_with_stats(stack: Stack) -> None:
    body = {"model": MODEL, "prompt": "Why is the sky blue?", "options": {"num_predict": 24}}
    with httpx.stream("POST", f"{stack.url}/api/generate", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        chunks = ndjson(response)
    *parts, final = chunks
    assert parts and all(c["done"] is False and c["model"] == MODEL for c in parts)
    assert "".join(c["response"] for c in parts).strip()
    assert final["done"] is True and final["done_reason"] in ("stop", "length")
    assert all(isinstance(final[k], int) and final[k] > 0 for k in STATS)
    assert final["eval_count"] <= 24
    assert final["total_duration"] >= final["eval_duration"]


def test_chat_streams_assistant_messages(stack: Stack) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    with httpx.stream("POST", f"{stack.url}/api/chat", json=body, timeout=60) as response:
        chunks = ndjson(response)
    *parts, final = chunks
    assert all(c["message"]["role"] == "assistant" for c in chunks)
    assert "".join(c["message"]["content"] for c in parts).strip()
    assert final["done"] is True and final["message"]["content"] == ""
    assert "context" not in final
    assert all(final[k] > 0 for k in STATS)


def test_non_streaming_returns_one_object(stack: Stack) -> None:
    body = {
        "model": MODEL,
        "prompt": "Count: 1, 2, 3,",
        "stream": False,
        "raw": True,
        "options": {"num_predict": 8, "temperature": 0},
    }
    response = httpx.post(f"{stack.url}/api/generate", json=body, timeout=60)
    assert response.status_code == 200
    result = response.json()
    assert result["done"] is True and result["response"].strip()
    assert result["eval_count"] == 8 and result["done_reason"] == "length"


def test_seed_and_temperature_make_output_repeatable(stack: Stack) -> None:
    body = {
        "model": MODEL,
        "prompt": "Tell me a story",
        "stream": False,
        "options": {"num_predict": 16, "seed": 42, "temperature": 1.0, "top_k": 50},
    }
    first = httpx.post(f"{stack.url}/api/generate", json=body, timeout=60).json()["response"]
    second = httpx.post(f"{stack.url}/api/generate", json=body, timeout=60).json()["response"]
    assert first == second


def test_stop_sequence_ends_generation(stack: Stack) -> None:
    def counted(stops: list[str]) -> dict:
        body = {
            "model": MODEL,
            "prompt": "1, 2, 3, 4, 5, 6, 7,",
            "raw": True,
            "stream": False,
            "options": {"num_predict": 40, "temperature": 0, "stop": stops},
        }
        return httpx.post(f"{stack.url}/api/generate", json=body, timeout=60).json()

    result = counted(["9"])
    assert "9" not in result["response"] and "8" in result["response"]
    assert result["done_reason"] == "stop"
    # A request may send 100,000 stops (1.2 MB of them): the same answer, stopped at the same place.
    assert counted([f"never{n:06d}" for n in range(99_999)] + ["9"])["response"] == result["response"]


def test_official_ollama_client_works_unmodified(stack: Stack) -> None:
    client = ollama.Client(host=stack.url)
    generated = client.generate(model=MODEL, prompt="Say hello", options={"num_predict": 12})
    assert generated.done and generated.response.strip() and generated.eval_count
    streamed = list(
        client.chat(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            options={"num_predict": 12},
        )
    )
    assert streamed[-1].done and "".join(p.message.content for p in streamed).strip()
    assert MODEL in [m.model for m in client.list().models]
    assert client.ps().models[0].model == MODEL


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/api/generate", {"model": "nope:1b", "prompt": "x"}, 404, "model 'nope:1b' not found"),
        ("/api/chat", {"model": "nope", "messages": []}, 404, "model 'nope' not found"),
        ("/api/generate", {"model": "", "prompt": "x"}, 404, "model '' not found"),
        ("/api/chat", {"messages": []}, 400, "model is required"),
        ("/api/generate", {"model": "bad name!"}, 400, "invalid model name"),
        (
            "/api/generate",
            {"model": MODEL, "prompt": 5},
            400,
            "json: cannot unmarshal number into Go struct field GenerateRequest.prompt of type string",
        ),
        ("/api/generate", {"model": MODEL, "keep_alive": "300"}, 400, 'time: missing unit in duration "300"'),
        ("/api/generate", {"model": MODEL, "keep_alive": True}, 400, "Unsupported type: 'bool'"),
        (
            "/api/generate",
            {"model": MODEL, "options": {"num_ctx": "big"}},
            400,
            'option "num_ctx" must be of type integer',
        ),
        (
            "/api/chat",
            {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]},
            400,
            "invalid role 'robot': expected system, user, assistant or tool",
        ),
        (
            "/api/generate",
            {"model": MODEL, "raw": True, "system": "x"},
            400,
            "raw mode does not support template, system, or context",
        ),
    ],
    ids=[
        "unknown-model",
        "unknown-chat-model",
        "empty-model",
        "chat-no-model",
        "invalid-name",
        "wrong-type",
        "keep-alive-no-unit",
        "keep-alive-bool",
        "option-type",
        "bad-role",
        "raw-with-system",
    ],
)
def test_bad_input_gets_a_clear_error(stack: Stack, path: str, body: dict, status: int, error: str) -> None:
    response = httpx.post(f"{stack.url}{path}", json=body, timeout=30)
    assert (response.status_code, response.json()) == (status, {"error": error})


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"", "missing request body"),
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"model": "smollm2:135m", "options": {"temperature": NaN}}',
         "invalid character 'N' looking for beginning of value"),
        (b'{"model": "smollm2:135m", "options": {"top_p": Infinity}}',
         "invalid character 'I' looking for beginning of value"),
        (b'{"model": "smollm2:135m", "options": {"temperature": 1e400}}',
         'option "temperature" must be of type float32'),
        (b'{"model": "smollm2:135m", "options": {"top_k": 1e12}}', 'option "top_k" is out of range'),
        (b'{"model": "smollm2:135m", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "exceeded max depth"),
    ],
    ids=["empty", "malformed", "not-an-object", "nan", "infinity", "overflow", "huge-int", "deep"],
)  # fmt: skip
def test_malformed_bodies_are_400(stack: Stack, content: bytes, error: str | None) -> None:
    response = httpx.post(f"{stack.url}/api/generate", content=content, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"] == error if error else response.json()["error"]


@pytest.mark.parametrize(
    "content",
    [b'{"model": "smollm2:135m", "prompt": "caf\xe9 \xff", "raw": true, "stream": false, '
     b'"options": {"num_predict": 2}}',
     b'{"model": "smollm2:135m", "prompt": "\\ud800 lone", "raw": true, "stream": false, '
     b'"options": {"num_predict": 2}}'],
    ids=["invalid-utf8", "lone-surrogate"],
)  # fmt: skip
def test_odd_text_is_replaced_not_refused(stack: Stack, content: bytes) -> None:
    response = httpx.post(f"{stack.url}/api/generate", content=content, timeout=60)
    assert response.status_code == 200 and response.json()["done"] is True


def test_num_ctx_is_capped_at_the_trained_context(stack: Stack) -> None:
    body = {
        "model": MODEL,
        "prompt": "Hi",
        "stream": False,
        "options": {"num_ctx": 2**31 - 1, "num_predict": 2},
    }
    assert httpx.post(f"{stack.url}/api/generate", json=body, timeout=120).json()["done"] is True
    contexts = {m["context_length"] for m in httpx.get(f"{stack.url}/api/ps").json()["models"]}
    assert 8192 in contexts  # SmolLM2 was trained on 8,192 tokens


def test_refused_and_odd_requests_leave_no_subscription_behind(stack: Stack) -> None:
    """Each kind of input that once leaked a NATS subscription in the gateway, counted on the
    broker (nats-server's /connz) before and after: nothing is left behind."""

    def subscriptions() -> int:
        connz = httpx.get(f"http://127.0.0.1:{stack.monitor_port}/connz", params={"subs": 1}).json()
        return sum(c["subscriptions"] for c in connz["connections"])  # nats-server's count of each

    generate = f"{stack.url}/api/generate"
    assert httpx.post(generate, json={"model": MODEL}, timeout=60).json()["done"]  # loaded, settled
    before = subscriptions()
    assert before > 0  # every service's subscriptions are counted
    for _ in range(3):
        response = httpx.post(generate, json={"model": MODEL, "prompt": "x" * (9 * 1024 * 1024)}, timeout=60)
        assert response.status_code == 413
    for _ in range(10):
        surrogate = b'{"model": "%s", "prompt": "\\ud800 hi", "stream": false, "options": {"num_predict": 1}}'
        assert httpx.post(generate, content=surrogate % MODEL.encode(), timeout=60).status_code == 200
        assert httpx.post(generate, json={"model": "nope", "prompt": "x"}, timeout=60).status_code == 404
        nan = b'{"model": "%s", "prompt": "x", "options": {"temperature": NaN}}' % MODEL.encode()
        assert httpx.post(generate, content=nan, timeout=60).status_code == 400
    assert subscriptions() == before


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
def test_a_long_document_is_cut_to_the_context(stack: Stack, path: str) -> None:
    """A 2 MB prompt (over NATS's default 1 MB message) is a normal request: cut to the
    context as Ollama cuts it, answered."""
    document = "word " * 400_000
    body: dict = {"model": MODEL, "stream": False, "options": {"num_predict": 1, "temperature": 0}}
    body.update(
        {"prompt": document}
        if path == "/api/generate"
        else {"messages": [{"role": "user", "content": document}]}
    )
    answer = httpx.post(f"{stack.url}{path}", json=body, timeout=120)
    assert answer.status_code == 200 and answer.json()["done"] is True
    assert 0 < answer.json()["prompt_eval_count"] < 2048  # the default context


def test_a_prompt_larger_than_a_nats_message_is_a_413(stack: Stack) -> None:
    body = {"model": MODEL, "prompt": "x" * (9 * 1024 * 1024)}
    response = httpx.post(f"{stack.url}/api/generate", json=body, timeout=60)
    assert response.status_code == 413 and response.json()["error"].startswith("request too large")


async def test_a_request_the_scheduler_cannot_read_is_answered(stack: Stack) -> None:
    nc = await nats.connect(stack.nats_url)
    try:
        replies = await nc.subscribe(subjects.reply_subject("broken"))
        await nc.jetstream().publish(
            subjects.request_subject("generate"), b'{"reply_subject": "corral.reply.broken", "kind": 5}'
        )
        failed = await first(replies, REPLY.validate_json, lambda _: True, Failed)
        assert failed.code == "invalid" and failed.error.startswith("invalid request")
    finally:
        await nc.close()


def test_copy_and_delete(stack: Stack) -> None:
    client = ollama.Client(host=stack.url)
    client.copy(MODEL, "mine:copy")
    names = [m.model for m in client.list().models]
    assert "mine:copy" in names and MODEL in names
    assert client.show("mine:copy").capabilities == ["completion", "tools"]
    client.delete("mine:copy")
    assert "mine:copy" not in [m.model for m in client.list().models]
    assert client.generate(model=MODEL, prompt="Hi", options={"num_predict": 2}).done  # its weights stayed


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("POST", "/api/copy", {"source": "nope", "destination": "x"}, 404, 'model "nope" not found'),
        (
            "POST",
            "/api/copy",
            {"source": "bad name!", "destination": "x"},
            400,
            'source "bad name!" is invalid',
        ),
        (
            "POST",
            "/api/copy",
            {"source": MODEL, "destination": "a/b/c/d"},
            400,
            'destination "a/b/c/d" is invalid',
        ),
        ("DELETE", "/api/delete", {"model": "nope"}, 404, "model 'nope' not found"),
        ("DELETE", "/api/delete", {"model": "bad name!"}, 400, 'name "bad name!" is invalid'),
    ],
    ids=["copy-unknown", "copy-bad-source", "copy-bad-destination", "delete-unknown", "delete-invalid"],
)
def test_copy_and_delete_errors(
    stack: Stack, method: str, path: str, body: dict, status: int, error: str
) -> None:
    response = httpx.request(method, f"{stack.url}{path}", json=body, timeout=30)
    assert (response.status_code, response.json()) == (status, {"error": error})


def test_a_rebinding_host_is_refused(stack: Stack) -> None:
    """Bound to loopback, the API serves only requests that name this machine (Ollama's 403)."""
    refused = httpx.get(f"{stack.url}/api/tags", headers={"Host": "evil.example"})
    assert (refused.status_code, refused.content) == (403, b"")
    assert httpx.get(f"{stack.url}/api/tags", headers={"Host": "localhost"}).status_code == 200
    preflight = httpx.options(f"{stack.url}/api/tags", headers={"Host": "localhost"})
    assert preflight.status_code == 204


def test_an_oversized_body_is_refused_before_it_is_read(stack: Stack) -> None:
    with socket.create_connection(("127.0.0.1", stack.port), timeout=60) as conn:
        conn.sendall(b"POST /api/show HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000000\r\n\r\n{")
        answer = b""
        while b"}" not in answer and (part := conn.recv(4096)):
            answer += part
    assert answer.startswith(b"HTTP/1.1 413") and b"request body too large" in answer


def test_root_and_version(stack: Stack) -> None:
    assert httpx.get(stack.url).text == "Ollama is running"
    assert httpx.head(stack.url).status_code == 200
    assert httpx.get(f"{stack.url}/api/status").json() == {"cloud": {"disabled": True, "source": "none"}}
    version = httpx.get(f"{stack.url}/api/version")
    assert version.json() == {"version": OLLAMA_API_VERSION}  # the Ollama API corral speaks
    assert version.headers["x-corral-version"] == corral_version()
    assert ollama.Client(host=stack.url).ps() is not None


def test_show_describes_the_model(stack: Stack) -> None:
    shown = ollama.Client(host=stack.url).show(MODEL)
    assert shown.capabilities == ["completion", "tools"]
    assert shown.modelinfo is not None and shown.modelinfo["llama.context_length"] == 8192
    assert shown.details is not None and shown.details.family == "llama"
    assert shown.template and "<tool_call>" in shown.template
    assert shown.modelfile and shown.modelfile.startswith('# Modelfile generated by "ollama show"')
    body = httpx.post(f"{stack.url}/api/show", json={"model": MODEL}, timeout=30).json()
    assert "tokenizer.chat_template" not in body["model_info"] and "general.name" not in body["model_info"]
    assert body["model_info"]["tokenizer.ggml.tokens"] == []  # long arrays are left out, as Ollama does
    assert len(body["tensors"]) == 272  # 30 blocks of 9, the embedding and the output norm
    assert body["tensors"][0] == {"name": "token_embd.weight", "type": "Q8_0", "shape": [576, 49152]}
    verbose = httpx.post(f"{stack.url}/api/show", json={"model": MODEL, "verbose": True}, timeout=30).json()
    verbose = verbose["model_info"]  # every array whole: the vocabulary too
    assert len(verbose["tokenizer.ggml.tokens"]) == 49152
    assert verbose["tokenizer.ggml.tokens"][:2] == ["<|endoftext|>", "<|im_start|>"]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [({}, 400, "model is required"), ({"model": "nope"}, 404, "model 'nope' not found"),
     ({"name": "bad name!"}, 400, "invalid model name")],
    ids=["no-model", "unknown", "invalid"],
)  # fmt: skip
def test_show_errors(stack: Stack, body: dict, status: int, error: str) -> None:
    response = httpx.post(f"{stack.url}/api/show", json=body, timeout=30)
    assert (response.status_code, response.json()) == (status, {"error": error})


def test_tags_show_and_ps_describe_the_same_model(stack: Stack) -> None:
    assert httpx.post(f"{stack.url}/api/generate", json={"model": MODEL}, timeout=60).json()["done"]
    tags = next(m for m in httpx.get(f"{stack.url}/api/tags").json()["models"] if m["name"] == MODEL)
    ps = next(m for m in httpx.get(f"{stack.url}/api/ps").json()["models"] if m["name"] == MODEL)
    shown = httpx.post(f"{stack.url}/api/show", json={"model": MODEL}, timeout=30).json()
    assert tags["digest"] == ps["digest"]
    # Only the list gives the trained context and embedding lengths, and capabilities (as Ollama).
    lengths = {"context_length": 8192, "embedding_length": 576}
    assert tags["details"] == ps["details"] | lengths == shown["details"] | lengths
    assert tags["details"]["family"] == "llama" and tags["details"]["families"] == ["llama"]
    assert tags["capabilities"] == shown["capabilities"] == ["completion", "tools"]


async def test_client_disconnect_cancels_generation(stack: Stack) -> None:
    """A client that goes away cancels its generation: the worker ends it with Done(cancel),
    long before its token limit, and its slot is free again in the next heartbeat."""
    # Greedy counting never samples end-of-text: it would run until the context is full.
    body = {"model": MODEL, "prompt": "1, 2, 3, 4, 5,", "raw": True, "options": {"temperature": 0}}
    nc = await nats.connect(stack.nats_url)
    try:
        replies = await nc.subscribe(subjects.reply_subject("*"))
        heartbeats = await nc.subscribe(subjects.HEARTBEAT)
        async with httpx.AsyncClient(timeout=60) as client:
            async with client.stream("POST", f"{stack.url}/api/generate", json=body) as response:
                async for line in response.aiter_lines():
                    if line:
                        break
        done = await first(replies, REPLY.validate_json, lambda _: True, Done)
        assert done.done_reason == "cancel"
        idle = await first(
            heartbeats,
            WorkerState.model_validate_json,
            lambda s: bool(s.resident) and all(m.busy == 0 for m in s.resident),
            WorkerState,
        )
        assert idle.resident[0].name == MODEL
    finally:
        await nc.close()
