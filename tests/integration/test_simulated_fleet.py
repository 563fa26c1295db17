"""A whole stack on the simulated engine (CORRAL_ENGINE=simulated, for scheduler tests at fleet
scale): the bundled model's template renders with its tokenizer, generations come back through
the gateway, and the declared devices are what the worker reports and /api/ps shows."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import nats
import ollama
import pytest

from corral.tables import processor
from services.protocol import WorkerState, subjects
from services.worker.engines.simulated import ANSWER_TOKENS
from services.worker.engines.simulated_vocab import WORD_TEXT
from tests.integration.test_queue import Background
from tests.stack import MODEL, Stack
from tests.watch import ReplyRecorder, first, until

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


async def heartbeat(stack: Stack, where: Callable[[WorkerState], bool]) -> WorkerState:
    """The first heartbeat that says `where`."""
    nc = await nats.connect(stack.nats_url)
    try:
        heartbeats = await nc.subscribe(subjects.HEARTBEAT)
        return await first(heartbeats, WorkerState.model_validate_json, where, WorkerState)
    finally:
        await nc.close()


def holding_a_model(state: WorkerState) -> bool:
    return bool(state.resident)


async def test_the_declared_devices_carry_the_loaded_model(simulated: Stack) -> None:
    ps = httpx.get(f"{simulated.url}/api/ps", timeout=30).json()["models"]
    (model,) = [m for m in ps if m["name"] == MODEL]
    assert model["size_vram"] == model["size"] > 0  # it fits on one GPU, so it all sits there
    state = await heartbeat(simulated, holding_a_model)
    assert state.engine == "simulated"
    free = {d.id: (d.kind, d.free_memory, d.total_memory) for d in state.devices}
    assert free == {
        "cpu": ("cpu", 32 * GiB, 32 * GiB),
        "cuda:0": ("cuda", 24 * GiB - model["size"], 24 * GiB),
        "cuda:1": ("cuda", 24 * GiB, 24 * GiB),
    }


def test_an_exl2_model_runs_on_a_worker_that_says_it_runs_exl2(simulated: Stack, tmp_path: Path) -> None:
    """The simulated worker reports every format in its heartbeat, so the scheduler places an EXL2
    directory on it (a CPU-only llama.cpp worker would be passed over: test_create.py)."""
    state = asyncio.run(heartbeat(simulated, lambda state: True))
    assert state.formats == ["gguf", "exl2", "exl3"]
    client = ollama.Client(host=simulated.url)
    config = {"model_type": "llama", "num_hidden_layers": 30, "num_attention_heads": 9, "hidden_size": 576,
              "num_key_value_heads": 3, "max_position_embeddings": 8192,
              "quantization_config": {"quant_method": "exl2", "bits": 4.0}}  # fmt: skip
    files = {}
    for name, data in {
        "config.json": json.dumps(config).encode(),
        "output.safetensors": b"\x02" + b"\x00" * 7 + b"{}",
    }.items():
        (tmp_path / name).write_bytes(data)
        files[name] = client.create_blob(tmp_path / name)
    assert [p.status for p in client.create("exl2-model", files=files, stream=True)][-1] == "success"
    body = {
        "model": "exl2-model",
        "prompt": "Hi",
        "raw": True,
        "stream": False,
        "keep_alive": 0,
        "options": {"num_predict": 3},
    }
    answer = httpx.post(f"{simulated.url}/api/generate", json=body, timeout=60).json()
    assert (answer["response"], answer["done_reason"]) == (WORD_TEXT.decode() * 3, "length")
    client.delete("exl2-model")


MiB = 1 << 20
# (case, CORRAL_SIM_DEVICES, other settings, the devices the bundled model is to sit on)
PLACEMENTS = [
    ("one-gpu-the-roomiest", "cpu:4GiB,cuda:1GiB,cuda:2GiB", {}, {"cuda:1"}),
    (
        "sched-spread-every-gpu",
        "cpu:4GiB,cuda:1GiB,cuda:2GiB",
        {"OLLAMA_SCHED_SPREAD": "1"},
        {"cuda:0", "cuda:1"},
    ),
    ("partly-in-system-memory", "cpu:4GiB,cuda:560MiB", {}, {"cuda:0", "cpu"}),
    ("no-gpu", "cpu:4GiB", {}, {"cpu"}),
]


@pytest.mark.parametrize(
    ("devices", "settings", "sits_on"), [p[1:] for p in PLACEMENTS], ids=[p[0] for p in PLACEMENTS]
)
async def test_the_scheduler_places_the_model_on_devices_as_ollama_does(
    tmp_path: Path, nats_binary: Path, devices: str, settings: dict[str, str], sits_on: set[str]
) -> None:
    """Placement's split reaches the worker, whose heartbeat and /api/ps report it (a GPU's room
    is its free memory less the 457 MiB CUDA keeps)."""
    overrides = {"CORRAL_ENGINE": "simulated", "CORRAL_SIM_DEVICES": devices, **settings}
    stack = Stack(tmp_path, nats_binary, overrides).start()
    try:
        (resident,) = (await heartbeat(stack, holding_a_model)).resident
        assert set(resident.placement) == sits_on
        assert resident.size == sum(resident.placement.values())
        ps = httpx.get(f"{stack.url}/api/ps", timeout=30).json()["models"]
        (model,) = ps
        on_gpus = sum(size for device, size in resident.placement.items() if device != "cpu")
        assert (model["size"], model["size_vram"]) == (resident.size, on_gpus)
        expected = ({"cpu"} == sits_on and "100% CPU") or ("cpu" not in sits_on and "100% GPU") or "CPU/GPU"
        assert processor(model["size"], model["size_vram"]).endswith(expected)
    finally:
        stack.stop()


def test_a_second_worker_takes_a_replica_when_every_slot_is_busy(tmp_path: Path, nats_binary: Path) -> None:
    """One slot per instance; a request comes while the only instance is busy, and another
    worker has room: a replica is loaded there and both requests run at once (Ollama #3902)."""
    overrides = {
        "CORRAL_ENGINE": "simulated",
        "CORRAL_SIM_TOKENS_PER_SECOND": "20",
        "OLLAMA_NUM_PARALLEL": "1",
    }
    stack = Stack(tmp_path, nats_binary, overrides).start()
    replies = ReplyRecorder(stack.nats_url)
    try:
        stack.start_service("worker2", module="worker", env={"CORRAL_WORKER_ID": "w2"})
        asyncio.run(heartbeat(stack, lambda state: state.worker_id == "w2"))
        body = {"model": MODEL, "prompt": "Hi", "options": {"num_predict": 60}}  # 3 s at 20 tokens/s
        first_request = Background(stack.url, body)
        until(lambda: replies.started_on() == ["w1"], what="the first request to start on w1")
        second_request = Background(stack.url, body)
        until(lambda: sorted(replies.started_on()) == ["w1", "w2"], what="the second to start on w2")
        assert not first_request.chunks or first_request.chunks[-1].get("done") is not True
        assert first_request.join()[-1]["eval_count"] == second_request.join()[-1]["eval_count"] == 60
    finally:
        replies.close()
        stack.stop()


def test_a_second_gpu_of_the_same_worker_takes_a_replica_when_every_slot_is_busy(
    tmp_path: Path, nats_binary: Path
) -> None:
    """One worker with two GPUs, one slot per instance: a request comes while the only instance
    (on cuda:0) is busy, so a second instance of the model is loaded on cuda:1 of the same worker,
    both requests run at once, each on its own instance, and /api/ps lists both."""
    overrides = {
        "CORRAL_ENGINE": "simulated",
        "CORRAL_SIM_DEVICES": "cpu:8GiB,cuda:4GiB,cuda:4GiB",
        "CORRAL_SIM_TOKENS_PER_SECOND": "20",
        "OLLAMA_NUM_PARALLEL": "1",
    }
    stack = Stack(tmp_path, nats_binary, overrides).start()
    replies = ReplyRecorder(stack.nats_url)
    try:
        body = {"model": MODEL, "prompt": "Hi", "options": {"num_predict": 80}}  # 4 s at 20 tokens/s
        first_request = Background(stack.url, body)
        until(lambda: replies.started_on() == ["w1"], what="the first request to start")
        second_request = Background(stack.url, body)
        until(lambda: replies.started_on() == ["w1", "w1"], what="the second to start on the same worker")
        assert not first_request.chunks or first_request.chunks[-1].get("done") is not True

        def both_busy(state: WorkerState) -> bool:
            return len(state.resident) == 2 and all(m.busy == 1 for m in state.resident)

        state = asyncio.run(heartbeat(stack, both_busy))
        assert sorted(tuple(m.placement) for m in state.resident) == [("cuda:0",), ("cuda:1",)]
        assert len({m.instance for m in state.resident}) == 2
        free = {d.id: d.free_memory for d in state.devices}
        assert free["cuda:0"] == free["cuda:1"] < 4 * GiB  # the same model on each GPU
        ps = httpx.get(f"{stack.url}/api/ps", timeout=30).json()["models"]
        assert [(m["name"], m["size_vram"] == m["size"]) for m in ps] == [(MODEL, True), (MODEL, True)]
        assert first_request.join()[-1]["eval_count"] == second_request.join()[-1]["eval_count"] == 80
    finally:
        replies.close()
        stack.stop()


def test_a_model_larger_than_every_worker_is_refused_at_once(tmp_path: Path, nats_binary: Path) -> None:
    """No request waits for room that can never come: the bundled model (about 170 MB at its
    context) on a worker with 100 MiB in all is refused with Ollama's text, not left waiting."""
    overrides = {"CORRAL_ENGINE": "simulated", "CORRAL_SIM_DEVICES": "cpu:100MiB"}
    stack = Stack(tmp_path, nats_binary, overrides).start(("registry", "scheduler", "gateway", "worker"))
    try:
        asyncio.run(heartbeat(stack, lambda state: state.worker_id == "w1"))
        until(lambda: answers(f"{stack.url}/api/tags"), what="the gateway and the registry to answer")
        body = {"model": MODEL, "prompt": "Hi", "stream": False}
        answer = httpx.post(f"{stack.url}/api/generate", json=body, timeout=120)
        assert answer.status_code == 500
        error = answer.json()["error"]
        assert error.startswith("model requires more system memory (") and error.endswith(
            " than is available (100.0 MiB)"
        )
        assert httpx.get(f"{stack.url}/api/queue", timeout=30).json()["waiting"] == 0
    finally:
        stack.stop()


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
