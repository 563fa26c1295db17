"""The exllama engines' shared loop: library results read as seam steps, the token budget, cancel,
failure and unload, driven through a fake library (the adapters' calls, no GPU)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.protocol import DEFAULT_OPTIONS
from services.worker.engines.base import FinishReason, InvalidJob, Job, Step
from services.worker.engines.exl_loop import ExlModel, Output, read_result, settle
from services.worker.generation import sampling_for

DEADLINE = 30.0
EOS = 2


def ids(*tokens: int) -> np.ndarray[Any, Any]:
    return np.array([list(tokens)])


READS = [
    pytest.param({"stage": "started", "identifier": "a"}, None, id="started-is-nothing"),
    pytest.param({"stage": "prefill", "identifier": "a"}, None, id="prefill-is-nothing"),
    pytest.param(
        {"stage": "streaming", "identifier": "a", "eos": False, "token_ids": ids(5, 6)},
        Output("a", [5, 6], [], None),
        id="tokens",
    ),
    pytest.param(
        {"stage": "streaming", "identifier": "a", "eos": False},
        Output("a", [], [], None),
        id="held-back-text",
    ),
    pytest.param(
        {
            "stage": "streaming",
            "identifier": "a",
            "eos": True,
            "eos_reason": "stop_token",
            "eos_triggering_token_id": EOS,
            "held": {"token_ids": ids(7, EOS)},
        },
        Output("a", [7], [], "stop"),
        id="stop-token-dropped-held-kept",
    ),
    pytest.param(
        {
            "stage": "streaming",
            "identifier": "a",
            "eos": True,
            "eos_reason": "max_new_tokens",
            "token_ids": ids(8),
        },
        Output("a", [8], [], "length"),
        id="max-new-tokens-is-length",
    ),
    pytest.param(
        {
            "stage": "streaming",
            "identifier": "a",
            "eos": True,
            "eos_reason": "end_filter",
            "token_ids": ids(125),
        },
        Output("a", [125], [], "stop"),
        id="a-finished-format-is-stop",
    ),
]


@pytest.mark.parametrize(("result", "output"), READS)
def test_read_result(result: dict[str, Any], output: Output | None) -> None:
    assert read_result(result) == output


SETTLES = [
    pytest.param(0, 5, Output("a", [1, 2], [], None), [1, 2], None, id="within"),
    pytest.param(3, 5, Output("a", [1, 2, 3], [], None), [1, 2], "length", id="cut-at-the-budget"),
    pytest.param(3, 5, Output("a", [1, 2], [], None), [1, 2], "length", id="reaches-the-budget"),
    pytest.param(3, 5, Output("a", [1, 2], [], "stop"), [1, 2], "stop", id="stopped-at-the-budget"),
    pytest.param(1, 5, Output("a", [1], [], "length"), [1], "length", id="the-library-ends-it"),
]


@pytest.mark.parametrize(("made", "budget", "output", "tokens", "finish"), SETTLES)
def test_settle(
    made: int, budget: int, output: Output, tokens: list[int], finish: FinishReason | None
) -> None:
    assert settle(made, budget, output) == (tokens, finish)


class FakeVocab:
    def __init__(self) -> None:
        self.metadata = {"general.architecture": "llama"}
        self.stop_tokens = frozenset({EOS})

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        return [ord(c) for c in text]

    def token_bytes(self, token: int) -> bytes:
        return bytes([token % 256])

    def special_text(self, token: int) -> str:
        return chr(token)


class FakeLibrary:
    """A generator that emits one token per iteration for each active job, from its script."""

    name = "fake"

    def __init__(self, scripts: dict[str, list[dict[str, Any]]] | None = None, fail: bool = False) -> None:
        self.scripts = scripts or {}
        self.fail = fail
        self.active: dict[str, Iterator[dict[str, Any]]] = {}
        self.started: list[tuple[str, int, frozenset[int]]] = []
        self.cancelled: list[str] = []
        self.resets = 0
        self.unloaded = threading.Event()

    def filters(self, format: Any) -> list[Any]:
        if format is not None:
            raise InvalidJob("format is not supported by the fake engine")
        return []

    def start(self, job: Job, max_new_tokens: int, stop_tokens: frozenset[int], filters: list[Any]) -> str:
        self.started.append((job.id, max_new_tokens, stop_tokens))
        endless = (
            {"stage": "streaming", "identifier": job.id, "eos": False, "token_ids": ids(100 + n)}
            for n in itertools.count()
        )
        self.active[job.id] = iter(self.scripts.get(job.id, [])) if job.id in self.scripts else endless
        return job.id

    def iterate(self) -> list[dict[str, Any]]:
        if self.fail:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        results = []
        for job_id, script in list(self.active.items()):
            result = next(script, None)
            if result is None or result.get("eos"):
                del self.active[job_id]
            if result is not None:
                results.append(result)
        return results

    def cancel(self, handle: str) -> None:
        self.cancelled.append(handle)
        self.active.pop(handle, None)

    def remaining(self) -> int:
        return len(self.active)

    def reset(self) -> None:
        self.resets += 1
        self.active.clear()

    def unload(self) -> None:
        self.unloaded.set()


class Collected:
    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.lock = threading.Lock()
        self.finished: dict[str, threading.Event] = {}

    def __call__(self, steps: list[Step]) -> None:
        with self.lock:
            self.steps.extend(steps)
        for step in steps:
            if step.finish:
                self.done(step.job_id).set()

    def done(self, job_id: str) -> threading.Event:
        with self.lock:
            return self.finished.setdefault(job_id, threading.Event())

    def of(self, job_id: str) -> list[Step]:
        with self.lock:
            return [s for s in self.steps if s.job_id == job_id]


def model(library: FakeLibrary, tmp_path: Path, collected: Collected, num_ctx: int = 64) -> ExlModel:
    directory = tmp_path / "links"
    directory.mkdir()
    return ExlModel(
        library,
        FakeVocab(),
        directory,
        collected,
        num_ctx=num_ctx,
        placement={"cuda:0": 1 << 30},
    )


def job(job_id: str, max_tokens: int = 5, prompt: list[int] | None = None, top: int | None = None) -> Job:
    return Job(job_id, prompt or [1, 3, 4], sampling_for(DEFAULT_OPTIONS, None, top), max_tokens=max_tokens)


def test_a_job_ends_at_exactly_its_budget_and_the_library_is_told(tmp_path: Path) -> None:
    library, collected = FakeLibrary(), Collected()
    loaded = model(library, tmp_path, collected)
    try:
        loaded.submit(job("a", max_tokens=5))
        assert collected.done("a").wait(DEADLINE)
        steps = collected.of("a")
        assert [t for s in steps for t in s.tokens] == [100, 101, 102, 103, 104]
        assert steps[-1].finish == "length"
        assert library.started == [("a", 6, frozenset({EOS}))]  # one token of slack, the stop ids
        assert library.cancelled == ["a"]
    finally:
        loaded.close()
    assert (loaded.size, loaded.size_vram) == (1 << 30, 1 << 30)


def test_the_context_cuts_the_budget(tmp_path: Path) -> None:
    library, collected = FakeLibrary(), Collected()
    loaded = model(library, tmp_path, collected, num_ctx=6)
    try:
        loaded.submit(job("a", max_tokens=100, prompt=[1, 2, 3, 4]))
        assert collected.done("a").wait(DEADLINE)
        assert sum(len(s.tokens) for s in collected.of("a")) == 2
    finally:
        loaded.close()


def test_a_stop_token_ends_the_job_without_being_reported(tmp_path: Path) -> None:
    script = [
        {"stage": "started", "identifier": "a"},
        {"stage": "streaming", "identifier": "a", "eos": False, "token_ids": ids(65)},
        {
            "stage": "streaming",
            "identifier": "a",
            "eos": True,
            "eos_reason": "stop_token",
            "eos_triggering_token_id": EOS,
            "held": {"token_ids": ids(66, EOS)},
        },
    ]
    library, collected = FakeLibrary({"a": script}), Collected()
    loaded = model(library, tmp_path, collected)
    try:
        loaded.submit(job("a", max_tokens=50))
        assert collected.done("a").wait(DEADLINE)
        steps = collected.of("a")
        assert [t for s in steps for t in s.tokens] == [65, 66]
        assert steps[-1].finish == "stop" and library.cancelled == []
    finally:
        loaded.close()


def test_cancel_ends_a_running_job(tmp_path: Path) -> None:
    library, collected = FakeLibrary(), Collected()
    loaded = model(library, tmp_path, collected)
    try:
        loaded.submit(job("a", max_tokens=10_000, prompt=[1]))
        loaded.cancel("a")
        assert collected.done("a").wait(DEADLINE)
        assert collected.of("a")[-1].finish == "cancel"
    finally:
        loaded.close()


def test_a_failed_iteration_fails_its_jobs_and_empties_the_generator(tmp_path: Path) -> None:
    library, collected = FakeLibrary(fail=True), Collected()
    loaded = model(library, tmp_path, collected)
    try:
        loaded.submit(job("a"))
        assert collected.done("a").wait(DEADLINE)
        last = collected.of("a")[-1]
        assert last.finish == "stop" and last.error is not None and "illegal memory access" in last.error
        assert library.resets == 1
    finally:
        loaded.close()


def test_close_cancels_what_runs_unloads_and_removes_the_links(tmp_path: Path) -> None:
    library, collected = FakeLibrary(), Collected()
    loaded = model(library, tmp_path, collected)
    loaded.submit(job("a", max_tokens=10_000, prompt=[1]))
    loaded.close()
    assert library.unloaded.is_set()
    assert collected.of("a")[-1].finish == "cancel"
    assert not (tmp_path / "links").exists()
    with pytest.raises(Exception, match="unloaded"):
        loaded.submit(job("b"))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        pytest.param(job("a", prompt=list(range(65))), "exceeds the context length", id="too-long"),
        pytest.param(
            Job("a", [1], sampling_for(DEFAULT_OPTIONS, "json", None), max_tokens=5), "format", id="format"
        ),
    ],
)
def test_a_job_that_cannot_run_is_refused_before_it_is_queued(tmp_path: Path, bad: Job, message: str) -> None:
    library, collected = FakeLibrary(), Collected()
    loaded = model(library, tmp_path, collected)
    try:
        with pytest.raises(InvalidJob, match=message):
            loaded.submit(bad)
        with pytest.raises(InvalidJob, match="embeddings"):
            loaded.embed([[1]])
    finally:
        loaded.close()
    assert library.started == []


def test_logprobs_come_from_the_raw_logits(tmp_path: Path) -> None:
    logits = np.log(np.array([[[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]]], dtype=np.float32))
    script = [
        {
            "stage": "streaming",
            "identifier": "a",
            "eos": True,
            "eos_reason": "max_new_tokens",
            "token_ids": ids(2, 0),
            "logits": logits,
        }
    ]
    library, collected = FakeLibrary({"a": script}), Collected()
    loaded = model(library, tmp_path, collected)
    try:
        loaded.submit(job("a", max_tokens=5, top=1))
        assert collected.done("a").wait(DEADLINE)
        [step] = collected.of("a")
        assert [lp.token for lp in step.logprobs] == [2, 0]
        assert step.logprobs[0].logprob == pytest.approx(np.log(0.7), abs=1e-5)
        assert step.logprobs[1].top == ((0, pytest.approx(np.log(0.5), abs=1e-5)),)
    finally:
        loaded.close()
