"""The seam between the worker and an inference engine: jobs in, per-step token ids out.

An engine runs one loop, on its own thread, over every job of every model it
holds: each step admits waiting jobs into free sequences, advances every running
sequence by one token and reports what each produced. The worker owns
everything textual (prompt rendering, stop strings, detokenization, thinking and
tool-call parsing) and the timing statistics, once for all engines; an engine
sees token ids only. `submit` and `cancel` are thread-safe and never wait for
generation, so the worker's event loop stays free for heartbeats and commands.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from services.protocol import Device

FinishReason = Literal["stop", "length", "cancel"]  # stop: an end-of-generation token was sampled


class EngineError(RuntimeError):
    """An engine could not load or run a model; the message is shown to the client."""


class InvalidJob(ValueError):
    """A job the engine refuses before it starts (a format it cannot constrain to, say)."""


@dataclass(frozen=True)
class LoadSpec:
    path: Path  # GGUF: the weights file; a multi-file model: its config.json (all of it in `files`)
    num_ctx: int  # tokens per sequence
    slots: int  # sequences decoded together
    flash_attention: bool | None = None  # None: the engine decides
    kv_cache_type: str = ""  # "", "f16", "q8_0", "q4_0"
    split: Mapping[str, int] = field(default_factory=dict)  # bytes planned per device; {}: engine's choice
    layers: int | None = None  # the model's block count, when known (a partial offload needs it)
    format: str = "gguf"  # the protocol's ModelFormat: which engine can load it
    # A multi-file model's files, by their names in the model's directory: blob paths the worker
    # resolved inside OLLAMA_MODELS (an engine builds no store path itself).
    files: Mapping[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Sampling:
    """How a job picks its next token; the worker fills every field from Ollama's options."""

    temperature: float
    top_k: int
    top_p: float
    min_p: float
    typical_p: float
    repeat_penalty: float
    repeat_last_n: int  # -1: the whole context
    presence_penalty: float
    frequency_penalty: float
    seed: int  # negative: random
    format: str | dict[str, Any] | None = None  # "json" or a JSON Schema the output must follow
    top_logprobs: int | None = None  # None: no logprobs; n: the chosen token's and the n best


@dataclass(frozen=True)
class Job:
    id: str
    prompt: list[int]  # token ids, already within num_ctx
    sampling: Sampling
    max_tokens: int  # finish "length" after this many new tokens
    num_keep: int = 4  # tokens at the start a context shift never discards
    shift: bool = True  # on a full context: discard half of the rest and go on (False: "length")


@dataclass(frozen=True)
class TokenLogprob:
    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Step:
    """What one engine step produced for one job."""

    job_id: str
    at_ns: int  # time.perf_counter_ns() when the step finished
    tokens: tuple[int, ...] = ()  # new tokens; never the end-of-generation token
    logprobs: tuple[TokenLogprob, ...] = ()
    finish: FinishReason | None = None
    prompt_cached: int | None = None  # on a job's first step: prompt tokens reused from the cache
    error: str | None = None  # the job failed (finish is then "stop")


OnSteps = Callable[[list[Step]], None]  # called on the engine's thread after every step


class LoadedModel(Protocol):
    size: int  # bytes resident in RAM
    size_vram: int  # bytes resident on GPUs
    placement: dict[str, int]  # bytes on each device ("cpu", "cuda:0", …)
    n_ctx: int  # tokens per sequence
    metadata: dict[str, str]  # the model file's key/values (GGUF), e.g. tokenizer.chat_template

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        """Token ids of `text`; special tokens written in it (<|im_start|>) are parsed as such."""
        ...

    def token_bytes(self, token: int) -> bytes:
        """The bytes a token stands for in output (special tokens: none)."""
        ...

    def special_text(self, token: int) -> str:
        """A token as written, special tokens included (`<|im_end|>`), for templates."""
        ...

    def submit(self, job: Job) -> None:
        """Queue `job` (raise InvalidJob if it can never run); its steps go to the load's on_steps."""
        ...

    def cancel(self, job_id: str) -> None:
        """End a queued or running job; it reports finish "cancel"."""
        ...

    def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        """One pooled, unnormalised embedding per token list (blocking: call it off the event loop)."""
        ...

    def close(self) -> None: ...


class Engine(Protocol):
    name: str

    def devices(self) -> list[Device]: ...

    def load(self, spec: LoadSpec, on_steps: OnSteps) -> LoadedModel:
        """Load weights (blocking); raise EngineError with a message for the client."""
        ...
