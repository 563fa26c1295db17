"""Loading a model with an exllama library, the part both engines share: the model's files laid
out as a directory, its vocabulary, the placement's split checked, the library's errors
translated at this one boundary, and the memory the load took.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from services.protocol import Device
from services.worker.engines.base import EngineError, LoadSpec, OnSteps
from services.worker.engines.exl_loop import ExlModel, Library
from services.worker.engines.formats import gpu_only_split
from services.worker.engines.hf_model import HfVocab, link_directory, remove_directory
from services.worker.gpus import cuda_devices

T = TypeVar("T")
# What an adapter does once the files are in place: (spec, model directory, vocabulary, bytes
# per CUDA index from the split; {} for its own choice) -> the loaded library and the bytes
# it took on each device.
Opener = Callable[[LoadSpec, Path, HfVocab, dict[int, int]], tuple[Library, dict[str, int]]]


class ExlEngine:
    """An exllama engine: its name and the library's way of opening a model directory; the CUDA
    devices and the load around the opener are the same for both libraries."""

    def __init__(self, name: str, opener: Opener) -> None:
        self.name = name
        self._opener = opener

    def devices(self) -> list[Device]:
        return cuda_devices()

    def load(self, spec: LoadSpec, on_steps: OnSteps) -> ExlModel:
        return load_model(self.name, spec, on_steps, self._opener)


def import_library(name: str) -> ModuleType:
    """A module of an exllama library, imported only when a model loads: importing exllamav2
    builds its CUDA extension, which fails on a host without the CUDA toolkit. Its objects are
    typed Any here (ModuleType's attributes)."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # ImportError, or OSError from the extension's build (no CUDA_HOME)
        raise EngineError(f"{name} cannot be imported on this worker: {exc}") from exc


def load_model(engine: str, spec: LoadSpec, on_steps: OnSteps, open: Opener) -> ExlModel:
    """Load a multi-file model with `open`; EngineError (from the library's error) when it fails."""
    if not spec.files:
        raise EngineError(f"{engine} loads a model directory, and this model is one {spec.format} file")
    gpus = gpu_only_split(engine, spec.split)
    directory = link_directory(spec.files)
    try:
        vocab = HfVocab(spec.files)
        library, used = open(spec, directory, vocab, gpus)
    except EngineError:
        remove_directory(directory)
        raise
    except Exception as exc:  # the libraries raise AssertionError, ValueError, RuntimeError, CUDA OOM
        remove_directory(directory)
        raise EngineError(f"{engine} failed to load the model: {str(exc) or type(exc).__name__}") from exc
    planned = {f"cuda:{index}": size for index, size in gpus.items()}
    return ExlModel(library, vocab, directory, on_steps, num_ctx=spec.num_ctx, placement=planned or used)


def used_vram(torch: Any, work: Callable[[], T]) -> tuple[T, dict[str, int]]:
    """Run `work` (a load) and measure the device memory it took on each CUDA device, from the
    driver's free memory (torch.cuda.mem_get_info), as `ollama ps` should report it."""
    count = int(torch.cuda.device_count())
    before = [int(torch.cuda.mem_get_info(i)[0]) for i in range(count)]
    result = work()
    after = [int(torch.cuda.mem_get_info(i)[0]) for i in range(count)]
    used = {f"cuda:{i}": b - a for i, (b, a) in enumerate(zip(before, after, strict=True)) if b > a}
    return result, used


def free_vram(torch: Any) -> None:
    """Give the memory of dropped tensors back to the driver (exllamav2 #347: unload, drop every
    reference, collect, empty torch's cache)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Generator:
    """What exllamav2's ExLlamaV2DynamicGenerator and exllamav3's Generator share: the same calls
    under the same names, for the adapters (which set `_generator`)."""

    _generator: Any

    def iterate(self) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = self._generator.iterate()
        return results

    def cancel(self, handle: Any) -> None:
        self._generator.cancel(handle)

    def remaining(self) -> int:
        return int(self._generator.num_remaining_jobs())

    def reset(self) -> None:
        self._generator.clear_queue()
