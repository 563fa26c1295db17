"""One generation's trip through NATS, seen from the gateway.

Subscribe to the request's reply subject first, then publish the request into
the bounded stream (a full stream is HTTP 503), then read the worker's replies
in order. Closing the relay early (the client went away) sends a cancel, so the
scheduler drops a waiting request and a worker stops a running one.
"""

from __future__ import annotations

import asyncio
import logging

import nats.errors
from faststream.nats import NatsBroker
from nats.aio.subscription import Subscription
from nats.js.errors import APIError, NoStreamResponseError

from services import telemetry
from services.gateway import measure
from services.gateway.errors import ApiError, QueueFull, Unavailable
from services.protocol import REPLY, Chunk, Done, Embeddings, Failed, GenerationRequest, Started, subjects
from services.telemetry import log_event

log = logging.getLogger("corral.gateway")
STREAM_FULL = 10077
PUBLISH_TIMEOUT = 5.0

Event = Started | Chunk | Done | Embeddings | Failed


class Relay:
    def __init__(self, broker: NatsBroker, idle_timeout: float) -> None:
        self._broker = broker
        self._idle_timeout = idle_timeout

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
            # nats-py directly: faststream's publish costs milliseconds on every request's way in.
            await connection.jetstream().publish(
                subjects.request_subject(request.kind),
                data,
                timeout=PUBLISH_TIMEOUT,
                stream=subjects.REQUEST_STREAM,
                headers=telemetry.inject({"Nats-Msg-Id": request.id}, measured.context),
            )
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
        return RelayedRequest(self._broker, request, subscription, self._idle_timeout, measured)


class RelayedRequest:
    """The replies of one request, in order, ending at Done, Embeddings or Failed."""

    def __init__(
        self,
        broker: NatsBroker,
        request: GenerationRequest,
        subscription: Subscription,
        idle: float,
        measured: measure.Measured,
    ) -> None:
        self._broker = broker
        self.request = request
        self._subscription: Subscription | None = subscription
        self._idle = idle
        self._finished = False
        self._started = False
        self._held: Event | None = None  # read ahead by ready_chunks, not yet returned
        self._measured = measured

    async def next_event(self) -> Event:
        """The next reply; ApiError when the worker falls silent after starting."""
        if self._held is not None:
            event, self._held = self._held, None
            return event
        if self._subscription is None:
            raise ApiError("request already finished", 500)
        # Queue wait and model load have no deadline of ours (the client decides);
        # once a worker has started, silence longer than `idle` means it is gone.
        try:
            message = await self._subscription.next_msg(timeout=self._idle if self._started else None)
        except nats.errors.TimeoutError:
            raise ApiError("worker stopped responding", 500) from None
        return self._seen(REPLY.validate_json(message.data))

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
        self._measured.seen(event)
        self._started = self._started or isinstance(event, Started)
        self._finished = self._finished or isinstance(event, Done | Embeddings | Failed)
        return event

    async def close(self) -> None:
        """Stop listening; if the request is not finished, cancel it wherever it is."""
        if self._subscription is None:
            return
        subscription, self._subscription = self._subscription, None
        if not self._finished:
            self._finished = True
            log_event(log, "client_gone", context=self._measured.context, request=self.request.id)
            self._measured.gone()
            await self._broker.connection.publish(subjects.cancel_subject(self.request.id), b"")
        await asyncio.shield(subscription.unsubscribe())
