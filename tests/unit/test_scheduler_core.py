"""The scheduler core as a step function: each scenario is a table of event → commands, on a fixed clock.

Workers are "w1", "w2"…, requests "r1", "r2"…; every model is 100 MB and every worker has
8 GB free unless a row says otherwise, so placement is decided by residency and slots.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass
from typing import Literal

import pytest

from services.protocol import (
    CommandResult,
    Device,
    Done,
    Failed,
    GenerationRequest,
    LoadCommand,
    ModelRef,
    Options,
    ResidentModel,
    RunCommand,
    UnloadCommand,
    WorkerState,
)
from services.protocol.messages import ErrorCode, ModelFile, instance_id
from services.scheduler.core import (
    NO_WORKER,
    NO_WORKER_WAIT,
    STARVED_AFTER,
    Ack,
    Arrived,
    Cancelled,
    CancelOn,
    Command,
    Event,
    Heartbeat,
    InProgress,
    Load,
    LoadAnswered,
    Nak,
    Reply,
    Run,
    RunAnswered,
    Scheduler,
    Stopping,
    Tick,
    Unload,
)
from services.scheduler.memory import estimate
from services.scheduler.service import SchedulerShell

GB = 1_000_000_000
A, B, C = "sha256:" + "a" * 64, "sha256:" + "b" * 64, "sha256:" + "c" * 64
X = "sha256:" + "e" * 64  # an EXL2 model: a directory of files, for a GPU worker's exllamav2
MODELS = {
    digest: ModelRef(
        name=f"{name}:1", full_name=f"registry.ollama.ai/library/{name}:1", digest=digest, size=10**8
    )
    for digest, name in ((A, "a"), (B, "b"), (C, "c"))
}
MODELS[X] = ModelRef(
    name="x:1",
    full_name="registry.ollama.ai/library/x:1",
    digest=X,
    size=10**8,
    format="exl2",
    files=[ModelFile(name="config.json", digest="sha256:" + "f" * 64)],
)
NEED = estimate(10**8, None, 2048, 1).total  # what each model here needs at the default context
A1, A2 = instance_id(A, 2048), instance_id(A, 2048, 2)  # a worker's first and second instance of A
GPU_FORMATS = ["gguf", "exl2", "exl3"]  # a worker with llama.cpp and both exllamas
CONTEXT = 2048  # OLLAMA_CONTEXT_LENGTH
STALE = 10.0  # a worker silent this long is gone
MAX_LOADED = 2
_seq = itertools.count(1)  # heartbeat sequence numbers, growing across every table


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Later:
    """Not an event: the table moves the clock on."""

    seconds: float


def core(clock: Clock | None = None) -> Scheduler:
    return Scheduler(
        max_loaded=lambda gpus: MAX_LOADED,
        num_parallel=1,
        context_length=CONTEXT,
        stale_after=STALE,
        clock=clock or Clock(),
    )


# ---- events


def req(
    rid: str,
    digest: str = A,
    *,
    num_ctx: int | None = None,
    action: Literal["generate", "load", "unload"] = "generate",
    client_id: str = "",
) -> GenerationRequest:
    return GenerationRequest(
        id=rid,
        kind="generate",
        action=action,
        model=MODELS[digest],
        prompt="hello",
        options=Options(num_ctx=num_ctx),
        reply_subject=f"corral.reply.{rid}",
        client_id=client_id,
    )


def arrive(rid: str, digest: str = A, **kwargs: object) -> Arrived:
    return Arrived(req(rid, digest, **kwargs))  # type: ignore[arg-type]


def res(
    digest: str = A,
    *,
    busy: int = 0,
    slots: int = 1,
    num_ctx: int = CONTEXT,
    expires: float | None = None,
    keep_alive: float = 300.0,
    on: str = "",
    instance: str = "",
) -> ResidentModel:
    """An instance a worker holds (in system memory, unless `on` names its one GPU); `instance`:
    its id, "" as an older worker reports it."""
    model = MODELS[digest]
    return ResidentModel(
        name=model.name,
        instance=instance,
        digest=digest,
        num_ctx=num_ctx,
        size=model.size,
        slots=slots,
        busy=busy,
        keep_alive=keep_alive,
        expires_at=expires,
        placement={on: NEED} if on else {},
    )


def state(
    worker: str,
    *resident: ResidentModel,
    memory: int = 8 * GB,
    gpus: int = 0,
    formats: list[str] | None = None,
) -> WorkerState:
    """A worker with `memory` free in system memory and on each of `gpus` GPUs (less what its
    resident instances hold there); `formats` None: a heartbeat that does not say (GGUF only)."""
    total = max(memory, 8 * GB)  # each device has 8 GB (or more), `memory` of it free
    devices = [Device(id="cpu", kind="cpu", free_memory=memory, total_memory=total)]
    for index in range(gpus):
        held = sum(m.placement.get(f"cuda:{index}", 0) for m in resident)
        devices.append(Device(id=f"cuda:{index}", kind="cuda", free_memory=memory - held, total_memory=total))
    extra = {} if formats is None else {"formats": formats}
    return WorkerState(
        worker_id=worker, seq=next(_seq), engine="llamacpp", devices=devices, resident=list(resident), **extra
    )


def beat(
    worker: str,
    *resident: ResidentModel,
    memory: int = 8 * GB,
    gpus: int = 0,
    formats: list[str] | None = None,
) -> Heartbeat:
    return Heartbeat(state(worker, *resident, memory=memory, gpus=gpus, formats=formats))


def ran(
    rid: str, worker: str = "w1", *, error: str | None = None, after: WorkerState | None = None
) -> RunAnswered:
    return RunAnswered(rid, worker, CommandResult(ok=error is None, error=error, state=after))


def loaded(
    worker: str,
    digest: str = A,
    num_ctx: int = CONTEXT,
    *,
    error: str | None = None,
    after: WorkerState | None = None,
    instance: str = "",
) -> LoadAnswered:
    result = CommandResult(ok=error is None, error=error, state=after)
    return LoadAnswered(worker, instance or instance_id(digest, num_ctx), digest, num_ctx, result)


def gone_run(rid: str, worker: str) -> RunAnswered:
    return RunAnswered(rid, worker, CommandResult(ok=False, error="the worker is gone"), gone=True)


def unanswered(rid: str, worker: str = "w1") -> RunAnswered:
    """No answer in time: the run may have reached the worker, or not."""
    return RunAnswered(
        rid, worker, CommandResult(ok=False, error="the worker did not answer"), unanswered=True
    )


def gone_load(worker: str, digest: str = A, num_ctx: int = CONTEXT) -> LoadAnswered:
    result = CommandResult(ok=False, error="gone")
    return LoadAnswered(worker, instance_id(digest, num_ctx), digest, num_ctx, result, gone=True)


def cancel(rid: str) -> Cancelled:
    return Cancelled(rid)


# ---- commands


def run(
    worker: str,
    rid: str,
    digest: str = A,
    *,
    num_ctx: int | None = None,
    ran_on: int | None = None,
    instance: str = "",
) -> Run:
    """The run of request `rid` (asking for `num_ctx`) on the instance of `ran_on` tokens (the
    request's own context when None) named `instance` (the first of it when "")."""
    ctx = ran_on or num_ctx or CONTEXT
    command = RunCommand(
        request=req(rid, digest, num_ctx=num_ctx), num_ctx=ctx, instance=instance or instance_id(digest, ctx)
    )
    return Run(worker, rid, command)


def load(
    worker: str,
    rid: str,
    digest: str = A,
    *,
    num_ctx: int | None = None,
    evict: tuple[str, ...] = (),
    on: str = "cpu",
    instance: str = "",
) -> Load:
    """The load of `digest` for request `rid`, wholly on device `on`, after unloading the first
    instance of each of `evict`."""
    model, ctx = MODELS[digest], num_ctx or CONTEXT
    split = {on: estimate(model.size, model.shape, ctx, 1).total}
    command = LoadCommand(
        model=model,
        num_ctx=ctx,
        slots=1,
        request_id=rid,
        split=split,
        instance=instance or instance_id(digest, ctx),
    )
    unloads = tuple(UnloadCommand(digest=d, instance=instance_id(d, CONTEXT)) for d in evict)
    return Load(worker, command, unloads)


def fail(rid: str, error: str, code: ErrorCode) -> list[Command]:
    return [Reply(rid, f"corral.reply.{rid}", Failed(error=error, code=code)), Ack(rid)]


def alive(*rids: str) -> InProgress:
    return InProgress(rids)


Step = tuple[Event | Later, list[Command]]

# (id, steps, how many requests the core still holds at the end)
SCENARIOS: list[tuple[str, list[Step], int]] = [
    (
        "free-slot-runs",
        [
            (beat("w1", res(A)), []),
            (arrive("r1"), [run("w1", "r1")]),
            (ran("r1"), [Ack("r1")]),
        ],
        0,
    ),
    (
        "no-instance-loads-then-runs",
        [
            (beat("w1"), []),
            (arrive("r1"), [load("w1", "r1")]),
            (loaded("w1", after=state("w1", res(A))), [run("w1", "r1")]),
            (ran("r1"), [Ack("r1")]),
        ],
        0,
    ),
    (
        "two-arrivals-one-slot-second-waits-for-heartbeat",
        [
            (beat("w1", res(A)), []),
            (arrive("r1"), [run("w1", "r1")]),
            (arrive("r2"), []),  # the slot is reserved for r1 until w1 answers
            (ran("r1", after=state("w1", res(A, busy=1))), [Ack("r1")]),
            (beat("w1", res(A)), [run("w1", "r2")]),
            (ran("r2"), [Ack("r2")]),
        ],
        0,
    ),
    (
        "refused-run-is-placed-again-before-later-arrivals",
        [
            (beat("w1", res(A)), []),
            (arrive("r1"), [run("w1", "r1")]),
            (arrive("r2"), []),
            (ran("r1", error="no free slot", after=state("w1", res(A))), [run("w1", "r1")]),
        ],
        2,
    ),
    (
        "redelivered-after-its-ack-was-lost-is-acked-not-run-elsewhere",
        [
            (beat("w1", res(A)), []),
            (arrive("r1"), [run("w1", "r1")]),
            (ran("r1", after=state("w1", res(A, busy=1))), [Ack("r1")]),
            (beat("w2", res(A)), []),  # a worker with a free slot that never heard of r1
            (arrive("r1"), [Ack("r1")]),
        ],
        0,
    ),
    (
        "redelivered-after-it-was-cancelled-is-acked-not-run",
        [
            (beat("w1", res(A, busy=1)), []),
            (arrive("r1"), []),
            (cancel("r1"), [Ack("r1")]),
            (beat("w1", res(A)), []),
            (arrive("r1"), [Ack("r1")]),
        ],
        0,
    ),
    (
        "cancel-while-waiting-acks-and-never-runs",
        [
            (beat("w1", res(A, busy=1)), []),
            (arrive("r1"), []),
            (cancel("r1"), [Ack("r1")]),
            (beat("w1", res(A)), []),
        ],
        0,
    ),
    (
        "cancel-while-waiting-for-its-load",
        [
            (beat("w1"), []),
            (arrive("r1"), [load("w1", "r1")]),
            (cancel("r1"), [Ack("r1"), CancelOn("w1", "r1")]),  # the load need not wait for it
            (loaded("w1", after=state("w1", res(A))), []),
        ],
        0,
    ),
    (
        "cancel-while-dispatching-run-taken-worker-stops-it",
        [
            (beat("w1", res(A)), []),
            (arrive("r1"), [run("w1", "r1")]),
            (cancel("r1"), []),
            (ran("r1"), [Ack("r1"), CancelOn("w1", "r1")]),
        ],
        0,
    ),
    (
        "cancel-after-placement-goes-to-the-worker-that-has-it-only",
        [
            (beat("w1", res(A)), []),
            (beat("w2", res(A)), []),
            (arrive("r1"), [run("w1", "r1")]),
            (ran("r1"), [Ack("r1")]),
            (cancel("r1"), [CancelOn("w1", "r1")]),
        ],
        0,
    ),
    (
        "cancel-while-dispatching-run-refused-dropped-not-placed-again",
        [
            (beat("w1", res(A)), []),
            (arrive("r1"), [run("w1", "r1")]),
            (cancel("r1"), []),
            (ran("r1", error="no free slot", after=state("w1", res(A))), [Ack("r1")]),
        ],
        0,
    ),
    ("cancel-of-unknown-request", [(cancel("r9"), [])], 0),
    (
        "a-load-waiting-for-room-holds-up-no-other-model",
        [
            (beat("w1", res(B, busy=1, slots=2), memory=50_000_000), []),
            (arrive("r1", A), []),  # no room: B is busy, so it cannot be unloaded
            (arrive("r2", B), [run("w1", "r2", B)]),  # B keeps serving meanwhile
        ],
        2,
    ),
    (
        "a-starved-load-drains-the-busy-model-then-takes-its-place",
        [
            (beat("w1", res(B, busy=1, slots=2), memory=50_000_000), []),
            (arrive("r1", A), []),
            (Later(STARVED_AFTER), []),
            (Tick(), [alive("r1")]),  # starved: B takes no new request from now on
            (arrive("r2", B), []),
            (beat("w1", res(B, slots=2), memory=50_000_000), [load("w1", "r1", A, evict=(B,))]),
        ],
        2,
    ),
    (
        "a-load-out-takes-its-memory-before-the-worker-says-so",
        [
            (beat("w1", memory=200_000_000), []),
            (arrive("r1", A), [load("w1", "r1", A)]),
            (arrive("r2", B), []),  # B would fit in what the heartbeat said is free
        ],
        2,
    ),
    (
        "a-context-the-request-asks-for-is-its-own-instance",
        [
            (beat("w1", res(A, num_ctx=8192)), []),
            (arrive("r1", num_ctx=2048), [load("w1", "r1", num_ctx=2048)]),
        ],
        1,
    ),
    (
        "a-larger-context-serves-an-automatic-one-and-frees-that-slot",
        [
            (beat("w1", res(A, num_ctx=8192)), []),
            (arrive("r1"), [run("w1", "r1", ran_on=8192)]),
            (ran("r1", after=state("w1", res(A, num_ctx=8192))), [Ack("r1")]),
            (arrive("r2"), [run("w1", "r2", ran_on=8192)]),
        ],
        1,
    ),
    (
        "a-run-that-finds-nobody-goes-to-another-worker-not-counted-as-refused",
        [
            (beat("w1", res(A)), []),
            (arrive("r1"), [run("w1", "r1")]),
            (beat("w2", res(A)), []),
            (gone_run("r1", "w1"), [run("w2", "r1")]),
        ],
        1,
    ),
    (
        "a-run-that-finds-nobody-waits-for-a-worker",
        [
            (beat("w1", res(A)), []),
            (arrive("r1"), [run("w1", "r1")]),
            (gone_run("r1", "w1"), []),
            (beat("w1", res(A)), [run("w1", "r1")]),  # back (a restarted process)
        ],
        1,
    ),
    (
        "a-load-that-finds-nobody-is-made-elsewhere",
        [
            (beat("w1"), []),
            (arrive("r1"), [load("w1", "r1")]),
            (beat("w2"), []),
            (gone_load("w1"), [load("w2", "r1")]),
        ],
        1,
    ),
    (
        "load-failure-fails-exactly-its-waiters",
        [
            (beat("w1"), []),
            (arrive("r1"), [load("w1", "r1")]),
            (arrive("r2"), []),  # waits for r1's load
            (arrive("r3", num_ctx=4096), [load("w1", "r3", num_ctx=4096)]),  # another instance
            (
                loaded("w1", error="out of memory", after=state("w1")),
                [*fail("r1", "out of memory", "internal"), *fail("r2", "out of memory", "internal")],
            ),
            (
                loaded("w1", num_ctx=4096, after=state("w1", res(A, num_ctx=4096))),
                [run("w1", "r3", num_ctx=4096)],
            ),
        ],
        1,
    ),
    (
        "redelivered-arrival-while-waiting-keeps-one-entry",
        [
            (beat("w1", res(A, busy=1)), []),
            (arrive("r1"), []),
            (arrive("r1"), []),
        ],
        1,
    ),
    (
        "redelivered-arrival-while-dispatching-is-not-run-twice",
        [
            (beat("w1", res(A, slots=2)), []),
            (arrive("r1"), [run("w1", "r1")]),
            (arrive("r1"), []),
            (ran("r1"), [Ack("r1")]),
        ],
        0,
    ),
    (
        "refused-run-retried-then-fails-after-three",
        [
            (beat("w1", res(A)), []),
            (arrive("r1"), [run("w1", "r1")]),
            (ran("r1", error="no free slot", after=state("w1", res(A))), [run("w1", "r1")]),
            (ran("r1", error="no free slot", after=state("w1", res(A))), [run("w1", "r1")]),
            (
                ran("r1", error="no free slot", after=state("w1", res(A))),
                fail(
                    "r1",
                    "no worker would run the request (3 refusals, the last: no free slot)",
                    "unavailable",
                ),
            ),
        ],
        0,
    ),
    (
        "an-unanswered-run-goes-to-the-same-worker-again-never-elsewhere",
        [
            (beat("w1", res(A)), []),
            (arrive("r1"), [run("w1", "r1")]),
            (beat("w2", res(A)), []),  # free, but w1 may have taken r1: only w1 may run it
            (unanswered("r1"), [run("w1", "r1")]),
            (ran("r1"), [Ack("r1")]),  # it had it (a worker runs an id once), or runs it now
        ],
        0,
    ),
    (
        "an-unanswered-run-fails-after-three-tries",
        [
            (beat("w1", res(A)), []),
            (arrive("r1"), [run("w1", "r1")]),
            (unanswered("r1"), [run("w1", "r1")]),
            (unanswered("r1"), [run("w1", "r1")]),
            (unanswered("r1"), fail("r1", "worker w1 did not answer", "unavailable")),
        ],
        0,
    ),
    (
        "cancel-while-a-run-is-unanswered-goes-to-that-worker",
        [
            (beat("w1", res(A)), []),
            (arrive("r1"), [run("w1", "r1")]),
            (cancel("r1"), []),
            (unanswered("r1"), [Ack("r1"), CancelOn("w1", "r1")]),
        ],
        0,
    ),
    (
        "stale-worker-dropped-its-waiting-work-placed-again",
        [
            (beat("w1", res(A, busy=1)), []),
            (arrive("r1"), []),  # waits for w1's busy instance: no other worker for a replica
            (Later(STALE + 1), []),
            (Tick(), [alive("r1")]),  # w1 dropped
            (beat("w2"), [load("w2", "r1")]),
        ],
        1,
    ),
    (
        "no-worker-alive-fails-the-request-after-the-load-timeout",
        [
            (arrive("r1"), []),
            (Later(NO_WORKER_WAIT - 1), []),
            (Tick(), [alive("r1")]),
            (Later(1), []),
            (Tick(), fail("r1", NO_WORKER, "unavailable")),
        ],
        0,
    ),
    (
        "a-busy-live-worker-keeps-its-waiters-past-the-load-timeout",
        [
            (beat("w1", res(A, busy=1)), []),
            (arrive("r1"), []),
            (Later(NO_WORKER_WAIT + 1), []),
            (beat("w1", res(A, busy=1)), []),
            (Tick(), [alive("r1")]),
        ],
        1,
    ),
    (
        "stale-worker-dropped-its-unanswered-run-fails",
        [
            (beat("w1", res(A)), []),
            (arrive("r1"), [run("w1", "r1")]),
            (Later(STALE + 1), []),
            (Tick(), fail("r1", "worker w1 stopped responding", "unavailable")),
            (ran("r1", error="worker did not answer: TimeoutError()"), []),  # too late: ignored
        ],
        0,
    ),
    (
        "stale-worker-dropped-its-late-load-failure-fails-nobody",
        [
            (beat("w1"), []),
            (beat("w2", memory=4 * GB), []),
            (arrive("r1"), [load("w1", "r1")]),  # most free memory
            (Later(STALE), []),
            (beat("w2", memory=4 * GB), []),
            (Later(1), []),
            (Tick(), [alive("r1"), load("w2", "r1")]),
            (loaded("w1", error="worker did not answer: TimeoutError()"), []),
            (loaded("w2", after=state("w2", res(A), memory=4 * GB)), [run("w2", "r1")]),
        ],
        1,
    ),
    (
        "unload-action-unloads-every-holder-and-answers",
        [
            (beat("w1", res(A)), []),
            (beat("w2", res(B), res(A)), []),
            (beat("w3", res(B)), []),
            (
                arrive("r1", action="unload"),
                [
                    Unload("w1", A),
                    Unload("w2", A),
                    Reply("r1", "corral.reply.r1", Done(done_reason="unload")),
                    Ack("r1"),
                ],
            ),
        ],
        0,
    ),
    (
        "max-loaded-evicts-the-shortest-keep-alive-first",
        [
            (beat("w1", res(B, keep_alive=600.0), res(C, keep_alive=60.0)), []),
            (arrive("r1"), [load("w1", "r1", evict=(C,))]),
        ],
        1,
    ),
    (
        "tick-keeps-every-held-message-alive",
        [
            (beat("w1", res(A)), []),
            (arrive("r1"), [run("w1", "r1")]),
            (arrive("r2"), []),
            (Tick(), [alive("r1", "r2")]),
        ],
        2,
    ),
    ("tick-with-nothing-held", [(beat("w1"), []), (Tick(), [])], 0),
    (
        "stopping-naks-what-waits-not-what-is-dispatched",
        [
            (beat("w1", res(A)), []),
            (arrive("r1"), [run("w1", "r1")]),
            (arrive("r2"), []),
            (arrive("r3"), []),
            (Stopping(), [Nak("r2"), Nak("r3")]),
        ],
        0,  # the run that was out is forgotten: the next leader asks the workers about it
    ),
    (
        "after-stopping-a-refused-run-is-not-placed-again",
        [
            (beat("w1", res(A)), []),
            (arrive("r1"), [run("w1", "r1")]),
            (Stopping(), []),
            (ran("r1", error="no free slot"), []),
            (Tick(), []),
        ],
        0,
    ),
    # Replicas: a second instance of a model on another GPU of the same worker
    (
        "a-replica-on-the-second-gpu-of-the-same-worker-then-both-serve",
        [  # a worker that names its instances (an older one gets no second: test_placement)
            (beat("w1", res(A, on="cuda:0", instance=A1), gpus=2), []),
            (arrive("r1"), [run("w1", "r1")]),
            (ran("r1", after=state("w1", res(A, busy=1, on="cuda:0", instance=A1), gpus=2)), [Ack("r1")]),
            (arrive("r2"), [load("w1", "r2", on="cuda:1", instance=A2)]),  # A1 is busy, cuda:1 free
            (arrive("r3"), []),  # one replica loads at a time
            (
                loaded(
                    "w1",
                    instance=A2,
                    after=state(
                        "w1",
                        res(A, busy=1, on="cuda:0", instance=A1),
                        res(A, on="cuda:1", instance=A2),
                        gpus=2,
                    ),
                ),
                [run("w1", "r2", instance=A2)],
            ),
            (
                ran(
                    "r2",
                    after=state(
                        "w1",
                        res(A, busy=1, on="cuda:0", instance=A1),
                        res(A, busy=1, on="cuda:1", instance=A2),
                        gpus=2,
                    ),
                ),
                [Ack("r2")],
            ),
            (
                beat(
                    "w1", res(A, on="cuda:0", instance=A1), res(A, busy=1, on="cuda:1", instance=A2), gpus=2
                ),
                [run("w1", "r3", instance=A1)],  # the first instance is free again
            ),
        ],
        1,
    ),
    (
        "a-replica-that-fails-to-load-fails-nobody-its-waiters-wait-for-the-serving-instance",
        [
            (beat("w1", res(A, on="cuda:0", instance=A1), gpus=2), []),
            (arrive("r1"), [run("w1", "r1")]),
            (ran("r1", after=state("w1", res(A, busy=1, on="cuda:0", instance=A1), gpus=2)), [Ack("r1")]),
            (arrive("r2"), [load("w1", "r2", on="cuda:1", instance=A2)]),
            (
                loaded(
                    "w1",
                    instance=A2,
                    error="out of memory",
                    after=state("w1", res(A, busy=1, on="cuda:0", instance=A1), gpus=2),
                ),
                [],  # not failed: an instance of the model serves, and no replica is tried there again yet
            ),
            (beat("w1", res(A, on="cuda:0", instance=A1), gpus=2), [run("w1", "r2", instance=A1)]),
        ],
        1,
    ),
    (
        "a-replica-is-tried-again-on-that-worker-a-minute-after-it-failed",
        [
            (beat("w1", res(A, busy=1, on="cuda:0", instance=A1), gpus=2), []),
            (arrive("r1"), [load("w1", "r1", on="cuda:1", instance=A2)]),
            (loaded("w1", instance=A2, error="out of memory"), []),
            (beat("w1", res(A, busy=1, on="cuda:0", instance=A1), gpus=2), []),
            (Later(61), []),
            (
                beat("w1", res(A, busy=1, on="cuda:0", instance=A1), gpus=2),
                [load("w1", "r1", on="cuda:1", instance=A2)],
            ),
        ],
        1,
    ),
    (
        "an-older-worker-that-names-no-instance-gets-no-second",
        [
            (beat("w1", res(A, busy=1, on="cuda:0"), gpus=2), []),
            (arrive("r1"), []),  # cuda:1 is free, but it would answer "loaded" and hold one
        ],
        1,
    ),
    (
        "a-reserved-slot-is-held-on-the-instance-it-was-taken-on",
        [
            (beat("w1", res(A, on="cuda:0", instance=A1), res(A, on="cuda:1", instance=A2), gpus=2), []),
            (arrive("r1"), [run("w1", "r1", instance=A1)]),
            (arrive("r2"), [run("w1", "r2", instance=A2)]),
            (arrive("r3"), []),  # both slots taken, no third GPU
        ],
        3,
    ),
    (
        "the-loaded-model-limit-counts-every-instance-on-a-worker",
        [
            (beat("w1", res(A, busy=1, on="cuda:0"), res(A, busy=1, on="cuda:1", instance=A2), gpus=3), []),
            (arrive("r1"), []),  # cuda:2 is free, but w1 holds MAX_LOADED instances
        ],
        1,
    ),
    (
        "an-instance-unloaded-in-the-middle-leaves-its-id-for-the-next",
        [
            (beat("w1", res(A, busy=1, on="cuda:1", instance=A2), gpus=2), []),
            (arrive("r1"), [load("w1", "r1", on="cuda:0", instance=A1)]),
        ],
        1,
    ),
    # Formats: a model goes only to a worker that runs its format
    (
        "a-format-no-live-worker-runs-fails-at-once",
        [
            (beat("w1"), []),  # an older heartbeat: GGUF only
            (beat("w2", formats=["gguf"]), []),
            (
                arrive("r1", X),
                fail("r1", "no worker can run exl2 models (exllamav2 on a CUDA worker)", "unavailable"),
            ),
        ],
        0,
    ),
    (
        "a-model-goes-to-the-worker-that-runs-its-format",
        [
            (beat("w1", memory=64 * GB), []),  # the roomiest, but GGUF only
            (beat("w2", gpus=1, formats=GPU_FORMATS), []),
            (arrive("r1", X), [load("w2", "r1", X, on="cuda:0")]),
        ],
        1,
    ),
    (
        "a-format-waits-for-a-worker-while-none-is-alive",
        [
            (arrive("r1", X), []),
            (beat("w1", gpus=1, formats=GPU_FORMATS), [load("w1", "r1", X, on="cuda:0")]),
        ],
        1,
    ),
    (
        "leading-again-places-what-arrives",
        [
            (beat("w1", res(A)), []),
            (Stopping(), []),
            (arrive("r1"), [run("w1", "r1")]),
        ],
        1,
    ),
]


@pytest.mark.parametrize(("steps", "held"), [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS])
def test_scenario(steps: list[Step], held: int) -> None:
    clock = Clock()
    scheduler = core(clock)
    for number, (event, expected) in enumerate(steps, start=1):
        if isinstance(event, Later):
            clock.now += event.seconds
            continue
        assert (number, scheduler.handle(event)) == (number, expected)
    assert scheduler.waiting == held


def test_the_queue_counts_what_waits_by_model_and_reason_and_finds_a_client() -> None:
    scheduler = core()
    scheduler.handle(beat("w1", res(A, busy=1), memory=0))
    for rid, digest in (("r1", A), ("r2", B), ("r3", A)):
        scheduler.handle(Arrived(req(rid, digest, client_id=f"client-{rid}")))

    queue = scheduler.queue("client-r3")

    assert queue.waiting == 3
    assert [(m.name, m.waiting, m.reasons) for m in queue.models] == [
        ("a:1", 2, {"all slots busy": 2}),
        ("b:1", 1, {"no worker has room": 1}),
    ]
    assert (queue.position, queue.model, queue.reason) == (2, "a:1", "all slots busy")
    assert scheduler.waiting_by() == {("a:1", "all slots busy"): 2, ("b:1", "no worker has room"): 1}
    assert scheduler.workers() == 1


def test_a_waiting_reason_is_logged_when_it_changes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "corral.scheduler")
    clock = Clock()
    scheduler = core(clock)
    scheduler.handle(beat("w1", res(A, busy=1)))
    scheduler.handle(arrive("r1"))
    scheduler.handle(beat("w1", res(A, busy=1)))
    clock.now += STALE + 1
    scheduler.handle(beat("w2", memory=0))
    scheduler.handle(Tick())  # w1 gone, w2 has no room
    scheduler.handle(beat("w2"))  # now it has
    reasons = [r.fields["reason"] for r in caplog.records if r.msg == "waiting"]  # type: ignore[attr-defined]
    assert reasons == ["all slots busy", "no worker has room", "model loading"]


