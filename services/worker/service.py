"""The worker's NATS shell: commands and cancels in, to the Worker; its replies go out raw."""

from __future__ import annotations

from faststream.nats import NatsBroker, NatsMessage

from services.config import Settings
from services.protocol import CommandResult, LoadCommand, RunCommand, UnloadCommand, subjects
from services.worker import measure
from services.worker.engines.base import Engine
from services.worker.worker import Worker


def select_engine(settings: Settings) -> Engine:
    """The engine this worker runs; imported here, so a CPU host never imports GPU code."""
    if settings.engine in ("auto", "llamacpp"):
        from services.worker.engines.llamacpp import LlamaCppEngine
        from services.worker.engines.threads import ThreadGovernor

        return LlamaCppEngine(ThreadGovernor(fixed=settings.engine_threads or None))
    raise SystemExit(f"corral-worker: CORRAL_ENGINE={settings.engine} is not available in this build")


def register(broker: NatsBroker, settings: Settings) -> Worker:
    async def publish(subject: str, data: bytes) -> None:
        await broker.connection.publish(subject, data)

    worker = Worker(settings, select_engine(settings), publish, subjects.HEARTBEAT)
    measure.observe(worker.state)

    @broker.subscriber(subjects.worker_run(worker.id))
    async def on_run(command: RunCommand) -> CommandResult:
        return await worker.run(command)

    @broker.subscriber(subjects.worker_load(worker.id))
    async def on_load(command: LoadCommand) -> CommandResult:
        return await worker.load(command)

    @broker.subscriber(subjects.worker_unload(worker.id))
    async def on_unload(command: UnloadCommand) -> CommandResult:
        return await worker.unload(command)

    @broker.subscriber(subjects.worker_ping(worker.id))
    async def on_ping() -> CommandResult:
        return CommandResult(ok=True)

    @broker.subscriber(subjects.CANCEL_ALL)
    async def on_cancel(message: NatsMessage) -> None:
        worker.cancel(subjects.request_id_of(message.raw_message.subject))

    return worker
