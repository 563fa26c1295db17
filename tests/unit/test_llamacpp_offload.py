"""A split that names a GPU, on this machine's CPU build of llama.cpp: refused with a clear error,
never a silent load in system memory."""

from __future__ import annotations

import llama_cpp as L
import pytest

from services.registry.bundled import bundled_gguf
from services.worker.engines.base import EngineError, LoadSpec
from services.worker.engines.llamacpp import LlamaCppEngine


@pytest.mark.skipif(L.llama_supports_gpu_offload(), reason="this llama.cpp build can offload to a GPU")
def test_a_gpu_split_is_refused_by_a_cpu_build() -> None:
    spec = LoadSpec(path=bundled_gguf(), num_ctx=512, slots=1, split={"cuda:0": 10**9}, layers=30)
    with pytest.raises(EngineError, match="built without GPU support"):
        LlamaCppEngine().load(spec, lambda steps: None)


@pytest.mark.skipif(L.llama_supports_gpu_offload(), reason="this llama.cpp build can offload to a GPU")
def test_a_cpu_build_reports_only_the_cpu() -> None:
    assert [device.id for device in LlamaCppEngine().devices()] == ["cpu"]
