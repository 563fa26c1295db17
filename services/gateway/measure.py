"""The gateway's metrics and spans: every generation request as a client sees it, and every
error answered.

Names and attributes follow OpenTelemetry's GenAI semantic conventions where they apply
(gen_ai.server.request.duration, .time_to_first_token, .time_per_output_token;
gen_ai.client.token.usage, since the gateway is the client of the engine), with their advised
bucket boundaries; corral's own counters are under `corral.`. Each request is a span
"{operation} {model}" with the usage and finish reason, and two children: "queue wait"
(until a worker takes it: queue and load) and "generation"; its context travels with the
request, so the scheduler's and the worker's spans join its trace.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, Status, StatusCode

from services.protocol import Chunk, Done, Embeddings, Failed, GenerationRequest, Started

_meter = metrics.get_meter("corral.gateway")
_tracer = trace.get_tracer("corral.gateway")

# Bucket boundaries as the GenAI conventions advise them.
DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
FIRST_TOKEN_BUCKETS = [
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
]
PER_TOKEN_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]
TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304]

request_duration = _meter.create_histogram(
    "gen_ai.server.request.duration",
    unit="s",
    description="Time from a request's arrival to its last byte, queue wait and load included",
    explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
)
time_to_first_token = _meter.create_histogram(
    "gen_ai.server.time_to_first_token",
    unit="s",
    description="Time from a request's arrival to its first output",
    explicit_bucket_boundaries_advisory=FIRST_TOKEN_BUCKETS,
)
time_per_output_token = _meter.create_histogram(
    "gen_ai.server.time_per_output_token",
    unit="s",
    description="Time per output token after the first",
    explicit_bucket_boundaries_advisory=PER_TOKEN_BUCKETS,
)
token_usage = _meter.create_histogram(
    "gen_ai.client.token.usage",
    unit="{token}",
    description="Tokens a request used, by gen_ai.token.type (input, output)",
    explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
)
rejected = _meter.create_counter(
    "corral.requests.rejected", unit="{request}", description="Requests refused because the queue was full"
)
disconnects = _meter.create_counter(
    "corral.client.disconnects",
    unit="{request}",
    description="Requests whose client went away before the end (cancelled wherever they were)",
)
errors = _meter.create_counter(
    "corral.errors", unit="{error}", description="Error responses, by HTTP status (the wire's codes mapped)"
)

OPERATIONS = {"generate": "text_completion", "chat": "chat", "embed": "embeddings"}
CLIENT_GONE = "client_gone"


def started() -> None:
    """Counters that must exist before their first event, so a query over them has data."""
    rejected.add(0)
    disconnects.add(0)


def failed_response(status: int) -> None:
    errors.add(1, {"http.response.status_code": status})


class Measured:
    """One request from the gateway's side: its clock (arrival, first output, end) for the
    metrics, and its spans."""

    def __init__(self, request: GenerationRequest, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._start = clock()
        self._first: float | None = None
        self._ended = False
        self.attributes: dict[str, str] = {
            "gen_ai.operation.name": OPERATIONS[request.kind],
            "gen_ai.request.model": request.model.name,
        }
        name = f"{self.attributes['gen_ai.operation.name']} {request.model.name}"
        self._span = _tracer.start_span(
            name, attributes={**self.attributes, "gen_ai.response.id": request.id}
        )
        self.context = trace.set_span_in_context(self._span)
        self._phase: Span | None = _tracer.start_span("queue wait", context=self.context)

    def rejected(self) -> None:
        """The queue was full (503)."""
        rejected.add(1, {"gen_ai.request.model": self.attributes["gen_ai.request.model"]})
        self._end(self._clock(), error="queue_full")

    def seen(self, event: object) -> None:
        now = self._clock()
        if isinstance(event, Started):
            self._next_phase("generation")
        elif (
            isinstance(event, Chunk)
            and self._first is None
            and (event.text or event.thinking or event.tool_calls)
        ):
            self._first = now
            time_to_first_token.record(now - self._start, self.attributes)
        elif isinstance(event, Done):
            self._span.set_attribute("gen_ai.response.finish_reasons", [event.done_reason])
            if event.done_reason not in ("load", "unload", "render"):
                self._tokens(event.prompt_eval_count, event.eval_count)
                if self._first is not None and event.eval_count > 1:
                    per_token = (now - self._first) / (event.eval_count - 1)
                    time_per_output_token.record(per_token, self.attributes)
            self._end(now)
        elif isinstance(event, Embeddings):
            self._tokens(event.prompt_eval_count, 0)
            self._end(now)
        elif isinstance(event, Failed):
            self._end(now, error=event.code, message=event.error)

    def gone(self) -> None:
        """The client went away first."""
        if not self._ended:
            disconnects.add(1, {"gen_ai.request.model": self.attributes["gen_ai.request.model"]})
            self._end(self._clock(), error=CLIENT_GONE)

    def _next_phase(self, name: str | None) -> None:
        if self._phase is not None:
            self._phase.end()
        self._phase = _tracer.start_span(name, context=self.context) if name else None

    def _end(self, now: float, error: str | None = None, message: str = "") -> None:
        if self._ended:
            return
        self._ended = True
        attributes = self.attributes if error is None else {**self.attributes, "error.type": error}
        request_duration.record(now - self._start, attributes)
        self._next_phase(None)
        if error is not None:
            self._span.set_attribute("error.type", error)
            self._span.set_status(Status(StatusCode.ERROR, message or error))
        self._span.end()

    def _tokens(self, input_tokens: int, output_tokens: int) -> None:
        """Usage on the span (before it ends) and in the histogram."""
        self._span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        self._span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        token_usage.record(input_tokens, {**self.attributes, "gen_ai.token.type": "input"})
        if output_tokens:
            token_usage.record(output_tokens, {**self.attributes, "gen_ai.token.type": "output"})
