"""The scheduler at fleet scale and the dispatch path under load, in one run.

    P5  one placement decision at 1,000 workers × 10 models: median and p99 in ms    (target < 1 ms)
        - `place` alone, on the view `Fleet.workers()` builds from 1,000 heartbeats, for a
          request that dispatches, one whose model has every slot busy (it waits with
          CORRAL_MAX_REPLICAS=1, else it gets a replica) and one that loads (its model
          resident nowhere);
        - that view after one worker's heartbeat (each worker's part is kept until it
          changes), and built from scratch (1,000 heartbeats into a new fleet);
        - a whole `Scheduler.handle(Arrived(...))` step after 1,000 `Heartbeat` events: the
          view, placement and the `Run` command (each run is then answered, untimed, so the
          fleet stays as it was). Logging is left unconfigured and metrics have no provider
          here, so neither costs what it does in the service.
    P4  dispatch throughput through a whole stack (`corral serve`'s launcher) on the simulated
        instant engine (CORRAL_ENGINE=simulated, CORRAL_SIM_TOKENS_PER_SECOND=0), 64 slots:
        64 concurrent clients send non-streaming /api/generate with num_predict 1 for a fixed
        time; requests/s                                                           (target ≥ 1,000)
        queue-to-start p50/p99: each response's load_duration, which the gateway measures from
        publishing the request to the worker's Started (queue, placement, run
        command, reply)                                                          (target p99 < 20 ms)
        and the clients' own latency p50/p99 beside it; then the cores each process used
        while requests were counted, and its CPU ms per request.

The clients run on the same cores as the stack (their share is printed). Targets are printed
next to the figures, never asserted. Prints JSON and writes bench/results/scheduler.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench.stack import MODEL, launched_stack, report
from services.protocol import CommandResult, Device, GenerationRequest, ModelRef, ResidentModel, WorkerState
from services.scheduler.core import Arrived, Heartbeat, Run, RunAnswered, Scheduler
from services.scheduler.fleet import Fleet
from services.scheduler.placement import Policy, Want, Worker, place

GiB = 1 << 30
WORKERS = 1_000
MODELS = 10  # models 0-8 have free slots somewhere; model 9's are all busy
SLOTS = 4
NUM_CTX = 2048
MODEL_SIZE = 4 * GiB
DECISIONS = 2_000  # timed calls per P5 figure of `place`
STEPS = 400  # ... and of the view build and the whole step, which take longer
CLIENTS = 64
WARMUP = 3.0  # seconds of load before counting
DURATION = 15.0  # seconds counted


def percentiles(ns: list[int]) -> dict[str, float | None]:
    """Median and p99 of durations in ns, in ms (None without any)."""
    if not ns:
        return {"median_ms": None, "p99_ms": None}
    ordered = sorted(ns)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"median_ms": round(statistics.median(ordered) / 1e6, 4), "p99_ms": round(p99 / 1e6, 4)}


def timed(call: Callable[[], object], times: int = DECISIONS) -> list[int]:
    out = []
    for _ in range(times):
        start = time.perf_counter_ns()
        call()
        out.append(time.perf_counter_ns() - start)
    return out


# ---- P5: placement over 1,000 workers


def digest(model: int) -> str:
    return f"sha256:{model:064x}"


def heartbeat(worker: int, rng: random.Random) -> WorkerState:
    """A worker with two GPUs holding two of models 0-8 (some slots busy) and, on one worker in
    ten, model 9 with every slot busy."""
    held = [(worker % 9, rng.randint(0, SLOTS)), ((worker // 9 + 1 + worker) % 9, rng.randint(0, SLOTS))]
    if held[0][0] == held[1][0]:
        held.pop()
    if worker % 10 == 0:
        held.append((9, SLOTS))
    resident = [
        ResidentModel(
            name=f"m{m}:latest",
            digest=digest(m),
            num_ctx=NUM_CTX,
            size=MODEL_SIZE,
            slots=SLOTS,
            busy=busy,
            keep_alive=300.0,
            expires_at=None if busy else 1e9 + rng.random(),
        )
        for m, busy in held
    ]
    devices = [Device(id="cpu", kind="cpu", free_memory=rng.randint(0, 64) * GiB, total_memory=64 * GiB)]
    devices += [
        Device(id=f"cuda:{i}", kind="cuda", free_memory=rng.randint(0, 20) * GiB, total_memory=24 * GiB)
        for i in range(2)
    ]
    return WorkerState(
        worker_id=f"w{worker:04d}", seq=1, engine="simulated", devices=devices, resident=resident
    )


def request(model: int, n: int) -> GenerationRequest:
    ref = ModelRef(name=f"m{model}:latest", full_name=f"m{model}", digest=digest(model), size=MODEL_SIZE)
    return GenerationRequest(kind="generate", model=ref, prompt="hi", reply_subject=f"corral.reply.b{n}")


def max_loaded(gpus: int) -> int:
    return 3 * max(gpus, 1)


def bench_place(states: list[WorkerState]) -> dict[str, Any]:
    fleet = Fleet(max_loaded)
    for state in states:
        fleet.update(state, 0.0)
    workers: list[Worker] = fleet.workers()
    busy = Want(digest(9), NUM_CTX, MODEL_SIZE, SLOTS)  # every slot of model 9 is busy
    cases = {
        "dispatch": (Want(digest(0), NUM_CTX, MODEL_SIZE, SLOTS), Policy()),
        "wait": (busy, Policy(max_replicas=1)),  # Ollama's one instance: it waits
        "replica": (busy, Policy()),  # a replica on a worker with room
        "load": (Want(digest(MODELS), NUM_CTX, MODEL_SIZE, SLOTS), Policy()),
    }
    figures: dict[str, Any] = {}
    for name, (want, policy) in cases.items():
        figures[f"place_{name}"] = {
            "decision": type(place(workers, want, policy)).__name__,
            **percentiles(timed(partial(place, workers, want, policy))),
        }
    figures["fleet_view_after_one_heartbeat"] = percentiles(
        timed(partial(one_heartbeat, fleet, states), STEPS)
    )
    figures["fleet_view_from_scratch"] = percentiles(timed(partial(from_scratch, states), STEPS // 10))
    return figures


def one_heartbeat(fleet: Fleet, states: list[WorkerState]) -> list[Worker]:
    """A heartbeat from one worker (a newer snapshot), then the view placement reads."""
    states[0] = states[0].model_copy(update={"seq": states[0].seq + 1})
    fleet.update(states[0], 0.0)
    return fleet.workers()


def from_scratch(states: list[WorkerState]) -> list[Worker]:
    """Every worker's view built anew (a scheduler that has just started): 1,000 heartbeats."""
    fleet = Fleet(max_loaded)
    for state in states:
        fleet.update(state, 0.0)
    return fleet.workers()


