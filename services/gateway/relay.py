"""One generation's trip through NATS, seen from the gateway.

Subscribe to the request's reply subject first, then publish the request into
the bounded stream (a full stream is HTTP 503; a stream electing a new leader is
asked again, a while), then read the worker's replies in order. Closing the relay
early (the client went away) sends a cancel: to the worker that started the request,
else to the scheduler, which drops a waiting request or passes the cancel on to the
one worker it placed the request on. No cancel is broadcast.

Once a worker has started the request (Started names it), a silence of one heartbeat
interval makes the relay ask that worker whether it still runs the request
(`corral.worker.<id>.ping`): NATS answers "no responders" at once when its connection is
gone (a killed worker), and the client gets its error then, not after the idle timeout. A
worker that runs it (a long prompt) says so, and the wait goes on, up to
CORRAL_IDLE_TIMEOUT; one that no longer does sent its last message into a gap.

The stream is never silently cut: chunks are numbered and Done says how many there were,
so a message lost to a broker restart is an error for the client, never a short answer
that claims `done`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import nats.errors
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError, ServiceUnavailableError

from services import telemetry
from services.gateway import measure
from services.gateway.errors import ApiError, QueueFull, Unavailable
from services.protocol import (
    REPLY,
    CancelCommand,
    Chunk,
    Done,
    Embeddings,
    Failed,
    GenerationRequest,
    PingRequest,
    Started,
    subjects,
)
from services.protocol.messages import CommandResult
from services.telemetry import log_event

log = logging.getLogger("corral.gateway")
STREAM_FULL = 10077
PUBLISH_TIMEOUT = 5.0
# A NATS cluster that lost the server leading the request stream elects another within seconds
# (4 to 10 s measured, 2.9 and 2.14): a request is queued again for this long before it is refused.
ELECTION_WAIT = 20.0
ELECTION_RETRY = 0.25  # seconds between tries meanwhile
INTERRUPTED = "reply stream interrupted: "
GONE_AFTER = 2  # pings in a row answered "no responders" that make a worker count as gone
PING_TIMEOUT = 2.0  # seconds: a worker that does not answer in time counts as alive but busy

Event = Started | Chunk | Done | Embeddings | Failed
# What a worker says of a request that fell silent (None: it could not be asked in time).
Liveness = Literal["running", "finished", "gone"] | None


class Relay:
    def __init__(self, broker: NatsBroker, idle_timeout: float, check_every: float) -> None:
        self._broker = broker
        self._idle_timeout = idle_timeout
        self._check_every = check_every  # the heartbeat interval

    async def open(self, request: GenerationRequest) -> RelayedRequest:
        """Queue `request`; raise QueueFull (503) when the stream refuses it, and 413 when it is
        larger than a NATS message may be."""
        data = request.encode()
        connection = self._broker.connection
        if len(data) > connection.max_payload:
            raise ApiError(
                f"request too large: {len(data)} bytes to queue, at most {connection.max_payload}", 413
            )
        subscription = await connection.subscribe(request.reply_subject)
        measured = measure.Measured(request)
        try:
            await self._queue(request, data, telemetry.inject({"Nats-Msg-Id": request.id}, measured.context))
        except APIError as exc:
            await subscription.unsubscribe()
            if exc.err_code == STREAM_FULL:
                log_event(log, "rejected", request=request.id, reason="queue full")
                measured.rejected()
                raise QueueFull() from exc
            measured.seen(Failed(error=exc.description or "queue unavailable", code="unavailable"))
            raise ApiError(f"queue unavailable: {exc.description}", 503) from exc
        except (NoStreamResponseError, nats.errors.TimeoutError) as exc:
            await subscription.unsubscribe()
            measured.seen(Failed(error="no answer from the request stream", code="unavailable"))
            raise Unavailable("queue unavailable: no answer from the request stream") from exc
        log_event(log, "submitted", context=measured.context, request=request.id, model=request.model.name)
        silence = Silence(self._idle_timeout, self._check_every, self._ping)
        return RelayedRequest(self._broker, request, subscription, silence, measured)

    async def _queue(self, request: GenerationRequest, data: bytes, headers: dict[str, str]) -> None:
        """Publish `request` into the stream. While the stream is there but has no leader (a NATS
        cluster electing one after losing a server), try again for up to ELECTION_WAIT seconds:
        the message id makes a second copy impossible. A stream that does not exist is not
        waited for (no scheduler has made it)."""
        js = self._broker.connection.jetstream()
        deadline = time.monotonic() + ELECTION_WAIT
        for attempt in itertools.count():
            try:
                # nats-py directly: faststream's publish costs milliseconds on every request's way in.
                await js.publish(
                    subjects.request_subject(request.kind),
                    data,
                    timeout=PUBLISH_TIMEOUT,
                    stream=subjects.REQUEST_STREAM,
                    headers=headers,
                )
                return
            except (NoStreamResponseError, nats.errors.TimeoutError, ServiceUnavailableError) as exc:
                full = isinstance(exc, APIError) and exc.err_code == STREAM_FULL
                if full or time.monotonic() >= deadline or not await self._stream_exists():
                    raise
                if not attempt:
                    error = repr(exc)
                    log_event(log, "queue_retried", level=logging.WARNING, request=request.id, error=error)
            await asyncio.sleep(ELECTION_RETRY)

    async def _stream_exists(self) -> bool:
        """Whether the request stream exists; True when JetStream cannot say now (an election)."""
        try:
            await self._broker.connection.jetstream(timeout=PING_TIMEOUT).stream_info(subjects.REQUEST_STREAM)
        except NotFoundError:
            return False
        except (nats.errors.Error, TimeoutError):
            pass
        return True

    async def _ping(self, worker_id: str, request_id: str) -> Liveness:
        """Whether the worker still runs the request, has finished it, or is gone."""
        ping = PingRequest(request_id=request_id).encode()
        try:
            answer = await self._broker.connection.request(
                subjects.worker_ping(worker_id), ping, timeout=PING_TIMEOUT
            )
        except nats.errors.NoRespondersError:
            return "gone"
        except (nats.errors.Error, TimeoutError):
            return None
        return "running" if CommandResult.model_validate_json(answer.data).ok else "finished"


@dataclass(frozen=True)
class Silence:
    """How long a started request may stay silent, and how to ask its worker meanwhile."""

    idle: float  # seconds of silence that fail it whatever the worker says
    check_every: float  # seconds of silence before the worker is asked
    ping: Callable[[str, str], Awaitable[Liveness]]  # (worker, request) -> does it run it?


@dataclass
class ChunkCount:
    """The chunks of one answer received so far, against the numbers the worker gave them."""

    received: int = 0

    def lost_before(self, event: Event) -> int:
        """How many chunks the worker sent before `event` that never arrived (0: none)."""
        if isinstance(event, Chunk):
            sent = event.seq - 1
        elif isinstance(event, Done):
            sent = event.chunks
        else:
            return 0
        if sent != self.received:
            return sent - self.received
        self.received += isinstance(event, Chunk)
        return 0


class RelayedRequest:
    """The replies of one request, in order, ending at Done, Embeddings or Failed."""

    def __init__(
        self,
        broker: NatsBroker,
        request: GenerationRequest,
        subscription: Subscription,
        silence: Silence,
        measured: measure.Measured,
    ) -> None:
        self._broker = broker
        self.request = request
        self._subscription: Subscription | None = subscription
        self._silence = silence
        self._finished = False
        self._started = False
        self._worker = ""  # the worker that started it
        self._chunks = ChunkCount()
        self._held: Event | None = None  # read ahead by ready_chunks, not yet returned
        self._measured = measured

    async def next_event(self) -> Event:
        """The next reply; ApiError when the worker falls silent after starting."""
        if self._held is not None:
            event, self._held = self._held, None
            return event
        if self._subscription is None:
            raise ApiError("request already finished", 500)
        # Queue wait and model load have no deadline of ours (the client decides).
        if not self._started:
            message = await self._subscription.next_msg(timeout=None)
        else:
            message = await self._next_from_worker(self._subscription)
        return self._seen(REPLY.validate_json(message.data))

    async def _next_from_worker(self, subscription: Subscription) -> Msg:
        """The next reply of a started request; ApiError once its worker is known to be gone,
        or after `idle` seconds of silence. Gone means no responders twice in a row, a check
        apart: once may be a worker reconnecting to a restarted broker."""
        silent = 0.0
        absent = 0  # pings in a row that found nobody
        while True:
            wait = min(self._silence.check_every, self._silence.idle - silent)
            try:
                return await subscription.next_msg(timeout=wait)
            except nats.errors.TimeoutError:
                silent += wait
            if silent >= self._silence.idle:
                raise ApiError("worker stopped responding", 500)
            if not self._worker:
                continue
            liveness = await self._silence.ping(self._worker, self.request.id)
            if liveness in ("gone", "finished") and subscription.pending_msgs:
                return await subscription.next_msg(timeout=None)  # its last messages came meanwhile
            absent = absent + 1 if liveness == "gone" else 0
            if absent >= GONE_AFTER:
                log_event(log, "worker_gone", request=self.request.id, worker=self._worker)
                raise ApiError(f"worker {self._worker} stopped responding", 500)
            if liveness == "finished":
                log_event(log, "reply_gap", level=logging.ERROR, request=self.request.id, lost="the end")
                raise ApiError(INTERRUPTED + "the end of the answer was lost", 500)

    async def ready_chunks(self) -> list[Chunk]:
        """The chunks already waiting, without waiting for more (a non-chunk is kept for later)."""
        chunks: list[Chunk] = []
        while self._held is None and self._subscription is not None and self._subscription.pending_msgs:
            message = await self._subscription.next_msg(timeout=None)
            event = self._seen(REPLY.validate_json(message.data))
            if isinstance(event, Chunk):
                chunks.append(event)
            else:
                self._held = event
        return chunks

    def _seen(self, event: Event) -> Event:
        self._check_sequence(event)
        self._measured.seen(event)
        if isinstance(event, Started):
            self._started, self._worker = True, event.worker_id
        self._finished = self._finished or isinstance(event, Done | Embeddings | Failed)
        return event

    def _check_sequence(self, event: Event) -> None:
        """ApiError when a chunk is missing before this event."""
        lost = self._chunks.lost_before(event)
        if lost:
            log_event(log, "reply_gap", level=logging.ERROR, request=self.request.id, lost=lost)
            raise ApiError(INTERRUPTED + f"{lost} message(s) of the answer were lost", 500)

    def _cancel(self) -> tuple[str, bytes]:
        """Where a cancel goes: to the worker that started the request, else to the scheduler
        (which passes it on if it has placed the request meanwhile)."""
        if self._worker:
            return subjects.worker_cancel(self._worker), CancelCommand(request_id=self.request.id).encode()
        return subjects.cancel_subject(self.request.id), b""

    async def close(self) -> None:
        """Stop listening; if the request is not finished, cancel it wherever it is."""
        if self._subscription is None:
            return
        subscription, self._subscription = self._subscription, None
        if not self._finished:
            self._finished = True
            log_event(log, "client_gone", context=self._measured.context, request=self.request.id)
            self._measured.gone()
            await self._broker.connection.publish(*self._cancel())
        await asyncio.shield(subscription.unsubscribe())
