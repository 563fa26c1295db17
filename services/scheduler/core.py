"""The scheduler's decisions: a pure step function from one event to the commands it implies.

`Scheduler.handle(event)` applies one named event (`Arrived`, `Heartbeat`, `Cancelled`,
`RunAnswered`, `LoadAnswered`, `Tick`, `Stopping`) to the one copy of the state (pending
requests in arrival order, the fleet view, the runs and loads out to workers), places what
can be placed, and returns commands (`Run`, `Load`, `Unload`, `CancelOn`, `Reply`, `Ack`,
`Nak`, `InProgress`) for the NATS shell (`service.py`) to carry out. It does no I/O and knows no
stream message: the shell holds those by request id and feeds every answer back as an event.
Logging and metrics are the only side effects here; they decide nothing.

A waiting request's stream message stays unacknowledged, so it keeps counting against
OLLAMA_MAX_QUEUE and survives a scheduler restart. It is acknowledged once a worker has taken
it, or once it is answered here (unload, failure) or cancelled. An acknowledgement can be lost
(the server leading the consumer dies with it): the message then comes back after the ack
wait, and a request this scheduler has acknowledged is acknowledged again, never placed again
(elsewhere, a worker that does not know it would run it a second time).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from cachetools import FIFOCache
from opentelemetry.context import Context

from services.protocol import (
    CommandResult,
    Done,
    Failed,
    GenerationRequest,
    LoadCommand,
    QueueState,
    RunCommand,
    UnloadCommand,
    WaitingModel,
    WorkerState,
)
from services.protocol.messages import ErrorCode
from services.scheduler import measure, memory, placement
from services.scheduler.fleet import Fleet
from services.scheduler.placement import Policy, Want, place
from services.telemetry import log_event

log = logging.getLogger("corral.scheduler")

MAX_REFUSALS = 3  # a request whose run is refused this many times fails ("unavailable")
PLACED_REMEMBERED = 10_000  # placed requests whose worker is remembered, to pass a cancel on
ACKED_REMEMBERED = 100_000  # acknowledged requests remembered, so a redelivery is not run again
STARVED_AFTER = 10.0  # seconds a request waits for room before instances are drained for it
REPLICA_RETRY_AFTER = 60.0  # seconds before a worker where a replica failed to load gets another
NO_WORKER_WAIT = 300.0  # seconds a request waits while no worker is alive (OLLAMA_LOAD_TIMEOUT)
NO_WORKER = "no worker is available to run the model"


# ---- events: what happened


@dataclass(frozen=True)
class Arrived:
    request: GenerationRequest
    trace: Context | None = None  # the gateway's trace, continued by commands for this request


@dataclass(frozen=True)
class Heartbeat:
    state: WorkerState


@dataclass(frozen=True)
class Cancelled:
    request_id: str


@dataclass(frozen=True)
class RunAnswered:
    request_id: str
    worker_id: str
    result: CommandResult
    gone: bool = False  # nobody listens for the worker any more: the run never reached it
    unanswered: bool = False  # no answer in time: it may have reached the worker, or not


@dataclass(frozen=True)
class LoadAnswered:
    worker_id: str
    instance: str  # the id the load gave the instance on the worker
    digest: str
    num_ctx: int
    result: CommandResult
    gone: bool = False  # nobody listens for the worker any more: the load never reached it


@dataclass(frozen=True)
class Tick:
    pass


@dataclass(frozen=True)
class Stopping:
    """The scheduler stops leading (shutdown, or its lease was lost): hand what waits back to
    the stream and place nothing more until a request arrives again (it leads again)."""


Event = Arrived | Heartbeat | Cancelled | RunAnswered | LoadAnswered | Tick | Stopping


# ---- commands: what the shell is to do


@dataclass(frozen=True)
class Run:
    worker_id: str
    request_id: str
    command: RunCommand
    trace: Context | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Load:
    """Unload `evict` (in order), then load; the answer comes back as `LoadAnswered`."""

    worker_id: str
    command: LoadCommand
    evict: tuple[UnloadCommand, ...] = ()
    trace: Context | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Unload:
    worker_id: str
    digest: str
    instance: str = ""  # "": every instance of `digest` there


@dataclass(frozen=True)
class CancelOn:
    """Pass a client's cancel on to the one worker that holds (or loads for) the request."""

    worker_id: str
    request_id: str


@dataclass(frozen=True)
class Reply:
    request_id: str
    subject: str
    event: Done | Failed


@dataclass(frozen=True)
class Ack:
    request_id: str


@dataclass(frozen=True)
class Nak:
    request_id: str


