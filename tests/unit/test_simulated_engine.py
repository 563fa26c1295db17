"""The simulated engine (scheduler tests and benchmarks only): devices, batching, limits, cancels.

Steps are observed as the engine delivers them to `on_steps`, never by the wall clock. Where a
test needs several jobs to reach the engine together, the first delivery of steps is held
(the engine's thread waits in `on_steps`) while the test submits them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.config import load_settings
from services.protocol import ChatMessage, Device, GenerationRequest, ModelRef
from services.registry.bundled import BUNDLED_SYSTEM, BUNDLED_TEMPLATE
from services.worker.engines.base import EngineError, InvalidJob, Job, LoadSpec, Sampling, Step
from services.worker.engines.simulated import (
    ANSWER_TOKENS,
    KV_BYTES_PER_TOKEN,
    SimulatedEngine,
    SimulatedModel,
    produce,
    step_seconds,
)
from services.worker.engines.simulated_devices import lay_out
from services.worker.engines.simulated_vocab import SPECIAL_TOKENS, WORD, WORD_TEXT, tokenize
from services.worker.prompt import build_prompt
from tests.watch import DEADLINE

GiB = 1 << 30
FILE_SIZE = 1000  # bytes of the fake weights file
GREEDY = Sampling(
    temperature=0.0,
    top_k=40,
    top_p=0.9,
    min_p=0.0,
    typical_p=1.0,
    repeat_penalty=1.0,
    repeat_last_n=64,
    presence_penalty=0.0,
    frequency_penalty=0.0,
    seed=0,
)


def job(job_id: str, max_tokens: int = 3, prompt: tuple[int, ...] = (20, 21, 22), shift: bool = True) -> Job:
    return Job(id=job_id, prompt=list(prompt), sampling=GREEDY, max_tokens=max_tokens, shift=shift)


class Recorder:
    """What the engine delivers, call by call; with `held`, the first call waits for `release`."""

    def __init__(self, held: bool = False) -> None:
        self.calls: list[list[Step]] = []
        self._changed = threading.Condition()
        self._held = held
        self._entered = threading.Event()
        self._released = threading.Event()

    def __call__(self, steps: list[Step]) -> None:
        if self._held and not self._entered.is_set():
            self._entered.set()
            assert self._released.wait(DEADLINE), "the test never released the engine"
        with self._changed:
            self.calls.append(steps)
            self._changed.notify_all()

    def wait_held(self) -> None:
        assert self._entered.wait(DEADLINE), "the engine delivered no step"

    def release(self) -> None:
        self._released.set()

    def wait_finished(self, *job_ids: str) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: set(job_ids) <= self.finished(), DEADLINE), self.calls

    def finished(self) -> set[str]:
        return {s.job_id for call in self.calls for s in call if s.finish is not None}

    def steps_of(self, job_id: str) -> list[Step]:
        return [s for call in self.calls for s in call if s.job_id == job_id]


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "sha256-weights"
    path.write_bytes(b"\0" * FILE_SIZE)
    return path


@pytest.fixture
def models() -> Iterator[list[SimulatedModel]]:
    """Models a test loads, closed after it (their threads stop)."""
    loaded: list[SimulatedModel] = []
    yield loaded
    for model in loaded:
        model.close()


def load(
    engine: SimulatedEngine,
    weights: Path,
    models: list[SimulatedModel],
    on_steps: Callable[[list[Step]], None],
    slots: int = 2,
    num_ctx: int = 64,
) -> SimulatedModel:
    model = engine.load(LoadSpec(path=weights, num_ctx=num_ctx, slots=slots), on_steps)
    models.append(model)
    return model


# ---- devices and memory


def test_devices_come_from_the_setting() -> None:
    settings = load_settings({"CORRAL_SIM_DEVICES": "cpu:32GiB,cuda:24GiB,cuda:512MiB"})
    engine = SimulatedEngine(settings.sim_devices, settings.sim_tokens_per_second)
    assert engine.devices() == [
        Device(id="cpu", kind="cpu", free_memory=32 * GiB, total_memory=32 * GiB),
        Device(id="cuda:0", kind="cuda", free_memory=24 * GiB, total_memory=24 * GiB),
        Device(id="cuda:1", kind="cuda", free_memory=512 << 20, total_memory=512 << 20),
    ]


def test_a_load_occupies_the_roomiest_gpu_until_it_closes(
    weights: Path, models: list[SimulatedModel]
) -> None:
    engine = SimulatedEngine((("cpu", 8 * GiB), ("cuda", 4 * GiB), ("cuda", 6 * GiB)), 0)
    model = load(engine, weights, models, Recorder(), slots=2, num_ctx=64)
    need = FILE_SIZE + 2 * 64 * KV_BYTES_PER_TOKEN
    assert (model.size, model.size_vram) == (need, need)
    free = {d.id: d.free_memory for d in engine.devices()}
    assert free == {"cpu": 8 * GiB, "cuda:0": 4 * GiB, "cuda:1": 6 * GiB - need}
    model.close()
    assert {d.id: d.free_memory for d in engine.devices()}["cuda:1"] == 6 * GiB


def test_two_instances_of_one_model_hold_each_its_own_gpu_and_run_apart(
    weights: Path, models: list[SimulatedModel]
) -> None:
    """A replica on the second GPU of one worker: the same file loaded twice, each as placement
    split it, each with its own slots (both run a job at once)."""
    engine = SimulatedEngine((("cpu", 8 * GiB), ("cuda", 4 * GiB), ("cuda", 4 * GiB)), 0)
    recorder = Recorder()
    instances = []
    for device in ("cuda:0", "cuda:1"):
        spec = LoadSpec(path=weights, num_ctx=64, slots=1, split={device: GiB})
        instances.append(engine.load(spec, recorder))
        models.append(instances[-1])
    assert [m.placement for m in instances] == [{"cuda:0": GiB}, {"cuda:1": GiB}]
    assert {d.id: d.free_memory for d in engine.devices()} == {
        "cpu": 8 * GiB,
        "cuda:0": 3 * GiB,
        "cuda:1": 3 * GiB,
    }
    instances[0].submit(job("first"))
    instances[1].submit(job("second"))
    recorder.wait_finished("first", "second")
    with pytest.raises(EngineError, match="cuda:1 has 3221225472 bytes free"):
        engine.load(LoadSpec(path=weights, num_ctx=64, slots=1, split={"cuda:1": 4 * GiB}), recorder)


def test_a_load_too_big_for_every_device_together_is_refused(weights: Path) -> None:
    engine = SimulatedEngine((("cpu", 1000), ("cuda", 1000)), 0)
    with pytest.raises(EngineError, match="not enough memory"):
        engine.load(LoadSpec(path=weights, num_ctx=64, slots=1), Recorder())
    assert [d.free_memory for d in engine.devices()] == [1000, 1000]


@pytest.mark.parametrize(
    ("need", "free", "parts"),
    [
        (10, {"cpu": 100, "cuda:0": 50, "cuda:1": 60}, {"cuda:1": 10}),
        (10, {"cpu": 100, "cuda:0": 60, "cuda:1": 60}, {"cuda:0": 10}),
        (100, {"cpu": 100, "cuda:0": 50, "cuda:1": 60}, {"cuda:1": 60, "cuda:0": 40}),
        (150, {"cpu": 100, "cuda:0": 50, "cuda:1": 60}, {"cuda:1": 60, "cuda:0": 50, "cpu": 40}),
        (10, {"cpu": 100}, {"cpu": 10}),
        (211, {"cpu": 100, "cuda:0": 50, "cuda:1": 60}, None),
    ],
    ids=["roomiest-gpu", "tie-first-written", "spills-to-next-gpu", "spills-to-cpu", "cpu-only", "no-room"],
)
def test_lay_out(need: int, free: dict[str, int], parts: dict[str, int] | None) -> None:
    assert lay_out(need, free) == parts


# ---- jobs


@pytest.mark.parametrize(
    ("generated", "max_tokens", "shift", "n_ctx", "produced"),
    [
        (0, 5, True, 64, ((WORD,), None)),
        (4, 5, True, 64, ((WORD,), "length")),
        (ANSWER_TOKENS, 10_000, True, 64, ((), "stop")),
        (60, 10_000, False, 64, ((WORD,), "length")),  # 3 prompt tokens + 61 fill the context
        (60, 10_000, True, 64, ((WORD,), None)),  # a context that may shift goes on
    ],
    ids=["mid-answer", "max-tokens", "answer-ends", "context-full", "context-shifts"],
)
def test_produce(
    generated: int, max_tokens: int, shift: bool, n_ctx: int, produced: tuple[tuple[int, ...], str | None]
) -> None:
    assert produce(job("j", max_tokens, shift=shift), generated, n_ctx) == produced


def test_a_step_slows_with_the_batch() -> None:
    assert step_seconds(1, 10.0) == pytest.approx(0.1)
    assert step_seconds(11, 10.0) > step_seconds(2, 10.0) > step_seconds(1, 10.0)


def test_jobs_of_a_batch_step_together_and_the_rest_wait_for_a_slot(
    weights: Path, models: list[SimulatedModel]
) -> None:
    recorder = Recorder(held=True)
    model = load(SimulatedEngine((("cpu", GiB),), 10_000.0), weights, models, recorder, slots=2)
    model.submit(job("first", max_tokens=1))
    recorder.wait_held()  # the engine's thread waits in on_steps: the next three arrive together
    for job_id in ("a", "b", "c"):
        model.submit(job(job_id, max_tokens=3))
    recorder.release()
    recorder.wait_finished("a", "b", "c")
    calls = [sorted(s.job_id for s in call) for call in recorder.calls[1:]]
    assert calls == [["a", "b"]] * 3 + [["c"]] * 3
    assert [s.tokens for s in recorder.steps_of("a")] == [(WORD,)] * 3
    assert [s.finish for s in recorder.steps_of("c")] == [None, None, "length"]


def test_instant_mode_ends_each_job_in_one_step(weights: Path, models: list[SimulatedModel]) -> None:
    recorder = Recorder(held=True)
    model = load(SimulatedEngine((("cpu", GiB),), 0.0), weights, models, recorder, slots=2)
    model.submit(job("first", max_tokens=1))
    recorder.wait_held()
    for job_id in ("a", "b", "c"):
        model.submit(job(job_id, max_tokens=5))
    recorder.release()
    recorder.wait_finished("a", "b", "c")
    assert [sorted(s.job_id for s in call) for call in recorder.calls[1:]] == [["a", "b"], ["c"]]
    for job_id in ("a", "b", "c"):
        (step,) = recorder.steps_of(job_id)
        assert (step.tokens, step.finish) == ((WORD,) * 5, "length")


@pytest.mark.parametrize(
    ("max_tokens", "tokens", "finish"),
    [(4, 4, "length"), (1, 1, "length"), (10_000, ANSWER_TOKENS, "stop"), (0, 0, "length")],
    ids=["four", "one", "answer-ends-first", "none"],
)
def test_max_tokens_is_honoured(
    weights: Path, models: list[SimulatedModel], max_tokens: int, tokens: int, finish: str
) -> None:
    recorder = Recorder()
    model = load(SimulatedEngine((("cpu", GiB),), 100_000.0), weights, models, recorder)
    model.submit(job("j", max_tokens))
    recorder.wait_finished("j")
    steps = recorder.steps_of("j")
    assert sum(len(s.tokens) for s in steps) == tokens
    assert [s.finish for s in steps] == [None] * (len(steps) - 1) + [finish]
    assert steps[0].prompt_cached == (0 if max_tokens > 0 else None)


def test_cancel_ends_a_running_and_a_waiting_job(weights: Path, models: list[SimulatedModel]) -> None:
    recorder = Recorder(held=True)
    model = load(SimulatedEngine((("cpu", GiB),), 10_000.0), weights, models, recorder, slots=1)
    model.submit(job("running", max_tokens=10_000))
    recorder.wait_held()  # "running" has its first token; the engine waits for us
    model.submit(job("waiting", max_tokens=10_000))
    model.cancel("running")
    model.cancel("waiting")
    recorder.release()
    recorder.wait_finished("running", "waiting")
    running = recorder.steps_of("running")
    assert [(s.tokens, s.finish) for s in running] == [((WORD,), None), ((), "cancel")]
    assert [(s.tokens, s.finish) for s in recorder.steps_of("waiting")] == [((), "cancel")]


def test_close_stops_the_thread_mid_step_and_cancels_what_runs(weights: Path) -> None:
    recorder = Recorder()
    engine = SimulatedEngine((("cpu", GiB),), 0.001)  # a step lasts 1000 s: only close ends it
    model = engine.load(LoadSpec(path=weights, num_ctx=64, slots=1), recorder)
    model.submit(job("j", max_tokens=10_000))
    closing = threading.Thread(target=model.close)
    closing.start()
    closing.join(DEADLINE)
    assert not closing.is_alive()
    assert [(s.tokens, s.finish) for s in recorder.steps_of("j")] == [((), "cancel")]
    assert engine.devices()[0].free_memory == GiB
    with pytest.raises(EngineError):
        model.submit(job("late"))


def test_a_later_prompt_reuses_the_cached_prefix(weights: Path, models: list[SimulatedModel]) -> None:
    recorder = Recorder()
    model = load(SimulatedEngine((("cpu", GiB),), 0.0), weights, models, recorder, slots=1)
    model.submit(job("one", 1, prompt=(20, 21, 22, 23, 24)))
    recorder.wait_finished("one")
    model.submit(job("two", 1, prompt=(20, 21, 22, 23, 24, 25, 26)))
    recorder.wait_finished("two")
    assert recorder.steps_of("two")[0].prompt_cached == 5


def test_jobs_it_cannot_run_are_refused(weights: Path, models: list[SimulatedModel]) -> None:
    model = load(SimulatedEngine((("cpu", GiB),), 0.0), weights, models, Recorder(), num_ctx=8)
    with pytest.raises(InvalidJob):
        model.submit(job("empty", prompt=()))
    with pytest.raises(InvalidJob, match="exceeds the context length"):
        model.submit(job("long", prompt=tuple(range(20, 29))))


# ---- tokens, as the worker uses them


def test_special_tokens_are_parsed_and_text_is_bytes() -> None:
    tokens = tokenize("<|im_start|>user\nhé<|im_end|>")
    assert tokens[0] == SPECIAL_TOKENS.index("<|im_start|>")
    assert tokens[-1] == SPECIAL_TOKENS.index("<|im_end|>")
    assert len(tokens) == 2 + len("user\nhé".encode())


def test_the_worker_renders_the_bundled_template_with_it(weights: Path, models: list[SimulatedModel]) -> None:
    model = load(SimulatedEngine((("cpu", GiB),), 0.0), weights, models, Recorder(), num_ctx=512)
    ref = ModelRef(
        name="smollm2:135m",
        full_name="registry.ollama.ai/library/smollm2:135m",
        digest="sha256:" + "0" * 64,
        size=FILE_SIZE,
        template=BUNDLED_TEMPLATE,
        system=BUNDLED_SYSTEM,
    )
    request = GenerationRequest(
        kind="chat", model=ref, messages=[ChatMessage(role="user", content="hi")], reply_subject="r"
    )
    text = "".join(model.special_text(t) for t in build_prompt(request, model, 512, 4).tokens)
    assert text == (
        f"<|im_start|>system\n{BUNDLED_SYSTEM}<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert model.special_text(int(model.metadata["tokenizer.ggml.eos_token_id"])) == "<|im_end|>"
    assert model.token_bytes(WORD) == WORD_TEXT


def test_a_model_without_an_ollama_template_renders_through_its_chat_template(
    weights: Path, models: list[SimulatedModel]
) -> None:
    model = load(SimulatedEngine((("cpu", GiB),), 0.0), weights, models, Recorder(), num_ctx=512)
    ref = ModelRef(name="m:latest", full_name="m", digest="sha256:" + "0" * 64, size=FILE_SIZE)
    request = GenerationRequest(kind="generate", model=ref, prompt="hi", reply_subject="r")
    tokens = build_prompt(request, model, 512, 4).tokens
    assert (
        "".join(model.special_text(t) for t in tokens)
        == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_embeddings_are_deterministic(weights: Path, models: list[SimulatedModel]) -> None:
    model = load(SimulatedEngine((("cpu", GiB),), 0.0), weights, models, Recorder())
    first, again, other = model.embed([[20, 21], [20, 21], [30]])
    assert first == again != other
    with pytest.raises(InvalidJob):
        model.embed([[]])
