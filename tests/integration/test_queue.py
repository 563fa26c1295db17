"""The bounded queue, scheduler restarts and keep_alive, against real nats-server builds."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import nats
import ollama
import openai
import pytest

from corral.nats_server import version
from services.scheduler.stream import request_stream_config
from tests.conftest import nats_binaries
from tests.stack import MODEL, Stack
from tests.watch import until

# Greedy counting never samples end-of-text, so this runs exactly num_predict tokens.
LONG = {
    "model": MODEL,
    "prompt": "1, 2, 3, 4, 5,",
    "raw": True,
    "options": {"num_predict": 300, "temperature": 0},
}
QUICK = {"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 4}}


class Background:
    """A streaming request running in a thread; records its chunks as they arrive."""

    def __init__(self, url: str, body: dict, headers: dict[str, str] | None = None) -> None:
        self.chunks: list[dict] = []
        self.status: int | None = None
        self._thread = threading.Thread(target=self._run, args=(url, body, headers or {}), daemon=True)
        self._thread.start()

    def _run(self, url: str, body: dict, headers: dict[str, str]) -> None:
        with httpx.stream("POST", f"{url}/api/generate", json=body, headers=headers, timeout=120) as response:
            self.status = response.status_code
            for line in response.iter_lines():
                if line:
                    self.chunks.append(json.loads(line))

    def join(self, timeout: float = 120) -> list[dict]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "request did not finish"
        return self.chunks


def queued(stack: Stack) -> int:
    return asyncio.run(stack.stream_messages())


def one_running_one_waiting(stack: Stack) -> tuple[Background, Background]:
    """Fill the single slot, then the single queue place, checking the stream at each step."""
    running = Background(stack.url, LONG)
    until(lambda: len(running.chunks) > 0, what="first chunk")
    until(lambda: queued(stack) == 0, what="running request to leave the queue")
    waiting = Background(stack.url, {**LONG, "options": {"num_predict": 8}})
    until(lambda: queued(stack) == 1, what="second request to wait in the queue")
    return running, waiting


@pytest.fixture(params=nats_binaries(), ids=lambda p: f"nats-{version(p)}")
def small_queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """OLLAMA_MAX_QUEUE=1, one slot, short ack wait; on every nats-server build present."""
    stack = Stack(
        tmp_path,
        request.param,
        {"OLLAMA_MAX_QUEUE": "1", "OLLAMA_NUM_PARALLEL": "1", "CORRAL_QUEUE_ACK_WAIT": "2"},
    ).start()
    yield stack
    stack.stop()


def test_full_queue_answers_503_and_loses_nothing(small_queue: Stack) -> None:
    stack = small_queue
    running, waiting = one_running_one_waiting(stack)

    rejected = httpx.post(f"{stack.url}/api/generate", json=QUICK, timeout=30)

    assert rejected.status_code == 503
    assert rejected.json() == {"error": "server busy, please try again.  maximum pending requests exceeded"}
    assert running.join()[-1]["done"] is True
    assert waiting.join()[-1]["done"] is True
    assert queued(stack) == 0


def test_scheduler_restart_loses_no_waiting_request(small_queue: Stack) -> None:
    stack = small_queue
    running, waiting = one_running_one_waiting(stack)

    stack.stop_service("scheduler", signal.SIGKILL)
    stack.start_service("scheduler")

    assert running.join()[-1]["done"] is True
    final = waiting.join()[-1]
    assert final["done"] is True and final["eval_count"] > 0
    assert queued(stack) == 0


def waiting(stack: Stack) -> int:
    return int(httpx.get(f"{stack.url}/api/queue").json()["waiting"])


def test_the_queue_says_how_many_wait_and_a_client_its_place(stack: Stack) -> None:
    """GET /api/queue counts what waits per model and why; a client that sent X-Request-Id
    learns its place from GET /api/queue/<id>; `corral ps` shows the waiting count."""
    running = Background(stack.url, LONG)
    until(lambda: len(running.chunks) > 0, what="first chunk")
    short = {**LONG, "options": {"num_predict": 4}}
    first = Background(stack.url, short, headers={"X-Request-Id": "first-client"})
    until(lambda: waiting(stack) == 1, what="one request waiting")
    second = Background(stack.url, short, headers={"X-Request-Id": "second-client"})
    until(lambda: waiting(stack) == 2, what="two requests waiting")

    assert httpx.get(f"{stack.url}/api/queue").json() == {
        "waiting": 2,
        "models": [{"name": MODEL, "waiting": 2, "reasons": {"all slots busy": 2}}],
    }
    place = httpx.get(f"{stack.url}/api/queue/second-client")
    assert place.json() == {"position": 2, "model": MODEL, "reason": "all slots busy"}
    assert httpx.get(f"{stack.url}/api/queue/first-client").json()["position"] == 1
    ps = subprocess.run(
        [str(Path(sys.executable).with_name("corral")), "ps"],
        env={**os.environ, "OLLAMA_HOST": f"127.0.0.1:{stack.port}"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert ps[0].split()[-1] == "WAITING" and ps[1].split()[0] == MODEL and ps[1].split()[-1] == "2", ps

    for request in (running, first, second):
        assert request.join()[-1]["done"] is True
    gone = httpx.get(f"{stack.url}/api/queue/first-client")
    assert gone.status_code == 404 and gone.json() == {"error": "request 'first-client' is not waiting"}
    assert waiting(stack) == 0


def test_keep_alive_expiry_unloads_the_model(stack: Stack) -> None:
    body = {**QUICK, "keep_alive": "1s"}
    assert httpx.post(f"{stack.url}/api/generate", json=body, timeout=60).json()["done"]
    ps = httpx.get(f"{stack.url}/api/ps").json()["models"]
    assert [m["model"] for m in ps] == [MODEL]

    until(
        lambda: httpx.get(f"{stack.url}/api/ps").json()["models"] == [],
        what="keep_alive to unload the model",
    )


def test_keep_alive_zero_with_empty_prompt_unloads(stack: Stack) -> None:
    assert httpx.post(f"{stack.url}/api/generate", json=QUICK, timeout=60).json()["done"]
    response = httpx.post(
        f"{stack.url}/api/generate", json={"model": MODEL, "keep_alive": 0}, timeout=30
    ).json()
    assert response["done_reason"] == "unload" and response["response"] == ""
    until(lambda: httpx.get(f"{stack.url}/api/ps").json()["models"] == [], what="unload")


def test_chat_with_no_messages_loads_and_with_keep_alive_zero_unloads(stack: Stack) -> None:
    client = ollama.Client(host=stack.url)
    loaded = client.chat(model=MODEL, messages=[])
    assert (loaded.done, loaded.done_reason, loaded.message.role, loaded.message.content) == (
        True, "load", "assistant", "")  # fmt: skip
    assert [m["model"] for m in httpx.get(f"{stack.url}/api/ps").json()["models"]] == [MODEL]
    unloaded = client.chat(model=MODEL, messages=[], keep_alive=0)
    assert (unloaded.done, unloaded.done_reason, unloaded.message.content) == (True, "unload", "")
    until(lambda: httpx.get(f"{stack.url}/api/ps").json()["models"] == [], what="unload")


def test_keep_alive_is_honoured_on_the_openai_routes(stack: Stack) -> None:
    """Ollama ignores it there (its #9355); corral takes it from the body as on /api/*."""
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused")
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2,
                                   extra_body={"keep_alive": "1h"})  # fmt: skip
    (model,) = httpx.get(f"{stack.url}/api/ps").json()["models"]
    expires_in = datetime.fromisoformat(model["expires_at"]) - datetime.now(UTC)
    assert model["model"] == MODEL and expires_in > timedelta(minutes=30)  # not the default 5 minutes
    client.completions.create(model=MODEL, prompt="Hi", max_tokens=2, extra_body={"keep_alive": 0})
    until(lambda: httpx.get(f"{stack.url}/api/ps").json()["models"] == [], what="keep_alive 0 to unload")


