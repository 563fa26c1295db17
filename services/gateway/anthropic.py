"""Anthropic's Messages API (POST /v1/messages), on the same request builder and generation core.

The body becomes a native chat body (`anthropic_format`); the events come back as
Anthropic's message, or its stream of named server-sent events. As in Ollama, a model
that cannot think ignores a request to think here instead of refusing it. Errors take
Anthropic's shape (`errors.install`).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from services.gateway import anthropic_format
from services.gateway.bodies import QUEUED, ChatBody, decode_object, documented, translated_body
from services.gateway.core import submit
from services.gateway.flavour_bodies import MessagesBody
from services.gateway.requests import chat_request
from services.gateway.sse import NamedEvent, named_events
from services.gateway.state import GatewayState

router = APIRouter(prefix="/v1")


@router.post("/messages", openapi_extra=documented(MessagesBody, QUEUED))
async def messages(request: Request) -> Response:
    data = decode_object(await request.body(), "MessagesRequest")
    native = translated_body(
        data, anthropic_format.chat_body, anthropic_format.AnthropicRequestError, ChatBody, "ChatRequest"
    )
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
    events = named_events(running, first, converter.process, _error)
    return StreamingResponse(events, media_type="text/event-stream")


def _error(status: int, message: str) -> NamedEvent:
    return "error", anthropic_format.error(status, message)
