"""The wire contract: messages round-trip, replies are told apart by kind, subjects agree."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.protocol import (
    REPLY,
    Chunk,
    Done,
    Failed,
    GenerationRequest,
    ModelRef,
    Started,
    WorkerState,
    subjects,
)


def request() -> GenerationRequest:
    return GenerationRequest(
        kind="chat",
        model=ModelRef(
            name="smollm2:135m",
            full_name="registry.ollama.ai/library/smollm2:135m",
            digest="sha256:" + "a" * 64,
            size=10,
        ),
        messages=[{"role": "user", "content": "Hi"}],
        options={"num_predict": 5, "stop": ["\n"]},
        keep_alive=-1,
        reply_subject=subjects.reply_subject("r1"),
    )


def test_request_round_trips() -> None:
    original = request()
    decoded = GenerationRequest.model_validate_json(original.encode())
    assert decoded == original
    assert decoded.options.temperature is None  # only what the client set travels
    assert decoded.options_for(None).temperature == 0.8  # Ollama's default fills the rest


@pytest.mark.parametrize(
    "event",
    [
        Started(),
        Chunk(text="hi"),
        Done(done_reason="stop", eval_count=3),
        Failed(error="boom", code="internal"),
    ],
    ids=["started", "chunk", "done", "failed"],
)
def test_reply_kinds_are_discriminated(event: object) -> None:
    assert REPLY.validate_json(event.encode()) == event  # type: ignore[attr-defined]


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    state = WorkerState.model_validate_json(
        b'{"worker_id":"w","seq":1,"engine":"x","devices":[],"new_field":1}'
    )
    assert state.worker_id == "w"


def test_bad_role_is_rejected() -> None:
    with pytest.raises(ValidationError):
        GenerationRequest.model_validate({**request().model_dump(), "messages": [{"role": "x"}]})


def test_subjects_share_the_request_id() -> None:
    assert subjects.request_id_of(subjects.reply_subject("abc")) == "abc"
    assert subjects.request_id_of(subjects.cancel_subject("abc")) == "abc"
    assert subjects.request_subject("chat").startswith(subjects.REQUEST_SUBJECTS[:-1])
    assert subjects.worker_run("w1") != subjects.worker_load("w1")


@pytest.mark.parametrize(
    "digest", ["sha256:../../etc/passwd", "/etc/passwd", "sha256:" + "a" * 63, "sha256:" + "A" * 64, "md5:x"]
)
def test_a_model_reference_names_only_a_blob(digest: str) -> None:
    """No message can make a worker open a path: the weights are named by their digest alone."""
    with pytest.raises(ValidationError):
        ModelRef(name="m", full_name="r/l/m:t", digest=digest, size=1)
