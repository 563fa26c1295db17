"""How many threads the CPU engine uses, from readings of the machine's load."""

from __future__ import annotations

import pytest

from services.worker.engines.threads import CpuTimes, ThreadGovernor, choose_threads, others_busy


@pytest.mark.parametrize(
    ("cores", "busy", "current", "threads"),
    [
        (2, 0.0, 2, 2),
        (2, 1.0, 2, 1),  # another process holds a core: step aside
        (2, 0.45, 1, 1),  # between the marks: keep what we have (no flapping)
        (2, 0.45, 2, 2),
        (2, 0.1, 1, 2),  # quiet again: take every core
        (1, 1.0, 1, 1),
        (8, 3.0, 8, 7),
    ],
    ids=["quiet", "busy", "hold-low", "hold-high", "recover", "one-core", "eight-cores"],
)
def test_choose_threads(cores: int, busy: float, current: int, threads: int) -> None:
    assert choose_threads(cores, busy, current) == threads


def test_others_busy_leaves_out_this_process() -> None:
    before = CpuTimes(machine_busy=1000, machine_total=4000, own=300)
    # 200 ticks of wall time on 2 cores: 400 ticks; 300 busy, 100 of them ours.
    after = CpuTimes(machine_busy=1300, machine_total=4400, own=400)
    assert others_busy(before, after, cores=2) == pytest.approx(1.0)


def test_governor_rereads_at_its_interval() -> None:
    readings = iter(
        [
            CpuTimes(0, 0, 0),
            CpuTimes(200, 200, 0),  # the other core fully busy
            CpuTimes(200, 400, 0),  # then idle
        ]
    )
    governor = ThreadGovernor(cores=2, read=lambda: next(readings), interval=1.0)
    assert governor.update(now=0.5) == 2  # too soon to read again
    assert governor.update(now=1.0) == 1
    assert governor.update(now=1.5) == 1
    assert governor.update(now=2.0) == 2


def test_governor_without_proc_keeps_every_core() -> None:
    governor = ThreadGovernor(cores=4, read=lambda: None, interval=0.0)
    assert governor.update(now=10.0) == 4
