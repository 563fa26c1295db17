"""The scheduler's NATS shell: turns stream messages, heartbeats and cancels into core events,
and carries out the core's commands, feeding every worker's answer back as an event.

The shell holds what the core must not: the stream messages (by request id; a redelivery
keeps the newer handle), the transport and the tasks. Each run, load and unload is a task of
its own, so a slow load never holds up another dispatch; a request's reply and ack run in
order in one task.

Only the scheduler holding the lease (`lease.py`) reads the stream and answers questions
about the queue; a standby keeps its fleet view from heartbeats, ready to take over
(`takeover.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from functools import partial
from typing import Any, Protocol, TypeVar

import nats.errors
from faststream.nats import ConsumerConfig, NatsBroker, NatsMessage
from nats.aio.msg import Msg
from nats.js.errors import ServiceUnavailableError
from opentelemetry import trace as otel_trace
from opentelemetry.context import Context
from pydantic import ValidationError

from services import telemetry
from services.config import Settings
from services.protocol import (
    CancelCommand,
    CommandResult,
    Done,
    Failed,
    GenerationRequest,
    LoadCommand,
    QueueRequest,
    RunCommand,
    UnloadCommand,
    WorkerState,
    subjects,
)
from services.protocol.messages import Message
from services.runtime import request
from services.scheduler import measure
from services.scheduler.core import (
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
from services.scheduler.lease import Lease
from services.scheduler.placement import Policy
from services.scheduler.stream import sweep_acknowledged
from services.scheduler.takeover import ensure_streams, settled, take_over
from services.telemetry import log_event

log = logging.getLogger("corral.scheduler")
T = TypeVar("T")
_tracer = otel_trace.get_tracer("corral.scheduler")

RUN_TIMEOUT = 10.0
SWEEP_EVERY = 10.0  # seconds between sweeps of acknowledged messages the stream kept (`stream.py`)
# Seconds the leader waits for a JetStream API answer. A call made while a stream or consumer
# has no leader (a NATS cluster electing one) is never answered: ask again soon, not after 5 s.
JETSTREAM_TIMEOUT = 2.0
UNLOAD_TIMEOUT = 10.0


class HeldMessage(Protocol):
    """The request's message in the stream; the core decides its fate."""

    async def ack(self) -> None: ...
    async def nak(self) -> None: ...
    async def in_progress(self) -> None: ...


class Transport(Protocol):
    """The I/O with workers and gateways; `NatsTransport` implements it."""

    async def run(self, worker_id: str, command: RunCommand) -> CommandResult: ...
    async def load(self, worker_id: str, command: LoadCommand) -> CommandResult: ...
    async def unload(self, worker_id: str, command: UnloadCommand) -> CommandResult: ...
    async def cancel(self, worker_id: str, request_id: str) -> None: ...
    async def reply(self, subject: str, event: Done | Failed) -> None: ...


class _Held:
    """A stream message the scheduler holds until the request is placed."""

    def __init__(self, message: Msg) -> None:
        self._raw = message

    async def ack(self) -> None:
        with contextlib.suppress(Exception):
            await self._raw.ack_sync()

    async def nak(self) -> None:
        with contextlib.suppress(Exception):
            await self._raw.nak()

    async def in_progress(self) -> None:
        with contextlib.suppress(Exception):
            await self._raw.in_progress()


class NatsTransport:
    def __init__(self, broker: NatsBroker, load_timeout: float) -> None:
        self._broker = broker
        self._load_timeout = load_timeout

    async def run(self, worker_id: str, command: RunCommand) -> CommandResult:
        return await self._call(subjects.worker_run(worker_id), command, RUN_TIMEOUT)

    async def load(self, worker_id: str, command: LoadCommand) -> CommandResult:
        return await self._call(subjects.worker_load(worker_id), command, self._load_timeout)

    async def unload(self, worker_id: str, command: UnloadCommand) -> CommandResult:
        return await self._call(subjects.worker_unload(worker_id), command, UNLOAD_TIMEOUT)

    async def cancel(self, worker_id: str, request_id: str) -> None:
        command = CancelCommand(request_id=request_id)
        await self._broker.connection.publish(subjects.worker_cancel(worker_id), command.encode())

    async def reply(self, subject: str, event: Done | Failed) -> None:
        await self._broker.publish(event, subject)

    async def _call(self, subject: str, command: Message, timeout: float) -> CommandResult:
        return CommandResult.model_validate_json(await request(self._broker, subject, command, timeout))


