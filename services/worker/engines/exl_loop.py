"""One model loaded by an exllama library: its generator stepped on its own thread, the jobs it
runs, and their steps reported on the seam. Shared by exllamav2 and exllamav3, which differ only
in the `Library` calls below.

The generators are not thread-safe (turboderp, exllamav2 #393): enqueue, iterate and cancel run
on the model's one loop thread; `submit` and `cancel` only leave work for it. Both libraries
report a job's output as result dicts of the same shape (stage "streaming", `token_ids`, and on
the last one `eos` with `eos_reason` and what was `held`), read by `read_result`. A job's token
limit is counted here, not left to the library: it ends at exactly its budget with "length".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from services.telemetry import log_event
from services.worker.engines.base import (
    EngineError,
    FinishReason,
    InvalidJob,
    Job,
    OnSteps,
    Step,
    TokenLogprob,
)
from services.worker.engines.batching import token_logprob
from services.worker.engines.exl_plan import library_max_new_tokens, token_budget
from services.worker.engines.hf_model import HfVocab, remove_directory

log = logging.getLogger("corral.worker")
# A finished job's eos_reason as the seam's finish: a stop token, a finished filter (format) or
# exllamav3's loop detection all end the answer; only the token limit is "length".
EOS_REASONS: dict[str, FinishReason] = {"max_new_tokens": "length"}


class Library(Protocol):
    """The calls an exllama engine makes on one loaded model; all but `filters` on its loop thread."""

    name: str

    def filters(self, format: str | dict[str, Any] | None) -> list[Any]:
        """Constraints for Ollama's `format` (any thread; InvalidJob when unsupported or invalid)."""
        ...

    def start(self, job: Job, max_new_tokens: int, stop_tokens: frozenset[int], filters: list[Any]) -> Any:
        """Enqueue a job on the generator; returns the library's job."""
        ...

    def iterate(self) -> list[dict[str, Any]]: ...

    def cancel(self, handle: Any) -> None: ...

    def remaining(self) -> int:
        """Jobs the generator still holds (pending or active)."""
        ...

    def reset(self) -> None:
        """Drop every job after a failed iteration."""
        ...

    def unload(self) -> None:
        """Free the model, its cache and generator, and the GPU memory they held."""
        ...


@dataclass(frozen=True)
class Output:
    """One result dict of a job, as the seam sees it."""

    job_id: str
    tokens: list[int]
    logits: list[Any]  # a row of raw logits per token, when the job asked for them
    finish: FinishReason | None


def read_result(result: Mapping[str, Any]) -> Output | None:
    """A generator's result dict as token ids and a finish; None for the started and prefill
    stages. On a stop token the library emits nothing but what it was holding (a partial UTF-8
    character), the stop token last: that token is dropped, as the seam never reports one."""
    if result.get("stage") != "streaming" or "identifier" not in result:
        return None
    tokens, logits = _ids(result.get("token_ids")), _rows(result.get("logits"))
    finish: FinishReason | None = None
    if result.get("eos"):
        reason = str(result.get("eos_reason", ""))
        finish = EOS_REASONS.get(reason, "stop")
        if reason == "stop_token":
            held = result.get("held") or {}
            tokens, logits = tokens + _ids(held.get("token_ids")), logits + _rows(held.get("logits"))
            if tokens and tokens[-1] == result.get("eos_triggering_token_id"):
                tokens, logits = tokens[:-1], logits[: len(tokens) - 1]
    return Output(str(result["identifier"]), tokens, logits, finish)


def settle(made: int, budget: int, output: Output) -> tuple[list[int], FinishReason | None]:
    """The tokens of `output` within a job's budget (`made` already reported), and its finish:
    "length" when the budget is reached, whatever the library says."""
    tokens = output.tokens[: max(budget - made, 0)]
    if made + len(tokens) >= budget and (output.finish is None or len(tokens) < len(output.tokens)):
        return tokens, "length"
    return tokens, output.finish


@dataclass
class _Run:
    job: Job
    budget: int
    handle: Any = None
    made: int = 0


