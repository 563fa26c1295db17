"""The native routes that read: liveness, version, status, /api/show, running models (/api/ps), local
models (/api/tags)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from faststream.exceptions import IncorrectState
from faststream.nats import NatsBroker

from services.gateway.bodies import ShowBody, documented, parse_body
from services.gateway.errors import BadRequest, NotFound, Unavailable
from services.protocol import CatalogEntry, QueueState, ResidentModel
from services.version import OLLAMA_API_VERSION

router = APIRouter()
FOREVER_SECONDS = 9_223_372_036  # Go's math.MaxInt64 nanoseconds
BROKER_UNAVAILABLE = "message broker unavailable"


@router.get("/")
@router.head("/")
async def root(request: Request) -> PlainTextResponse:
    """Ollama's liveness answer, while the broker is reachable: without it every request fails,
    so a load balancer (and `corral serve`'s readiness check) must see a 503 instead."""
    broker: NatsBroker = request.app.state.corral.broker
    try:
        connected = broker.connection.is_connected
    except IncorrectState:  # never connected (not started yet)
        connected = False
    if not connected:
        raise Unavailable(BROKER_UNAVAILABLE)
    return PlainTextResponse("Ollama is running")


@router.get("/api/queue")
async def queue(request: Request) -> dict[str, Any]:
    """How many requests wait for a worker, in all and per model (with why). Not in Ollama."""
    state: QueueState = await request.app.state.corral.queue()
    return state.model_dump(include={"waiting", "models"})


@router.get("/api/queue/{client_id}")
async def queue_position(request: Request, client_id: str) -> dict[str, Any]:
    """Where the request sent with `X-Request-Id: <client_id>` waits: its place among the
    requests for the same model (1: next). 404 once it runs, or if it never waited."""
    state: QueueState = await request.app.state.corral.queue(client_id)
    if state.position is None:
        raise NotFound(f"request '{client_id}' is not waiting")
    return {"position": state.position, "model": state.model, "reason": state.reason}


@router.get("/api/version")
@router.head("/api/version")
async def api_version() -> dict[str, str]:
    """The Ollama API version corral implements (clients gate features on it); corral's own
    version is in every response's X-Corral-Version header."""
    return {"version": OLLAMA_API_VERSION}


@router.get("/api/status")
async def status() -> dict[str, Any]:
    """Ollama's cloud status. corral serves local models only: cloud is always off, and no
    setting (Ollama's `source`: env or config) is what turned it off."""
    return {"cloud": {"disabled": True, "source": "none"}}


@router.post("/api/show", openapi_extra=documented(ShowBody))
async def show(request: Request) -> dict[str, Any]:
    body = parse_body(await request.body(), ShowBody, "ShowRequest")
    name = body.model or body.name
    if not name.strip():
        raise BadRequest("model is required")
    shown = await request.app.state.corral.show(name, body.verbose)
    model = shown.model
    answer: dict[str, Any] = {
        "license": shown.license,
        "modelfile": shown.modelfile,
        "parameters": shown.parameters,
        "template": model.template or "",
        "system": body.system or model.system or "",
        "details": shown.details.model_dump(),
        "messages": [{"role": m.role, "content": m.content} for m in model.messages],
        "model_info": shown.model_info,
        "tensors": [t.model_dump() for t in shown.tensors],
        "capabilities": model.capabilities,
        "modified_at": _rfc3339(shown.modified_at),
    }
    return {k: v for k, v in answer.items() if v or k == "model_info"}  # Go's omitempty


@router.get("/api/ps")
async def ps(request: Request) -> dict[str, Any]:
    now = time.time()
    models = [
        _running(m, now)
        for worker in request.app.state.corral.live_workers()
        for m in worker.resident
        if not m.loading
    ]
    models.sort(key=lambda m: m["expires_at"], reverse=True)
    return {"models": models}


@router.get("/api/tags")
@router.head("/api/tags")
async def tags(request: Request) -> dict[str, Any]:
    catalog = await request.app.state.corral.catalog()
    return {
        "models": [
            {
                "name": m.name,
                "model": m.name,
                "modified_at": _rfc3339(m.modified_at),
                "size": m.size,
                "digest": m.digest,
                "details": _listed_details(m),
                **({"capabilities": m.capabilities} if m.capabilities else {}),
            }
            for m in catalog.models
        ]
    }


def _listed_details(model: CatalogEntry) -> dict[str, Any]:
    """api.ModelDetails with the lengths only the model list fills (omitempty)."""
    lengths = {"context_length": model.context_length, "embedding_length": model.embedding_length}
    return model.details.model_dump() | {k: v for k, v in lengths.items() if v}


def _running(model: ResidentModel, now: float) -> dict[str, Any]:
    if model.expires_at is not None:
        expires = model.expires_at
    elif model.keep_alive < 0:
        expires = now + FOREVER_SECONDS
    else:  # busy: Ollama reports now + the session's keep_alive
        expires = now + model.keep_alive
    return {
        "name": model.name,
        "model": model.name,
        "size": model.size,
        "digest": model.model_digest or model.digest.removeprefix("sha256:"),
        "details": model.details.model_dump(),
        "expires_at": _rfc3339(expires),
        "size_vram": model.size_vram,
        "context_length": model.num_ctx,
    }


def _rfc3339(epoch: float) -> str:
    try:
        return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return "2318-01-01T00:00:00Z"
