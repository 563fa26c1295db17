"""exllamav3 (1.6, on Ampere or newer) for EXL3 model directories, on CUDA.

One `Generator` per loaded model, `max_batch_size` = the instance's slots, over a `Cache` of
`slots × num_ctx` tokens whose layers are `CacheLayer_fp16`, or `CacheLayer_quant` with 8 or 4
bits for keys and values, by OLLAMA_KV_CACHE_TYPE. The cache is attached before the load, which
allocates it with the layers: on one GPU by name (`Model.load(device="cuda:1")`), on several by
`use_per_device` (GiB each), else by its autosplit. Its attention is paged without flash-attn.
`format` becomes an `LLGuidanceFilter` over the JSON Schema (llguidance is a dependency of
exllamav3). The sampler is a `CustomSampler` of its SS_* steps in llama.cpp's order
(`exl_plan.exl3_steps`). The library is imported only when a model loads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from services.telemetry import log_event
from services.worker.engines.base import InvalidJob, Job, LoadSpec
from services.worker.engines.exl_load import (
    ExlEngine,
    Generator,
    free_vram,
    import_library,
    used_vram,
)
from services.worker.engines.exl_loop import Library
from services.worker.engines.exl_plan import (
    CHUNK,
    cache_choice,
    cache_tokens,
    exl3_placement,
    exl3_steps,
    json_schema,
    sampler_plan,
)
from services.worker.engines.hf_model import HfVocab

log = logging.getLogger("corral.worker")


def _open(
    spec: LoadSpec, directory: Path, vocab: HfVocab, gpus: dict[int, int]
) -> tuple[Library, dict[str, int]]:
    exl = import_library("exllamav3")
    torch = import_library("torch")
    config = exl.Config.from_directory(str(directory))
    model = exl.Model.from_config(config)
    bits = cache_choice(spec.kv_cache_type).bits
    layers: dict[str, Any] = (
        {"layer_type": exl.CacheLayer_fp16}
        if bits is None
        else {"layer_type": exl.CacheLayer_quant, "k_bits": bits, "v_bits": bits}
    )
    slots = max(spec.slots, 1)
    # max_batch_size here is the recurrent-state slots (hybrid models); attention pages are shared.
    tokens = cache_tokens(spec.num_ctx, slots, True)
    cache = exl.Cache(model, max_num_tokens=tokens, max_batch_size=slots, **layers)
    try:
        _, used = used_vram(torch, lambda: model.load(max_chunk_size=CHUNK, **exl3_placement(gpus)))
        tokenizer = exl.Tokenizer.from_config(config)
        generator = exl.Generator(
            model=model, cache=cache, tokenizer=tokenizer, max_batch_size=slots, max_chunk_size=CHUNK
        )
    except BaseException:
        model.unload()
        free_vram(torch)
        raise
    library = _ExLlamaV3(torch, exl, model, cache, tokenizer, generator)
    try:  # builds llguidance's view of the vocabulary (about a second) now, not at the first format
        library.filters("json")
    except InvalidJob as exc:
        log_event(log, "format_unavailable", level=logging.WARNING, engine="exllamav3", error=exc)
    return library, used


class ExLlamaV3Engine(ExlEngine):
    def __init__(self) -> None:
        super().__init__("exllamav3", _open)


class _ExLlamaV3(Generator):
    """The library calls of one loaded model (Library)."""

    name = "exllamav3"

    def __init__(self, torch: Any, exl: Any, model: Any, cache: Any, tokenizer: Any, generator: Any) -> None:
        self._torch, self._exl, self._model, self._cache = torch, exl, model, cache
        self._tokenizer, self._generator = tokenizer, generator

    def filters(self, format: str | dict[str, Any] | None) -> list[Any]:
        """An LLGuidanceFilter for the format's schema, built on the caller's thread so that an
        invalid schema is the client's error (400), before the job is queued."""
        schema = json_schema(format)
        if schema is None:
            return []
        try:
            return [self._exl.LLGuidanceFilter(self._tokenizer, eos_after_completed=True, json_schema=schema)]
        except (ValueError, RuntimeError, TypeError) as exc:  # "Invalid grammar: …"
            raise InvalidJob(f"invalid JSON schema in format: {exc}") from exc

    def start(self, job: Job, max_new_tokens: int, stop_tokens: frozenset[int], filters: list[Any]) -> Any:
        steps, ignored = exl3_steps(sampler_plan(job.sampling))
        if ignored:
            log_event(log, "sampling_ignored", engine=self.name, request=job.id, options=",".join(ignored))
        handle = self._exl.Job(
            input_ids=self._torch.tensor([job.prompt], dtype=self._torch.long),
            max_new_tokens=max_new_tokens,
            sampler=self._exl.CustomSampler([getattr(self._exl, step)(*args) for step, args in steps]),
            seed=sampler_plan(job.sampling).seed,
            stop_conditions=sorted(stop_tokens),  # ids only: stop strings are the worker's
            return_logits=job.sampling.top_logprobs is not None,
            filters=filters or None,
            identifier=job.id,
        )
        self._generator.enqueue(handle)
        return handle

    def unload(self) -> None:
        close = getattr(self._generator, "close", None)  # 1.6: frees its pinned buffers and pools
        if close is not None:
            close()
        self._model.unload()  # attached caches lose their tensors with the modules
        self._generator = self._cache = self._model = self._tokenizer = None
        free_vram(self._torch)
