"""Ollama's native generation routes: /api/generate, /api/chat, /api/embed, /api/embeddings.

Each route parses its body with Ollama's rules, checks what the model can do,
builds one `GenerationRequest` and formats the events of the generation core.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from opentelemetry import trace

from services.gateway import ollama_format
from services.gateway.bodies import (
    ChatBody,
    EmbedBody,
    EmbeddingsBody,
    GenerateBody,
    chat_messages,
    check_top_logprobs,
    has_images,
    parse_body,
    parse_embed_input,
    parse_format,
    parse_keep_alive_field,
    parse_options,
    parse_think,
)
from services.gateway.core import Generation, submit
from services.gateway.errors import ApiError, BadRequest, NotFound, error_response
from services.gateway.ollama_format import Kind, Stats
from services.gateway.state import GatewayState
from services.protocol import Chunk, Done, Embeddings, Failed, GenerationRequest, ModelRef
from services.protocol.messages import Capability, Think

router = APIRouter()
_tracer = trace.get_tracer("corral.gateway")
Action = Literal["generate", "load", "unload"]


@router.post("/api/generate")
async def generate(request: Request) -> Response:
    with _tracer.start_as_current_span("POST /api/generate"):
        body = parse_body(await request.body(), GenerateBody, "GenerateRequest")
        check_top_logprobs(body.top_logprobs)
        if not body.model.strip():
            raise NotFound("model '' not found")
        keep_alive = parse_keep_alive_field(body.keep_alive)
        state = _state(request)
        model = await state.resolve(body.model)
        if body.raw and (body.template or body.system or body.context):
            raise BadRequest("raw mode does not support template, system, or context")
        think = _think(model, body.model, parse_think(body.think))
        wanted: list[Capability] = ["completion"]
        if body.suffix:
            wanted.append("insert")
        if body.images:
            wanted.append("vision")
        _require(model, body.model, "generate", wanted)
        generation = GenerationRequest(
            kind="generate",
            action=_action(bool(body.prompt), keep_alive),
            model=model,
            prompt=body.prompt,
            system=body.system,
            template=body.template,
            suffix=body.suffix,
            context=body.context,
            raw=body.raw,
            **_generation_fields(body, think, keep_alive),
        )
        return await _respond(request, state, generation, "generate", body.model, body.stream)


@router.post("/api/chat")
async def chat(request: Request) -> Response:
    with _tracer.start_as_current_span("POST /api/chat"):
        body = parse_body(await request.body(), ChatBody, "ChatRequest")
        check_top_logprobs(body.top_logprobs)
        if not body.model.strip():
            raise BadRequest("model is required")
        keep_alive = parse_keep_alive_field(body.keep_alive)
        messages = chat_messages(body)
        state = _state(request)
        model = await state.resolve(body.model)
        think = _think(model, body.model, parse_think(body.think))
        wanted: list[Capability] = ["completion"]
        if body.tools:
            wanted.append("tools")
        if has_images(body):
            wanted.append("vision")
        _require(model, body.model, "chat", wanted)
        generation = GenerationRequest(
            kind="chat",
            action=_action(bool(messages), keep_alive),
            model=model,
            messages=messages,
            tools=body.tools or None,
            **_generation_fields(body, think, keep_alive),
        )
        return await _respond(request, state, generation, "chat", body.model, body.stream)


@router.post("/api/embed")
async def embed(request: Request) -> Response:
    with _tracer.start_as_current_span("POST /api/embed"):
        body = parse_body(await request.body(), EmbedBody, "EmbedRequest")
        if not body.model.strip():
            raise BadRequest("model is required")
        inputs = parse_embed_input(body.input)
        result = await _embeddings(request, body.model, inputs, body, body.truncate is not False)
        if result is None:
            return JSONResponse({"model": body.model, "embeddings": []})
        vectors, stats, count = result
        return JSONResponse(ollama_format.embed(body.model, vectors, body.dimensions, stats, count))


@router.post("/api/embeddings")
async def embeddings(request: Request) -> Response:
    """The legacy route: one prompt, one vector as the model gives it (not normalised)."""
    with _tracer.start_as_current_span("POST /api/embeddings"):
        body = parse_body(await request.body(), EmbeddingsBody, "EmbeddingRequest")
        if not body.model.strip():
            raise BadRequest("model is required")
        result = await _embeddings(request, body.model, [body.prompt] if body.prompt else [], body, True)
        return JSONResponse({"embedding": result[0][0] if result else []})


async def _embeddings(
    request: Request, name: str, inputs: list[str], body: EmbedBody | EmbeddingsBody, truncate: bool
) -> tuple[list[list[float]], Stats, int] | None:
    """Embed `inputs`; None when there were none (the model is loaded all the same)."""
    keep_alive = parse_keep_alive_field(body.keep_alive)
    state = _state(request)
    generation = GenerationRequest(
        kind="embed",
        action="generate" if inputs else _action(False, keep_alive),
        model=await state.resolve(name),
        input=inputs,
        truncate=truncate,
        options=parse_options(body.options),
        keep_alive=keep_alive,
        reply_subject="",
    )
    running = await submit(request, state, generation)
    try:
        first = await running.first()
        if isinstance(first, Failed):
            raise ApiError(first.error, first.status)
        if not isinstance(first, Embeddings):
            return None
        if not ollama_format.finite(first.embeddings):
            raise ApiError("embedding contains NaN or Inf values", 500)
        stats = Stats(total=running.timing.total, load=running.timing.load)
        return first.embeddings, stats, first.prompt_eval_count
    finally:
        await running.close()


def _generation_fields(
    body: GenerateBody | ChatBody, think: Think | None, keep_alive: float | None
) -> dict[str, Any]:
    """What generate and chat requests share, parsed."""
    return {
        "format": parse_format(body.format),
        "think": think,
        "logprobs": body.logprobs,
        "top_logprobs": body.top_logprobs,
        "truncate": body.truncate is not False,
        "shift": body.shift is not False,
        "options": parse_options(body.options),
        "keep_alive": keep_alive,
        "reply_subject": "",
    }


def _think(model: ModelRef, name: str, think: Think | None) -> Think | None:
    """Ollama's rule: a thinking model thinks unless told not to; any other refuses `think`."""
    if "thinking" in model.capabilities:
        return True if think is None else think
    if think not in (None, False):
        raise BadRequest(f"{json.dumps(name)} does not support thinking")
    return None


