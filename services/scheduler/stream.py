"""The request stream CORRAL_REQ, owned by the scheduler: the one process that creates and sizes it.

Its size is OLLAMA_MAX_QUEUE: a full stream refuses the gateway's publish, which
becomes HTTP 503. A stream that already exists with another size (the setting
changed between runs, or another scheduler disagrees) is resized to this
scheduler's setting, and the change is logged with both sizes.

`sweep_acknowledged` works around nats-server 2.9: a work-queue message acknowledged
around a server restart can stay in the stream though the consumer counts it acknowledged
(its ack floor is past it, nothing pending), taking a place of the queue for ever. Every
message at or below the one consumer's ack floor is acknowledged, so purging up to it
removes only those (2.10 and later remove them themselves: the sweep then finds nothing).
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from services.protocol import subjects
from services.telemetry import log_event

log = logging.getLogger("corral.scheduler")


def request_stream_config(max_queue: int) -> StreamConfig:
    return StreamConfig(
        name=subjects.REQUEST_STREAM,
        subjects=[subjects.REQUEST_SUBJECTS],
        retention=RetentionPolicy.WORK_QUEUE,
        max_msgs=max_queue,
        discard=DiscardPolicy.NEW,
        storage=StorageType.FILE,
    )


async def ensure_request_stream(js: JetStreamContext, max_queue: int) -> None:
    """Create the stream, or bring an existing one to `max_queue` places (logged)."""
    try:
        info = await js.stream_info(subjects.REQUEST_STREAM)
    except NotFoundError:
        try:
            await js.add_stream(request_stream_config(max_queue))
            log_event(log, "request_stream_created", max_msgs=max_queue)
            return
        except BadRequestError:  # another scheduler created it a moment ago
            info = await js.stream_info(subjects.REQUEST_STREAM)
    if info.config.max_msgs != max_queue:
        log_event(
            log,
            "request_stream_resized",
            level=logging.WARNING,
            from_max_msgs=info.config.max_msgs,
            to_max_msgs=max_queue,
        )
        info.config.max_msgs = max_queue
        await js.update_stream(info.config)


async def sweep_acknowledged(js: JetStreamContext) -> int:
    """Purge messages the scheduler's consumer has acknowledged but the stream kept; how many."""
    info = await js.stream_info(subjects.REQUEST_STREAM)
    consumer = await js.consumer_info(subjects.REQUEST_STREAM, subjects.SCHEDULER_DURABLE)
    floor = consumer.ack_floor.stream_seq if consumer.ack_floor else 0
    first = info.state.first_seq
    if not info.state.messages or not floor or first > floor:
        return 0
    await js.purge_stream(subjects.REQUEST_STREAM, seq=floor + 1)  # removes every message below
    after = await js.stream_info(subjects.REQUEST_STREAM)
    swept = info.state.messages - after.state.messages
    log_event(log, "swept_acknowledged", level=logging.WARNING, messages=swept, below=floor + 1)
    return swept
