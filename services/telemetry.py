"""OpenTelemetry and structured logging, set up the same way by every service.

The SDK is configured from the standard `OTEL_*` variables: `OTEL_SERVICE_NAME`
and `OTEL_RESOURCE_ATTRIBUTES` name the resource, `OTEL_TRACES_EXPORTER` and
`OTEL_METRICS_EXPORTER` choose the exporters (`none` by default; `console`; `otlp`
when the `otlp` extra is installed; `OTEL_METRIC_EXPORT_INTERVAL` paces the pushes),
`OTEL_SDK_DISABLED=true` turns it off. Trace context travels in NATS headers
(W3C `traceparent`), so one request is one trace across services.

Besides any exporter, every process keeps its metrics ready to be read in Prometheus's
text format (`metrics_text`): the gateway's /metrics gathers them from every service over
NATS, for users who run Prometheus without a collector.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping

import prometheus_client
from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

_provider: TracerProvider | None = None
_meters: MeterProvider | None = None
_identity: tuple[str, str] = ("", "")

# faststream's messaging metrics name each destination, and a reply inbox or a request's cancel
# subject is a new destination every time: keep only the system (the service tells the rest),
# and give its durations buckets in milliseconds rather than the SDK's default seconds.
MESSAGING_METER = "faststream.opentelemetry.middleware"
MESSAGING_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
VIEWS = [
    View(
        meter_name=MESSAGING_METER,
        instrument_type=Histogram,
        attribute_keys={"messaging.system"},
        aggregation=ExplicitBucketHistogramAggregation(MESSAGING_BUCKETS),
    ),
    View(meter_name=MESSAGING_METER, instrument_type=Counter, attribute_keys={"messaging.system"}),
]
SERVICE_NAME = "service.name"
INSTANCE_ID = "service.instance.id"


def setup(service: str, *, debug: bool = False) -> TracerProvider:
    """Configure logging, the tracer provider and the meter provider for `service`; safe to
    call twice."""
    global _provider, _meters, _identity
    setup_logging(debug)
    if _provider is not None:
        return _provider
    resource = Resource.create(
        {
            SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or f"corral-{service}",
            INSTANCE_ID: f"{socket.gethostname()}-{os.getpid()}",
        }
        | _resource_attributes()
    )
    _identity = (str(resource.attributes[SERVICE_NAME]), str(resource.attributes[INSTANCE_ID]))
    _provider = TracerProvider(resource=resource)
    readers: list[MetricReader] = []
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() != "true":
        for processor in _span_processors(os.environ.get("OTEL_TRACES_EXPORTER", "none")):
            _provider.add_span_processor(processor)
        # Pull: read only when the gateway's /metrics asks, so it costs nothing otherwise.
        readers = [
            PrometheusMetricReader(),
            *_metric_readers(os.environ.get("OTEL_METRICS_EXPORTER", "none")),
        ]
    trace.set_tracer_provider(_provider)
    _meters = MeterProvider(resource=resource, metric_readers=readers, views=VIEWS)
    metrics.set_meter_provider(_meters)
    return _provider


def identity() -> tuple[str, str]:
    """This process's service name and instance id, as its telemetry names them."""
    return _identity


def metrics_text() -> bytes:
    """This process's metrics now, in Prometheus's text format."""
    return prometheus_client.generate_latest(prometheus_client.REGISTRY)


def _resource_attributes() -> dict[str, str]:
    """OTEL_RESOURCE_ATTRIBUTES as given (they win over the defaults above)."""
    pairs = (item.split("=", 1) for item in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","))
    return {key.strip(): value.strip() for key, value in (p for p in pairs if len(p) == 2) if key.strip()}


def _metric_readers(names: str) -> list[MetricReader]:
    readers: list[MetricReader] = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        if name == "console":
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
        elif name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        elif name not in ("none", "prometheus"):  # prometheus: the pull reader every process has
            raise ValueError(f"OTEL_METRICS_EXPORTER={name!r}: expected none, console, otlp or prometheus")
    return readers


def _span_processors(names: str) -> list[SpanProcessor]:
    processors: list[SpanProcessor] = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        if name == "console":
            processors.append(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            processors.append(BatchSpanProcessor(OTLPSpanExporter()))
        elif name != "none":
            raise ValueError(f"OTEL_TRACES_EXPORTER={name!r}: expected none, console or otlp")
    return processors


def shutdown() -> None:
    """Flush spans and metrics still buffered; call when a service stops."""
    if _provider is not None:
        _provider.shutdown()
    if _meters is not None:
        _meters.shutdown()


def inject(headers: dict[str, str] | None = None, context: Context | None = None) -> dict[str, str]:
    """Headers carrying the trace context (the current one unless given), for a NATS message."""
    headers = dict(headers or {})
    propagate.inject(headers, context=context)
    return headers


def trace_id(context: Context | None = None) -> str:
    """The trace id (32 hex digits) of `context`'s span, else the current span's; "" if none."""
    span_context = trace.get_current_span(context).get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else ""


def extract(headers: Mapping[str, str] | None) -> Context:
    """The trace context a NATS message carried (empty context when none)."""
    return propagate.extract(dict(headers or {}))


class _EventFormatter(logging.Formatter):
    """`time level logger event key=value …`: one line per state change, grep-able."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        text = f"{self.formatTime(record)} {record.levelname:<5} {record.name} {record.getMessage()}"
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(debug: bool = False) -> None:
    root = logging.getLogger()
    if any(isinstance(h.formatter, _EventFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_EventFormatter())
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("faststream", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log_event(
    logger: logging.Logger,
    event: str,
    level: int = logging.INFO,
    *,
    context: Context | None = None,
    **fields: object,
) -> None:
    """Log one named event (queued, placed, loading, first_token, done, evicted, failed…), with
    the trace id of `context` (else of the current span) when there is one.

    Fields are ids, names and numbers; never prompt text.
    """
    found = trace_id(context)
    logger.log(level, event, extra={"fields": {**fields, "trace_id": found} if found else fields})
