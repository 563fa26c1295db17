"""The one mapping of an error to a body, per API flavour: Anthropic's under /v1/messages,
OpenAI's elsewhere under /v1/, Ollama's `{"error": "..."}` everywhere else.

Its own module so that the front door (guard.py), which answers before any route, and the
exception handlers (errors.py) give the same bodies."""

from __future__ import annotations

from typing import Any

from services.gateway import anthropic_format, openai_format


def error_body(status: int, message: str, path: str = "") -> dict[str, Any]:
    if path.startswith("/v1/messages"):
        return anthropic_format.error(status, message)
    if path.startswith("/v1/"):
        return openai_format.error(status, message)
    return {"error": message}
