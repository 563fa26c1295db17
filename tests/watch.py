"""Watching the services through the protocol: replies, heartbeats and the request stream."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import nats
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

T = TypeVar("T")
DEADLINE = 120.0  # only a failing test waits this long


async def first(
    subscription: Subscription,
    decode: Callable[[bytes], object],
    predicate: Callable[[T], bool],
    kind: type[T],
    timeout: float = DEADLINE,
) -> T:
    """The first message on `subscription` that decodes to a `kind` satisfying `predicate`."""
    while True:
        message = await subscription.next_msg(timeout=timeout)
        value = decode(message.data)
        if isinstance(value, kind) and predicate(value):
            return value


def until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll `predicate` (an HTTP or stream query) until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


class ReplyRecorder:
    """Every reply message on `corral.reply.>`, by request id, as (kind, message) in order:
    a NATS subscriber of its own on a thread of its own, for tests that are not async."""

    def __init__(self, url: str) -> None:
        self.replies: dict[str, list[dict[str, object]]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._listen(url),), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise AssertionError("the reply recorder could not subscribe")

    async def _listen(self, url: str) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        connection = await nats.connect(url)

        async def record(message: Msg) -> None:
            with self._lock:
                replies = self.replies.setdefault(message.subject.rsplit(".", 1)[-1], [])
                replies.append(json.loads(message.data))

        await connection.subscribe("corral.reply.>", cb=record)
        await connection.flush()
        self._ready.set()
        await self._stop.wait()
        await connection.close()

    def of(self, request_id: str) -> list[dict[str, object]]:
        with self._lock:
            return list(self.replies.get(request_id, []))

    def started_on(self) -> list[str]:
        """The worker named by every Started seen, in no particular order."""
        with self._lock:
            replies = [reply for answers in self.replies.values() for reply in answers]
        return [str(reply["worker_id"]) for reply in replies if reply.get("kind") == "started"]

    def started(self, request_id: str) -> int:
        """How many times a worker said it started `request_id`."""
        return sum(1 for reply in self.of(request_id) if reply.get("kind") == "started")

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
