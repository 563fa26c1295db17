"""Pure decisions of the exllama engines: Ollama's options as each library's sampler, the KV cache
type, the cache's size, a job's token budget and a placement's split in each library's unit.

Nothing here imports a library, so every rule is tested directly; the adapters (exllamav2.py,
exllamav3.py) only turn these values into library objects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.worker.engines.base import InvalidJob, Sampling

GIB = 1024**3  # exllamav2's gpu_split and exllamav3's use_per_device are in units of 1024**3 bytes
PAGE = 256  # both libraries' cache page: a cache's size is a multiple of it
CHUNK = 2048  # prompt tokens per prefill step (both libraries' default max_input_len/max_chunk_size)
WHOLE_RANGE_V3 = int(10e7)  # exllamav3's own default sustain_range for penalties: the whole sequence


@dataclass(frozen=True)
class CacheChoice:
    """OLLAMA_KV_CACHE_TYPE for an exllama cache: None bits is FP16."""

    bits: int | None
    bytes_per_element: float  # for the memory a split leaves to weights


# f16 → ExLlamaV2Cache / CacheLayer_fp16; q8_0 → ExLlamaV2Cache_Q8 / CacheLayer_quant(8, 8);
# q4_0 → ExLlamaV2Cache_Q4 / CacheLayer_quant(4, 4). exllamav2's Q caches keep a scale per 32
# elements (8.5 and 4.5 bits an element, its tensor_p.py constants).
CACHE_TYPES = {
    "": CacheChoice(None, 2.0),
    "f16": CacheChoice(None, 2.0),
    "q8_0": CacheChoice(8, 8.5 / 8),
    "q4_0": CacheChoice(4, 4.5 / 8),
}


def cache_choice(kv_cache_type: str) -> CacheChoice:
    try:
        return CACHE_TYPES[kv_cache_type]
    except KeyError:
        raise ValueError(f"unknown KV cache type {kv_cache_type!r}") from None


def cache_tokens(num_ctx: int, slots: int, paged: bool) -> int:
    """Tokens the generator's cache holds. Each slot gets a whole num_ctx (Ollama's rule), plus
    the one token of slack a job's max_new_tokens carries (`token_budget`), in whole pages: a job
    reserves ceil((prompt + max_new_tokens) / 256) pages when it starts. Unpaged, a job takes the
    whole cache and jobs run one at a time, so one slot's worth is enough."""
    per_slot = math.ceil((num_ctx + 1) / PAGE) * PAGE
    return per_slot * (max(slots, 1) if paged else 1)


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, tokens: int, kv_cache_type: str) -> int:
    """K and V for every layer and cached token (the reference's formula, exllamav2 #383)."""
    per_element = cache_choice(kv_cache_type).bytes_per_element
    return int(2 * layers * kv_heads * head_dim * tokens * per_element)


def token_budget(max_tokens: int, num_ctx: int, prompt_len: int) -> int:
    """New tokens a job may make: its limit, cut where its sequence fills num_ctx (neither
    library shifts a full context, so a job ends there with "length")."""
    return max(0, min(max_tokens, num_ctx - prompt_len))


def library_max_new_tokens(budget: int) -> int:
    """max_new_tokens for the library's job: one more than the budget, so the engine's own count
    ends the job at exactly `budget` whichever way the library counts (exllamav3 1.4's Job kept
    max_new_tokens - 1, 1.6 counts it exactly)."""
    return budget + 1


