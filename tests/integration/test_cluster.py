"""corral on a 3-node NATS cluster (issue 10, item 5), with real processes: every stream and the
lease bucket kept on all three servers (CORRAL_STREAM_REPLICAS=3), a fleet of simulated workers
(`tests/fleet.py`) serving bursts while the server leading the request stream is killed with
SIGKILL, and then the one leading the scheduler's lease. Every request completes or fails with
a clear error, none hangs, none runs twice, requests sent after a kill complete, and the queue
ends empty.

Runs are counted through the protocol: one reply recorder per server (each on that server
alone), so whichever server dies, the others saw every Started."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
import pytest

from corral.nats_server import version
from services.protocol import WorkerState, subjects
from tests.cluster import LEASE_STREAM, Cluster, ClusterStack
from tests.conftest import nats_binaries
from tests.stack import MODEL
from tests.watch import DEADLINE, ReplyRecorder, until

# The issue asks for a hundred workers; in one process, as in test_fleet.py, they fit on 2 cores.
WORKERS = 100
TOKENS = 40  # 2 s a request at 20 tokens/s: a kill lands while many run
DURING, AFTER = 100, 50  # requests of the burst a server dies under, and of the one sent just after
BODY = {"model": MODEL, "prompt": "Hi", "options": {"num_predict": TOKENS}}
SETTINGS = {
    "CORRAL_ENGINE": "simulated",
    "CORRAL_SIM_TOKENS_PER_SECOND": "20",
    "OLLAMA_NUM_PARALLEL": "1",
    "CORRAL_HEARTBEAT_INTERVAL": "1",
    "CORRAL_STREAM_REPLICAS": "3",
    "CORRAL_QUEUE_ACK_WAIT": "5",  # an acknowledgement lost to an election comes back soon
}
# What a request may fail with when the server under it dies: a reply stream cut in the middle
# (its client was on the dead server), said so rather than cut short.
CLEAR_ERRORS = ("reply stream interrupted", "worker sim")


@pytest.fixture(params=nats_binaries(), ids=lambda p: f"nats-{version(p)}")
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ClusterStack]:
    cluster = Cluster(request.param, tmp_path / "cluster").start()
    stack = ClusterStack(tmp_path, request.param, SETTINGS, cluster=cluster)
    try:
        stack.start()
        stack.start_process("fleet", ["-m", "tests.fleet", str(WORKERS)])
        yield stack
    finally:
        stack.stop()


@dataclass
class Answer:
    status: int  # 0: no answer in time (a hang)
    last: dict[str, object]  # the last NDJSON line: Done, or {"error": ...}
    first_at: float  # monotonic time of its first line


@dataclass
class Burst:
    """`count` concurrent streamed requests, sent from a thread of their own as soon as it is made."""

    url: str
    count: int
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=asyncio.run, args=(self._send(),), daemon=True)
        self._thread.start()

    async def _send(self) -> None:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=self.url, timeout=DEADLINE, limits=limits) as client:
            await asyncio.gather(*(self._one(client) for _ in range(self.count)))

    async def _one(self, client: httpx.AsyncClient) -> None:
        answer = Answer(0, {}, 0.0)
        try:
            async with client.stream("POST", "/api/generate", json=BODY) as response:
                async for line in response.aiter_lines():
                    if line:
                        answer.first_at = answer.first_at or time.monotonic()
                        answer.last = json.loads(line)
                answer.status = response.status_code
        except httpx.TimeoutException:
            answer.status = 0
        self.answers.append(answer)

    def join(self) -> list[Answer]:
        self._thread.join(DEADLINE + 30)
        assert not self._thread.is_alive(), "the burst did not finish"
        return self.answers


class Runs:
    """How many times each request was started, as the best-placed of one recorder per server saw."""

    def __init__(self, cluster: Cluster) -> None:
        self._recorders = [ReplyRecorder(url) for url in cluster.servers]

    def started(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for recorder in self._recorders:
            for request_id in list(recorder.replies):
                counts[request_id] = max(counts.get(request_id, 0), recorder.started(request_id))
        return counts

    def close(self) -> None:
        for recorder in self._recorders:
            recorder.close()


async def _workers_seen(cluster: Cluster, count: int) -> int:
    connection = await nats.connect(cluster.servers)
    seen: set[str] = set()
    try:
        heartbeats = await connection.subscribe(subjects.HEARTBEAT)
        while len(seen) < count:
            message = await heartbeats.next_msg(timeout=DEADLINE)
            seen.add(WorkerState.model_validate_json(message.data).worker_id)
    finally:
        await connection.close()
    return len(seen)


def _replicas(cluster: Cluster, stream: str) -> int:
    info = asyncio.run(cluster.stream_info(stream))
    return 0 if info is None else int(info.config.num_replicas or 0)


def _all_current(cluster: Cluster, stream: str) -> bool:
    """Every replica of `stream` is caught up with its leader."""
    info = asyncio.run(cluster.stream_info(stream))
    if info is None or info.cluster is None or not info.cluster.leader:
        return False
    peers = info.cluster.replicas or []
    return len(peers) == cluster.size - 1 and all(peer.current for peer in peers)


def _check(answers: list[Answer], what: str) -> tuple[int, list[str]]:
    """How many of `answers` completed; the errors of the others (each a clear one)."""
    hung = sum(1 for answer in answers if answer.status == 0)
    assert hung == 0, f"{hung} request(s) of {what} got no answer within {DEADLINE:g} s"
    completed = [a for a in answers if a.last.get("done") is True]
    assert all((a.last["done_reason"], a.last["eval_count"]) == ("length", TOKENS) for a in completed)
    errors = [str(a.last.get("error", a.last)) for a in answers if a not in completed]
    assert all(error.startswith(CLEAR_ERRORS) for error in errors), f"{what}: {errors[:5]}"
    return len(completed), errors


def _kill_under_load(fleet: ClusterStack, cluster: Cluster, runs: Runs, victim: str) -> dict[str, float]:
    """Kill `victim` while a burst runs, send another burst right after, and check both.
    Returns figures: seconds from the kill to the stream's and the lease's new leaders, and to
    the first token of a request sent after the kill (the queue serving again)."""
    before = sum(runs.started().values())
    during = Burst(fleet.url, DURING)
    until(lambda: sum(runs.started().values()) >= before + DURING // 2, what="the burst to be running")
    killed_at = time.monotonic()
    cluster.kill(victim)
    after = Burst(fleet.url, AFTER)
    until(lambda: cluster.leader_of(subjects.REQUEST_STREAM) not in (None, victim), what="a queue leader")
    stream_led = time.monotonic() - killed_at
    until(lambda: cluster.leader_of(LEASE_STREAM) not in (None, victim), what="a lease leader")
    lease_led = time.monotonic() - killed_at
    completed_during, errors_during = _check(during.join(), f"the burst {victim} died under")
    completed_after, errors_after = _check(after.join(), f"the burst sent after {victim} died")
    assert completed_after == AFTER, errors_after[:5]  # sent after the kill: each one completes
    serving = min(answer.first_at for answer in after.answers) - killed_at
    cluster.restart(victim)
    for stream in (subjects.REQUEST_STREAM, subjects.CANCEL_STREAM, LEASE_STREAM):
        until(lambda stream=stream: _all_current(cluster, stream), what=f"{victim} to catch up on {stream}")
    return {
        "completed_during": completed_during,
        "failed_during": len(errors_during),
        "stream_leader_after_s": round(stream_led, 2),
        "lease_leader_after_s": round(lease_led, 2),
        "serving_after_s": round(serving, 2),
    }


def test_the_fleet_survives_the_loss_of_the_servers_leading_the_queue_and_the_lease(
    fleet: ClusterStack,
) -> None:
    cluster = fleet.cluster
    assert cluster is not None
    assert asyncio.run(_workers_seen(cluster, WORKERS)) == WORKERS
    until(lambda: httpx.get(f"{fleet.url}/api/tags", timeout=5).status_code == 200, what="the gateway")
    assert httpx.post(f"{fleet.url}/api/generate", json=BODY, timeout=DEADLINE).status_code == 200
    for stream in (subjects.REQUEST_STREAM, subjects.CANCEL_STREAM, LEASE_STREAM):
        assert _replicas(cluster, stream) == 3, stream
    runs = Runs(cluster)
    try:
        queue_leader = cluster.leader_of(subjects.REQUEST_STREAM)
        lease_leader = cluster.leader_of(LEASE_STREAM)
        assert queue_leader and lease_leader
        figures = {queue_leader: _kill_under_load(fleet, cluster, runs, queue_leader)}
        if lease_leader != queue_leader:
            lease_leader = cluster.leader_of(LEASE_STREAM)  # it may have moved meanwhile
            assert lease_leader
            figures[lease_leader] = _kill_under_load(fleet, cluster, runs, lease_leader)
        print(f"\ncluster figures ({WORKERS} workers):", figures)

        until(lambda: asyncio.run(fleet.stream_messages()) == 0, what="the queue to empty")
        started = runs.started()
        twice = {request_id: count for request_id, count in started.items() if count > 1}
        assert twice == {}, f"requests started more than once: {twice}"
        completed = sum(int(phase["completed_during"]) + AFTER for phase in figures.values())
        assert len(started) >= completed  # each answer that came was started, once
    finally:
        runs.close()
