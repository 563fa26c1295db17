"""Which engine runs which model format on this worker, and the engine that routes loads by it.

A GGUF model runs on llama.cpp; an EXL2 directory on exllamav2 (which also loads GPTQ and FP16
checkpoints); an EXL3 directory on exllamav3. `offer` decides, from CORRAL_ENGINE, what is
installed and whether the host has a CUDA device, which engines this worker runs and, for the
others, why not; a load of a format whose engine is not offered is refused with that reason
("this worker cannot run exl2 models: exllamav2 is not installed"). The worker's heartbeat says
which formats it runs (`formats_run`), and the scheduler places a model only on a worker that runs
its format, so that refusal is a last guard (a load from an older scheduler).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any, Protocol

from services.protocol import Device
from services.protocol.messages import MODEL_FORMATS, ModelFormat
from services.worker.engines.base import Engine, EngineError, LoadedModel, LoadSpec, OnSteps

FORMAT_ENGINE: dict[str, str] = {"gguf": "llamacpp", "exl2": "exllamav2", "exl3": "exllamav3"}
GPU_ONLY = frozenset({"exllamav2", "exllamav3"})  # CUDA only: no CPU fallback in either library
MODULES = {"llamacpp": "llama_cpp", "exllamav2": "exllamav2", "exllamav3": "exllamav3"}  # import names


def offer(setting: str, installed: Mapping[str, bool], has_cuda: bool) -> dict[str, str | None]:
    """Every real engine: None when this worker runs it, else why it does not.

    `setting` is CORRAL_ENGINE: "auto" runs every engine that can run here; an engine's name runs
    that one alone (start-up fails when it cannot run: `unusable`)."""
    reasons: dict[str, str | None] = {}
    for engine in FORMAT_ENGINE.values():
        if setting not in ("auto", engine):
            reasons[engine] = f"CORRAL_ENGINE={setting}"
        elif not installed.get(engine, False):
            reasons[engine] = f"{engine} is not installed"
        elif engine in GPU_ONLY and not has_cuda:
            reasons[engine] = "it has no CUDA device"
        else:
            reasons[engine] = None
    return reasons


def unusable(setting: str, offered: Mapping[str, str | None]) -> str | None:
    """Why CORRAL_ENGINE=`setting` cannot start here (None: it can)."""
    if setting == "auto":
        return None if any(reason is None for reason in offered.values()) else "no engine can run here"
    reason = offered.get(setting)
    return None if reason is None else f"CORRAL_ENGINE={setting}: {reason}"


def formats_run(offered: Mapping[str, str | None]) -> tuple[ModelFormat, ...]:
    """The model formats whose engine this worker runs, as its heartbeat reports them."""
    return tuple(f for f in MODEL_FORMATS if offered.get(FORMAT_ENGINE[f], "not offered") is None)


def engine_for(format: str, offered: Mapping[str, str | None]) -> str:
    """The engine that runs `format` here; EngineError with the reason when none does."""
    engine = FORMAT_ENGINE.get(format)
    if engine is None:
        raise EngineError(f"unknown model format {format!r}")
    reason = offered.get(engine, f"{engine} is not part of this build")
    if reason is not None:
        raise EngineError(f"this worker cannot run {format} models: {reason}")
    return engine


class ServingEngine(Engine, Protocol):
    """The engine a worker serves with, and the model formats it runs (its heartbeat says)."""

    formats: tuple[ModelFormat, ...]


def installed_engines() -> dict[str, bool]:
    """Whether each engine's library is installed, found without importing it (importing
    exllamav2 builds its CUDA extension, and fails on a host without the CUDA toolkit)."""
    return {engine: importlib.util.find_spec(module) is not None for engine, module in MODULES.items()}


class FormatEngines:
    """Engine for a worker that runs several: each load goes to the engine of its model's format."""

    def __init__(self, engines: Mapping[str, Engine], offered: Mapping[str, str | None]) -> None:
        self._engines = dict(engines)
        self._offered = dict(offered)
        self.name = "+".join(self._engines)
        self.formats = formats_run(offered)

    def devices(self) -> list[Device]:
        """Every engine's devices, each once (the first engine's view of a shared one)."""
        merged: dict[str, Device] = {}
        for engine in self._engines.values():
            for device in engine.devices():
                merged.setdefault(device.id, device)
        return list(merged.values())

    def load(self, spec: LoadSpec, on_steps: OnSteps) -> LoadedModel:
        return self._engines[engine_for(spec.format, self._offered)].load(spec, on_steps)


def gpu_only_split(engine: str, split: Mapping[str, int]) -> dict[int, int]:
    """Bytes per CUDA index of a placement's split for a GPU-only engine; {} when the split is
    empty (the engine's own choice). EngineError when the split puts part of the model in
    system memory, which neither exllama library can use."""
    in_ram = sum(size for device, size in split.items() if not device.startswith("cuda:"))
    if in_ram:
        raise EngineError(
            f"{engine} runs models on GPUs only, and placement put {in_ram / 2**30:.1f} GiB of this "
            "one in system memory (not enough free GPU memory on this worker)"
        )
    return {int(device.removeprefix("cuda:")): size for device, size in split.items() if size > 0}


def describe_offer(offered: Mapping[str, str | None]) -> dict[str, Any]:
    """The offer as a start-up log line's fields: engine=runs or engine=why not."""
    return {engine: reason or "runs" for engine, reason in offered.items()}