class SchedulerShell:
    """One task owns the core: it takes events in order, and carries out each step's commands."""

    def __init__(self, core: Scheduler, transport: Transport) -> None:
        self.core = core
        self._transport = transport
        self._held: dict[str, HeldMessage] = {}
        self._events: asyncio.Queue[tuple[Event, HeldMessage | None]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[object]] = set()

    def submit(self, event: Event) -> None:
        self._events.put_nowait((event, None))

    def arrived(self, request: GenerationRequest, message: HeldMessage, trace: Context | None) -> None:
        self._events.put_nowait((Arrived(request, trace), message))

    async def run(self) -> None:
        while True:
            event, message = await self._events.get()
            self.step(event, message)

    def step(self, event: Event, message: HeldMessage | None = None) -> None:
        if isinstance(event, Arrived) and message is not None:
            self._held[event.request.id] = message  # a redelivery keeps the newer handle
        self._execute(self.core.handle(event))

    async def step_down(self) -> None:
        """Stop leading: hand every waiting request back to the stream for the next leader, and
        let go of every message held (the next leader gets them all)."""
        for command in self.core.handle(Stopping()):
            if isinstance(command, Nak) and (held := self._held.pop(command.request_id, None)):
                await held.nak()
        self._held.clear()

    async def release_all(self) -> None:
        """On shutdown: step down, and stop whatever is still out."""
        await self.step_down()
        for task in list(self._tasks):
            task.cancel()

    def _execute(self, commands: list[Command]) -> None:
        in_order: dict[str, list[Callable[[], Awaitable[object]]]] = {}  # by request id
        for command in commands:
            match command:
                case Run():
                    self._spawn(self._run(command))
                case Load():
                    self._spawn(self._load(command))
                case Unload(worker_id, digest, instance):
                    self._spawn(
                        self._transport.unload(worker_id, UnloadCommand(digest=digest, instance=instance))
                    )
                case CancelOn(worker_id, request_id):
                    self._spawn(self._transport.cancel(worker_id, request_id))
                case Reply(request_id, subject, event):
                    in_order.setdefault(request_id, []).append(partial(self._transport.reply, subject, event))
                case Ack(request_id) | Nak(request_id):
                    held = self._held.pop(request_id, None)
                    if held is not None:
                        in_order.setdefault(request_id, []).append(
                            held.ack if isinstance(command, Ack) else held.nak
                        )
                case InProgress(request_ids):
                    alive = [held.in_progress for rid in request_ids if (held := self._held.get(rid))]
                    if alive:
                        self._spawn(_in_order(alive))
        for steps in in_order.values():
            self._spawn(_in_order(steps))

    async def _run(self, command: Run) -> None:
        gone = unanswered = False
        try:
            with _tracer.start_as_current_span("dispatch", context=command.trace):
                result = await self._transport.run(command.worker_id, command.command)
        except nats.errors.NoRespondersError:
            result, gone = CommandResult(ok=False, error="the worker is gone"), True
        except TimeoutError:  # the run, or its answer, may be lost: the worker may have taken it
            result, unanswered = CommandResult(ok=False, error="the worker did not answer"), True
        except Exception as exc:  # a worker that answers nonsense refuses the run
            result = CommandResult(ok=False, error=f"worker did not answer: {exc!r}")
        self.submit(RunAnswered(command.request_id, command.worker_id, result, gone, unanswered))

    async def _load(self, command: Load) -> None:
        worker_id, load = command.worker_id, command.command
        gone = False
        try:
            for unload in command.evict:
                await self._transport.unload(worker_id, unload)
                log_event(
                    log, "evicted", worker=worker_id, digest=unload.digest[:19], instance=unload.instance
                )
                measure.evictions.add(1, {measure.WORKER: worker_id})
            with _tracer.start_as_current_span("load", context=command.trace):
                result = await self._transport.load(worker_id, load)
        except nats.errors.NoRespondersError:
            result, gone = CommandResult(ok=False, error="the worker is gone"), True
        except Exception as exc:
            result = CommandResult(ok=False, error=f"worker did not answer: {exc!r}")
        self.submit(LoadAnswered(worker_id, load.id, load.model.digest, load.num_ctx, result, gone))

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _in_order(steps: Sequence[Callable[[], Awaitable[object]]]) -> None:
    for step in steps:
        await step()