def test_only_the_scheduler_creates_and_sizes_the_request_stream(tmp_path: Path, nats_binary: Path) -> None:
    """The gateway never declares the stream: without a scheduler a request is 503 and no stream
    exists. A stream left with another size is brought to OLLAMA_MAX_QUEUE by the scheduler."""
    stack = Stack(tmp_path, nats_binary, {"OLLAMA_MAX_QUEUE": "3"}).start(services=("registry", "gateway"))
    try:
        until(lambda: registry_answers(stack), what="the gateway and the registry to answer")
        refused = httpx.post(f"{stack.url}/api/generate", json=QUICK, timeout=30)
        assert refused.status_code == 503 and refused.json()["error"].startswith("queue unavailable")
        assert asyncio.run(stack.stream_info()) is None

        asyncio.run(create_stream(stack, max_msgs=7))
        stack.start_service("scheduler")

        until(lambda: stream_size(stack) == 3, what="the scheduler to resize the stream")
    finally:
        stack.stop()


def registry_answers(stack: Stack) -> bool:
    """The gateway is up and resolves names (the registry answers)."""
    try:
        response = httpx.get(f"{stack.url}/api/tags", timeout=5)
    except httpx.TransportError:
        return False
    return response.status_code == 200


def stream_size(stack: Stack) -> int | None:
    info = asyncio.run(stack.stream_info())
    return None if info is None else info.config.max_msgs


async def create_stream(stack: Stack, max_msgs: int) -> None:
    """The stream as an earlier run with another OLLAMA_MAX_QUEUE left it."""
    nc = await nats.connect(stack.nats_url)
    try:
        await nc.jetstream().add_stream(request_stream_config(max_msgs))
    finally:
        await nc.close()
