"""The worker's NATS shell: commands and cancels in, to the Worker; its replies go out raw."""

from __future__ import annotations

import logging

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
from services.telemetry import log_event
from services.worker import measure
from services.worker.engines.base import Engine
from services.worker.engines.formats import (
    FormatEngines,
    ServingEngine,
    describe_offer,
    formats_run,
    installed_engines,
    offer,
    unusable,
)
from services.worker.gpus import cuda_devices
from services.worker.worker import Worker

log = logging.getLogger("corral.worker")


def select_engine(settings: Settings) -> ServingEngine:
    """The engines this worker runs, one per model format it can serve (engines/formats.py);
    each is imported only when chosen, so a CPU host never imports GPU code."""
    if settings.engine == "simulated":  # scheduler tests at fleet scale and benchmarks only
        from services.worker.engines.simulated import SimulatedEngine

        return SimulatedEngine(settings.sim_devices, settings.sim_tokens_per_second)
    offered = offer(settings.engine, installed_engines(), bool(cuda_devices()))
    problem = unusable(settings.engine, offered)
    if problem is not None:
        raise SystemExit(f"corral-worker: {problem}")
    log_event(log, "engines", formats=list(formats_run(offered)), **describe_offer(offered))
    return FormatEngines(
        {name: _engine(name, settings) for name, why in offered.items() if why is None}, offered
    )


def _engine(name: str, settings: Settings) -> Engine:
    if name == "exllamav2":
        from services.worker.engines.exllamav2 import ExLlamaV2Engine

        return ExLlamaV2Engine()
    if name == "exllamav3":
        from services.worker.engines.exllamav3 import ExLlamaV3Engine

        return ExLlamaV3Engine()
    from services.worker.engines.llamacpp import LlamaCppEngine
    from services.worker.engines.threads import ThreadGovernor

    return LlamaCppEngine(ThreadGovernor(fixed=settings.engine_threads or None))


def register(broker: NatsBroker, settings: Settings) -> Worker:
    async def publish(subject: str, data: bytes) -> None:
        await broker.connection.publish(subject, data)

    engine = select_engine(settings)
    worker = Worker(settings, engine, publish, subjects.HEARTBEAT, formats=engine.formats)
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
