"""The seam between the worker and an inference engine.

An engine loads weights into a `LoadedModel`; a loaded model runs one
generation per slot, blocking, in a worker thread. Everything asyncio stays in
the worker; engines only see plain callables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from services.protocol import Device, GenerationRequest, Options

DoneReason = Literal["stop", "length", "cancel"]


class EngineError(RuntimeError):
    """An engine could not load or run a model; the message is shown to the client."""


@dataclass(frozen=True)
class LoadSpec:
    path: Path
    num_ctx: int
    slots: int
    flash_attention: bool | None = None
    kv_cache_type: str = ""


@dataclass(frozen=True)
class GenerationStats:
    done_reason: DoneReason
    prompt_eval_count: int
    prompt_eval_duration: int  # ns
    eval_count: int
    eval_duration: int  # ns


class LoadedModel(Protocol):
    size: int
    size_vram: int

    def prompt_for(self, request: GenerationRequest) -> str:
        """The text the model sees: the request rendered through the model's chat template."""
        ...

    def generate(
        self,
        prompt: str,
        options: Options,
        emit: Callable[[str], None],
        cancelled: Callable[[], bool],
    ) -> GenerationStats:
        """Generate on one free slot, calling `emit` with each piece of text; blocks."""
        ...

    def close(self) -> None: ...


class Engine(Protocol):
    name: str

    def devices(self) -> list[Device]: ...

    def load(self, spec: LoadSpec) -> LoadedModel:
        """Load weights (blocking); raise EngineError with a message for the client."""
        ...