class ExlModel:
    """A loaded model on the seam (LoadedModel): the vocabulary for the worker, the jobs for the
    generator's thread."""

    def __init__(
        self,
        library: Library,
        vocab: HfVocab,
        directory: Path,
        on_steps: OnSteps,
        *,
        num_ctx: int,
        placement: dict[str, int],
    ) -> None:
        self.placement = placement
        self.size = sum(placement.values())
        self.size_vram = sum(size for device, size in placement.items() if device != "cpu")
        self.n_ctx = num_ctx
        self.metadata = vocab.metadata
        self._library, self._vocab, self._directory, self._on_steps = library, vocab, directory, on_steps
        self._cond = threading.Condition()
        # Guarded by _cond; everything else belongs to the loop thread.
        self._inbox: list[tuple[Job, list[Any]]] = []
        self._cancels: set[str] = set()
        self._closing = False
        self._runs: dict[str, _Run] = {}
        self._thread = threading.Thread(target=self._loop, name=f"{library.name}-loop", daemon=True)
        self._thread.start()

    # ---- the vocabulary (any thread)

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        return self._vocab.tokenize(text, add_special=add_special)

    def token_bytes(self, token: int) -> bytes:
        return self._vocab.token_bytes(token)

    def special_text(self, token: int) -> str:
        return self._vocab.special_text(token)

    # ---- the job interface (any thread)

    def submit(self, job: Job) -> None:
        if not job.prompt:
            raise InvalidJob("empty prompt")
        if len(job.prompt) > self.n_ctx:
            raise InvalidJob("the input length exceeds the context length")
        filters = self._library.filters(job.sampling.format)
        with self._cond:
            if self._closing:
                raise EngineError("the model was unloaded")
            self._inbox.append((job, filters))
            self._cond.notify()

    def cancel(self, job_id: str) -> None:
        with self._cond:
            self._cancels.add(job_id)
            self._cond.notify()

    def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        raise InvalidJob(f"embeddings are not supported by the {self._library.name} engine")

    def close(self) -> None:
        """Cancel every job, free the model on its thread (VRAM comes back), remove the links."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify()
        self._thread.join()
        remove_directory(self._directory)

    # ---- the loop thread

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._inbox or self._cancels or self._closing or self._runs):
                    self._cond.wait()
                inbox, self._inbox = self._inbox, []
                cancels, self._cancels = self._cancels, set()
                closing = self._closing
            steps: list[Step] = []
            if closing:
                self._shut_down(inbox, steps)
                return
            self._start(inbox, cancels, steps)
            self._cancel(cancels, steps)
            if self._runs:
                self._step(steps)
            self._emit(steps)

    def _start(self, inbox: list[tuple[Job, list[Any]]], cancels: set[str], steps: list[Step]) -> None:
        for job, filters in inbox:
            budget = token_budget(job.max_tokens, self.n_ctx, len(job.prompt))
            if job.id in cancels or budget == 0:
                steps.append(Step(job.id, time.perf_counter_ns(), finish="cancel" if budget else "length"))
                continue
            run = _Run(job, budget)
            try:
                run.handle = self._library.start(
                    job, library_max_new_tokens(budget), self._vocab.stop_tokens, filters
                )
            except Exception as exc:  # AssertionError when the cache cannot hold it, for one
                steps.append(Step(job.id, time.perf_counter_ns(), finish="stop", error=self._error(exc)))
                continue
            self._runs[job.id] = run

    def _cancel(self, ids: set[str], steps: list[Step]) -> None:
        for job_id in ids:
            run = self._runs.pop(job_id, None)
            if run is not None:
                self._library.cancel(run.handle)
                steps.append(Step(job_id, time.perf_counter_ns(), finish="cancel"))

    def _step(self, steps: list[Step]) -> None:
        """One iteration of the generator; a failure fails every job and empties the generator."""
        try:
            if self._library.remaining() == 0:
                raise EngineError("the generator holds none of the running jobs")
            results = self._library.iterate()
        except Exception as exc:
            error = self._error(exc)
            log_event(log, "engine_failed", level=logging.ERROR, engine=self._library.name, error=error)
            for job_id in list(self._runs):
                steps.append(Step(job_id, time.perf_counter_ns(), finish="stop", error=error))
            self._runs.clear()
            self._library.reset()
            return
        at = time.perf_counter_ns()
        for result in results:
            output = read_result(result)
            run = self._runs.get(output.job_id) if output else None
            if output is None or run is None:
                continue
            tokens, finish = settle(run.made, run.budget, output)
            run.made += len(tokens)
            if not tokens and finish is None:
                continue  # text held back, nothing to report yet
            if finish is not None:
                del self._runs[output.job_id]
                if output.finish is None:  # ended here, by its budget: the generator stops it too
                    self._library.cancel(run.handle)
            steps.append(
                Step(output.job_id, at, tuple(tokens), self._logprobs(run.job, tokens, output), finish)
            )

    def _logprobs(self, job: Job, tokens: list[int], output: Output) -> tuple[TokenLogprob, ...]:
        top = job.sampling.top_logprobs
        if top is None or len(output.logits) < len(tokens):
            return ()
        return tuple(
            token_logprob(_as_numpy(row), t, top) for row, t in zip(output.logits, tokens, strict=False)
        )

    def _shut_down(self, inbox: list[tuple[Job, list[Any]]], steps: list[Step]) -> None:
        """Jobs still queued or running when the model closes end as cancelled; then free it."""
        at = time.perf_counter_ns()
        steps += [Step(job.id, at, finish="cancel") for job, _ in inbox]
        steps += [Step(job_id, at, finish="cancel") for job_id in self._runs]
        self._runs.clear()
        try:
            self._emit(steps)
        finally:
            self._library.unload()

    def _emit(self, steps: list[Step]) -> None:
        if steps:
            self._on_steps(steps)

    def _error(self, exc: BaseException) -> str:
        return f"{self._library.name}: {str(exc) or type(exc).__name__}"


def _ids(value: Any) -> list[int]:
    """Token ids from a (1, n) tensor (or anything with flatten/tolist, or a list)."""
    if value is None:
        return []
    flat = value.flatten().tolist() if hasattr(value, "flatten") else value
    return [int(token) for token in flat]


def _rows(value: Any) -> list[Any]:
    """The rows of a (1, n, vocab) logits tensor, one per token."""
    if value is None:
        return []
    return [value[0, i] for i in range(value.shape[1])]


def _as_numpy(row: Any) -> Any:
    if hasattr(row, "cpu"):  # a torch tensor: float32 on the host
        row = row.float().cpu()
    return np.asarray(row, dtype=np.float32)