def test_a_dispatched_request_is_not_in_the_queue() -> None:
    scheduler = core()
    scheduler.handle(beat("w1", res(A)))
    scheduler.handle(arrive("r1", client_id="me"))
    assert scheduler.queue("me").waiting == 0 and scheduler.queue("me").position is None


NUM_CTX: list[tuple[str, int | None, int | None, int | None, int]] = [
    # (id, request's num_ctx, model's parameter, model's trained context, chosen)
    ("default", None, None, None, CONTEXT),
    ("model-parameter", None, 4096, None, 4096),
    ("request-wins", 1024, 4096, None, 1024),
    ("capped-at-trained", 8192, None, 4096, 4096),
]


@pytest.mark.parametrize(
    ("asked", "parameter", "trained", "chosen"), [c[1:] for c in NUM_CTX], ids=[c[0] for c in NUM_CTX]
)
def test_want_decides_num_ctx(
    asked: int | None, parameter: int | None, trained: int | None, chosen: int
) -> None:
    request = req("r1", num_ctx=asked)
    request.model = MODELS[A].model_copy(
        update={"parameters": Options(num_ctx=parameter), "context_length": trained}
    )
    assert core().want(request).num_ctx == chosen


# ---- the shell: commands carried out, answers fed back


class FakeMessage:
    def __init__(self, name: str, log: list[str]) -> None:
        self._name, self._log = name, log

    async def ack(self) -> None:
        self._log.append(f"ack {self._name}")

    async def nak(self) -> None:
        self._log.append(f"nak {self._name}")

    async def in_progress(self) -> None:
        self._log.append(f"in_progress {self._name}")


