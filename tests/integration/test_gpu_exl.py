"""exllamav2 and exllamav3 on CUDA: a model directory loaded, four jobs generated at once, one of
them cancelled, the model unloaded and the GPU's memory back. Needs the library (the worker's GPU
image), a CUDA device and a model: CORRAL_TEST_EXL2_MODEL / CORRAL_TEST_EXL3_MODEL name a local
directory of an EXL2 / EXL3 model (config.json, tokenizer.json, *.safetensors). Skipped, with the
reason, everywhere else.

    CORRAL_TEST_EXL2_MODEL=/models/SmolLM2-135M-exl2 .venv/bin/pytest -m gpu tests/integration/test_gpu_exl.py
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import pytest

from services.protocol import DEFAULT_OPTIONS
from services.worker.engines.base import Engine, Job, LoadSpec, Step
from services.worker.engines.exllamav2 import ExLlamaV2Engine
from services.worker.engines.exllamav3 import ExLlamaV3Engine
from services.worker.generation import sampling_for
from services.worker.gpus import cuda_devices
from tests.watch import DEADLINE

ENGINES = {"exl2": ("exllamav2", "CORRAL_TEST_EXL2_MODEL"), "exl3": ("exllamav3", "CORRAL_TEST_EXL3_MODEL")}


def missing(format: str) -> str | None:
    library, variable = ENGINES[format]
    if importlib.util.find_spec(library) is None:
        return f"{library} is not installed (the worker's GPU image installs it: the `gpu` extra)"
    if not cuda_devices():
        return "no CUDA device (NVML finds none)"
    directory = os.environ.get(variable)
    if not directory:
        return f"{variable} is not set: it names a local {format.upper()} model directory to load"
    if not (Path(directory) / "config.json").is_file():
        return f"{variable}={directory} has no config.json"
    return None


def params() -> list[object]:
    return [
        pytest.param(
            fmt, marks=pytest.mark.skipif(missing(fmt) is not None, reason=missing(fmt) or ""), id=fmt
        )
        for fmt in ENGINES
    ]


pytestmark = pytest.mark.gpu


def free_on_gpu0() -> int:
    return next(d.free_memory for d in cuda_devices() if d.id == "cuda:0")


@pytest.mark.parametrize("format", params())
def test_four_jobs_run_on_a_gpu_one_is_cancelled_and_the_memory_comes_back(format: str) -> None:
    directory = Path(os.environ[ENGINES[format][1]])
    files = {path.name: path.resolve() for path in directory.iterdir() if path.is_file()}
    engine: Engine = ExLlamaV2Engine() if format == "exl2" else ExLlamaV3Engine()
    weights = sum(path.stat().st_size for name, path in files.items() if name.endswith(".safetensors"))
    before = free_on_gpu0()
    lock, finished = threading.Lock(), {f"job{i}": threading.Event() for i in range(4)}
    steps: list[Step] = []
    generating = threading.Event()  # the job to cancel has made a token: it runs in the batch

    def on_steps(batch: list[Step]) -> None:
        with lock:
            steps.extend(batch)
        for step in batch:
            if step.job_id == "job3" and step.tokens:
                generating.set()
            if step.finish:
                finished[step.job_id].set()

    spec = LoadSpec(path=files["config.json"], num_ctx=1024, slots=4, split={}, format=format, files=files)
    loaded = engine.load(spec, on_steps)
    try:
        assert loaded.size_vram > 0 and set(loaded.placement) <= {d.id for d in cuda_devices()}
        assert before - free_on_gpu0() > weights // 2  # the weights went there
        prompt = loaded.tokenize("1, 2, 3, 4,", add_special=True)
        sampling = sampling_for(DEFAULT_OPTIONS, None, None)
        for job_id in finished:
            limit = 10_000 if job_id == "job3" else 24
            loaded.submit(Job(job_id, prompt, sampling, max_tokens=limit))
        assert generating.wait(DEADLINE)
        loaded.cancel("job3")
        for job_id in finished:
            assert finished[job_id].wait(DEADLINE), job_id
        with lock:
            made = {job_id: sum(len(s.tokens) for s in steps if s.job_id == job_id) for job_id in finished}
            ends = {s.job_id: s.finish for s in steps if s.finish}
        assert ends["job3"] == "cancel"
        for job_id in ("job0", "job1", "job2"):
            assert ends[job_id] in ("stop", "length") and made[job_id] <= 24, (job_id, made, ends)
        assert made["job0"] + made["job1"] + made["job2"] > 0
        text = b"".join(loaded.token_bytes(t) for s in steps if s.job_id != "job3" for t in s.tokens)
        assert text.decode("utf-8", errors="replace").strip()
    finally:
        loaded.close()
    # torch and the CUDA context keep some memory for the process (exllamav2 #347): the weights'
    # and the cache's come back.
    assert free_on_gpu0() > before - weights // 4
