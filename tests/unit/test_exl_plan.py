"""The exllama engines' pure rules: Ollama's options as each library's sampler, the cache type and
size, a job's budget, and a placement's split in each library's unit. No library is imported."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from services.protocol import DEFAULT_OPTIONS, Options
from services.worker.engines.base import InvalidJob, Sampling
from services.worker.engines.exl_plan import (
    GIB,
    WHOLE_RANGE_V3,
    cache_choice,
    cache_tokens,
    exl2_gpu_split,
    exl2_settings,
    exl3_placement,
    exl3_steps,
    json_schema,
    kv_cache_bytes,
    library_max_new_tokens,
    sampler_plan,
    token_budget,
)
from services.worker.generation import sampling_for

DEFAULTS = sampling_for(DEFAULT_OPTIONS, None, None)  # Ollama's defaults, as the worker fills them


def sampling(**options: Any) -> Sampling:
    return sampling_for(DEFAULT_OPTIONS.merged(Options(**options)), None, None)


# (options set by the request, exllamav2 Settings fields that must follow)
EXL2 = [
    pytest.param(
        {},
        {
            "temperature": 0.8,
            "temperature_last": True,
            "top_k": 40,
            "top_p": 0.9,
            "min_p": 0.0,
            "typical": 0.0,
            "token_repetition_penalty": DEFAULT_OPTIONS.repeat_penalty,
            "token_repetition_range": 64,
            "token_repetition_decay": 0,
            "token_frequency_penalty": 0.0,
            "token_presence_penalty": 0.0,
        },
        id="ollama-defaults-override-the-librarys",
    ),
    pytest.param(
        {"temperature": 0},
        {"temperature": 1.0, "top_k": 1, "top_p": 0.0, "min_p": 0.0, "typical": 0.0},
        id="temperature-0-is-greedy",
    ),
    pytest.param({"typical_p": 0.7}, {"typical": 0.7}, id="typical-p-below-1-applies"),
    pytest.param({"typical_p": 1.0}, {"typical": 0.0}, id="typical-p-1-is-off"),
    pytest.param({"top_p": 1.5, "min_p": -1}, {"top_p": 1.0, "min_p": 0.0}, id="out-of-range-clamped"),
    pytest.param({"repeat_last_n": -1}, {"token_repetition_range": -1}, id="repeat-last-n-minus-1-whole"),
    pytest.param({"repeat_last_n": 0}, {"token_repetition_range": 0}, id="repeat-last-n-0-none"),
    pytest.param(
        {"repeat_penalty": 1.1, "presence_penalty": 0.5, "frequency_penalty": 0.25},
        {"token_repetition_penalty": 1.1, "token_presence_penalty": 0.5, "token_frequency_penalty": 0.25},
        id="penalties",
    ),
    pytest.param({"top_k": 0}, {"top_k": 0}, id="top-k-0-off"),
]


@pytest.mark.parametrize(("options", "expected"), EXL2)
def test_exllamav2_sampler_settings(options: dict[str, Any], expected: dict[str, Any]) -> None:
    settings = exl2_settings(sampler_plan(sampling(**options)))
    assert {key: settings[key] for key in expected} == expected


def test_every_exllamav2_default_that_differs_from_ollamas_is_set() -> None:
    """ExLlamaV2Sampler.Settings' own: top_k 50, top_p 0.8, token_repetition_penalty 1.025."""
    assert {"top_k", "top_p", "token_repetition_penalty", "temperature"} <= set(
        exl2_settings(sampler_plan(DEFAULTS))
    )


# (options, exllamav3 CustomSampler steps, options it ignores)
EXL3 = [
    pytest.param(
        {},
        [
            ("SS_RepP", (DEFAULT_OPTIONS.repeat_penalty, 64, 0)),
            ("SS_PresFreqP", (0.0, 0.0, 64, 0)),
            ("SS_TopK", (40,)),
            ("SS_TopP", (0.9,)),
            ("SS_MinP", (0.0,)),
            ("SS_Temperature", (0.8,)),
            ("SS_Sample", ()),
        ],
        [],
        id="ollama-defaults-in-llamacpp-order",
    ),
    pytest.param(
        {"temperature": 0, "repeat_penalty": 1.2, "repeat_last_n": -1},
        [
            ("SS_RepP", (1.2, WHOLE_RANGE_V3, 0)),
            ("SS_PresFreqP", (0.0, 0.0, WHOLE_RANGE_V3, 0)),
            ("SS_Argmax", ()),
        ],
        [],
        id="greedy-keeps-the-penalties",
    ),
]


@pytest.mark.parametrize(("options", "steps", "ignored"), EXL3)
def test_exllamav3_sampler_steps(options: dict[str, Any], steps: list[Any], ignored: list[str]) -> None:
    assert exl3_steps(sampler_plan(sampling(**options))) == (steps, ignored)


def test_exllamav3_has_no_typical_sampling_and_says_so() -> None:
    assert exl3_steps(sampler_plan(sampling(typical_p=0.5)))[1] == ["typical_p"]


