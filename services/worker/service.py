"""The worker's NATS shell: commands and cancels in, to the Worker; its replies go out raw."""

from __future__ import annotations

from faststream.nats import NatsBroker

from services.config import Settings
from services.protocol import (
    CancelCommand,
    CommandResult,
    LoadCommand,
    PingRequest,
    RunCommand,
    TakenRequest,
    TakenResult,
    UnloadCommand,
    subjects,
)
from services.worker import measure
from services.worker.engines.base import Engine
from services.worker.worker import Worker


def select_engine(settings: Settings) -> Engine:
    """The engine this worker runs; imported here, so a CPU host never imports GPU code."""
    if settings.engine in ("auto", "llamacpp"):
        from services.worker.engines.llamacpp import LlamaCppEngine
        from services.worker.engines.threads import ThreadGovernor

        return LlamaCppEngine(ThreadGovernor(fixed=settings.engine_threads or None))
    if settings.engine == "simulated":  # scheduler tests at fleet scale and benchmarks only
        from services.worker.engines.simulated import SimulatedEngine

        return SimulatedEngine(settings.sim_devices, settings.sim_tokens_per_second)
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
    async def on_ping(ping: PingRequest) -> CommandResult:
        return CommandResult(ok=await worker.running(ping.request_id))

    @broker.subscriber(subjects.worker_taken(worker.id))
    async def on_taken(question: TakenRequest) -> TakenResult:
        return TakenResult(request_ids=worker.taken(question.request_ids))

    @broker.subscriber(subjects.worker_cancel(worker.id))
    async def on_cancel(command: CancelCommand) -> None:
        worker.cancel(command.request_id)

    return worker