class FakeTransport:
    def __init__(self, log: list[str], run_ok: bool = True) -> None:
        self._log, self._run_ok = log, run_ok

    async def run(self, worker_id: str, command: RunCommand) -> CommandResult:
        self._log.append(f"run {worker_id} {command.request.id}")
        return CommandResult(ok=self._run_ok, error=None if self._run_ok else "no free slot")

    async def load(self, worker_id: str, command: LoadCommand) -> CommandResult:
        self._log.append(f"load {worker_id} {command.request_id}")
        return CommandResult(ok=True, state=state(worker_id, res(command.model.digest)))

    async def unload(self, worker_id: str, command: UnloadCommand) -> CommandResult:
        self._log.append(f"unload {worker_id} {command.digest[7:8]}")
        return CommandResult(ok=True)

    async def reply(self, subject: str, event: Done | Failed) -> None:
        self._log.append(f"reply {subject} {event.kind}")


async def settle(shell: SchedulerShell) -> None:
    """Run every spawned task and feed back every answer until nothing is left to do (a loop
    that never settles fails after 100 steps rather than hanging)."""
    for _ in range(100):
        while shell._tasks:
            await asyncio.gather(*list(shell._tasks))
        if shell._events.empty():
            return
        shell.step(*shell._events.get_nowait())
    raise AssertionError("the shell never settled")