@pytest.mark.parametrize(
    ("seed", "expected"),
    [
        pytest.param(-1, None, id="negative-is-random"),
        pytest.param(42, 42, id="kept"),
        pytest.param(2**40 + 7, 7, id="32-bit"),
    ],
)
def test_seed(seed: int, expected: int | None) -> None:
    assert sampler_plan(replace(DEFAULTS, seed=seed)).seed == expected


@pytest.mark.parametrize(
    ("kv_cache_type", "bits", "v2_class"),
    [
        pytest.param("", None, "ExLlamaV2Cache", id="unset-is-f16"),
        pytest.param("f16", None, "ExLlamaV2Cache", id="f16"),
        pytest.param("q8_0", 8, "ExLlamaV2Cache_Q8", id="q8_0"),
        pytest.param("q4_0", 4, "ExLlamaV2Cache_Q4", id="q4_0"),
    ],
)
def test_cache_type_choice(kv_cache_type: str, bits: int | None, v2_class: str) -> None:
    from services.worker.engines.exllamav2 import CACHE_CLASSES

    assert cache_choice(kv_cache_type).bits == bits
    assert CACHE_CLASSES[bits] == v2_class


def test_an_unknown_cache_type_is_refused() -> None:
    with pytest.raises(ValueError, match="q5_1"):
        cache_choice("q5_1")


@pytest.mark.parametrize(
    ("num_ctx", "slots", "paged", "tokens"),
    [
        pytest.param(2048, 1, True, 2304, id="a-page-of-slack-for-the-extra-token"),
        pytest.param(2048, 4, True, 4 * 2304, id="every-slot-a-whole-num-ctx"),
        pytest.param(300, 2, True, 2 * 512, id="rounded-to-pages"),
        pytest.param(2048, 4, False, 2304, id="unpaged-one-job-at-a-time"),
    ],
)
def test_cache_tokens(num_ctx: int, slots: int, paged: bool, tokens: int) -> None:
    assert cache_tokens(num_ctx, slots, paged) == tokens
    assert tokens % 256 == 0


def test_kv_cache_bytes_follow_the_per_token_formula() -> None:
    """Llama-3-8B: 32 layers, 8 KV heads of 128: 128 KiB a token in FP16, 36 KiB in Q4."""
    assert kv_cache_bytes(32, 8, 128, 1, "f16") == 128 * 1024
    assert kv_cache_bytes(32, 8, 128, 1, "q4_0") == 36 * 1024


@pytest.mark.parametrize(
    ("max_tokens", "num_ctx", "prompt", "budget"),
    [
        pytest.param(16, 2048, 10, 16, id="its-limit"),
        pytest.param(20480, 2048, 48, 2000, id="cut-where-the-context-fills"),
        pytest.param(16, 100, 100, 0, id="no-room"),
    ],
)
def test_token_budget(max_tokens: int, num_ctx: int, prompt: int, budget: int) -> None:
    assert token_budget(max_tokens, num_ctx, prompt) == budget
    assert library_max_new_tokens(budget) == budget + 1


@pytest.mark.parametrize(
    ("gpus", "cache", "split"),
    [
        pytest.param({}, 0, None, id="no-split-autosplit"),
        pytest.param({0: 6 * GIB}, GIB, [6.0], id="one-gpu-gets-its-whole-share"),
        pytest.param({1: 4 * GIB}, GIB, [0.0, 4.0], id="one-gpu-by-its-index"),
        pytest.param(
            {0: 6 * GIB, 1: 2 * GIB}, 2 * GIB, [4.5, 1.5], id="several-give-up-their-share-of-the-cache"
        ),
        pytest.param({0: 3 * GIB, 2: 3 * GIB}, 0, [3.0, 0.0, 3.0], id="an-unused-gpu-is-0"),
    ],
)
def test_split_as_exllamav2_gpu_split_in_gib(
    gpus: dict[int, int], cache: int, split: list[float] | None
) -> None:
    assert exl2_gpu_split(gpus, cache) == split


@pytest.mark.parametrize(
    ("gpus", "arguments"),
    [
        pytest.param({}, {}, id="no-split-autosplit"),
        pytest.param({1: 4 * GIB}, {"device": "cuda:1"}, id="one-gpu-by-name"),
        pytest.param(
            {0: 6 * GIB, 2: 3 * GIB}, {"use_per_device": [6.0, 0.0, 3.0]}, id="several-use-per-device"
        ),
    ],
)
def test_split_as_exllamav3_load_arguments(gpus: dict[int, int], arguments: dict[str, Any]) -> None:
    assert exl3_placement(gpus) == arguments


@pytest.mark.parametrize(
    ("format", "schema"),
    [
        pytest.param(None, None, id="none"),
        pytest.param("json", {"type": "object"}, id="json-is-an-object"),
        pytest.param({"type": "array"}, {"type": "array"}, id="a-schema"),
    ],
)
def test_format_as_a_json_schema(format: Any, schema: Any) -> None:
    assert json_schema(format) == schema


def test_another_format_string_is_the_clients_error() -> None:
    with pytest.raises(InvalidJob, match="invalid format"):
        json_schema("yaml")
