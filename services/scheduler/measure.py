"""The scheduler's metrics: the queue (how many wait, why, for how long) and its decisions.

Attribute names follow OpenTelemetry's conventions where one exists (gen_ai.request.model);
corral's own are under `corral.`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

_meter = metrics.get_meter("corral.scheduler")

MODEL = "gen_ai.request.model"
REASON = "corral.wait.reason"
DECISION = "corral.placement.decision"
WORKER = "corral.worker.id"

queue_wait = _meter.create_histogram(
    "corral.queue.wait",
    unit="s",
    description="Time from a request's arrival at the scheduler to a worker taking it",
    explicit_bucket_boundaries_advisory=[
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
        5,
        10,
        30,
        60,
        300,
    ],
)
placements = _meter.create_counter(
    "corral.placements",
    unit="{decision}",
    description="Placement decisions: dispatch, load, refuse, or wait (by reason, counted when it changes)",
)
evictions = _meter.create_counter(
    "corral.model.evictions", unit="{model}", description="Idle models unloaded to make room for another"
)
load_failures = _meter.create_counter(
    "corral.model.load_failures", unit="{load}", description="Loads that failed, each failing its waiters"
)


def observe(waiting: Callable[[], Counter[tuple[str, str]]], workers: Callable[[], int]) -> None:
    """Gauges read from the scheduler's state when metrics are collected; counters of rare
    events start at zero, so a query over them has data before the first."""
    evictions.add(0)
    load_failures.add(0)

    def waiting_now(_: CallbackOptions) -> Iterable[Observation]:
        counts = waiting()
        if not counts:  # an empty queue is a zero, not a missing series
            return [Observation(0, {MODEL: "", REASON: ""})]
        return [Observation(n, {MODEL: model, REASON: reason}) for (model, reason), n in counts.items()]

    _meter.create_observable_gauge(
        "corral.queue.waiting",
        callbacks=[waiting_now],
        unit="{request}",
        description="Requests waiting for a worker, by model and reason",
    )
    _meter.create_observable_gauge(
        "corral.workers",
        callbacks=[lambda _: [Observation(workers())]],
        unit="{worker}",
        description="Workers whose heartbeats are current",
    )