def bench_handle(states: list[WorkerState]) -> dict[str, Any]:
    scheduler = Scheduler(
        max_loaded=max_loaded,
        num_parallel=SLOTS,
        context_length=NUM_CTX,
        stale_after=1e12,
        clock=lambda: 1e9,
    )
    for state in states:
        scheduler.handle(Heartbeat(state))
    requests = [request(n % 9, n) for n in range(STEPS)]
    durations, kinds = [], Counter[str]()
    for pending in requests:
        start = time.perf_counter_ns()
        commands = scheduler.handle(Arrived(pending))
        durations.append(time.perf_counter_ns() - start)
        kinds.update(type(c).__name__ for c in commands)
        for run in (c for c in commands if isinstance(c, Run)):
            scheduler.handle(RunAnswered(run.request_id, run.worker_id, CommandResult(ok=True)))
    return {"handle_arrived": {"commands": dict(kinds), **percentiles(durations)}}


def p5() -> dict[str, Any]:
    rng = random.Random(5)
    states = [heartbeat(w, rng) for w in range(WORKERS)]
    resident = sum(len(s.resident) for s in states)
    return {
        "workers": WORKERS,
        "models": MODELS,
        "instances": resident,
        "target_ms": "< 1",
        **bench_place(states),
        **bench_handle(states),
    }


