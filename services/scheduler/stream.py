"""The request stream CORRAL_REQ, owned by the scheduler: the one process that creates and sizes it.

Its size is OLLAMA_MAX_QUEUE: a full stream refuses the gateway's publish, which
becomes HTTP 503. Every stream corral keeps (this one, the cancel stream, the lease's
KV bucket) has CORRAL_STREAM_REPLICAS copies, on as many servers of a NATS cluster, so
losing one server loses nothing. A stream that already exists with another size or
other replicas (the setting changed between runs, or another scheduler disagrees) is
brought to this scheduler's settings, and each change is logged with both values.

`sweep_acknowledged` works around nats-server 2.9: a work-queue message acknowledged
around a server restart can stay in the stream though the consumer counts it acknowledged
(its ack floor is past it, nothing pending), taking a place of the queue for ever. Every
message at or below the one consumer's ack floor is acknowledged, so purging up to it
removes only those (2.10 and later remove them themselves: the sweep then finds nothing).
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.errors import BadRequestError, NotFoundError

from services.protocol import subjects
from services.telemetry import log_event

log = logging.getLogger("corral.scheduler")


def request_stream_config(max_queue: int, replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=subjects.REQUEST_STREAM,
        subjects=[subjects.REQUEST_SUBJECTS],
        retention=RetentionPolicy.WORK_QUEUE,
        max_msgs=max_queue,
        discard=DiscardPolicy.NEW,
        storage=StorageType.FILE,
        num_replicas=replicas,
    )


async def ensure_request_stream(js: JetStreamContext, max_queue: int, replicas: int = 1) -> None:
    """Create the stream, or bring an existing one to `max_queue` places and `replicas` (logged)."""
    await ensure_stream(js, request_stream_config(max_queue, replicas))


async def ensure_stream(js: JetStreamContext, wanted: StreamConfig) -> None:
    """Create the stream `wanted` describes, or bring the one that exists to its size and replicas."""
    assert wanted.name is not None
    try:
        info = await js.stream_info(wanted.name)
    except NotFoundError:
        try:
            await js.add_stream(wanted)
            replicas = wanted.num_replicas
            log_event(log, "stream_created", stream=wanted.name, max_msgs=wanted.max_msgs, replicas=replicas)
            return
        except BadRequestError:  # another scheduler created it a moment ago
            info = await js.stream_info(wanted.name)
    await conform(js, info, max_msgs=wanted.max_msgs, num_replicas=wanted.num_replicas)


async def conform(js: JetStreamContext, info: StreamInfo, **wanted: int | None) -> None:
    """Bring an existing stream's config to the `wanted` values (max_msgs, num_replicas), logging
    each change with both values."""
    config = info.config
    changed = {name: value for name, value in wanted.items() if getattr(config, name) != value}
    for name, value in changed.items():
        log_event(
            log,
            "stream_changed",
            level=logging.WARNING,
            stream=config.name,
            setting=name,
            from_value=getattr(config, name),
            to_value=value,
        )
        setattr(config, name, value)
    if changed:
        await js.update_stream(config)


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