async def test_shell_loads_runs_and_acks_the_newest_handle() -> None:
    log: list[str] = []
    shell = SchedulerShell(core(), FakeTransport(log))
    shell.step(beat("w1"))
    shell.arrived(req("r1"), FakeMessage("first", log), None)
    shell.arrived(req("r1"), FakeMessage("redelivered", log), None)
    await settle(shell)
    assert log == ["load w1 r1", "run w1 r1", "ack redelivered"]
    assert shell.core.waiting == 0


async def test_shell_replies_before_it_acks() -> None:
    log: list[str] = []
    shell = SchedulerShell(core(), FakeTransport(log))
    shell.step(beat("w1", res(A)))
    shell.step(arrive("r1", action="unload"), FakeMessage("r1", log))
    await settle(shell)
    assert log == ["unload w1 a", "reply corral.reply.r1 done", "ack r1"]


async def test_shell_fails_a_request_no_worker_will_run() -> None:
    log: list[str] = []
    shell = SchedulerShell(core(), FakeTransport(log, run_ok=False))
    shell.step(beat("w1", res(A)))
    shell.step(arrive("r1"), FakeMessage("r1", log))
    await settle(shell)
    assert log == ["run w1 r1"] * 3 + ["reply corral.reply.r1 failed", "ack r1"]


async def test_shell_naks_what_waits_on_stop() -> None:
    log: list[str] = []
    shell = SchedulerShell(core(), FakeTransport(log))
    shell.step(arrive("r1"), FakeMessage("r1", log))
    shell.step(Tick())
    await settle(shell)
    await shell.release_all()
    assert log == ["in_progress r1", "nak r1"]