def register(broker: NatsBroker, settings: Settings) -> SchedulerShell:
    core = Scheduler(
        max_loaded=settings.loaded_models_limit,
        num_parallel=settings.num_parallel,
        context_length=settings.context_length,
        stale_after=settings.stale_after,
        no_worker_wait=settings.load_deadline,
        kv_cache_type=settings.kv_cache,
        policy=Policy(
            gpu_overhead=settings.gpu_overhead,
            spread=settings.sched_spread,
            max_replicas=settings.max_replicas,
        ),
    )
    scheduler = SchedulerShell(core, NatsTransport(broker, settings.load_deadline))
    measure.observe(core.waiting_by, core.workers)

    @broker.subscriber(subjects.HEARTBEAT)
    async def on_heartbeat(state: WorkerState) -> None:
        scheduler.submit(Heartbeat(state))

    @broker.subscriber(subjects.CANCEL_ALL)
    async def on_cancel(message: NatsMessage) -> None:
        scheduler.submit(Cancelled(subjects.request_id_of(message.raw_message.subject)))

    return scheduler


async def lead(broker: NatsBroker, settings: Settings, scheduler: SchedulerShell, lease: Lease) -> None:
    """Wait for the lease; while it is held, read the request stream and answer questions about
    the queue; when it is lost, hand everything back and wait for it again."""
    born = time.monotonic()
    while True:  # the streams first, whoever leads: the gateway may queue before anyone does
        try:
            await ensure_streams(broker.connection.jetstream(), settings.max_queue, settings.stream_replicas)
            break
        except (nats.errors.Error, TimeoutError) as exc:
            log_event(log, "streams_unavailable", level=logging.WARNING, error=repr(exc))
            await asyncio.sleep(settings.heartbeat_interval)
    while True:
        await lease.acquire()
        # A scheduler that has just started learns the fleet first: it asks the workers about
        # the requests it inherits, and places nothing blind.
        await asyncio.sleep(max(0.0, born + 1.5 * settings.heartbeat_interval - time.monotonic()))
        log_event(log, "leading", workers=scheduler.core.workers())
        answering = await broker.connection.subscribe(
            subjects.SCHEDULER_QUEUE, cb=partial(_answer_queue, scheduler.core)
        )
        reading = asyncio.ensure_future(consume(broker, settings, scheduler))
        holding = asyncio.ensure_future(lease.hold())
        try:
            done, _ = await asyncio.wait({reading, holding}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reading, holding):
                task.cancel()
            await asyncio.gather(reading, holding, return_exceptions=True)
            with contextlib.suppress(Exception):
                await answering.unsubscribe()
        why = next(iter(done)).exception()
        log_event(log, "stepped_down", level=logging.WARNING, reason=str(why) or type(why).__name__)
        await scheduler.step_down()
        await lease.release()


async def _answer_queue(core: Scheduler, message: Msg) -> None:
    question = QueueRequest.model_validate_json(message.data or b"{}")
    await message.respond(core.queue(question.client_id).encode())


