"""Taking the queue over: what a scheduler does when it becomes the leader.

It restarts the durable consumer, so every request the last leader held (unacknowledged)
comes at once instead of after the ack wait; those requests are *inherited*. Before placing
an inherited request it settles the ones that must not run: cancelled while no scheduler
listened (the cancel stream keeps every cancel a while), or already taken by a worker (the
last leader's run got through but its acknowledgement did not): the worker that has it
says so, and it is acknowledged instead of run a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from services.protocol import TakenRequest, TakenResult, subjects
from services.scheduler.stream import ensure_request_stream, ensure_stream

CANCEL_MEMORY = 3600.0  # seconds a cancel is kept for a scheduler that takes over
CANCEL_KEPT = 100_000  # cancels kept at most (the oldest go first)
TAKEN_TIMEOUT = 2.0  # seconds a worker has to say which inherited requests it has


def cancel_stream_config(replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=subjects.CANCEL_STREAM,
        subjects=[subjects.CANCEL_ALL],
        retention=RetentionPolicy.LIMITS,
        max_age=CANCEL_MEMORY,
        max_msgs=CANCEL_KEPT,
        max_msgs_per_subject=1,
        discard=DiscardPolicy.OLD,
        storage=StorageType.FILE,
        num_replicas=replicas,
    )


async def ensure_streams(js: JetStreamContext, max_queue: int, replicas: int) -> None:
    """Create the request and cancel streams if need be, or bring them to this scheduler's size
    and replicas (any scheduler, leading or not, at start: the gateway can queue requests before
    a leader is chosen)."""
    await ensure_request_stream(js, max_queue, replicas)
    await ensure_stream(js, cancel_stream_config(replicas))


async def take_over(js: JetStreamContext, max_queue: int, replicas: int) -> int:
    """Make both streams ready and restart the durable consumer. Returns the request stream's
    last sequence: the requests up to it are inherited."""
    await ensure_streams(js, max_queue, replicas)
    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(subjects.REQUEST_STREAM, subjects.SCHEDULER_DURABLE)
    info = await js.stream_info(subjects.REQUEST_STREAM)
    return int(info.state.last_seq)


async def settled(
    connection: Client, js: JetStreamContext, request_ids: Sequence[str], workers: Sequence[str]
) -> dict[str, str]:
    """Of these inherited requests, those not to place: request id -> why ("cancelled", or
    "taken by <worker>")."""
    found: dict[str, str] = {}
    for request_id in request_ids:
        with contextlib.suppress(NotFoundError):
            await js.get_last_msg(subjects.CANCEL_STREAM, subjects.cancel_subject(request_id))
            found[request_id] = "cancelled"
    asked = [request_id for request_id in request_ids if request_id not in found]
    if asked:
        answers = await asyncio.gather(*(_taken(connection, worker, asked) for worker in workers))
        for worker, taken in zip(workers, answers, strict=True):
            for request_id in taken:
                found.setdefault(request_id, f"taken by {worker}")
    return found


async def _taken(connection: Client, worker: str, request_ids: list[str]) -> list[str]:
    """What `worker` says it has taken of `request_ids` (nothing, if it cannot say)."""
    question = TakenRequest(request_ids=request_ids).encode()
    try:
        answer = await connection.request(subjects.worker_taken(worker), question, timeout=TAKEN_TIMEOUT)
    except (nats.errors.Error, TimeoutError):
        return []
    return TakenResult.model_validate_json(answer.data).request_ids
