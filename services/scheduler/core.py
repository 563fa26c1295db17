"""The scheduler's state machine: one asyncio task owns it, fed by named events.

Every state change arrives as one event (`Arrived`, `Heartbeat`, `Cancelled`,
`RunAnswered`, `LoadAnswered`, `Tick`), and after each the pending requests are
placed again. Commands to workers run as separate tasks whose answers come back
as events, so no lock guards anything here.

A waiting request's stream message stays unacknowledged, so it keeps counting
against OLLAMA_MAX_QUEUE and survives a scheduler restart. It is acknowledged
once a worker has taken it (or it is answered here: unload, failure, cancel).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import trace as otel_trace
from opentelemetry.context import Context

from services.protocol import (
    CommandResult,
    Done,
    Failed,
    GenerationRequest,
    LoadCommand,
    QueueState,
    RunCommand,
    WaitingModel,
    WorkerState,
)
from services.scheduler import measure
from services.scheduler.fleet import Fleet
from services.scheduler.placement import Dispatch, Load, Wait, Want, place
from services.telemetry import log_event

log = logging.getLogger("corral.scheduler")
_tracer = otel_trace.get_tracer("corral.scheduler")


class HeldMessage(Protocol):
    """The request's message in the stream; the scheduler decides its fate."""

    async def ack(self) -> None: ...
    async def nak(self) -> None: ...
    async def in_progress(self) -> None: ...


class Transport(Protocol):
    """The I/O the scheduler needs; the NATS shell implements it."""

    async def run(self, worker_id: str, command: RunCommand) -> CommandResult: ...
    async def load(self, worker_id: str, command: LoadCommand) -> CommandResult: ...
    async def unload(self, worker_id: str, digest: str) -> CommandResult: ...
    async def reply(self, subject: str, event: Done | Failed) -> None: ...


@dataclass
class Pending:
    request: GenerationRequest
    message: HeldMessage
    want: Want  # the instance it runs on: weights, num_ctx (defaults filled in) and slots
    trace: Context | None = None  # the gateway's trace, continued by commands for this request
    dispatching: bool = False
    arrived: float = 0.0  # the scheduler's clock
    reason: str = ""  # why it waits, as placement last said ("" before its first placement)


@dataclass(frozen=True)
class Arrived:
    request: GenerationRequest
    message: HeldMessage
    trace: Context | None = None


@dataclass(frozen=True)
class Heartbeat:
    state: WorkerState


@dataclass(frozen=True)
class Cancelled:
    request_id: str


@dataclass(frozen=True)
class RunAnswered:
    pending: Pending
    worker_id: str
    result: CommandResult


@dataclass(frozen=True)
class LoadAnswered:
    worker_id: str
    want: Want
    result: CommandResult


@dataclass(frozen=True)
class Tick:
    pass


Event = Arrived | Heartbeat | Cancelled | RunAnswered | LoadAnswered | Tick