def _require(model: ModelRef, name: str, route: str, wanted: list[Capability]) -> None:
    """400 with Ollama's texts for what the model cannot do."""
    if "completion" not in model.capabilities:
        raise BadRequest(f"{json.dumps(name)} does not support {route}")
    missing = [c for c in wanted if c not in model.capabilities]
    if missing:
        raise BadRequest(f"{model.full_name} does not support {', '.join(missing)}")


def _action(has_input: bool, keep_alive: float | None) -> Action:
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
    kind: Kind,
    model: str,
    stream: bool | None,
) -> Response:
    running = await submit(request, state, generation)
    first = await running.first()
    if isinstance(first, Failed):
        await running.close()
        return error_response(first.status, first.error)
    if stream is False:
        parts = [first] if isinstance(first, Chunk) else []
        end: Done | Failed | Embeddings | None = first if isinstance(first, Done) else None
        if end is None:
            more, end = await running.collect()
            parts += more
        if isinstance(end, Failed):
            return error_response(end.status, end.error)
        if not isinstance(end, Done):
            raise ApiError("the worker answered a generation with embeddings", 500)
        stats = Stats(total=running.timing.total, load=running.timing.load)
        return JSONResponse(ollama_format.final(kind, model, end, stats, parts))
    return StreamingResponse(_ndjson(kind, model, first, running), media_type="application/x-ndjson")


async def _ndjson(kind: Kind, model: str, first: object, running: Generation) -> AsyncIterator[bytes]:
    async def events() -> AsyncIterator[object]:
        yield first
        if not isinstance(first, Done):
            async for event in running.rest():
                yield event

    try:
        async for event in events():
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
