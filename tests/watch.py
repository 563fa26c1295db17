"""Watching the services through the protocol: replies, heartbeats and the request stream."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

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
