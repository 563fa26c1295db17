"""OpenAI's Responses API (POST /v1/responses), on the same request builder and generation core.

The body becomes a native chat body (`responses_format`); the events come back as a response
object, or as its stream of named server-sent events (`event: <type>` and `data: <json>`).
Errors take OpenAI's shape (`errors.install`). A generation that fails before it says anything
is answered with its HTTP error, as Ollama answers before it writes; one that fails mid-stream
ends with an `error` event.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from services.gateway import responses_format
from services.gateway.bodies import QUEUED, ChatBody, decode_object, documented, translated_body
from services.gateway.core import submit
from services.gateway.errors import failure
from services.gateway.flavour_bodies import ResponsesBody
from services.gateway.openai_format import OpenAIRequestError
from services.gateway.requests import chat_request
from services.gateway.sse import named_events
from services.gateway.state import GatewayState
from services.protocol import Failed

router = APIRouter(prefix="/v1")


@router.post("/responses", openapi_extra=documented(ResponsesBody, QUEUED))
async def responses(request: Request) -> Response:
    data = decode_object(await request.body(), "ResponsesRequest")
    native = translated_body(data, responses_format.chat_body, OpenAIRequestError, ChatBody, "ChatRequest")
    state: GatewayState = request.app.state.corral
    generation = await chat_request(state, native)
    running = await submit(request, state, generation)
    first = await running.first()
    rid = responses_format.response_id()
    if not native.stream:
        parts, done = await running.whole(first)
        return JSONResponse(responses_format.response(rid, native.model, data, parts, done))
    if isinstance(first, Failed):
        await running.close()
        raise failure(first.error, first.code)
    converter = responses_format.StreamConverter(rid, native.model, data)
    events = named_events(running, first, converter.process, converter.error)
    return StreamingResponse(events, media_type="text/event-stream")
