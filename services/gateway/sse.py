"""Named server-sent events (`event:` and `data:` lines), as Ollama writes them for the
Anthropic Messages and OpenAI Responses APIs, and the loop that turns a generation into them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from services.gateway.core import Generation
from services.gateway.errors import STATUS, ApiError
from services.gateway.relay import Event
from services.protocol import Chunk, Done, Failed

NamedEvent = tuple[str, dict[str, Any]]
# Go's json.Marshal escapes these (HTML-safe JSON); clients see the same bytes as from Ollama.
_HTML = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def sse(name: str, data: dict[str, Any]) -> bytes:
    """writeSSE: `event:` and `data:` lines, the data as Go marshals it (compact, HTML-escaped)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":")).translate(_HTML)
    return f"event: {name}\ndata: {text}\n\n".encode("utf-8", "replace")


async def named_events(
    running: Generation,
    first: Event,
    convert: Callable[[Chunk | Done], Iterable[NamedEvent]],
    error: Callable[[int, str], NamedEvent],
) -> AsyncIterator[bytes]:
    """The generation's chunks as the flavour's events (`convert`); a failure, from the worker
    or on the way, as its error event (`error`, given the HTTP status and the message)."""
    try:
        async for event in running.events(first):
            if isinstance(event, Chunk | Done):
                for name, data in convert(event):
                    yield sse(name, data)
            elif isinstance(event, Failed):
                yield sse(*error(STATUS[event.code], event.error))
    except ApiError as exc:
        yield sse(*error(exc.status, exc.message))
    finally:
        await running.close()
