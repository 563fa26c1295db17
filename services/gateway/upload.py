"""Sending a blob's bytes to the registry instance that opened its upload.

The HTTP body is cut into chunks of at most CHUNK bytes (half the server's max_payload when
that is smaller), published in order with their offsets, and acknowledged one by one by the
registry. Up to WINDOW chunks are in flight, so reading the body, the broker and the
registry's disk overlap; a slow disk still holds the client back (flow control), and memory
stays bounded at WINDOW chunks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription

from services.gateway.errors import Unavailable, failure
from services.protocol import RegistryResult, subjects

CHUNK = 4 * 1024 * 1024  # bytes per message, when the server's max_payload allows
WINDOW = 4  # chunks published and not yet acknowledged
ACK_TIMEOUT = 60.0  # seconds a chunk's write (or the final fsync) may take


class _Sender:
    def __init__(self, connection: NatsClient, subject: str, acks: Subscription) -> None:
        self.connection = connection
        self.subject = subject
        self.acks = acks
        self.in_flight = 0

    async def send(self, headers: dict[str, str], data: bytes) -> None:
        if self.in_flight >= WINDOW:
            await self.settle(1)
        await self.connection.publish(self.subject, data, reply=self.acks.subject, headers=headers)
        self.in_flight += 1

    async def settle(self, count: int) -> None:
        """Wait for the next `count` acknowledgements; an error in one raises ApiError."""
        for _ in range(count):
            try:
                reply = await self.acks.next_msg(timeout=ACK_TIMEOUT)
            except nats.errors.TimeoutError as exc:
                raise Unavailable("model registry is not available") from exc
            self.in_flight -= 1
            result = RegistryResult.model_validate_json(reply.data)
            if result.error is not None:
                raise failure(result.error, result.code)


async def send_blob(connection: NatsClient, subject: str, body: AsyncIterator[bytes]) -> None:
    """Send all of `body` to the upload at `subject` and finish it; on any failure (the client
    gone, a wrong digest, the registry gone) the upload is aborted and the error raised."""
    size = min(CHUNK, connection.max_payload // 2)
    acks = await connection.subscribe(connection.new_inbox())
    sender = _Sender(connection, subject, acks)
    sent, pending = 0, bytearray()
    try:
        async for piece in body:
            pending += piece
            while len(pending) >= size:
                await sender.send({subjects.UPLOAD_OFFSET: str(sent)}, bytes(pending[:size]))
                sent += size
                del pending[:size]
        if pending:
            await sender.send({subjects.UPLOAD_OFFSET: str(sent)}, bytes(pending))
        await sender.send({subjects.UPLOAD_END: "1"}, b"")
        await sender.settle(sender.in_flight)
    except BaseException:
        await connection.publish(subject, b"", headers={subjects.UPLOAD_ABORT: "1"})
        raise
    finally:
        await acks.unsubscribe()
