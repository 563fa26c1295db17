"""The two hand-offs around the worker's event loop: engine steps in, reply messages out.

`StepInbox` takes steps from the engine's thread and wakes the loop once for
however many steps have piled up: when the loop keeps up, every step is handled
(and sent) on its own; when it lags, the steps that arrived meanwhile are handled
together and each request gets one chunk for all of them. Nothing is held back
to wait for more.

`Outbox` sends every reply message of the worker in the order it was queued, on
the raw NATS connection (no span per token), so a request's `Done` can never
overtake its last chunk.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

from services.protocol.messages import Message
from services.worker.engines.base import Step


class StepInbox:
    def __init__(self, loop: asyncio.AbstractEventLoop, handle: Callable[[list[Step]], None]) -> None:
        self._loop = loop
        self._handle = handle
        self._lock = threading.Lock()
        self._pending: list[Step] = []
        self._scheduled = False

    def put(self, steps: list[Step]) -> None:
        """Called on the engine's thread after every step."""
        with self._lock:
            self._pending.extend(steps)
            if self._scheduled:
                return
            self._scheduled = True
        self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            steps, self._pending, self._scheduled = self._pending, [], False
        self._handle(steps)


class Outbox:
    def __init__(self, publish: Callable[[str, bytes], Awaitable[None]]) -> None:
        self._publish = publish
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    def send(self, subject: str, message: Message) -> None:
        self._queue.put_nowait((subject, message.encode()))

    async def run(self) -> None:
        while True:
            subject, data = await self._queue.get()
            await self._publish(subject, data)
            self._queue.task_done()

    async def flush(self) -> None:
        """Wait until everything queued so far has been handed to NATS."""
        await self._queue.join()
