"""llama.cpp on CUDA: the bundled model loaded by a split that puts it on a GPU, run, and unloaded
with the GPU's memory back. Needs a CUDA build of llama-cpp-python (the worker's GPU image) and
a CUDA device; skipped, with the reason, everywhere else."""

from __future__ import annotations

import os
import threading

import llama_cpp as L
import pytest

from services.protocol import DEFAULT_OPTIONS
from services.registry.bundled import bundled_gguf
from services.worker.engines.base import Job, LoadSpec, Step
from services.worker.engines.llamacpp import LlamaCppEngine
from services.worker.generation import sampling_for
from services.worker.gpus import cuda_devices
from tests.gpu import free_on_gpu0
from tests.watch import DEADLINE

LAYERS = 30  # the bundled SmolLM2-135M's block count


def missing_cuda() -> str | None:
    if not L.llama_supports_gpu_offload():
        return "llama-cpp-python here is built without GPU offload (the GPU image builds it with CUDA)"
    if not cuda_devices():
        return "no CUDA device (NVML finds none)"
    return None


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(missing_cuda() is not None, reason=missing_cuda() or "")]


def test_the_bundled_model_runs_on_a_gpu_reports_it_and_gives_the_memory_back() -> None:
    engine = LlamaCppEngine()
    before = free_on_gpu0()
    need = 3 * os.path.getsize(bundled_gguf())  # weights, cache and graph, generously
    finished = threading.Event()
    steps: list[Step] = []

    def on_steps(batch: list[Step]) -> None:
        steps.extend(batch)
        if any(step.finish for step in batch):
            finished.set()

    spec = LoadSpec(path=bundled_gguf(), num_ctx=2048, slots=2, split={"cuda:0": need}, layers=LAYERS)
    loaded = engine.load(spec, on_steps)
    try:
        assert (loaded.size, loaded.size_vram, loaded.placement) == (need, need, {"cuda:0": need})
        assert before - free_on_gpu0() > os.path.getsize(bundled_gguf()) // 2  # the weights went there
        prompt = loaded.tokenize("1, 2, 3,", add_special=True)
        loaded.submit(Job("gpu", prompt, sampling_for(DEFAULT_OPTIONS, None, None), max_tokens=16))
        assert finished.wait(DEADLINE)
        assert sum(len(step.tokens) for step in steps) == 16
    finally:
        loaded.close()
    assert free_on_gpu0() > before - os.path.getsize(bundled_gguf()) // 4  # given back
