"""A simulated engine: declared devices, a timing model and made-up text, no model computation.

It exists only for scheduler and broker tests at fleet scale and for benchmarks
(CORRAL_ENGINE=simulated), never in place of real generation: its answers mean
nothing. Through the seam it behaves as a real engine does: steps on the engine's
own thread, at most `slots` jobs decoding together (the rest wait in order), finish
reasons, prompt reuse per sequence, and a tokenizer the worker's prompt rules work with.

Formats: it runs every model format (GGUF, EXL2, EXL3: it reads none of them), so a fleet of
simulated workers serves models of each.

Devices (CORRAL_SIM_DEVICES, `simulated_devices.py`): "cpu" and "cuda:0", "cuda:1", … in
the order written, each with its declared size; free memory is the size less what loaded
models occupy. A load that carries a split (the scheduler's plan: bytes per device) holds
exactly that, or is refused when a device lacks the room. Without one, a model occupies its
file's size (stat'ed, never read) plus KV_BYTES_PER_TOKEN for each of its `slots × num_ctx`
tokens, on the GPU with the most free memory, spilling onto the next GPUs and then the CPU,
and is refused when all of them together lack room. size_vram is its bytes on GPUs.

Timing (CORRAL_SIM_TOKENS_PER_SECOND = tps): each loaded model runs its own loop thread. A
step admits waiting jobs into free sequences, then advances every running job by one token
and lasts

    (1 + BATCH_PENALTY × (n − 1)) / tps seconds, for n jobs running,

so one job decodes at tps tokens/s and n jobs at n / (1 + BATCH_PENALTY × (n − 1)) times
that together. Prompts cost nothing. tps = 0 is instant: a job's first step brings all its
tokens and its finish.

Tokens (`simulated_vocab.py`): ids below BYTE_BASE are SPECIAL_TOKENS (ChatML's, as the
bundled SmolLM2 numbers them, and Llama 3's), parsed as such where a text writes them; any other byte is
BYTE_BASE + its value; no start token is added (as SmolLM2). The answer is WORD (" sim")
ANSWER_TOKENS times, then the end of generation (finish "stop"), unless max_tokens or a
full context that may not shift ends it first ("length"). A logprob is 0.0 (the only
possible token); `format` is accepted and not followed. An embedding is EMBEDDING_SIZE
floats computed from the tokens.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from services.protocol import Device
from services.protocol.messages import MODEL_FORMATS, ModelFormat
from services.telemetry import log_event
from services.worker.engines.base import (
    EngineError,
    FinishReason,
    InvalidJob,
    Job,
    LoadSpec,
    OnSteps,
    Step,
    TokenLogprob,
)
from services.worker.engines.batching import pick_sequence
from services.worker.engines.simulated_devices import SimulatedDevices
from services.worker.engines.simulated_vocab import (
    METADATA,
    WORD,
    embedding,
    special_text,
    token_bytes,
    tokenize,
)

log = logging.getLogger("corral.worker")

ANSWER_TOKENS = 128  # an answer's length when nothing ends it sooner
BATCH_PENALTY = 0.05  # a step's extra time per further job running beside the first
KV_BYTES_PER_TOKEN = 16 * 1024  # the scheduler's floor per token, so never above its estimate


# ---- pure rules


def step_seconds(running: int, tokens_per_second: float) -> float:
    """How long one step of `running` jobs lasts (tokens_per_second > 0)."""
    return (1 + BATCH_PENALTY * (running - 1)) / tokens_per_second


def produce(job: Job, generated: int, n_ctx: int) -> tuple[tuple[int, ...], FinishReason | None]:
    """What one step gives a job that has `generated` tokens so far: (new tokens, finish)."""
    if generated >= ANSWER_TOKENS:
        return (), "stop"  # the end-of-generation token, which a step never reports
    generated += 1
    full = not job.shift and len(job.prompt) + generated >= n_ctx
    return (WORD,), "length" if generated >= job.max_tokens or full else None


# ---- one loaded model


@dataclass
class _Sequence:
    """One of the model's `slots` sequences and the job, if any, decoding in it."""

    id: int
    cached: list[int] = field(default_factory=list)  # what a later prompt may reuse
    job: Job | None = None
    generated: int = 0
    prompt_cached: int | None = None  # reported on the job's first step, then None


