"""The batching engine's pure decisions: sequence choice, decode planning, shifts, truncation, logprobs."""

from __future__ import annotations

import numpy as np
import pytest

from services.worker.engines.batching import (
    pick_sequence,
    plan_chunks,
    reusable_prefix,
    shift_discard,
    token_logprob,
    truncated_prompt,
)


@pytest.mark.parametrize(
    ("cached", "prompt", "reused"),
    [
        ([1, 2, 3], [1, 2, 3], 1),  # the last two prompt tokens are always evaluated again
        ([1, 2, 3, 9], [1, 2, 3, 4, 5], 3),
        ([], [1, 2, 3], 0),
        ([7, 8], [1, 2], 0),
        ([1], [1], 0),
    ],
    ids=["same-prompt", "diverges", "empty-cache", "nothing-shared", "one-token"],
)
def test_reusable_prefix(cached: list[int], prompt: list[int], reused: int) -> None:
    assert reusable_prefix(cached, prompt) == reused


@pytest.mark.parametrize(
    ("free", "prompt", "choice"),
    [
        ([(0, [7]), (1, [1, 2, 3]), (2, [])], [1, 2, 3, 4], (1, 2)),
        ([(0, [1, 2, 3, 4, 5]), (1, [])], [9, 9, 9], (1, 0)),  # a tie keeps the longer cache
        ([(3, [])], [1, 2], (3, 0)),
    ],
    ids=["longest-prefix", "tie-spares-long-cache", "only-one"],
)
def test_pick_sequence(free: list[tuple[int, list[int]]], prompt: list[int], choice: tuple[int, int]) -> None:
    assert pick_sequence(free, prompt) == choice


@pytest.mark.parametrize(
    ("pending", "budget", "plan"),
    [
        ([1, 600, 1, 40], 512, [1, 510, 1, 0]),  # decoding sequences first, then prefills in order
        ([60], 59, [58]),  # never leaves a single prompt token behind
        ([1, 1, 1], 2, [1, 1, 0]),
        ([5, 5], 8, [5, 3]),
        ([3], 2, [0]),  # a chunk of 2 would leave 1 behind, and 1 alone is not allowed
    ],
    ids=["decode-first", "no-lonely-tail", "budget-for-decodes", "second-prefill-cut", "too-small"],
)
def test_plan_chunks(pending: list[int], budget: int, plan: list[int]) -> None:
    assert plan_chunks(pending, budget) == plan


@pytest.mark.parametrize(
    ("n_past", "keep", "discard"), [(2048, 4, 1022), (10, 4, 3), (4, 4, 1), (100, 0, 50)], ids=str
)
def test_shift_discards_half_of_what_follows_num_keep(n_past: int, keep: int, discard: int) -> None:
    assert shift_discard(n_past, keep) == discard


def test_truncation_keeps_the_start_and_the_end() -> None:
    tokens = list(range(100))
    cut = truncated_prompt(tokens, num_ctx=40, num_keep=4)
    assert cut[:4] == [0, 1, 2, 3] and cut[-1] == 99
    assert len(cut) == 40 - (40 - 4) // 2  # about half the context stays free for the answer
    assert truncated_prompt(tokens[:39], num_ctx=40, num_keep=4) == tokens[:39]


def test_logprobs_are_a_log_softmax_of_the_raw_logits() -> None:
    logits = np.array([0.0, 1.0, 2.0], dtype=np.float32)
    log_z = float(np.log(np.exp([0.0, 1.0, 2.0]).sum()))
    lp = token_logprob(logits, 1, 2)
    assert lp.logprob == pytest.approx(1 - log_z)
    assert [t for t, _ in lp.top] == [2, 1] and lp.top[0][1] == pytest.approx(2 - log_z)
    assert token_logprob(logits, 0, 0).top == ()