@dataclass(frozen=True)
class InProgress:
    request_ids: tuple[str, ...]


Command = Run | Load | Unload | CancelOn | Reply | Ack | Nak | InProgress


@dataclass
class Pending:
    request: GenerationRequest
    want: Want  # the instance it runs on: weights, num_ctx (defaults filled in) and slots
    trace: Context | None = None
    arrived: float = 0.0  # the scheduler's clock
    reason: str = ""  # why it waits, as placement last said ("" before its first placement)
    dispatched_to: str | None = None  # the worker its run command is out to, until it answers
    dispatched_ctx: int = 0  # the num_ctx of the instance it went to (its own, or larger)
    dispatched_instance: str = ""  # the id of that instance on its worker
    loading_on: str | None = None  # the worker that loads its model because of it
    cancelled: bool = False  # cancelled while its run was out: the answer decides
    refusals: int = 0

    @property
    def dispatching(self) -> bool:
        return self.dispatched_to is not None


class Scheduler:
    def __init__(
        self,
        *,
        max_loaded: Callable[[int], int],
        num_parallel: int,
        context_length: int,
        stale_after: float,
        clock: Callable[[], float] = time.time,
        max_refusals: int = MAX_REFUSALS,
        no_worker_wait: float = NO_WORKER_WAIT,
        starved_after: float = STARVED_AFTER,
        kv_cache_type: str = "",
        policy: Policy | None = None,
    ) -> None:
        self._num_parallel = num_parallel
        self._context_length = context_length
        self._stale_after = stale_after
        self._clock = clock
        self._max_refusals = max_refusals
        self._no_worker_wait = no_worker_wait
        self._starved_after = starved_after
        self._drain: tuple[str, str] | None = None  # (request, worker): the one drain under way
        self._kv_cache_type = kv_cache_type  # OLLAMA_KV_CACHE_TYPE: the KV cache's bytes per element
        self._policy = policy or Policy()
        self._fleet = Fleet(max_loaded, self._policy)
        self._pending: dict[str, Pending] = {}  # in arrival order
        self._loads: set[tuple[str, str]] = set()  # (worker, instance id) out to workers
        self._leading = True  # False after Stopping: answers are taken in, nothing is placed
        # The last requests placed (id -> worker) and acknowledged: the oldest are forgotten first.
        self._placed: FIFOCache[str, str] = FIFOCache(maxsize=PLACED_REMEMBERED)
        self._acked: FIFOCache[str, None] = FIFOCache(maxsize=ACKED_REMEMBERED)
        self._replica_failed: dict[tuple[str, str], float] = {}  # (worker, digest) -> when

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def handle(self, event: Event) -> list[Command]:
        """Apply one event, then place what can be placed; return what to do."""
        match event:
            case Arrived(request, trace):
                self._leading = True
                commands = self._arrived(request, trace)
            case Heartbeat(state):
                self._fleet.update(state, self._clock())
                commands = []
            case Cancelled(request_id):
                commands = self._cancelled(request_id)
            case RunAnswered(request_id, worker_id, result, gone, unanswered):
                commands = self._run_answered(request_id, worker_id, result, gone, unanswered)
            case LoadAnswered(worker_id, instance, digest, num_ctx, result, gone):
                commands = self._load_answered(worker_id, instance, digest, num_ctx, result, gone)
            case Tick():
                commands = self._tick()
            case Stopping():
                return self._stopping()
        commands = commands + self._schedule()
        self._remember_acked(commands)
        return commands

    def want(self, request: GenerationRequest) -> Want:
        """The instance a request needs. The one place num_ctx is decided (the request's, else
        the model's parameter, else OLLAMA_CONTEXT_LENGTH; at most the model's trained
        context), OLLAMA_NUM_PARALLEL applied and its memory estimated."""
        model = request.model
        num_ctx = (
            request.options.num_ctx
            or (model.parameters.num_ctx if model.parameters else None)
            or self._context_length
        )
        if model.context_length:  # as Ollama: never more than the model was trained on
            num_ctx = min(num_ctx, model.context_length)
        slots = self._num_parallel
        need = memory.estimate(model.size, model.shape, num_ctx, slots, self._kv_cache_type).total
        automatic = request.options.num_ctx is None and not (model.parameters and model.parameters.num_ctx)
        return Want(model.digest, num_ctx, need, slots, exact=not automatic, format=model.format)

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

    def worker_ids(self) -> list[str]:
        """The workers alive in the fleet view."""
        return [worker.id for worker in self._fleet.workers()]

    # ---- one method per event

    def _arrived(self, request: GenerationRequest, trace: Context | None) -> list[Command]:
        if request.action == "unload":
            digest = request.model.digest
            unloads: list[Command] = [Unload(worker_id, digest) for worker_id in self._fleet.holders(digest)]
            return [*unloads, *self._answer(request, Done(done_reason="unload"))]
        if request.id in self._pending:  # redelivered while still held here: the shell keeps the newer handle
            return []
        if request.id in self._acked:  # redelivered: its acknowledgement was lost
            log_event(log, "redelivered", level=logging.WARNING, context=trace, request=request.id)
            return [Ack(request.id)]
        self._pending[request.id] = Pending(request, self.want(request), trace, arrived=self._clock())
        log_event(
            log, "queued", context=trace, request=request.id, model=request.model.name, waiting=self.waiting
        )
        return []

    def _cancelled(self, request_id: str) -> list[Command]:
        pending = self._pending.get(request_id)
        if pending is None:  # placed already: the worker that has it stops it
            worker_id = self._placed.get(request_id)
            return [CancelOn(worker_id, request_id)] if worker_id else []
        if pending.dispatching:  # the run's answer decides: taken, the worker stops it; refused, dropped
            pending.cancelled = True
            return []
        del self._pending[request_id]
        log_event(
            log, "cancelled", context=pending.trace, request=request_id, model=pending.request.model.name
        )
        commands: list[Command] = [Ack(request_id)]  # the gateway has gone: nobody to reply to
        if pending.loading_on:  # the model it was loading for need not wait for it
            commands.append(CancelOn(pending.loading_on, request_id))
        return commands

    def _run_answered(
        self, request_id: str, worker_id: str, result: CommandResult, gone: bool, unanswered: bool
    ) -> list[Command]:
        if gone:  # the run never got there: place it again, and elsewhere if there is a worker
            commands = self._lose(worker_id, "no responders", runs_reached=False)
            pending = self._pending.get(request_id)
            if pending is not None and pending.dispatched_to == worker_id:
                pending.dispatched_to = None
                if pending.cancelled:
                    del self._pending[request_id]
                    commands.append(Ack(request_id))
            return commands
        if result.state is not None:
            self._fleet.update(result.state, self._clock())
        pending = self._pending.get(request_id)
        if pending is None or pending.dispatched_to != worker_id:
            return []  # its worker was dropped meanwhile (with the reservation), and the request failed
        if unanswered:
            return self._run_unanswered(pending, worker_id)
        pending.dispatched_to = None
        self._fleet.release_slot(worker_id, pending.dispatched_instance)
        request = pending.request
        if result.ok:
            del self._pending[request_id]
            log_event(log, "placed", context=pending.trace, request=request_id, worker=worker_id)
            measure.queue_wait.record(self._clock() - pending.arrived, {measure.MODEL: request.model.name})
            self._placed[request_id] = worker_id
            if pending.cancelled:
                return [Ack(request_id), CancelOn(worker_id, request_id)]
            return [Ack(request_id)]
        if pending.cancelled:
            del self._pending[request_id]
            log_event(log, "cancelled", context=pending.trace, request=request_id, model=request.model.name)
            return [Ack(request_id)]
        pending.refusals += 1
        log_event(
            log,
            "run_refused",
            context=pending.trace,
            request=request_id,
            worker=worker_id,
            reason=result.error,
            refusals=pending.refusals,
        )
        if pending.refusals < self._max_refusals:
            return []  # placed again below
        del self._pending[request_id]
        error = f"no worker would run the request ({pending.refusals} refusals, the last: {result.error})"
        return self._fail(pending, error, "unavailable")

    def _run_unanswered(self, pending: Pending, worker_id: str) -> list[Command]:
        """A run whose answer never came (lost with a NATS server, or the worker was slow) may
        have reached the worker: only that worker may run the request now, so the run goes to it
        again (a worker runs a request id once), with the slot still reserved, at most
        `max_refusals` times in all."""
        request_id, trace = pending.request.id, pending.trace
        pending.refusals += 1
        tries = pending.refusals
        log_event(log, "run_unanswered", context=trace, request=request_id, worker=worker_id, tries=tries)
        if pending.cancelled:  # if the worker has it, it stops it
            del self._pending[request_id]
            self._fleet.release_slot(worker_id, pending.dispatched_instance)
            return [Ack(request_id), CancelOn(worker_id, request_id)]
        if pending.refusals < self._max_refusals:
            command = RunCommand(
                request=pending.request, num_ctx=pending.dispatched_ctx, instance=pending.dispatched_instance
            )
            return [Run(worker_id, request_id, command, trace)]
        del self._pending[request_id]
        self._fleet.release_slot(worker_id, pending.dispatched_instance)
        return self._fail(pending, f"worker {worker_id} did not answer", "unavailable")

    def _load_answered(
        self, worker_id: str, instance: str, digest: str, num_ctx: int, result: CommandResult, gone: bool
    ) -> list[Command]:
        if gone:  # its waiters are placed again, elsewhere if there is a worker
            return self._lose(worker_id, "no responders", runs_reached=False)
        if result.state is not None:
            self._fleet.update(result.state, self._clock())
        if (worker_id, instance) not in self._loads:
            return []  # its worker was dropped meanwhile, and its waiters placed again
        self._loads.discard((worker_id, instance))
        self._fleet.load_finished(worker_id, instance)
        if result.ok:
            log_event(log, "loaded", worker=worker_id, digest=digest[:19], instance=instance)
            return []
        error = result.error or "model failed to load"
        log_event(log, "load_failed", level=logging.ERROR, worker=worker_id, error=error)
        measure.load_failures.add(1, {measure.WORKER: worker_id})
        if self._serving(digest, num_ctx):  # a replica: its waiters wait for the instances that serve
            self._replica_failed[(worker_id, digest)] = self._clock()
            for pending in self._pending.values():
                if pending.loading_on == worker_id and pending.want.digest == digest:
                    pending.loading_on = None
            return []
        commands: list[Command] = []
        for pending in list(self._pending.values()):
            want = pending.want
            if want.digest == digest and want.num_ctx == num_ctx and not pending.dispatching:
                del self._pending[pending.request.id]
                commands += self._fail(pending, error, "internal")
        return commands

    def _serving(self, digest: str, num_ctx: int) -> bool:
        """Whether a loaded instance of these weights and context is in the fleet."""
        return any(
            i.digest == digest and i.num_ctx == num_ctx and not i.loading
            for worker in self._fleet.workers()
            for i in worker.instances
        )

    def _no_replica_on(self, digest: str) -> frozenset[str]:
        """The workers where a replica of `digest` failed to load lately: none goes there yet."""
        now = self._clock()
        return frozenset(
            worker
            for (worker, failed), when in self._replica_failed.items()
            if failed == digest and now - when < REPLICA_RETRY_AFTER
        )

    def _lose(self, worker_id: str, why: str, *, runs_reached: bool = True) -> list[Command]:
        """Forget a worker that is gone: what waited for its load is placed again. A run out to
        it that may have reached it fails (it may have started there: never run it twice); one
        that cannot have (no responders) waits for its own answer and is placed again then."""
        if not self._fleet.drop(worker_id):
            return []
        log_event(log, "worker_lost", level=logging.WARNING, worker=worker_id, reason=why)
        self._loads = {load for load in self._loads if load[0] != worker_id}
        commands: list[Command] = []
        for pending in list(self._pending.values()):
            if pending.loading_on == worker_id:
                pending.loading_on = None
            if pending.dispatched_to == worker_id and runs_reached:
                del self._pending[pending.request.id]
                commands += self._fail(pending, f"worker {worker_id} stopped responding", "unavailable")
        return commands

    def _tick(self) -> list[Command]:
        now = self._clock()
        self._replica_failed = {
            k: t for k, t in self._replica_failed.items() if now - t < REPLICA_RETRY_AFTER
        }
        commands: list[Command] = []
        for worker_id in self._fleet.stale(self._clock(), self._stale_after):
            commands += self._lose(worker_id, "silent")
        if not self._fleet.workers():  # no request waits without a deadline for a worker to appear
            horizon = self._clock() - self._no_worker_wait
            for pending in list(self._pending.values()):
                if not pending.dispatching and pending.arrived <= horizon:
                    del self._pending[pending.request.id]
                    commands += self._fail(pending, NO_WORKER, "unavailable")
        if self._pending:  # keep every held message from being redelivered
            commands.append(InProgress(tuple(self._pending)))
        return commands

    def _stopping(self) -> list[Command]:
        """Hand every waiting request back to the stream for the next leader, and forget every
        run that is out: unacknowledged, it goes to the next leader too, which asks the workers
        whether one took it before it places it again (none runs twice)."""
        waiting = [request_id for request_id, p in self._pending.items() if not p.dispatching]
        self._pending.clear()
        self._leading = False
        return [Nak(request_id) for request_id in waiting]

    # ---- placement

    def _schedule(self) -> list[Command]:
        """Place each waiting request in arrival order; what cannot be placed keeps waiting."""
        commands: list[Command] = []
        if not self._leading:
            return commands
        self._drain_over()
        for pending in list(self._pending.values()):
            if pending.dispatching:
                continue
            request, want = pending.request, pending.want
            match place(self._fleet.workers(), want, self._policy, self._no_replica_on(want.digest)):
                case placement.Dispatch(worker_id, num_ctx, instance):
                    pending.dispatched_to, pending.dispatched_ctx = worker_id, num_ctx
                    pending.dispatched_instance = instance
                    self._decided(pending, "dispatch")
                    self._fleet.reserve_slot(worker_id, instance)
                    command = RunCommand(request=request, num_ctx=num_ctx, instance=instance)
                    commands.append(Run(worker_id, request.id, command, pending.trace))
                case placement.Load(worker_id, evict, split):
                    commands.append(self._load(pending, worker_id, evict, split))
                case placement.Refuse(reason, code):
                    del self._pending[request.id]
                    self._decided(pending, "refuse")
                    commands += self._fail(pending, reason, code)
                case placement.Wait(reason):
                    if reason != pending.reason:
                        self._decided(pending, "wait", reason)
                    starved = self._clock() - pending.arrived >= self._starved_after
                    if reason == placement.NO_ROOM and starved and self._drain is None:
                        self._drain_for(pending)
        return commands

    def _load(self, pending: Pending, worker_id: str, evict: tuple[str, ...], split: placement.Split) -> Load:
        """Load the model a request waits for on `worker_id`, as a new instance there (after
        unloading the instances `evict`)."""
        request, want = pending.request, pending.want
        self._decided(pending, "load", "model loading")
        pending.loading_on = worker_id
        instance = self._fleet.new_instance(worker_id, want.digest, want.num_ctx)
        unloads = tuple(
            UnloadCommand(digest=self._fleet.digest_of(worker_id, name) or "", instance=name)
            for name in evict
        )
        self._fleet.mark_loading(worker_id, instance, want.digest, want.num_ctx, split)
        self._loads.add((worker_id, instance))
        log_event(
            log,
            "loading",
            context=pending.trace,
            worker=worker_id,
            model=request.model.name,
            instance=instance,
            split=dict(split),
            evict=list(evict),
        )
        load = LoadCommand(
            model=request.model,
            num_ctx=want.num_ctx,
            slots=want.slots,
            keep_alive=request.keep_alive,
            request_id=request.id,
            split=dict(split),
            instance=instance,
        )
        return Load(worker_id, load, unloads, pending.trace)

    def _drain_for(self, pending: Pending) -> None:
        """A request starved of room: the fewest instances whose unloading would make room stop
        taking new requests, so they go idle and rule 4 unloads them for it."""
        plan = placement.drain(self._fleet.workers(), pending.want, self._policy)
        if plan is None:
            return
        worker_id, instances = plan
        self._drain = (pending.request.id, worker_id)
        self._fleet.drain(worker_id, instances)
        log_event(log, "draining", context=pending.trace, request=pending.request.id, worker=worker_id)

    def _drain_over(self) -> None:
        """End the drain once its request is loading, placed or gone."""
        if self._drain is None:
            return
        request_id, worker_id = self._drain
        pending = self._pending.get(request_id)
        gone = worker_id not in self._fleet  # dropped: a new plan is made if it still waits
        if pending is None or pending.loading_on or pending.dispatching or gone:
            self._fleet.undrain(worker_id)
            self._drain = None

    def _decided(self, pending: Pending, decision: str, reason: str = "") -> None:
        """Count a decision; log a waiting request's reason when it changes."""
        attributes = {measure.DECISION: decision, measure.MODEL: pending.request.model.name}
        measure.placements.add(1, attributes | ({measure.REASON: reason} if reason else {}))
        if reason and reason != pending.reason:
            log_event(log, "waiting", context=pending.trace, request=pending.request.id, reason=reason)
        pending.reason = reason

    def _remember_acked(self, commands: list[Command]) -> None:
        for command in commands:
            if isinstance(command, Ack):
                self._acked[command.request_id] = None

    def _fail(self, pending: Pending, error: str, code: ErrorCode) -> list[Command]:
        log_event(
            log, "failed", level=logging.ERROR, context=pending.trace, request=pending.request.id, error=error
        )
        return self._answer(pending.request, Failed(error=error, code=code))

    @staticmethod
    def _answer(request: GenerationRequest, event: Done | Failed) -> list[Command]:
        """Answer the gateway, then let the stream forget the request (in that order)."""
        return [Reply(request.id, request.reply_subject, event), Ack(request.id)]
