"""Ollama's native generation routes: /api/generate and /api/chat, streaming or not."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from opentelemetry import trace

from services.gateway import ollama_format
from services.gateway.bodies import (
    ChatBody,
    GenerateBody,
    chat_messages,
    parse_body,
    parse_keep_alive_field,
    parse_options,
)
from services.gateway.errors import ApiError, BadRequest, ClientGone, NotFound, error_response
from services.gateway.ollama_format import Kind, Timing
from services.gateway.relay import Event, RelayedRequest
from services.gateway.state import GatewayState
from services.protocol import Chunk, Done, Failed, GenerationRequest, subjects

router = APIRouter()
_tracer = trace.get_tracer("corral.gateway")
T = TypeVar("T")


@router.post("/api/generate")
async def generate(request: Request) -> Response:
    with _tracer.start_as_current_span("POST /api/generate"):
        body = parse_body(await request.body(), GenerateBody, "GenerateRequest")
        if not body.model.strip():
            raise NotFound("model '' not found")
        if body.raw and (body.template or body.system or body.context):
            raise BadRequest("raw mode does not support template, system, or context")
        keep_alive = parse_keep_alive_field(body.keep_alive)
        state = _state(request)
        generation = GenerationRequest(
            kind="generate",
            action=_action(bool(body.prompt), keep_alive),
            model=await state.resolve(body.model),
            prompt=body.prompt,
            system=body.system,
            raw=body.raw,
            options=parse_options(body.options),
            keep_alive=keep_alive,
            reply_subject="",
        )
        return await _respond(request, state, generation, body.model, body.stream)


@router.post("/api/chat")
async def chat(request: Request) -> Response:
    with _tracer.start_as_current_span("POST /api/chat"):
        body = parse_body(await request.body(), ChatBody, "ChatRequest")
        if not body.model.strip():
            raise BadRequest("model is required")
        keep_alive = parse_keep_alive_field(body.keep_alive)
        messages = chat_messages(body)
        state = _state(request)
        generation = GenerationRequest(
            kind="chat",
            action=_action(bool(messages), keep_alive),
            model=await state.resolve(body.model),
            messages=messages,
            options=parse_options(body.options),
            keep_alive=keep_alive,
            reply_subject="",
        )
        return await _respond(request, state, generation, body.model, body.stream)


def _action(has_input: bool, keep_alive: float | None) -> Any:
    """Empty input loads the model (done_reason "load"); with keep_alive 0 it unloads it."""
    if has_input:
        return "generate"
    return "unload" if keep_alive == 0 else "load"


def _state(request: Request) -> GatewayState:
    return request.app.state.corral  # type: ignore[no-any-return]


async def _respond(
    request: Request,
    state: GatewayState,
    generation: GenerationRequest,
    model: str,
    stream: bool | None,
) -> Response:
    started = time.perf_counter_ns()
    generation.reply_subject = subjects.reply_subject(generation.id)
    relayed = await state.relay.open(generation)
    events = relayed.events()
    first = await _unless_disconnected(request, anext(events), relayed)
    load_ns = time.perf_counter_ns() - started
    kind: Kind = generation.kind
    if isinstance(first, Failed):
        return error_response(first.status, first.error)
    if stream is False:
        done, text = await _unless_disconnected(request, _collect(first, events), relayed)
        if isinstance(done, Failed):
            return error_response(done.status, done.error)
        timing = Timing(total=time.perf_counter_ns() - started, load=load_ns)
        return JSONResponse(ollama_format.final(kind, model, done, timing, text))
    return StreamingResponse(
        _ndjson(kind, model, first, events, relayed, started, load_ns),
        media_type="application/x-ndjson",
    )


async def _collect(first: Event, events: AsyncIterator[Event]) -> tuple[Done | Failed, str]:
    parts: list[str] = []
    event: Event = first
    while not isinstance(event, Done | Failed):
        if isinstance(event, Chunk):
            parts.append(event.text)
        event = await anext(events)
    return event, "".join(parts)


async def _ndjson(
    kind: Kind,
    model: str,
    first: Event,
    events: AsyncIterator[Event],
    relayed: RelayedRequest,
    started: int,
    load_ns: int,
) -> AsyncIterator[bytes]:
    try:
        event: Event | None = first
        while event is not None:
            if isinstance(event, Chunk):
                yield _line(ollama_format.chunk(kind, model, event.text))
            elif isinstance(event, Done):
                timing = Timing(total=time.perf_counter_ns() - started, load=load_ns)
                yield _line(ollama_format.final(kind, model, event, timing))
                return
            elif isinstance(event, Failed):
                yield _line({"error": event.error})
                return
            event = await anext(events, None)
    except ApiError as exc:
        yield _line({"error": exc.message})
    finally:
        await relayed.close()


def _line(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


async def _unless_disconnected(request: Request, work: Awaitable[T], relayed: RelayedRequest) -> T:
    """Await `work`, but if the client disconnects first, cancel the request (499)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not task.done():
        task.cancel()
        await relayed.close()
        raise ClientGone()
    return task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


__all__ = ["router"]
