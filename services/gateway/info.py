"""The small native routes: liveness, version, running models (/api/ps), local models (/api/tags)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from services.protocol import ResidentModel
from services.version import corral_version

router = APIRouter()
FOREVER_SECONDS = 9_223_372_036  # Go's math.MaxInt64 nanoseconds


@router.api_route("/", methods=["GET", "HEAD"])
async def root() -> PlainTextResponse:
    return PlainTextResponse("Ollama is running")


@router.api_route("/api/version", methods=["GET", "HEAD"])
async def api_version() -> dict[str, str]:
    return {"version": corral_version()}


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


@router.api_route("/api/tags", methods=["GET", "HEAD"])
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
                "details": _details(m.format, m.family, m.parameter_size, m.quantization_level),
            }
            for m in catalog.models
        ]
    }


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
        "digest": model.digest.removeprefix("sha256:"),
        "details": _details("gguf", "", "", ""),
        "expires_at": _rfc3339(expires),
        "size_vram": model.size_vram,
        "context_length": model.num_ctx,
    }


def _details(fmt: str, family: str, parameter_size: str, quantization: str) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": fmt,
        "family": family,
        "families": [family] if family else None,
        "parameter_size": parameter_size,
        "quantization_level": quantization,
    }


def _rfc3339(epoch: float) -> str:
    try:
        return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return "2318-01-01T00:00:00Z"
