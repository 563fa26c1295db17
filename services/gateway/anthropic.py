"""Anthropic's Messages API (POST /v1/messages), on the same request builder and generation core.

The body becomes a native chat body (`anthropic_format`); the events come back as
Anthropic's message, or its stream of named server-sent events. As in Ollama, a model
that cannot think ignores a request to think here instead of refusing it. Errors take
Anthropic's shape (`errors.install`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from services.gateway import anthropic_format
from services.gateway.bodies import ChatBody, decode_object, validate_body
from services.gateway.core import Generation, submit
from services.gateway.errors import STATUS, ApiError, BadRequest
from services.gateway.relay import Event
from services.gateway.requests import chat_request
from services.gateway.state import GatewayState
from services.protocol import Chunk, Done, Failed

router = APIRouter(prefix="/v1")


@router.post("/messages")
async def messages(request: Request) -> Response:
    data = decode_object(await request.body(), "MessagesRequest")
    try:
        translated = anthropic_format.chat_body(data)
    except anthropic_format.AnthropicRequestError as exc:
        raise BadRequest(str(exc)) from exc
    native = validate_body(translated, ChatBody, "ChatRequest")
    state: GatewayState = request.app.state.corral
    generation = await chat_request(state, native, relax_thinking=True)
    running = await submit(request, state, generation)
    first = await running.first()
    mid = anthropic_format.message_id()
    if not native.stream:
        parts, done = await running.whole(first)
        return JSONResponse(anthropic_format.message(mid, native.model, done, parts))
    converter = anthropic_format.StreamConverter(
        mid, native.model, anthropic_format.estimate_input_tokens(data)
    )
    return StreamingResponse(_events(converter, first, running), media_type="text/event-stream")


async def _events(
    converter: anthropic_format.StreamConverter, first: Event, running: Generation
) -> AsyncIterator[bytes]:
    try:
        async for event in running.events(first):
            if isinstance(event, Chunk | Done):
                for name, data in converter.process(event):
                    yield anthropic_format.sse(name, data)
            elif isinstance(event, Failed):
                yield _error(STATUS[event.code], event.error)
    except ApiError as exc:
        yield _error(exc.status, exc.message)
    finally:
        await running.close()


def _error(status: int, message: str) -> bytes:
    body: dict[str, Any] = anthropic_format.error(status, message)
    return anthropic_format.sse("error", body)
