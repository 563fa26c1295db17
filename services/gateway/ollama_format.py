"""Ollama's response objects, built from reply events (pure functions, no I/O).

Fields come in the order Go marshals Ollama's structs (api.GenerateResponse,
api.ChatResponse, api.EmbedResponse), with their omitempty rules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from services.protocol import Chunk, Done, Logprob, ToolCall

Kind = Literal["generate", "chat"]


def created_at() -> str:
    """RFC 3339 UTC with nanosecond digits, as Go's time.Time marshals."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}000Z"


@dataclass(frozen=True)
class Stats:
    """Gateway-side durations in ns: the whole request, and queue wait plus load."""

    total: int
    load: int


def chunk(kind: Kind, model: str, part: Chunk) -> dict[str, Any]:
    """One streamed line."""
    return _response(kind, model, part.text, part.thinking, part.tool_calls, part.logprobs, done=False)


def final(kind: Kind, model: str, done: Done, stats: Stats, parts: Sequence[Chunk] = ()) -> dict[str, Any]:
    """The `done: true` object; `parts` are the whole answer when not streaming."""
    body = _response(
        kind,
        model,
        "".join(p.text for p in parts),
        "".join(p.thinking for p in parts),
        [c for p in parts for c in p.tool_calls or []],
        [lp for p in parts for lp in p.logprobs or []],
        done=True,
    )
    tool_calls, logprobs = body.pop("tool_calls", None), body.pop("logprobs", None)
    body["done_reason"] = done.done_reason
    if done.done_reason in ("load", "unload"):
        return body
    metrics = {
        "total_duration": stats.total,
        "load_duration": stats.load,
        "prompt_eval_count": done.prompt_eval_count,
        "prompt_eval_duration": done.prompt_eval_duration,
        "eval_count": done.eval_count,
        "eval_duration": done.eval_duration,
    }
    tail: dict[str, Any] = {}
    if kind == "generate":  # api.GenerateResponse: context, metrics, tool_calls, logprobs
        tail["context"] = done.context
        tail.update(metrics)
        tail.update(tool_calls=tool_calls, logprobs=logprobs)
    else:  # api.ChatResponse: logprobs, then metrics
        tail["logprobs"] = logprobs
        tail.update(metrics)
    body.update({k: v for k, v in tail.items() if v})  # omitempty, as Go writes them
    return body


def rendered(kind: Kind, model: str, done: Done) -> dict[str, Any]:
    """A `_debug_render_only` answer: Go's zero response (done false) with `_debug_info`."""
    body: dict[str, Any] = {"model": model, "created_at": created_at()}
    if kind == "generate":
        body["response"] = ""
    else:
        body["message"] = {"role": "", "content": ""}
    body["done"] = False
    body["_debug_info"] = {"rendered_template": done.rendered or ""}  # image_count: omitempty, no vision
    return body


def _response(
    kind: Kind,
    model: str,
    text: str,
    thinking: str,
    tool_calls: Sequence[ToolCall] | None,
    logprobs: Sequence[Logprob] | None,
    *,
    done: bool,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "created_at": created_at()}
    calls = [c.model_dump(exclude_none=True) for c in tool_calls or []]
    if kind == "generate":
        body["response"] = text
        if thinking:
            body["thinking"] = thinking
        body["done"] = done
        if calls:
            body["tool_calls"] = calls  # after the metrics in the final object
    else:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if thinking:
            message["thinking"] = thinking
        if calls:
            message["tool_calls"] = calls
        body["message"] = message
        body["done"] = done
    if logprobs:
        body["logprobs"] = [lp.model_dump(exclude_none=True) for lp in logprobs]
    return body


def embed(
    model: str, vectors: list[list[float]], dimensions: int | None, stats: Stats, count: int
) -> dict[str, Any]:
    """/api/embed: each vector cut to `dimensions` (if given), then L2-normalised."""
    body: dict[str, Any] = {
        "model": model,
        "embeddings": [normalise(v[:dimensions] if dimensions else v) for v in vectors],
    }
    metrics = {"total_duration": stats.total, "load_duration": stats.load, "prompt_eval_count": count}
    body.update({k: v for k, v in metrics.items() if v})
    return body


def normalise(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector


def finite(vectors: list[list[float]]) -> bool:
    return all(math.isfinite(x) for v in vectors for x in v)
