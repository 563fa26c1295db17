"""exllamav2 (0.3.2, the last release; archived upstream) for EXL2 model directories, on CUDA.

One `ExLlamaV2DynamicGenerator` per loaded model, `max_batch_size` = the instance's slots, over
a cache of `slots × num_ctx` tokens (ExLlamaV2Cache, _Q8 or _Q4 by OLLAMA_KV_CACHE_TYPE). The
weights go where placement's split says (`model.load(gpu_split=[GiB per CUDA index])`, the
cache created after it) or, with no split, where `model.load_autosplit(lazy cache)` puts them.
Paged attention needs flash-attn 2.5.7 or newer (`exllamav2.attn.has_flash_attn_with_paged`);
without it the generator runs unpaged, one job at a time, as TabbyAPI's compatibility mode does.
`format` is refused: exllamav2 has no JSON filter of its own (its filters are prefix and select;
JSON needs formatron or lm-format-enforcer). The library is imported only when a model loads.
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
    exl2_gpu_split,
    exl2_settings,
    kv_cache_bytes,
    sampler_plan,
)
from services.worker.engines.hf_model import HfVocab

log = logging.getLogger("corral.worker")
CACHE_CLASSES = {None: "ExLlamaV2Cache", 8: "ExLlamaV2Cache_Q8", 4: "ExLlamaV2Cache_Q4"}


def _open(
    spec: LoadSpec, directory: Path, vocab: HfVocab, gpus: dict[int, int]
) -> tuple[Library, dict[str, int]]:
    exl = import_library("exllamav2")
    generator_module = import_library("exllamav2.generator")
    attn = import_library("exllamav2.attn")
    torch = import_library("torch")
    config = exl.ExLlamaV2Config(str(directory))
    config.arch_compat_overrides()  # drops flash-attn where the architecture needs what it lacks
    config.max_seq_len = spec.num_ctx  # per sequence; set before the model is built
    config.max_input_len, config.max_attention_size = CHUNK, CHUNK**2
    if spec.flash_attention is False:
        config.no_flash_attn = True
    paged = bool(attn.has_flash_attn_with_paged) and not config.no_flash_attn
    tokens = cache_tokens(spec.num_ctx, spec.slots, paged)
    cache_class = getattr(exl, CACHE_CLASSES[cache_choice(spec.kv_cache_type).bits])
    cache_bytes = kv_cache_bytes(
        config.num_hidden_layers, config.num_key_value_heads, config.head_dim, tokens, spec.kv_cache_type
    )
    split = exl2_gpu_split(gpus, cache_bytes)
    model = exl.ExLlamaV2(config)

    def load() -> Any:
        if split is None:
            lazy = cache_class(model, max_seq_len=tokens, lazy=True)
            model.load_autosplit(lazy, last_id_only=True)
            return lazy
        model.load(gpu_split=split)
        return cache_class(model, max_seq_len=tokens)  # on the devices of the attention layers

    try:
        cache, used = used_vram(torch, load)
        generator = generator_module.ExLlamaV2DynamicGenerator(
            model,
            cache,
            exl.ExLlamaV2Tokenizer(config),
            max_batch_size=max(spec.slots, 1) if paged else 1,
            max_seq_len=spec.num_ctx,
            max_chunk_size=CHUNK,
            paged=paged,
        )
    except BaseException:
        model.unload()
        free_vram(torch)
        raise
    if not paged:
        log_event(log, "unpaged_generator", level=logging.WARNING, engine="exllamav2", slots=spec.slots)
    return _ExLlamaV2(torch, generator_module, model, generator), used


class ExLlamaV2Engine(ExlEngine):
    def __init__(self) -> None:
        super().__init__("exllamav2", _open)


class _ExLlamaV2(Generator):
    """The library calls of one loaded model (Library)."""

    name = "exllamav2"

    def __init__(self, torch: Any, module: Any, model: Any, generator: Any) -> None:
        self._torch, self._module, self._model, self._generator = torch, module, model, generator

    def filters(self, format: str | dict[str, Any] | None) -> list[Any]:
        if format is not None:
            raise InvalidJob("format is not supported by the exllamav2 engine")
        return []

    def start(self, job: Job, max_new_tokens: int, stop_tokens: frozenset[int], filters: list[Any]) -> Any:
        plan = sampler_plan(job.sampling)
        handle = self._module.ExLlamaV2DynamicJob(
            input_ids=self._torch.tensor([job.prompt], dtype=self._torch.long),
            max_new_tokens=max_new_tokens,
            gen_settings=self._module.ExLlamaV2Sampler.Settings(**exl2_settings(plan)),
            seed=plan.seed,
            stop_conditions=sorted(stop_tokens),  # ids only: stop strings are the worker's
            return_logits=job.sampling.top_logprobs is not None,
            identifier=job.id,
        )
        self._generator.enqueue(handle)
        return handle

    def unload(self) -> None:
        for pool in ("sampling_pool", "filter_pool"):
            executor = getattr(self._generator, pool, None)
            if executor is not None:
                executor.shutdown(wait=False)
        self._model.unload()  # frees every module's weights; the cache has no unload of its own
        self._generator = self._model = None
        free_vram(self._torch)