def json_schema(format: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON Schema a `format` constrains to: "json" is any JSON object (as llama.cpp's JSON
    grammar, which the GGUF engine uses, is)."""
    if format is None:
        return None
    if format == "json":
        return {"type": "object"}
    if isinstance(format, dict):
        return format
    raise InvalidJob(f'invalid format: {json.dumps(format)}; expected "json" or a valid JSON Schema object')


# ---- a placement's split


def exl2_gpu_split(gpus: Mapping[int, int], cache_bytes: int) -> list[float] | None:
    """exllamav2's `model.load(gpu_split=...)`: GiB per CUDA index for weights and fixed buffers.

    The split's bytes include the KV cache, gpu_split does not (the cache goes where the attention
    layers went), so on several GPUs each gives up its share of the cache. On one GPU everything
    goes there anyway, so it gets its whole share (a tighter figure could only fail the load).
    None for an empty split: load_autosplit decides."""
    if not gpus:
        return None
    total = sum(gpus.values())
    split = [0.0] * (max(gpus) + 1)
    for index, size in gpus.items():
        room = size if len(gpus) == 1 else size - cache_bytes * size / total
        split[index] = max(room, 0) / GIB
    return split


def exl3_placement(gpus: Mapping[int, int]) -> dict[str, Any]:
    """exllamav3's `Model.load(...)` arguments: one GPU by name (`device="cuda:1"`), several by
    `use_per_device` (GiB per CUDA index, 0 leaves one out; the cache, attached before the load,
    is allocated within it); {} for an empty split (its autosplit with the default reserve)."""
    if not gpus:
        return {}
    if len(gpus) == 1:
        return {"device": f"cuda:{next(iter(gpus))}"}
    use = [0.0] * (max(gpus) + 1)
    for index, size in gpus.items():
        use[index] = size / GIB
    return {"use_per_device": use}


# ---- sampling


@dataclass(frozen=True)
class SamplerPlan:
    """Ollama's sampling options, normalised: what both libraries' samplers are built from.

    Penalties look back `penalty_range` tokens (prompt included, as llama.cpp's penalties do for
    Ollama; -1 the whole sequence, 0 none); truncation happens on untempered probabilities and the
    temperature last, in llama.cpp's order (top_k, top_p, min_p, temperature); greedy when the
    temperature is 0."""

    greedy: bool
    temperature: float
    top_k: int  # 0: off
    top_p: float  # 1: off
    min_p: float  # 0: off
    typical_p: float  # 1: off
    repeat_penalty: float  # 1: off
    presence_penalty: float
    frequency_penalty: float
    penalty_range: int
    seed: int | None  # None: random


def sampler_plan(s: Sampling) -> SamplerPlan:
    return SamplerPlan(
        greedy=s.temperature <= 0,
        temperature=s.temperature,
        top_k=max(s.top_k, 0),
        top_p=min(max(s.top_p, 0.0), 1.0),
        min_p=min(max(s.min_p, 0.0), 1.0),
        typical_p=min(max(s.typical_p, 0.0), 1.0),
        repeat_penalty=s.repeat_penalty,
        presence_penalty=s.presence_penalty,
        frequency_penalty=s.frequency_penalty,
        penalty_range=-1 if s.repeat_last_n < 0 else s.repeat_last_n,
        seed=None if s.seed < 0 else s.seed & 0xFFFFFFFF,
    )


def exl2_settings(plan: SamplerPlan) -> dict[str, Any]:
    """Keyword arguments of exllamav2's `ExLlamaV2Sampler.Settings`, every one whose library
    default differs from Ollama's written out (its defaults are top_k 50, top_p 0.8 and a 1.025
    repetition penalty). `temperature_last` applies the temperature after truncation, as
    llama.cpp does; its sampler stops at top_k=1 (greedy), skips top_p and min_p outside (0, 1)
    and typical at 0 (ext_sampling.cpp)."""
    settings: dict[str, Any] = {
        "token_repetition_penalty": plan.repeat_penalty,
        "token_repetition_range": plan.penalty_range,  # -1: the whole sequence, as exllamav2 counts
        "token_repetition_decay": 0,
        "token_frequency_penalty": plan.frequency_penalty,
        "token_presence_penalty": plan.presence_penalty,
        "temperature": plan.temperature,
        "temperature_last": True,
        "top_k": plan.top_k,
        "top_p": plan.top_p,
        "min_p": plan.min_p,
        "typical": 0.0 if plan.typical_p >= 1 else plan.typical_p,
    }
    if plan.greedy:  # as Settings.greedy(): its sampler divides by a last temperature of 0 otherwise
        settings.update(temperature=1.0, top_k=1, top_p=0.0, min_p=0.0, typical=0.0)
    return settings


def exl3_steps(plan: SamplerPlan) -> tuple[list[tuple[str, tuple[Any, ...]]], list[str]]:
    """exllamav3's `CustomSampler` stack as (step class name, arguments), and the options it cannot
    honour (it has no typical sampling; such an option is ignored, as Ollama's own engine ignores
    the options its sampler lacks). Steps left at their neutral value become no-ops in the library
    (their `alt()`), and with min_p off the stack matches its fused kernel's pattern."""
    rng = WHOLE_RANGE_V3 if plan.penalty_range < 0 else plan.penalty_range
    steps: list[tuple[str, tuple[Any, ...]]] = [
        ("SS_RepP", (plan.repeat_penalty, rng, 0)),
        ("SS_PresFreqP", (plan.presence_penalty, plan.frequency_penalty, rng, 0)),
    ]
    if plan.greedy:
        steps.append(("SS_Argmax", ()))
    else:
        steps += [
            ("SS_TopK", (plan.top_k,)),
            ("SS_TopP", (plan.top_p,)),
            ("SS_MinP", (plan.min_p,)),
            ("SS_Temperature", (plan.temperature,)),
            ("SS_Sample", ()),
        ]
    ignored = ["typical_p"] if plan.typical_p < 1 and not plan.greedy else []
    return steps, ignored
