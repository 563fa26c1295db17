"""The scheduler's NATS shell: turns stream messages, heartbeats and cancels into core events,
and core commands into worker requests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import nats.errors
from faststream.nats import ConsumerConfig, NatsBroker, NatsMessage
from nats.aio.msg import Msg
from nats.js.errors import ServiceUnavailableError
from pydantic import ValidationError

from services import telemetry
from services.config import Settings
from services.protocol import (
    CommandResult,
    Done,
    Failed,
    GenerationRequest,
    LoadCommand,
    QueueRequest,
    QueueState,
    RunCommand,
    UnloadCommand,
    WorkerState,
    subjects,
)
from services.protocol.messages import Message
from services.runtime import request
from services.scheduler import measure
from services.scheduler.core import Arrived, Cancelled, Heartbeat, Scheduler, Tick
from services.scheduler.stream import ensure_request_stream
from services.telemetry import log_event

log = logging.getLogger("corral.scheduler")

RUN_TIMEOUT = 10.0
UNLOAD_TIMEOUT = 10.0


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

    async def unload(self, worker_id: str, digest: str) -> CommandResult:
        command = UnloadCommand(digest=digest)
        return await self._call(subjects.worker_unload(worker_id), command, UNLOAD_TIMEOUT)

    async def reply(self, subject: str, event: Done | Failed) -> None:
        await self._broker.publish(event, subject)

    async def _call(self, subject: str, command: Message, timeout: float) -> CommandResult:
        return CommandResult.model_validate_json(await request(self._broker, subject, command, timeout))


def register(broker: NatsBroker, settings: Settings) -> Scheduler:
    scheduler = Scheduler(
        NatsTransport(broker, settings.load_deadline),
        max_loaded=settings.loaded_models_limit,
        num_parallel=settings.num_parallel,
        context_length=settings.context_length,
        stale_after=settings.stale_after,
    )
    measure.observe(scheduler.waiting_by, scheduler.workers)

    @broker.subscriber(subjects.HEARTBEAT)
    async def on_heartbeat(state: WorkerState) -> None:
        scheduler.submit(Heartbeat(state))

    @broker.subscriber(subjects.SCHEDULER_QUEUE)
    async def on_queue(question: QueueRequest) -> QueueState:
        return scheduler.queue(question.client_id)

    @broker.subscriber(subjects.CANCEL_ALL)
    async def on_cancel(message: NatsMessage) -> None:
        scheduler.submit(Cancelled(subjects.request_id_of(message.raw_message.subject)))

    return scheduler


async def consume(broker: NatsBroker, settings: Settings, scheduler: Scheduler) -> None:
    """Pull waiting requests from the stream with the durable consumer; never ack here.

    A plain nats-py fetch loop rather than a faststream pull subscriber: faststream
    0.7.8 only absorbs nats-py's own TimeoutError, while nats-py 2.15+ can also raise
    asyncio's from fetch, which turned every idle poll into a logged crash and retry.
    """
    js = broker.connection.jetstream()
    await ensure_request_stream(js, settings.max_queue)
    subscription = await js.pull_subscribe(
        subjects.REQUEST_SUBJECTS,
        durable=subjects.SCHEDULER_DURABLE,
        stream=subjects.REQUEST_STREAM,
        config=ConsumerConfig(
            ack_wait=settings.queue_ack_wait,
            max_ack_pending=max(1000, 2 * settings.max_queue),
        ),
    )
    try:
        while True:
            try:
                messages = await subscription.fetch(batch=16, timeout=1.0)
            except (TimeoutError, nats.errors.ConnectionClosedError, ServiceUnavailableError):
                continue
            for message in messages:
                try:
                    request = GenerationRequest.model_validate_json(message.data)
                except ValidationError as exc:
                    log_event(log, "malformed_request", level=logging.ERROR, subject=message.subject)
                    await _refuse(broker, message.data, exc)
                    await message.term()
                    continue
                scheduler.submit(Arrived(request, _Held(message), telemetry.extract(message.headers)))
    finally:
        # A pull subscription left with a pending fetch holds the broker's drain on stop for
        # its whole timeout (30 s): the scheduler took that long to exit.
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()


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


async def tick(scheduler: Scheduler, interval: float) -> None:
    """Keep held messages alive (in_progress) and notice silent workers."""
    while True:
        await asyncio.sleep(interval)
        scheduler.submit(Tick())
