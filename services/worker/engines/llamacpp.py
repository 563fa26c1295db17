"""llama.cpp (llama-cpp-python's low-level API) for GGUF models, with continuous batching.

On a CPU build every model sits in system memory. A CUDA build (the worker's GPU image)
offloads by the scheduler's split (`offload.py`) and reports the host's CUDA devices
(`gpus.py`); a split that names a GPU on a build without GPU support is refused.

One thread decodes for every model this process holds. The ggml CPU backend keeps
an OpenMP thread team per thread that calls llama_decode, and two such threads on
the same cores slowed the engine from about 125 to 60-95 tok/s (measured on 2
cores), so models share one loop rather than owning one each. The module is
imported only when the worker uses this engine.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import llama_cpp as L

from services.protocol import Device
from services.worker.devices import cpu_device
from services.worker.engines.base import EngineError, LoadSpec, OnSteps
from services.worker.engines.llamacpp_model import LlamaCppModel
from services.worker.engines.offload import Offload, offload_for
from services.worker.engines.threads import ThreadGovernor
from services.worker.gpus import cuda_devices

T = TypeVar("T")
_KV_TYPES = {"": None, "f16": L.GGML_TYPE_F16, "q8_0": L.GGML_TYPE_Q8_0, "q4_0": L.GGML_TYPE_Q4_0}
_FLASH = {
    None: L.LLAMA_FLASH_ATTN_TYPE_AUTO,
    True: L.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    False: L.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}
N_BATCH = 512  # tokens per decode: prompt chunks plus one token per generating sequence

logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's own load chatter


class EngineLoop:
    """The one thread that steps every model and runs their other llama.cpp work (embeddings)."""

    def __init__(self, governor: ThreadGovernor) -> None:
        self.lock = threading.Condition()  # guards every model's inbox, and the lists below
        self._governor = governor
        self._models: list[LlamaCppModel] = []
        self._tasks: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None

    def add(self, model: LlamaCppModel) -> None:
        with self.lock:
            self._models.append(model)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="llamacpp-loop", daemon=True)
                self._thread.start()

    def call(self, work: Callable[[], T]) -> T:
        """Run `work` on the loop thread between steps and return its result (blocking)."""
        if threading.current_thread() is self._thread:
            return work()
        future: Future[T] = Future()

        def task() -> None:
            try:
                future.set_result(work())
            except BaseException as exc:
                future.set_exception(exc)

        with self.lock:
            self._tasks.append(task)
            self.lock.notify()
        return future.result()

    def remove(self, model: LlamaCppModel) -> None:
        """Stop stepping `model`: it reports its jobs cancelled and is no longer touched."""

        def drop() -> None:
            model.shut_down()
            with self.lock:
                self._models.remove(model)

        self.call(drop)

    def _run(self) -> None:
        while True:
            with self.lock:
                while not (self._tasks or any(m.has_work() for m in self._models)):
                    self.lock.wait()
                tasks, self._tasks = self._tasks, []
                models = [m for m in self._models if m.has_work()]
            for task in tasks:
                task()
            threads = self._governor.update(time.monotonic())
            for model in models:
                model.step(threads)


class LlamaCppEngine:
    name = "llamacpp"

    def __init__(self, governor: ThreadGovernor | None = None) -> None:
        governor = governor or ThreadGovernor()
        self._loop = EngineLoop(governor)
        self._threads = governor.cores

    def devices(self) -> list[Device]:
        return [cpu_device(), *(cuda_devices() if L.llama_supports_gpu_offload() else [])]

    def load(self, spec: LoadSpec, on_steps: OnSteps) -> LlamaCppModel:
        if not spec.path.is_file():
            raise EngineError(f"model file {spec.path.name} is missing from the store")
        offload = offload_for(spec.split, spec.layers)
        if offload.uses_gpu and not L.llama_supports_gpu_offload():
            raise EngineError("this worker's llama.cpp is built without GPU support: it cannot offload")
        L.llama_backend_init()
        params = L.llama_model_default_params()
        keep = _apply(offload, params)  # the tensor split must outlive the load call
        model = L.llama_model_load_from_file(str(spec.path).encode(), params)
        del keep
        if not model:
            raise EngineError(f"llama.cpp failed to load model {spec.path.name}")
        context = L.llama_init_from_model(model, self._context_params(spec))
        if not context:
            L.llama_model_free(model)
            raise EngineError("llama.cpp could not create a context for the model")
        if L.llama_n_ctx_seq(context) < spec.num_ctx:
            L.llama_free(context)
            L.llama_model_free(model)
            raise EngineError(f"llama.cpp gave each sequence fewer than {spec.num_ctx} tokens")
        size = sum(spec.split.values()) or os.path.getsize(spec.path)  # the estimate, when placed
        placement = dict(spec.split) if offload.uses_gpu else {"cpu": size}
        loaded = LlamaCppModel(
            model, context, self._loop, on_steps, num_ctx=spec.num_ctx, placement=placement
        )
        self._loop.add(loaded)
        return loaded

    def _context_params(self, spec: LoadSpec) -> Any:
        params = L.llama_context_default_params()
        # Without a unified cache each sequence owns n_ctx / n_seq_max cells, as each of
        # Ollama's parallel slots owns num_ctx tokens; llama.cpp pads them to 256.
        params.n_ctx = spec.num_ctx * spec.slots
        params.n_seq_max = spec.slots
        params.kv_unified = False
        params.n_batch = params.n_ubatch = max(N_BATCH, spec.slots + 2)
        # A step with several sequences is a multi-token batch, run with n_threads_batch.
        params.n_threads = params.n_threads_batch = self._threads
        params.flash_attn_type = _FLASH[spec.flash_attention]
        kv_type = _KV_TYPES[spec.kv_cache_type]
        if kv_type is not None:  # a quantized cache needs flash attention (settings check it)
            params.type_k = params.type_v = kv_type
        params.no_perf = True
        return params


def _apply(offload: Offload, params: Any) -> Any:
    """Set llama.cpp's model parameters for `offload`; returns what must stay alive meanwhile."""
    params.n_gpu_layers = offload.n_gpu_layers
    params.split_mode = L.LLAMA_SPLIT_MODE_NONE if offload.split_mode == "none" else L.LLAMA_SPLIT_MODE_LAYER
    params.main_gpu = offload.main_gpu
    if not offload.tensor_split:
        return None
    shares = (ctypes.c_float * L.LLAMA_MAX_DEVICES)(*offload.tensor_split[: L.LLAMA_MAX_DEVICES])
    params.tensor_split = shares
    return shares