class SimulatedModel:
    """A loaded model: its loop thread steps its jobs; `submit`/`cancel` only fill its inbox."""

    def __init__(
        self,
        spec: LoadSpec,
        parts: Mapping[str, int],
        tokens_per_second: float,
        on_steps: OnSteps,
        release: Callable[[], None],
    ) -> None:
        self.size = sum(parts.values())
        self.size_vram = sum(size for device, size in parts.items() if device != "cpu")
        self.placement = dict(parts)
        self.n_ctx = spec.num_ctx
        self.metadata = dict(METADATA)
        self._tps = tokens_per_second
        self._on_steps = on_steps
        self._release = release
        self._sequences = [_Sequence(i) for i in range(spec.slots)]
        self._waiting: deque[Job] = deque()  # the loop thread's, like the sequences
        self._step_end = 0.0  # time.monotonic() when the last step ended
        # Guarded by the condition's lock.
        self._lock = threading.Condition()
        self._inbox: list[Job] = []
        self._cancels: set[str] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="simulated-engine", daemon=True)
        self._thread.start()

    # ---- tokenizer (any thread)

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        return tokenize(text)  # add_special adds nothing: no start token, as SmolLM2

    def token_bytes(self, token: int) -> bytes:
        return token_bytes(token)

    def special_text(self, token: int) -> str:
        return special_text(token)

    # ---- the job interface (any thread)

    def submit(self, job: Job) -> None:
        if isinstance(job.sampling.format, str) and job.sampling.format != "json":
            raise InvalidJob(f'invalid format: "{job.sampling.format}"; expected "json" or a JSON Schema')
        if not job.prompt:
            raise InvalidJob("empty prompt")
        if len(job.prompt) > self.n_ctx:
            raise InvalidJob("the input length exceeds the context length")
        with self._lock:
            if self._closed:
                raise EngineError("the model was unloaded")
            self._inbox.append(job)
            self._lock.notify()

    def cancel(self, job_id: str) -> None:
        with self._lock:
            self._cancels.add(job_id)
            self._lock.notify()

    def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        for tokens in inputs:
            if not tokens or len(tokens) > self.n_ctx:
                raise InvalidJob("the input length exceeds the context length" if tokens else "empty input")
        return [embedding(tokens) for tokens in inputs]

    def close(self) -> None:
        """Stop the loop (its jobs end as cancelled) and give the devices their memory back."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        self._release()

    # ---- the loop thread

    def _run(self) -> None:
        while True:
            with self._lock:
                while not (self._closed or self._inbox or self._cancels or self._has_jobs()):
                    self._lock.wait()
                if self._closed:
                    break
                inbox, self._inbox = self._inbox, []
                cancels, self._cancels = self._cancels, set()
            self._waiting.extend(inbox)
            steps: list[Step] = []
            self._apply_cancels(cancels, steps)
            self._admit(steps)
            running = [s for s in self._sequences if s.job is not None]
            if running and self._tps > 0 and self._wait_step(step_seconds(len(running), self._tps)):
                break  # closed meanwhile
            for sequence in running:
                self._advance(sequence, steps, whole=self._tps == 0)
            if steps:
                self._on_steps(steps)
        self._shut_down()

    def _has_jobs(self) -> bool:
        return bool(self._waiting) or any(s.job is not None for s in self._sequences)

    def _wait_step(self, seconds: float) -> bool:
        """Let one step's time pass, counted from the end of the last one (so the loop's own work
        does not slow the model down); True when the model was closed meanwhile."""
        end = max(time.monotonic(), self._step_end) + seconds
        self._step_end = end
        with self._lock:
            while not self._closed and (left := end - time.monotonic()) > 0:
                self._lock.wait(left)
            return self._closed

    def _apply_cancels(self, ids: set[str], steps: list[Step]) -> None:
        for job in [j for j in self._waiting if j.id in ids]:
            self._waiting.remove(job)
            steps.append(Step(job.id, time.perf_counter_ns(), finish="cancel"))
        for sequence in self._sequences:
            if sequence.job is not None and sequence.job.id in ids:
                self._report(sequence, (), "cancel", steps)

    def _admit(self, steps: list[Step]) -> None:
        while self._waiting:
            free = [(s.id, s.cached) for s in self._sequences if s.job is None]
            if not free:
                return  # the rest wait for a sequence
            job = self._waiting.popleft()
            if job.max_tokens <= 0:
                steps.append(Step(job.id, time.perf_counter_ns(), finish="length"))
                continue
            seq_id, reused = pick_sequence(free, job.prompt)
            sequence = self._sequences[seq_id]
            sequence.job, sequence.generated, sequence.prompt_cached = job, 0, reused
            sequence.cached = list(job.prompt)

    def _advance(self, sequence: _Sequence, steps: list[Step], *, whole: bool) -> None:
        """One token for the job in `sequence` (`whole`: every token up to its finish)."""
        job = sequence.job
        assert job is not None
        tokens: tuple[int, ...] = ()
        finish: FinishReason | None = None
        while True:
            new, finish = produce(job, sequence.generated + len(tokens), self.n_ctx)
            tokens += new
            if finish is not None or not whole:
                break
        sequence.generated += len(tokens)
        sequence.cached += tokens
        self._report(sequence, tokens, finish, steps)

    def _report(
        self, sequence: _Sequence, tokens: tuple[int, ...], finish: FinishReason | None, steps: list[Step]
    ) -> None:
        """One step of the job in `sequence`; a finished job leaves it (its tokens stay cached)."""
        job = sequence.job
        assert job is not None
        at, logprobs = time.perf_counter_ns(), self._logprobs(job, tokens)
        steps.append(Step(job.id, at, tokens, logprobs, finish, prompt_cached=self._first(sequence)))
        if finish is not None:
            sequence.job = None

    @staticmethod
    def _logprobs(job: Job, tokens: tuple[int, ...]) -> tuple[TokenLogprob, ...]:
        top_n = job.sampling.top_logprobs
        if top_n is None:
            return ()
        return tuple(TokenLogprob(t, 0.0, ((t, 0.0),) if top_n > 0 else ()) for t in tokens)

    @staticmethod
    def _first(sequence: _Sequence) -> int | None:
        n, sequence.prompt_cached = sequence.prompt_cached, None
        return n

    def _shut_down(self) -> None:
        """Jobs still queued or running when the model closes end as cancelled."""
        with self._lock:
            self._waiting.extend(self._inbox)
            self._inbox = []
        steps = [Step(job.id, time.perf_counter_ns(), finish="cancel") for job in self._waiting]
        self._waiting.clear()
        for sequence in self._sequences:
            if sequence.job is not None:
                self._report(sequence, (), "cancel", steps)
        if steps:
            self._on_steps(steps)


class SimulatedEngine:
    """Loads models onto the declared devices; each loaded model steps on its own thread."""

    name = "simulated"
    formats: tuple[ModelFormat, ...] = MODEL_FORMATS

    def __init__(self, devices: Sequence[tuple[str, int]], tokens_per_second: float) -> None:
        """`devices`: (kind, bytes) as CORRAL_SIM_DEVICES declares them; `tokens_per_second`:
        one job's decoding speed, 0 for instant."""
        self._devices = SimulatedDevices(devices)
        self._tps = tokens_per_second
        log_event(
            log,
            "simulated_engine",
            level=logging.WARNING,
            devices=[d.id for d in self._devices.report()],
            tokens_per_second=tokens_per_second,
        )

    def devices(self) -> list[Device]:
        return self._devices.report()

    def load(self, spec: LoadSpec, on_steps: OnSteps) -> SimulatedModel:
        if not spec.path.is_file():
            raise EngineError(f"model file {spec.path.name} is missing from the store")
        if spec.split:  # as the scheduler planned it: its estimate, on its devices
            parts = dict(spec.split)
            if (refused := self._devices.take_as_planned(parts)) is not None:
                raise EngineError(f"not enough memory for model {spec.path.name}: {refused}")
            return SimulatedModel(spec, parts, self._tps, on_steps, lambda: self._devices.give_back(parts))
        need = spec.path.stat().st_size + spec.slots * spec.num_ctx * KV_BYTES_PER_TOKEN
        found = self._devices.take(need)
        if found is None:
            free = sum(d.free_memory for d in self._devices.report())
            raise EngineError(
                f"not enough memory for model {spec.path.name}: it needs {need} bytes, "
                f"the simulated devices have {free} free"
            )
        return SimulatedModel(spec, found, self._tps, on_steps, lambda: self._devices.give_back(found))
