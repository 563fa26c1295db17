"""The gateway's generation core: submit a request, race it against the client, yield its events.

Every API flavour goes through here; a route only parses its body into a
`GenerationRequest` and formats the events that come back. When the client
disconnects first, the request is cancelled wherever it is (queue or worker) and
`ClientGone` (Ollama's 499) is raised. While the consumer of the events is
slower than the worker, the chunks that piled up meanwhile are merged into one,
so a slow reader costs one write per catch-up rather than one per token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TypeVar

from starlette.requests import Request

from services.gateway.errors import ApiError, ClientGone, failure
from services.gateway.ollama_format import Stats, finite
from services.gateway.relay import Event, RelayedRequest
from services.gateway.state import GatewayState
from services.protocol import Chunk, Done, Embeddings, Failed, GenerationRequest, Started, subjects

T = TypeVar("T")
# A client names its request with this header to ask GET /api/queue/<id> where it waits.
CLIENT_ID_HEADER = "x-request-id"
MAX_CLIENT_ID = 128


@dataclass
class Timing:
    """Gateway-side clock readings, in ns: the handler's start and when the worker took the request."""

    started: int
    loaded: int = 0

    @property
    def total(self) -> int:
        return time.perf_counter_ns() - self.started

    @property
    def load(self) -> int:
        return self.loaded - self.started


class Generation:
    """One submitted request, from the gateway's side."""

    def __init__(self, http: Request, relayed: RelayedRequest, timing: Timing) -> None:
        self._http = http
        self._relayed = relayed
        self.timing = timing

    async def first(self) -> Event:
        """The first event after Started: output, the end, or the request's failure.

        Started (the worker took the request) ends Ollama's load_duration: queue wait and load."""
        event = await self._race(self._relayed.next_event())
        self.timing.loaded = time.perf_counter_ns()
        while isinstance(event, Started):
            self.timing.loaded = time.perf_counter_ns()
            event = await self._race(self._relayed.next_event())
        return event

    async def rest(self) -> AsyncIterator[Event]:
        """The events after `first`, pending chunks merged into one; ends after Done/Failed.

        No race against the client here: a streaming response is cancelled by Starlette when
        its client goes, and closing then sends the cancel."""
        try:
            while True:
                event = await self._relayed.next_event()
                if isinstance(event, Chunk):
                    event = merge([event, *await self._relayed.ready_chunks()])
                yield event
                if isinstance(event, Done | Failed | Embeddings):
                    return
        finally:
            await self._relayed.close()

    async def collect(self) -> tuple[list[Chunk], Done | Failed | Embeddings]:
        """Every remaining event, for a response that is not streamed (raced against the client)."""

        async def gather() -> tuple[list[Chunk], Done | Failed | Embeddings]:
            chunks: list[Chunk] = []
            async for event in self.rest():
                if isinstance(event, Chunk):
                    chunks.append(event)
                elif isinstance(event, Done | Failed | Embeddings):
                    return chunks, event
            raise ApiError("the reply stream ended early", 500)

        return await self._race(gather())

    async def whole(self, first: Event) -> tuple[list[Chunk], Done]:
        """A generation answered in one piece: its chunks and its Done (failures raise ApiError)."""
        if isinstance(first, Failed):
            await self.close()
            raise failure(first.error, first.code)
        parts = [first] if isinstance(first, Chunk) else []
        end: Event = first
        if not isinstance(first, Done):
            more, end = await self.collect()
            parts += more
        if isinstance(end, Failed):
            raise failure(end.error, end.code)
        if not isinstance(end, Done):
            raise ApiError("the worker answered a generation with embeddings", 500)
        return parts, end

    async def events(self, first: Event) -> AsyncIterator[Event]:
        """`first`, then the rest of the events (a stream's body)."""
        yield first
        if not isinstance(first, Done | Failed | Embeddings):
            async for event in self.rest():
                yield event

    async def close(self) -> None:
        await self._relayed.close()

    async def _race(self, work: Awaitable[T]) -> T:
        """Await `work`, unless the client disconnects first: then cancel the request (499)."""
        task = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(_disconnected(self._http))
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not task.done():
            task.cancel()
            await self._relayed.close()
            raise ClientGone()
        return task.result()


async def submit(http: Request, state: GatewayState, request: GenerationRequest) -> Generation:
    """Queue `request` (QueueFull when the stream is full) and wait for the worker to start it."""
    timing = Timing(started=time.perf_counter_ns())
    request.reply_subject = subjects.reply_subject(request.id)
    request.client_id = http.headers.get(CLIENT_ID_HEADER, "")[:MAX_CLIENT_ID]
    relayed = await state.relay.open(request)
    return Generation(http, relayed, timing)


def merge(chunks: list[Chunk]) -> Chunk:
    """Consecutive chunks as one, in order."""
    if len(chunks) == 1:
        return chunks[0]
    return Chunk(
        text="".join(c.text for c in chunks),
        thinking="".join(c.thinking for c in chunks),
        tool_calls=[t for c in chunks for t in c.tool_calls or []] or None,
        logprobs=[lp for c in chunks for lp in c.logprobs or []] or None,
    )


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


Embedded = tuple[list[list[float]], Stats, int]  # vectors, timings, prompt tokens


async def embeddings_of(
    request: Request, state: GatewayState, generation: GenerationRequest
) -> Embedded | None:
    """The vectors of an embed request; None when it had no input (the model was only loaded)."""
    running = await submit(request, state, generation)
    try:
        first = await running.first()
        if isinstance(first, Failed):
            raise failure(first.error, first.code)
        if not isinstance(first, Embeddings):
            return None
        if not finite(first.embeddings):
            raise ApiError("embedding contains NaN or Inf values", 500)
        return (
            first.embeddings,
            Stats(total=running.timing.total, load=running.timing.load),
            first.prompt_eval_count,
        )
    finally:
        await running.close()
