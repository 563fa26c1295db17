"""`corral serve`'s restart policy: how long a child that exited waits, and when to give up."""

from __future__ import annotations

import pytest

from corral.launcher import Backoff, RestartPolicy

POLICY = RestartPolicy(first_delay=0.5, max_delay=30.0, stable_after=60.0, quick_exit=10.0, give_up_after=5)
CASES = {
    "the first exit waits the first delay": ([20], [0.5]),
    "each exit in a row doubles the wait": ([20, 20, 20, 20], [0.5, 1, 2, 4]),
    "the wait stops growing at the maximum": ([20] * 9, [0.5, 1, 2, 4, 8, 16, 30, 30, 30]),
    "a stable run starts the count afresh": ([20, 20, 20, 60, 20], [0.5, 1, 2, 0.5, 1]),
    "an exit after a long run waits the first delay": ([3600], [0.5]),
    "quick exits in a row give up": ([1, 1, 1, 1, 1], [0.5, 1, 2, 4, None]),
    "one run past quick_exit breaks the quick streak": (
        [1, 1, 1, 1, 15, 1, 1, 1, 1],
        [0.5, 1, 2, 4, 8, 16, 30, 30, 30],
    ),
    "quick exits after a stable run still give up": ([600, 1, 1, 1, 1, 1], [0.5, 1, 2, 4, 8, None]),
    "slow exits never give up": ([30] * 12, [0.5, 1, 2, 4, 8, 16] + [30] * 6),
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("runs", "waits"), CASES.values(), ids=CASES.keys())
def test_backoff(runs: list[float], waits: list[float | None]) -> None:
    """Each run lasts `runs[i]` seconds, then the child exits; `waits[i]` is the answer."""
    clock = Clock()
    backoff = Backoff(POLICY, clock)
    answers = []
    for ran in runs:
        backoff.started()
        clock.now += ran
        wait = backoff.exited()
        answers.append(wait)
        if wait is not None:
            clock.now += wait
    assert answers == waits


def test_giving_up_needs_quick_exits_in_a_row_of_the_policys_length() -> None:
    clock = Clock()
    backoff = Backoff(RestartPolicy(give_up_after=2), clock)
    backoff.started()
    assert backoff.exited() == 0.5
    backoff.started()
    assert backoff.exited() is None