async def consume(broker: NatsBroker, settings: Settings, scheduler: SchedulerShell) -> None:
    """Take the queue over, then pull waiting requests with the durable consumer; never ack
    here, except an inherited request that must not run (cancelled, or taken already).

    A plain nats-py fetch loop rather than a faststream pull subscriber: faststream
    0.7.8 only absorbs nats-py's own TimeoutError, while nats-py 2.15+ can also raise
    asyncio's from fetch, which turned every idle poll into a logged crash and retry.
    """
    js = broker.connection.jetstream(timeout=JETSTREAM_TIMEOUT)
    config = ConsumerConfig(
        ack_wait=settings.queue_ack_wait,
        max_ack_pending=max(1000, 2 * settings.max_queue),
    )
    take = partial(take_over, js, settings.max_queue, settings.stream_replicas)
    inherited_until = await _answered(take, "takeover_unanswered")
    subscribe = partial(
        js.pull_subscribe,
        subjects.REQUEST_SUBJECTS,
        durable=subjects.SCHEDULER_DURABLE,
        stream=subjects.REQUEST_STREAM,
        config=config,
    )
    subscription = await _answered(subscribe, "consumer_unanswered")
    swept_at = time.monotonic()
    try:
        while True:
            if time.monotonic() - swept_at > SWEEP_EVERY:
                swept_at = time.monotonic()
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    await sweep_acknowledged(js)
            try:
                messages = await subscription.fetch(batch=16, timeout=1.0)
            except (TimeoutError, nats.errors.ConnectionClosedError, ServiceUnavailableError):
                continue
            arrived: list[tuple[GenerationRequest, Msg]] = []
            for message in messages:
                try:
                    arrived.append((GenerationRequest.model_validate_json(message.data), message))
                except ValidationError as exc:
                    log_event(log, "malformed_request", level=logging.ERROR, subject=message.subject)
                    await _refuse(broker, message.data, exc)
                    await message.term()
            inherited = [r.id for r, m in arrived if m.metadata.sequence.stream <= inherited_until]
            if inherited:
                found = await settled(broker.connection, js, inherited, scheduler.core.worker_ids())
                for request, message in arrived:
                    if request.id in found:
                        log_event(log, "inherited_settled", request=request.id, reason=found[request.id])
                        await _Held(message).ack()
                arrived = [(r, m) for r, m in arrived if r.id not in found]
            for request, message in arrived:
                scheduler.arrived(request, _Held(message), telemetry.extract(message.headers))
    finally:
        # A pull subscription left with a pending fetch holds the broker's drain on stop for
        # its whole timeout (30 s): the scheduler took that long to exit.
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()


async def _answered(call: Callable[[], Awaitable[T]], event: str) -> T:
    """`call()`, made again while JetStream does not answer in time. On a NATS cluster that has
    just lost a server, a stream answers once its replicas have elected a leader, and so does a
    new consumer (seconds: 10 s seen on 2.9, longer than the API's timeout). Stepping down
    instead would start the takeover over, and with it the new consumer's election."""
    while True:
        try:
            return await call()
        except TimeoutError:
            log_event(log, event, level=logging.WARNING)


async def _refuse(broker: NatsBroker, data: bytes, error: ValidationError) -> None:
    """Answer a request this scheduler cannot read, if it says where to: never leave a client waiting."""
    try:
        reply = json.loads(data).get("reply_subject")
    except (ValueError, AttributeError):
        return
    if isinstance(reply, str) and reply:
        failed = Failed(
            error=f"invalid request: {error.errors()[0].get('msg', 'unreadable')}", code="invalid"
        )
        await broker.connection.publish(reply, failed.encode())


async def tick(scheduler: SchedulerShell, interval: float) -> None:
    """Keep held messages alive (in_progress) and notice silent workers."""
    while True:
        await asyncio.sleep(interval)
        scheduler.submit(Tick())
