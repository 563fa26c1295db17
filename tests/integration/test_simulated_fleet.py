"""A whole stack on the simulated engine (CORRAL_ENGINE=simulated, for scheduler tests at fleet
scale): the bundled model's template renders with its tokenizer, generations come back through
the gateway, and the declared devices are what the worker reports and /api/ps shows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest

from services.protocol import WorkerState, subjects
from services.worker.engines.simulated import ANSWER_TOKENS
from services.worker.engines.simulated_vocab import WORD_TEXT
from tests.stack import MODEL, Stack
from tests.watch import first

GiB = 1 << 30
DEVICES = "cpu:32GiB,cuda:24GiB,cuda:24GiB"


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory, nats_binary: Path) -> Iterator[Stack]:
    overrides = {
        "CORRAL_ENGINE": "simulated",
        "CORRAL_SIM_DEVICES": DEVICES,
        "CORRAL_SIM_TOKENS_PER_SECOND": "0",  # instant
    }
    stack = Stack(tmp_path_factory.mktemp("simulated"), nats_binary, overrides).start()
    yield stack
    stack.stop()


def test_a_generation_completes_with_the_simulated_text(simulated: Stack) -> None:
    body = {"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 5}}
    answer = httpx.post(f"{simulated.url}/api/generate", json=body, timeout=60).json()
    assert answer["response"] == WORD_TEXT.decode() * 5
    assert (answer["done_reason"], answer["eval_count"]) == ("length", 5)
    assert answer["prompt_eval_count"] > len("Hi")  # the template's system and turn tokens too


def test_a_streamed_chat_ends_when_the_simulated_answer_does(simulated: Stack) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    with httpx.stream("POST", f"{simulated.url}/api/chat", json=body, timeout=60) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    text = "".join(line["message"]["content"] for line in lines)
    assert text == WORD_TEXT.decode() * ANSWER_TOKENS
    assert (lines[-1]["done_reason"], lines[-1]["eval_count"]) == ("stop", ANSWER_TOKENS)


async def test_the_declared_devices_carry_the_loaded_model(simulated: Stack) -> None:
    ps = httpx.get(f"{simulated.url}/api/ps", timeout=30).json()["models"]
    (model,) = [m for m in ps if m["name"] == MODEL]
    assert model["size_vram"] == model["size"] > 0  # it fits on one GPU, so it all sits there
    nc = await nats.connect(simulated.nats_url)
    try:
        heartbeats = await nc.subscribe(subjects.HEARTBEAT)
        state = await first(
            heartbeats, WorkerState.model_validate_json, lambda s: bool(s.resident), WorkerState
        )
    finally:
        await nc.close()
    assert state.engine == "simulated"
    free = {d.id: (d.kind, d.free_memory, d.total_memory) for d in state.devices}
    assert free == {
        "cpu": ("cpu", 32 * GiB, 32 * GiB),
        "cuda:0": ("cuda", 24 * GiB - model["size"], 24 * GiB),
        "cuda:1": ("cuda", 24 * GiB, 24 * GiB),
    }