class Scheduler:
    def __init__(
        self,
        transport: Transport,
        *,
        max_loaded: Callable[[int], int],
        num_parallel: int,
        context_length: int,
        stale_after: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._transport = transport
        self._num_parallel = num_parallel
        self._context_length = context_length
        self._stale_after = stale_after
        self._clock = clock
        self._fleet = Fleet(max_loaded)
        self._pending: dict[str, Pending] = {}
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._tasks: set[asyncio.Task[object]] = set()

    def submit(self, event: Event) -> None:
        self._events.put_nowait(event)

    @property
    def waiting(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        while True:
            event = await self._events.get()
            self.handle(event)

    def handle(self, event: Event) -> None:
        """Apply one event, then place what can be placed."""
        match event:
            case Arrived(request, message, trace):
                self._arrived(request, message, trace)
            case Heartbeat(state):
                self._fleet.update(state, self._clock())
            case Cancelled(request_id):
                self._cancelled(request_id)
            case RunAnswered(pending, worker_id, result):
                self._run_answered(pending, worker_id, result)
            case LoadAnswered(worker_id, want, result):
                self._load_answered(worker_id, want, result)
            case Tick():
                self._tick()
        self._schedule()

    async def release_all(self) -> None:
        """On shutdown: hand every waiting request back to the stream for the next scheduler."""
        for pending in list(self._pending.values()):
            if not pending.dispatching:
                await pending.message.nak()
        for task in list(self._tasks):
            task.cancel()

    def _arrived(self, request: GenerationRequest, message: HeldMessage, trace: Context | None) -> None:
        want = self.want(request)
        if request.action == "unload":
            for worker_id in self._fleet.holders(request.model.digest):
                self._spawn(self._transport.unload(worker_id, request.model.digest))
            self._finish(Pending(request, message, want), Done(done_reason="unload"))
            return
        known = self._pending.get(request.id)
        if known is not None:  # redelivered while still held here: keep the newer handle
            known.message = message
            return
        self._pending[request.id] = Pending(request, message, want, trace, arrived=self._clock())
        log_event(
            log, "queued", context=trace, request=request.id, model=request.model.name, waiting=self.waiting
        )

    def want(self, request: GenerationRequest) -> Want:
        """The instance a request needs. The one place num_ctx is decided (the request's, else
        the model's parameter, else OLLAMA_CONTEXT_LENGTH; at most the model's trained
        context) and OLLAMA_NUM_PARALLEL applied."""
        model = request.model
        num_ctx = (
            request.options.num_ctx
            or (model.parameters.num_ctx if model.parameters else None)
            or self._context_length
        )
        if model.context_length:  # as Ollama: never more than the model was trained on
            num_ctx = min(num_ctx, model.context_length)
        return Want(model.digest, num_ctx, model.size, self._num_parallel)

    def waiting_by(self) -> Counter[tuple[str, str]]:
        """How many requests wait, by model name and reason."""
        return Counter((p.request.model.name, p.reason) for p in list(self._pending.values()))

    def queue(self, client_id: str = "") -> QueueState:
        """What waits, by model (in arrival order), and where the request `client_id` is."""
        waiting = [p for p in self._pending.values() if not p.dispatching]
        by_model: dict[str, list[Pending]] = {}
        for pending in waiting:
            by_model.setdefault(pending.request.model.name, []).append(pending)
        state = QueueState(
            waiting=len(waiting),
            models=[
                WaitingModel(name=name, waiting=len(queued), reasons=dict(Counter(p.reason for p in queued)))
                for name, queued in by_model.items()
            ],
        )
        for queued in by_model.values():
            for position, pending in enumerate(queued, start=1):
                if client_id and pending.request.client_id == client_id and state.position is None:
                    state.position, state.model = position, pending.request.model.name
                    state.reason = pending.reason
        return state

    def workers(self) -> int:
        return len(self._fleet.workers())

    def _cancelled(self, request_id: str) -> None:
        pending = self._pending.get(request_id)
        if pending is not None and not pending.dispatching:
            del self._pending[request_id]
            self._spawn(pending.message.ack())
            log_event(
                log, "cancelled", context=pending.trace, request=request_id, model=pending.request.model.name
            )

    def _run_answered(self, pending: Pending, worker_id: str, result: CommandResult) -> None:
        want = pending.want
        self._fleet.release_slot(worker_id, want.digest, want.num_ctx)
        if result.state is not None:
            self._fleet.update(result.state, self._clock())
        if pending.request.id not in self._pending:
            return
        pending.dispatching = False
        if result.ok:
            del self._pending[pending.request.id]
            self._spawn(pending.message.ack())
            log_event(log, "placed", context=pending.trace, request=pending.request.id, worker=worker_id)
            measure.queue_wait.record(
                self._clock() - pending.arrived, {measure.MODEL: pending.request.model.name}
            )
        else:
            log_event(
                log,
                "run_refused",
                context=pending.trace,
                request=pending.request.id,
                worker=worker_id,
                reason=result.error,
            )

    def _load_answered(self, worker_id: str, want: Want, result: CommandResult) -> None:
        self._fleet.load_finished(worker_id, want.digest, want.num_ctx)
        if result.state is not None:
            self._fleet.update(result.state, self._clock())
        if result.ok:
            log_event(log, "loaded", worker=worker_id, digest=want.digest[:19])
            return
        error = result.error or "model failed to load"
        log_event(log, "load_failed", level=logging.ERROR, worker=worker_id, error=error)
        measure.load_failures.add(1, {measure.WORKER: worker_id})
        for pending in list(self._pending.values()):
            if pending.want == want and not pending.dispatching:
                del self._pending[pending.request.id]
                self._finish(pending, Failed(error=error, code="internal"))

    def _tick(self) -> None:
        for worker_id in self._fleet.drop_stale(self._clock(), self._stale_after):
            log_event(log, "worker_lost", level=logging.WARNING, worker=worker_id)
        for pending in self._pending.values():
            self._spawn(pending.message.in_progress())

    def _schedule(self) -> None:
        """Place each waiting request in arrival order; what cannot be placed keeps waiting."""
        for pending in list(self._pending.values()):
            if pending.dispatching:
                continue
            want = pending.want
            match place(self._fleet.workers(), want):
                case Dispatch(worker_id):
                    pending.dispatching = True
                    self._decided(pending, "dispatch")
                    self._fleet.reserve_slot(worker_id, want.digest, want.num_ctx)
                    self._spawn(self._dispatch(pending, worker_id))
                case Load(worker_id, evict):
                    self._decided(pending, "load", "model loading")
                    self._fleet.mark_loading(worker_id, want.digest, want.num_ctx)
                    self._spawn(self._load(pending, worker_id, evict))
                case Wait(reason):
                    if reason != pending.reason:
                        self._decided(pending, "wait", reason)

    def _decided(self, pending: Pending, decision: str, reason: str = "") -> None:
        """Count a decision; log a waiting request's reason when it changes."""
        attributes = {measure.DECISION: decision, measure.MODEL: pending.request.model.name}
        measure.placements.add(1, attributes | ({measure.REASON: reason} if reason else {}))
        if reason and reason != pending.reason:
            log_event(log, "waiting", context=pending.trace, request=pending.request.id, reason=reason)
        pending.reason = reason

    async def _dispatch(self, pending: Pending, worker_id: str) -> None:
        try:
            with _tracer.start_as_current_span("dispatch", context=pending.trace):
                result = await self._transport.run(
                    worker_id, RunCommand(request=pending.request, num_ctx=pending.want.num_ctx)
                )
        except Exception as exc:  # a worker that does not answer refuses the run
            result = CommandResult(ok=False, error=f"worker did not answer: {exc!r}")
        self.submit(RunAnswered(pending, worker_id, result))

    async def _load(self, pending: Pending, worker_id: str, evict: tuple[str, ...]) -> None:
        request, want = pending.request, pending.want
        log_event(
            log,
            "loading",
            context=pending.trace,
            worker=worker_id,
            model=request.model.name,
            evict=list(evict),
        )
        try:
            for digest in evict:
                await self._transport.unload(worker_id, digest)
                log_event(log, "evicted", worker=worker_id, digest=digest[:19])
                measure.evictions.add(1, {measure.WORKER: worker_id})
            command = LoadCommand(
                model=request.model,
                num_ctx=want.num_ctx,
                slots=want.slots,
                keep_alive=request.keep_alive,
                request_id=request.id,
            )
            with _tracer.start_as_current_span("load", context=pending.trace):
                result = await self._transport.load(worker_id, command)
        except Exception as exc:
            result = CommandResult(ok=False, error=f"worker did not answer: {exc!r}")
        self.submit(LoadAnswered(worker_id, want, result))

    def _finish(self, pending: Pending, event: Done | Failed) -> None:
        async def answer() -> None:
            await self._transport.reply(pending.request.reply_subject, event)
            await pending.message.ack()

        self._spawn(answer())

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
