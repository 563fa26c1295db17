"""exllamav2 and exllamav3 on CUDA: a model directory loaded, four jobs generated at once, one of
them cancelled, the model unloaded and the GPU's memory back. Needs the library (the `gpu`
extra, as in the worker's GPU image) and a CUDA device; skipped, with the reason, everywhere else.

EXL2: the test makes its own model from the bundled GGUF (tests/gpu.py: transformers, then
exllamav2's converter), kept in pytest's cache, unless CORRAL_TEST_EXL2_MODEL names a model
directory to load instead. EXL3: CORRAL_TEST_EXL3_MODEL must name one (exllamav3's
`python -m exllamav3.conversion.convert_model` makes one; the README says how).

    .venv/bin/pytest -m gpu -rs tests/integration/test_gpu_exl.py
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
from tests.gpu import cached_exl2, exl2_build_missing, free_on_gpu0, warm_up
from tests.watch import DEADLINE

ENGINES = {"exl2": ("exllamav2", "CORRAL_TEST_EXL2_MODEL"), "exl3": ("exllamav3", "CORRAL_TEST_EXL3_MODEL")}


def missing(format: str) -> str | None:
    library, variable = ENGINES[format]
    if importlib.util.find_spec(library) is None:
        return f"{library} is not installed (the worker's GPU image installs it: the `gpu` extra)"
    if not cuda_devices():
        return "no CUDA device (NVML finds none)"
    directory = os.environ.get(variable)
    if directory and not (Path(directory) / "config.json").is_file():
        return f"{variable}={directory} has no config.json"
    if directory:
        return None
    if format == "exl2":
        return exl2_build_missing()
    return f"{variable} is not set: it names a local {format.upper()} model directory to load"


def params() -> list[object]:
    return [
        pytest.param(
            fmt, marks=pytest.mark.skipif(missing(fmt) is not None, reason=missing(fmt) or ""), id=fmt
        )
        for fmt in ENGINES
    ]


pytestmark = pytest.mark.gpu


@pytest.fixture(scope="session")
def exl2_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CORRAL_TEST_EXL2_MODEL, else the bundled GGUF converted to EXL2 and kept in pytest's cache
    (`-p no:cacheprovider`: in this session's temporary directory)."""
    named = os.environ.get("CORRAL_TEST_EXL2_MODEL")
    if named:
        return Path(named)
    cache = getattr(request.config, "cache", None)
    return cached_exl2(cache.mkdir("corral-exl2") if cache is not None else tmp_path_factory.mktemp("exl2"))


@pytest.fixture(scope="session")
def exl3_model() -> Path:
    return Path(os.environ["CORRAL_TEST_EXL3_MODEL"])


@pytest.mark.parametrize("format", params())
def test_four_jobs_run_on_a_gpu_one_is_cancelled_and_the_memory_comes_back(
    format: str, request: pytest.FixtureRequest
) -> None:
    directory: Path = request.getfixturevalue(f"{format}_model")
    files = {path.name: path.resolve() for path in directory.iterdir() if path.is_file()}
    engine: Engine = ExLlamaV2Engine() if format == "exl2" else ExLlamaV3Engine()
    weights = sum(path.stat().st_size for name, path in files.items() if name.endswith(".safetensors"))
    spec = LoadSpec(path=files["config.json"], num_ctx=1024, slots=4, split={}, format=format, files=files)
    warm_up(engine, spec)
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
    # What the process keeps for itself (exllamav2 #347) it took in the warm-up: the weights' and
    # the cache's memory come back.
    assert free_on_gpu0() > before - weights // 4
