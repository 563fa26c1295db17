"""How every service process starts: settings, telemetry, one traced faststream broker, a clean stop.

Trace context rides in NATS headers through faststream's telemetry middleware,
so spans from gateway, scheduler and worker join one trace per request.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence

from faststream import FastStream
from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from nats.aio.msg import Msg
from opentelemetry import metrics, trace

from services import telemetry
from services.config import ConfigError, Settings, load_settings, log_settings, nats_servers
from services.protocol import MetricsSnapshot, subjects
from services.protocol.messages import Message


def new_broker(url: str, name: str) -> NatsBroker:
    """A broker for service `name` on NATS_URL's servers (several: a cluster, and a connection
    whose server goes away moves to another); reconnects forever once connected, drains on stop."""
    return NatsBroker(
        nats_servers(url),
        name=f"corral-{name}",
        connect_timeout=2,
        reconnect_time_wait=1,
        max_reconnect_attempts=-1,
        graceful_timeout=10.0,
        log_level=logging.DEBUG,  # per-message Received/Processed lines only when debugging
        middlewares=(
            NatsTelemetryMiddleware(
                tracer_provider=trace.get_tracer_provider(),
                meter_provider=metrics.get_meter_provider(),
                include_messages_counters=True,
            ),
        ),
    )


def service_settings(name: str) -> Settings:
    """Settings for a service process: a bad value or a missing NATS_URL stops it with a message."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(f"corral-{name}: {exc}")
    if not settings.nats_url:
        sys.exit(f"corral-{name}: NATS_URL is not set (run `corral serve` to start everything locally)")
    telemetry.setup(name, debug=settings.debug)
    log_settings(settings, name)
    return settings


def run_service(
    broker: NatsBroker,
    *,
    background: Sequence[Callable[[], Awaitable[None]]] = (),
    on_stop: Sequence[Callable[[], Awaitable[None]]] = (),
) -> None:
    """Run `broker`'s handlers plus `background` loops until SIGINT/SIGTERM, then stop cleanly."""
    tasks: list[asyncio.Task[None]] = []

    async def start_background() -> None:
        await broker.connection.subscribe(subjects.METRICS_SCRAPE, cb=answer_scrape)
        tasks.extend(asyncio.ensure_future(loop()) for loop in background)

    async def stop_background() -> None:
        for hook in on_stop:
            await hook()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    app = FastStream(broker, after_startup=[start_background], on_shutdown=[stop_background])
    try:
        asyncio.run(app.run())
    finally:
        telemetry.shutdown()


async def answer_scrape(message: Msg) -> None:
    """Answer the gateway's /metrics: this process's metrics, named by service and instance."""
    service, instance = telemetry.identity()
    text = telemetry.metrics_text().decode()
    await message.respond(MetricsSnapshot(service=service, instance=instance, text=text).encode())


async def request(broker: NatsBroker, subject: str, message: Message, timeout: float) -> bytes:
    """Request/reply on the raw connection, the trace context in its headers.

    faststream's own `request` costs about 3 ms more a call (measured: 4-5 ms against 1 ms
    for a registry resolve), and these calls sit on every request's way to its first token.
    Raises nats.errors.NoRespondersError or nats.errors.TimeoutError."""
    reply = await broker.connection.request(
        subject, message.encode(), timeout=timeout, headers=telemetry.inject()
    )
    return reply.data
