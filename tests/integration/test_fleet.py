"""A hundred simulated workers (one process, `tests/fleet.py`, each a real worker with its own
NATS connection) serve one queue: every request of a burst completes, each once, and the
scheduler spreads them over many workers with replicas. The 3-node NATS cluster version of
this test is still to come."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest

from services.protocol import WorkerState, subjects
from tests.stack import MODEL, Stack
from tests.watch import DEADLINE, ReplyRecorder, until

WORKERS = 100
REQUESTS = 200


@pytest.fixture
def fleet(tmp_path: Path, nats_binary: Path) -> Iterator[Stack]:
    settings = {
        "CORRAL_ENGINE": "simulated",
        "CORRAL_SIM_TOKENS_PER_SECOND": "50",
        "OLLAMA_NUM_PARALLEL": "1",
        "CORRAL_HEARTBEAT_INTERVAL": "1",
    }
    stack = Stack(tmp_path, nats_binary, settings).start(services=("registry", "scheduler", "gateway"))
    stack.start_process("fleet", ["-m", "tests.fleet", str(WORKERS)])
    yield stack
    stack.stop()


async def workers_seen(stack: Stack, count: int) -> set[str]:
    """Worker ids from heartbeats, until `count` distinct ones have beaten."""
    nc = await nats.connect(stack.nats_url)
    seen: set[str] = set()
    try:
        heartbeats = await nc.subscribe(subjects.HEARTBEAT)
        while len(seen) < count:
            message = await heartbeats.next_msg(timeout=DEADLINE)
            seen.add(WorkerState.model_validate_json(message.data).worker_id)
    finally:
        await nc.close()
    return seen


async def burst(url: str, count: int) -> list[dict[str, object]]:
    body = {"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 10}}
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=DEADLINE, limits=limits) as client:
        responses = await asyncio.gather(*(client.post("/api/generate", json=body) for _ in range(count)))
    return [response.json() for response in responses]


def test_a_hundred_workers_serve_one_queue(fleet: Stack) -> None:
    assert len(asyncio.run(workers_seen(fleet, WORKERS))) == WORKERS
    until(lambda: httpx.get(f"{fleet.url}/api/tags", timeout=5).status_code == 200, what="the gateway")
    replies = ReplyRecorder(fleet.nats_url)
    try:
        answers = asyncio.run(burst(fleet.url, REQUESTS))
        assert [a.get("done_reason") for a in answers] == ["length"] * REQUESTS, answers[:3]
        started = replies.started_on()
        assert len(started) == REQUESTS  # each request started once
        assert len(set(started)) >= 10  # spread over the fleet by replicas, not queued on one
    finally:
        replies.close()