# ---- P4: dispatch throughput through the stack


@dataclass(frozen=True)
class Sample:
    """One request as a client saw it: when it ended, its latency and its load_duration, in s."""

    done: float  # time.perf_counter()
    latency: float
    load_duration: float
    ok: bool


async def client(http: httpx.AsyncClient, i: int, stop_at: float, samples: list[Sample]) -> None:
    """Send one request after another until `stop_at`."""
    n = 0
    while time.perf_counter() < stop_at:
        body = {
            "model": MODEL,
            "prompt": f"client {i} request {n}",
            "stream": False,
            "options": {"num_predict": 1},
        }
        sent = time.perf_counter()
        response = await http.post("/api/generate", json=body)
        done = time.perf_counter()
        ok = response.status_code == 200
        load = response.json().get("load_duration", 0) / 1e9 if ok else 0.0
        samples.append(Sample(done, done - sent, load, ok))
        n += 1


def cpu_seconds(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU time (user + system) each process has used so far, in s (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            used[name] = (int(fields[11]) + int(fields[12])) / tick
    return used


async def load_stack(url: str, pids: Mapping[str, int]) -> tuple[list[Sample], dict[str, float], float]:
    """Samples of CLIENTS clients over WARMUP + DURATION s, the cores each process used while they
    were counted, and the moment counting began."""
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    samples: list[Sample] = []
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits, trust_env=False) as http:
        counted_from = time.perf_counter() + WARMUP
        stop_at = counted_from + DURATION
        clients = asyncio.gather(*(client(http, i, stop_at, samples) for i in range(CLIENTS)))
        await asyncio.sleep(WARMUP)
        before = cpu_seconds(pids)
        await asyncio.sleep(DURATION)
        after = cpu_seconds(pids)
        await clients
    cores = {name: round((after[name] - before[name]) / DURATION, 2) for name in after if name in before}
    return [x for x in samples if counted_from <= x.done <= stop_at], cores, counted_from


def p4() -> dict[str, Any]:
    overrides = {
        "CORRAL_ENGINE": "simulated",
        "CORRAL_SIM_TOKENS_PER_SECOND": "0",
        "CORRAL_SIM_DEVICES": "cpu:16GiB",
        "OLLAMA_NUM_PARALLEL": str(CLIENTS),
        "OLLAMA_MAX_QUEUE": str(CLIENTS * 8),
    }
    with launched_stack(overrides) as (url, pids):
        samples, cores, _ = asyncio.run(load_stack(url, pids))
    ok = [x for x in samples if x.ok]
    rate = len(ok) / DURATION
    return {
        "clients": CLIENTS,
        "seconds_counted": DURATION,
        "requests_ok": len(ok),
        "requests_failed": len(samples) - len(ok),
        "requests_per_s": round(rate, 1),
        "target_requests_per_s": ">= 1000",
        "queue_to_start_gateway_load_duration": percentiles([int(x.load_duration * 1e9) for x in ok]),
        "target_queue_to_start_p99_ms": "< 20",
        "client_latency": percentiles([int(x.latency * 1e9) for x in ok]),
        "cores_used_while_counted": cores,
        "cpu_ms_per_request": {name: round(used * 1000 / rate, 2) for name, used in cores.items()}
        if rate
        else None,
    }


def main() -> None:
    """`python -m bench.scheduler`: P5 (in-process), then P4 (a stack of its own)."""
    load_before = os.getloadavg()
    result = {"cores": os.cpu_count(), "load_average_before": load_before, "P5": p5(), "P4": p4()}
    result["load_average_after"] = os.getloadavg()
    report("scheduler", result)


if __name__ == "__main__":
    main()
