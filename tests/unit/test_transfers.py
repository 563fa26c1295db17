"""The pure parts of pulling: how a blob is split into parts, retry pauses, progress throttling."""

from __future__ import annotations

import itertools

import pytest

from services.protocol import Progress
from services.registry.download import MAX_PAUSE, MIN_PART, Part, pause, plan_parts
from services.registry.transfers import THROTTLE, _Reporter

MB = 1024 * 1024


@pytest.mark.parametrize(
    ("total", "sizes"),
    [
        (0, []),
        (10, [10]),  # a small blob is one part
        (MIN_PART, [MIN_PART]),
        (MIN_PART + 1, [MIN_PART, 1]),
        (100 * MB, [32 * MB, 32 * MB, 32 * MB, 4 * MB]),
        (8 * 100 * MB, [100 * MB] * 8),  # large: MAX_PARTS even parts
        (8 * 100 * MB + 7, [100 * MB] * 8 + [7]),
    ],
)
def test_plan_parts_covers_the_blob_once(total: int, sizes: list[int]) -> None:
    parts = plan_parts(total)
    assert [p.size for p in parts] == sizes
    assert all(a.stop == b.start for a, b in itertools.pairwise(parts))
    assert (parts[0].start if parts else 0) == 0 and (parts[-1].stop if parts else 0) == total
    assert all(p.done == 0 for p in parts)


def test_parts_are_capped_at_the_largest_size() -> None:
    assert {p.size for p in plan_parts(40 * 1024 * MB)} == {1024 * MB}
    assert Part(5, 9, 2).size == 4


def test_pauses_grow_and_stay_capped() -> None:
    assert 0.25 <= pause(0) <= 0.75
    assert 2.0 <= pause(3) <= 6.0
    assert all(pause(n) <= MAX_PAUSE * 1.5 for n in range(20))


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_byte_counts_are_throttled_but_first_last_and_statuses_pass() -> None:
    clock = Clock()
    reporter = _Reporter(clock)

    def layer(done: int) -> Progress:
        return Progress(status="pulling abc", digest="sha256:abc", total=100, completed=done)

    for step in (Progress(status="pulling manifest"), layer(0), layer(10), layer(20)):
        reporter(step)
    clock.now += 2 * THROTTLE
    for step in (layer(30), layer(40), layer(100), Progress(status="writing manifest")):
        reporter(step)
    sent = [reporter.queue.get_nowait() for _ in range(reporter.queue.qsize())]
    assert [(p.status, p.completed) for p in sent] == [
        ("pulling manifest", None),
        ("pulling abc", 0),
        ("pulling abc", 10),
        ("pulling abc", 30),
        ("pulling abc", 100),
        ("writing manifest", None),
    ]
