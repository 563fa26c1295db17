"""OpenAI-compatible routes under /v1: chat completions, completions, models, embeddings.

Each body is translated into the native one (`openai_format`) and goes through the same
request builders and generation core as /api/chat and /api/generate; the events come back
as OpenAI's objects or server-sent events. Errors take OpenAI's shape (`errors.install`).
`keep_alive` is honoured here too, where Ollama ignores it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from services.gateway import openai_format
from services.gateway.bodies import (
    QUEUED,
    ChatBody,
    EmbedBody,
    GenerateBody,
    decode_object,
    documented,
    parse_embed_input,
    translated_body,
    validate_body,
)
from services.gateway.core import Generation, embeddings_of, submit
from services.gateway.errors import STATUS, ApiError, BadRequest
from services.gateway.flavour_bodies import ChatCompletionBody, CompletionBody, OpenAIEmbeddingBody
from services.gateway.ollama_format import normalise
from services.gateway.openai_format import OpenAIRequestError
from services.gateway.relay import Event
from services.gateway.requests import chat_request, embed_request, generate_request
from services.gateway.state import GatewayState
from services.protocol import Chunk, Done, Failed, GenerationRequest

router = APIRouter(prefix="/v1")
DONE_EVENT = b"data: [DONE]\n\n"


@router.post("/chat/completions", openapi_extra=documented(ChatCompletionBody, QUEUED))
async def chat_completions(request: Request) -> Response:
    data = decode_object(await request.body(), "ChatCompletionRequest")
    native = translated_body(data, openai_format.chat_body, OpenAIRequestError, ChatBody, "ChatRequest")
    state = _state(request)
    generation = await chat_request(state, native)
    return await _answer(request, state, generation, data, native.stream, "chatcmpl", _Chat(native.model))


@router.post("/completions", openapi_extra=documented(CompletionBody, QUEUED))
async def completions(request: Request) -> Response:
    data = decode_object(await request.body(), "CompletionRequest")
    native = translated_body(
        data, openai_format.completion_body, OpenAIRequestError, GenerateBody, "GenerateRequest"
    )
    state = _state(request)
    generation = await generate_request(state, native)
    return await _answer(request, state, generation, data, native.stream, "cmpl", _Completion(native.model))


@router.get("/models")
async def models(request: Request) -> dict[str, Any]:
    catalog = await _state(request).catalog()
    return openai_format.models([(m.name, m.modified_at, m.namespace) for m in catalog.models])


@router.get("/models/{name:path}")
async def model(request: Request, name: str) -> dict[str, Any]:
    shown = await _state(request).show(name, verbose=False)
    namespace = shown.model.full_name.split("/")[1] if shown.model else ""
    return openai_format.model(name, shown.modified_at, namespace)


_TRANSCRIPTION_FORM = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "file": {"type": "string", "format": "binary"},
        "language": {"type": "string"},
        "prompt": {"type": "string"},
        "response_format": {"type": "string"},
    },
    "required": ["model", "file"],
}


@router.post(
    "/audio/transcriptions",
    openapi_extra={
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _TRANSCRIPTION_FORM}}}
    },
)
async def transcriptions() -> Response:
    """Ollama turns the audio into a chat with an audio model; corral runs none (yet)."""
    raise BadRequest(openai_format.NO_AUDIO)


@router.post("/embeddings", openapi_extra=documented(OpenAIEmbeddingBody, QUEUED))
async def embeddings(request: Request) -> Response:
    data = decode_object(await request.body(), "EmbedRequest")
    inputs = parse_embed_input(data.get("input"))
    if not inputs:
        raise BadRequest("invalid input")
    native = validate_body(
        {"model": data.get("model", ""), "keep_alive": data.get("keep_alive")}, EmbedBody, "EmbedRequest"
    )
    state = _state(request)
    result = await embeddings_of(request, state, await embed_request(state, inputs, native, True))
    if result is None:
        raise ApiError("the model returned no embeddings", 500)
    vectors, _, count = result
    dimensions = data.get("dimensions")
    if isinstance(dimensions, int) and dimensions > 0:
        vectors = [v[:dimensions] for v in vectors]
    vectors = [normalise(v) for v in vectors]
    base64_floats = str(data.get("encoding_format", "")).lower() == "base64"
    return JSONResponse(openai_format.embeddings(native.model, vectors, base64_floats, count))


class _Flavour(Protocol):
    def whole(self, cid: str, done: Done, parts: list[Chunk]) -> dict[str, Any]: ...

    def events(self, cid: str, first: Event, running: Generation, usage: bool) -> AsyncIterator[bytes]: ...


async def _answer(
    request: Request,
    state: GatewayState,
    generation: GenerationRequest,
    data: dict[str, Any],
    stream: bool | None,
    prefix: str,
    flavour: _Flavour,
) -> Response:
    """Run `generation`, answered in one object or as server-sent events."""
    running = await submit(request, state, generation)
    first = await running.first()
    cid = openai_format.new_id(prefix)
    if not stream:
        parts, done = await running.whole(first)
        return JSONResponse(flavour.whole(cid, done, parts))
    usage = bool((data.get("stream_options") or {}).get("include_usage"))
    return StreamingResponse(flavour.events(cid, first, running, usage), media_type="text/event-stream")


class _Chat:
    def __init__(self, model: str) -> None:
        self.model = model

    def whole(self, cid: str, done: Done, parts: list[Chunk]) -> dict[str, Any]:
        return openai_format.chat_completion(cid, self.model, done, parts)

    async def events(self, cid: str, first: Event, running: Generation, usage: bool) -> AsyncIterator[bytes]:
        model, created = self.model, int(time.time())
        opened = called = False
        try:
            async for event in running.events(first):
                if isinstance(event, Chunk):
                    for chunk in openai_format.chat_chunks(cid, model, created, event, not opened):
                        yield _event(chunk)
                    opened, called = True, called or bool(event.tool_calls)
                elif isinstance(event, Done):
                    if not opened:  # an empty answer still opens with the assistant's role
                        yield _event(openai_format.chat_chunks(cid, model, created, Chunk(), True)[0])
                    yield _event(openai_format.chat_finish(cid, model, created, event, called))
                    if usage:
                        yield _event(openai_format.chat_usage(cid, model, created, event))
                    yield DONE_EVENT
                elif isinstance(event, Failed):
                    yield _event(openai_format.error(STATUS[event.code], event.error))
        except ApiError as exc:
            yield _event(openai_format.error(exc.status, exc.message))
        finally:
            await running.close()


class _Completion:
    def __init__(self, model: str) -> None:
        self.model = model

    def whole(self, cid: str, done: Done, parts: list[Chunk]) -> dict[str, Any]:
        return openai_format.completion(cid, self.model, done, parts)

    async def events(self, cid: str, first: Event, running: Generation, usage: bool) -> AsyncIterator[bytes]:
        try:
            async for event in running.events(first):
                if isinstance(event, Chunk):
                    yield _event(openai_format.completion_chunk(cid, self.model, event.text, None))
                elif isinstance(event, Done):
                    reason = openai_format.finish_reason(event, False)
                    yield _event(openai_format.completion_chunk(cid, self.model, "", reason))
                    if usage:
                        yield _event(openai_format.completion_usage(cid, self.model, event))
                    yield DONE_EVENT
                elif isinstance(event, Failed):
                    yield _event(openai_format.error(STATUS[event.code], event.error))
        except ApiError as exc:
            yield _event(openai_format.error(exc.status, exc.message))
        finally:
            await running.close()


def _event(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def _state(request: Request) -> GatewayState:
    return request.app.state.corral  # type: ignore[no-any-return]
