"""Ollama's response objects: field order and omitempty as Go marshals them."""

from __future__ import annotations

import pytest

from services.gateway.ollama_format import Stats, chunk, embed, final, normalise
from services.protocol import Chunk, Done, Logprob, ToolCall

DONE = Done(
    done_reason="stop",
    prompt_eval_count=3,
    prompt_eval_duration=10,
    eval_count=2,
    eval_duration=20,
    context=[1, 2, 3],
)
STATS = Stats(total=100, load=5)
CALL = ToolCall.model_validate({"function": {"index": 0, "name": "f", "arguments": {"x": 1}}})


def test_generate_chunk() -> None:
    body = chunk("generate", "m", Chunk(text="Hi"))
    assert list(body) == ["model", "created_at", "response", "done"]
    assert (body["response"], body["done"]) == ("Hi", False)


def test_chat_chunk_with_thinking_and_tool_calls() -> None:
    body = chunk("chat", "m", Chunk(text="", thinking="hmm", tool_calls=[CALL]))
    assert body["message"] == {
        "role": "assistant",
        "content": "",
        "thinking": "hmm",
        "tool_calls": [{"function": {"index": 0, "name": "f", "arguments": {"x": 1}}}],
    }


def test_generate_final_in_gos_field_order() -> None:
    lp = Logprob(token="a", logprob=-1.0)
    body = final("generate", "m", DONE, STATS, [Chunk(text="a", logprobs=[lp]), Chunk(text="b")])
    assert list(body) == [
        "model", "created_at", "response", "done", "done_reason", "context", "total_duration",
        "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration",
        "logprobs",
    ]  # fmt: skip
    assert body["response"] == "ab" and body["context"] == [1, 2, 3]


def test_chat_final_has_no_context_and_logprobs_before_metrics() -> None:
    lp = Logprob(token="a", logprob=-1.0)
    body = final("chat", "m", DONE, STATS, [Chunk(text="a", logprobs=[lp])])
    keys = list(body)
    assert "context" not in keys and keys.index("logprobs") < keys.index("total_duration")
    assert body["message"] == {"role": "assistant", "content": "a"}


@pytest.mark.parametrize("reason", ["load", "unload"])
def test_load_and_unload_carry_no_statistics(reason: str) -> None:
    body = final("generate", "m", Done(done_reason=reason), STATS)  # type: ignore[arg-type]
    assert list(body) == ["model", "created_at", "response", "done", "done_reason"]


def test_embed_cuts_to_dimensions_then_normalises() -> None:
    body = embed("m", [[3.0, 4.0, 12.0]], 2, STATS, 5)
    assert body["embeddings"] == [pytest.approx([0.6, 0.8])]
    assert body["prompt_eval_count"] == 5
    assert normalise([0.0, 0.0]) == [0.0, 0.0]
