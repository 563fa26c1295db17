"""OpenTelemetry and structured logging, set up the same way by every service.

The SDK is configured from the standard `OTEL_*` variables: `OTEL_SERVICE_NAME`
and `OTEL_RESOURCE_ATTRIBUTES` name the resource, `OTEL_TRACES_EXPORTER`
chooses the exporter (`none` by default; `console`; `otlp` when the `otlp` extra
is installed), `OTEL_SDK_DISABLED=true` turns it off. Trace context travels in
NATS headers (W3C `traceparent`), so one request is one trace across services.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

_provider: TracerProvider | None = None


def setup(service: str, *, debug: bool = False) -> TracerProvider:
    """Configure logging and the tracer provider for `service`; safe to call twice."""
    global _provider
    setup_logging(debug)
    if _provider is not None:
        return _provider
    attributes = {"service.name": os.environ.get("OTEL_SERVICE_NAME") or f"corral-{service}"}
    _provider = TracerProvider(resource=Resource.create(attributes))
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() != "true":
        for processor in _span_processors(os.environ.get("OTEL_TRACES_EXPORTER", "none")):
            _provider.add_span_processor(processor)
    trace.set_tracer_provider(_provider)
    return _provider


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
    """Flush spans still buffered; call when a service stops."""
    if _provider is not None:
        _provider.shutdown()


def inject(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers carrying the current trace context, for a NATS message."""
    headers = dict(headers or {})
    propagate.inject(headers)
    return headers


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


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: object) -> None:
    """Log one named event (queued, placed, loading, first_token, done, evicted, failed…).

    Fields are ids, names and numbers; never prompt text.
    """
    logger.log(level, event, extra={"fields": fields})
