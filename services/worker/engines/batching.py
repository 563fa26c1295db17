"""Pure decisions of a batching engine: which sequence a job takes, how much of each sequence
goes into one decode, what a context shift discards, and logprob arithmetic.

Nothing here touches an inference library, so all of it is tested directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from services.worker.engines.base import TokenLogprob

# A prompt token evaluated as the only token of its sequence in a ubatch goes through another
# attention kernel than one evaluated with others: without flash attention this changes the
# logits in the last bits (measured on llama.cpp's CPU build), and with them a seeded answer.
# So a prompt is never fed one token at a time unless it is one token long; generated tokens
# always are, so they agree with each other whatever else runs.
MIN_PROMPT_CHUNK = 2


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def reusable_prefix(cached: Sequence[int], prompt: Sequence[int]) -> int:
    """Tokens of `cached` a job with `prompt` can keep. The last MIN_PROMPT_CHUNK prompt tokens
    are always evaluated again: sampling needs logits that only a decode produces (and see above)."""
    return max(0, min(common_prefix_len(cached, prompt), len(prompt) - MIN_PROMPT_CHUNK))


def pick_sequence(free: Sequence[tuple[int, Sequence[int]]], prompt: Sequence[int]) -> tuple[int, int]:
    """Among free sequences (id, cached tokens), the one that reuses most of `prompt`.

    Ties go to the sequence holding the fewest cached tokens, so that longer caches, which
    other prompts may still want, survive. Returns (sequence id, tokens reused).
    """
    if not free:
        raise ValueError("no free sequence")
    best = max(free, key=lambda f: (reusable_prefix(f[1], prompt), -len(f[1])))
    return best[0], reusable_prefix(best[1], prompt)


def plan_chunks(pending: Sequence[int], budget: int) -> list[int]:
    """How many pending tokens of each sequence go into one decode of at most `budget` tokens.

    `pending` is in admission order. Sequences with one pending token (those generating) come
    first, so a long prefill never stalls their decoding; the rest of the budget goes to
    prefills in order, a prompt chunk at a time. A prefill chunk is never a single token, nor
    leaves a single token behind (MIN_PROMPT_CHUNK), so chunking cannot change a result.
    """
    plan = [0] * len(pending)
    left = budget
    for i, n in enumerate(pending):
        if n == 1 and left > 0:
            plan[i] = 1
            left -= 1
    for i, n in enumerate(pending):
        if n > 1:
            chunk = min(n, left)
            if 0 < n - chunk < MIN_PROMPT_CHUNK:
                chunk = n - MIN_PROMPT_CHUNK
            if chunk >= MIN_PROMPT_CHUNK:
                plan[i] = chunk
                left -= chunk
    return plan


def shift_discard(n_past: int, num_keep: int) -> int:
    """Tokens a context shift drops after the first `num_keep`: half of the rest (llama.cpp,
    Ollama's runners)."""
    keep = max(0, min(num_keep, n_past))
    return max((n_past - keep) // 2, 1)


def truncated_prompt(tokens: Sequence[int], num_ctx: int, num_keep: int) -> list[int]:
    """A prompt too long for the context, as Ollama cuts it: keep the first `num_keep` tokens
    and the most recent ones, leaving about half of the rest free for the answer."""
    if len(tokens) <= num_ctx - 1:
        return list(tokens)
    keep = max(0, min(num_keep, num_ctx - 1))
    limit = num_ctx - max((num_ctx - keep) // 2, 1)
    discard = len(tokens) - limit
    return [*tokens[:keep], *tokens[keep + discard :]]


def token_logprob(logits: npt.NDArray[np.float32], token: int, top_n: int) -> TokenLogprob:
    """log-softmax of the raw logits (before any sampler): the chosen token's and the `top_n` best."""
    x = logits.astype(np.float64)  # log-sum-exp over ~50k entries loses nothing in float64
    peak = float(x.max())
    log_z = peak + float(np.log(np.exp(x - peak).sum()))
    top: tuple[tuple[int, float], ...] = ()
    if top_n > 0:
        k = min(top_n, x.shape[0])
        best = np.argpartition(-x, k - 1)[:k]
        best = best[np.argsort(-x[best], kind="stable")]
        top = tuple((int(i), float(x[i]) - log_z) for i in best)
    return TokenLogprob(token=token, logprob=float(x[token]) - log_z, top=top)
