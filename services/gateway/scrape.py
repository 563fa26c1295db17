"""GET /metrics: every corral process's metrics in Prometheus's text format, gathered over NATS.

On with CORRAL_METRICS, for users who run Prometheus without an OpenTelemetry Collector.
Each service process answers METRICS_SCRAPE with a snapshot of its own metrics
(services/runtime.py); the gateway adds its own, labels every sample with the process it
came from, and merges the families of one name into one. The labels are `service_name` and
`service_instance_id`, the names the Collector's Prometheus exporter gives the same resource
attributes, so one dashboard reads both paths.

A scrape waits for every process that answered before, at most SCRAPE_WINDOW; an answer
that comes later still counts: that process is waited for from the next scrape on.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Iterator

import nats.errors
from fastapi import APIRouter, Request, Response
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from pydantic import ValidationError

from services import telemetry
from services.protocol import MetricsSnapshot, subjects

SCRAPE_WINDOW = 1.0  # seconds: how long a scrape waits for a process it has heard from before
SOURCE_LABELS = ("service_name", "service_instance_id")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    scraper: Scraper = request.app.state.scraper
    service, instance = telemetry.identity()
    own = MetricsSnapshot(service=service, instance=instance, text=telemetry.metrics_text().decode())
    others = await scraper.gather(request.app.state.corral.broker.connection)
    return Response(exposition([own, *others]), media_type=CONTENT_TYPE)


class Scraper:
    """Gathers snapshots from every process; remembers who answered, to know whom to wait for."""

    def __init__(self, window: float = SCRAPE_WINDOW) -> None:
        self._window = window
        self._known: set[str] = set()
        self._open: dict[str, asyncio.Queue[MetricsSnapshot]] = {}
        self._numbers = itertools.count()
        self._inbox = ""
        self._subscription: Subscription | None = None

    async def gather(self, connection: Client) -> list[MetricsSnapshot]:
        """The snapshots of every process that answers in time; none when NATS is away (the
        gateway's own metrics still answer)."""
        scrape = str(next(self._numbers))
        answers: asyncio.Queue[MetricsSnapshot] = asyncio.Queue()
        self._open[scrape] = answers
        got: dict[str, MetricsSnapshot] = {}
        try:
            if self._subscription is None:
                self._inbox = connection.new_inbox()
                self._subscription = await connection.subscribe(self._inbox + ".*", cb=self._answered)
            await connection.publish(subjects.METRICS_SCRAPE, b"", reply=f"{self._inbox}.{scrape}")
            deadline = asyncio.get_running_loop().time() + self._window
            while not (self._known and self._known <= got.keys()):
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    snapshot = await asyncio.wait_for(answers.get(), remaining)
                except TimeoutError:
                    break
                got[snapshot.instance] = snapshot
        except nats.errors.Error:
            return []
        finally:
            del self._open[scrape]
        self._known = set(got)
        return list(got.values())

    async def _answered(self, message: Msg) -> None:
        try:
            snapshot = MetricsSnapshot.model_validate_json(message.data)
        except ValidationError:
            return
        answers = self._open.get(message.subject.rsplit(".", 1)[-1])
        if answers is None:
            self._known.add(snapshot.instance)  # late: wait for it next time
        else:
            answers.put_nowait(snapshot)


def exposition(snapshots: Iterable[MetricsSnapshot]) -> bytes:
    """The snapshots as one Prometheus text exposition, each sample labelled with its source."""
    families: dict[str, Metric] = {}
    for snapshot in snapshots:
        source = dict(zip(SOURCE_LABELS, (snapshot.service, snapshot.instance), strict=True))
        for family in text_string_to_metric_families(snapshot.text):
            merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            merged.samples.extend(s._replace(labels={**s.labels, **source}) for s in family.samples)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    return generate_latest(registry)


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)
