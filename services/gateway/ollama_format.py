"""Ollama's response objects, built from relay events (pure functions, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from services.protocol import Done

Kind = Literal["generate", "chat"]


def created_at() -> str:
    """RFC 3339 UTC with nanosecond digits, as Go's time.Time marshals."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}000Z"


@dataclass(frozen=True)
class Timing:
    """Gateway-side clock readings, in ns since the handler started."""

    total: int
    load: int


def chunk(kind: Kind, model: str, text: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "created_at": created_at()}
    if kind == "generate":
        body["response"] = text
    else:
        body["message"] = {"role": "assistant", "content": text}
    body["done"] = False
    return body


def final(kind: Kind, model: str, done: Done, timing: Timing, text: str = "") -> dict[str, Any]:
    """The `done: true` object; `text` carries the whole answer when not streaming."""
    body = chunk(kind, model, text)
    body["done"] = True
    body["done_reason"] = done.done_reason
    if done.done_reason in ("load", "unload"):
        return body
    body.update(
        total_duration=timing.total,
        load_duration=timing.load,
        prompt_eval_count=done.prompt_eval_count,
        prompt_eval_duration=done.prompt_eval_duration,
        eval_count=done.eval_count,
        eval_duration=done.eval_duration,
    )
    return body
