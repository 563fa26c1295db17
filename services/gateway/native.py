"""Ollama's native generation routes: /api/generate, /api/chat, /api/embed, /api/embeddings.

Each route parses its body with Ollama's rules, checks what the model can do,
builds one `GenerationRequest` and formats the events of the generation core.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from opentelemetry import trace

from services.gateway import ollama_format
from services.gateway.bodies import (
    QUEUED,
    ChatBody,
    EmbedBody,
    EmbeddingsBody,
    GenerateBody,
    documented,
    parse_body,
    parse_embed_input,
)
from services.gateway.core import Generation, embeddings_of, submit
from services.gateway.errors import ApiError, failure
from services.gateway.ollama_format import Kind, Stats
from services.gateway.relay import Event
from services.gateway.requests import chat_request, embed_request, generate_request
from services.gateway.state import GatewayState
from services.protocol import Chunk, Done, Failed, GenerationRequest

router = APIRouter()
_tracer = trace.get_tracer("corral.gateway")


@router.post("/api/generate", openapi_extra=documented(GenerateBody, QUEUED))
async def generate(request: Request) -> Response:
    with _tracer.start_as_current_span("POST /api/generate"):
        body = parse_body(await request.body(), GenerateBody, "GenerateRequest")
        state = _state(request)
        generation = await generate_request(state, body)
        return await _respond(request, state, generation, "generate", body.model, body.stream)


@router.post("/api/chat", openapi_extra=documented(ChatBody, QUEUED))
async def chat(request: Request) -> Response:
    with _tracer.start_as_current_span("POST /api/chat"):
        body = parse_body(await request.body(), ChatBody, "ChatRequest")
        state = _state(request)
        generation = await chat_request(state, body)
        return await _respond(request, state, generation, "chat", body.model, body.stream)


@router.post("/api/embed", openapi_extra=documented(EmbedBody, QUEUED))
async def embed(request: Request) -> Response:
    with _tracer.start_as_current_span("POST /api/embed"):
        body = parse_body(await request.body(), EmbedBody, "EmbedRequest")
        state = _state(request)
        generation = await embed_request(
            state, parse_embed_input(body.input), body, body.truncate is not False
        )
        result = await embeddings_of(request, state, generation)
        if result is None:
            return JSONResponse({"model": body.model, "embeddings": []})
        vectors, stats, count = result
        return JSONResponse(ollama_format.embed(body.model, vectors, body.dimensions, stats, count))


@router.post("/api/embeddings", openapi_extra=documented(EmbeddingsBody, QUEUED))
async def embeddings(request: Request) -> Response:
    """The legacy route: one prompt, one vector as the model gives it (not normalised)."""
    with _tracer.start_as_current_span("POST /api/embeddings"):
        body = parse_body(await request.body(), EmbeddingsBody, "EmbeddingRequest")
        state = _state(request)
        generation = await embed_request(state, [body.prompt] if body.prompt else [], body, True)
        result = await embeddings_of(request, state, generation)
        return JSONResponse({"embedding": result[0][0] if result else []})


def _state(request: Request) -> GatewayState:
    return request.app.state.corral  # type: ignore[no-any-return]


async def _respond(
    request: Request,
    state: GatewayState,
    generation: GenerationRequest,
    kind: Kind,
    model: str,
    stream: bool | None,
) -> Response:
    running = await submit(request, state, generation)
    first = await running.first()
    if isinstance(first, Failed):
        await running.close()
        raise failure(first.error, first.code)
    if generation.action == "render":  # one object, streamed or not, as Ollama answers it
        _, done = await running.whole(first)
        return JSONResponse(ollama_format.rendered(kind, model, done))
    if stream is False:
        parts, done = await running.whole(first)
        stats = Stats(total=running.timing.total, load=running.timing.load)
        return JSONResponse(ollama_format.final(kind, model, done, stats, parts))
    return StreamingResponse(_ndjson(kind, model, first, running), media_type="application/x-ndjson")


async def _ndjson(kind: Kind, model: str, first: Event, running: Generation) -> AsyncIterator[bytes]:
    try:
        async for event in running.events(first):
            if isinstance(event, Chunk):
                yield _line(ollama_format.chunk(kind, model, event))
            elif isinstance(event, Done):
                stats = Stats(total=running.timing.total, load=running.timing.load)
                yield _line(ollama_format.final(kind, model, event, stats))
            elif isinstance(event, Failed):
                yield _line({"error": event.error})
    except ApiError as exc:
        yield _line({"error": exc.message})
    finally:
        await running.close()


def _line(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


__all__ = ["router"]
