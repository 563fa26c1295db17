"""The worker's metrics: loads and unloads, tokens made, and what it holds (models, slots, memory).

Every series carries the worker's id, so one dashboard shows the fleet per worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from services.protocol import WorkerState

_meter = metrics.get_meter("corral.worker")

WORKER = "corral.worker.id"
MODEL = "gen_ai.request.model"
TOKEN_TYPE = "gen_ai.token.type"

tokens = _meter.create_counter(
    "corral.worker.tokens",
    unit="{token}",
    description="Tokens processed, by gen_ai.token.type: input (prompt) and output (generated)",
)
loads = _meter.create_counter("corral.model.loads", unit="{load}", description="Model loads, by result")
load_duration = _meter.create_histogram(
    "corral.model.load.duration",
    unit="s",
    description="Time to load a model's weights and contexts",
    explicit_bucket_boundaries_advisory=[0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
)
unloads = _meter.create_counter(
    "corral.model.unloads",
    unit="{unload}",
    description="Model unloads, by reason (keep_alive expired, unload, shutdown)",
)


def observe(state: Callable[[], WorkerState]) -> None:
    """Gauges read from the worker's own state (what its heartbeat says) when collected."""

    def resident(_: CallbackOptions) -> Iterable[Observation]:
        now = state()
        return [Observation(1, {WORKER: now.worker_id, MODEL: m.name}) for m in now.resident] or [
            Observation(0, {WORKER: now.worker_id, MODEL: ""})
        ]

    def slots(_: CallbackOptions) -> Iterable[Observation]:
        now = state()
        found = [Observation(0, {WORKER: now.worker_id, MODEL: "", "corral.slot.state": "free"})]
        for m in now.resident:
            where = {WORKER: now.worker_id, MODEL: m.name}
            found.append(Observation(m.busy, where | {"corral.slot.state": "busy"}))
            found.append(Observation(m.slots - m.busy, where | {"corral.slot.state": "free"}))
        return found

    def memory(_: CallbackOptions) -> Iterable[Observation]:
        now = state()
        return [
            Observation(d.free_memory, {WORKER: now.worker_id, "corral.device.id": d.id}) for d in now.devices
        ]

    _meter.create_observable_gauge(
        "corral.worker.models", callbacks=[resident], unit="{model}", description="Models resident"
    )
    _meter.create_observable_gauge(
        "corral.worker.slots", callbacks=[slots], unit="{slot}", description="Sequence slots, busy and free"
    )
    _meter.create_observable_gauge(
        "corral.worker.device.memory",
        callbacks=[memory],
        unit="By",
        description="Memory per device (cpu: RAM), free and total",
    )
