"""How many threads a CPU engine computes with: every core while the rest of the machine is
quiet, one fewer while other processes keep a core busy.

llama.cpp's threads meet at a barrier after every layer, so a thread whose core is
also running another busy process stalls all of them. Measured on 2 cores: 125 tok/s
with 2 threads and 91 with 1 on an idle machine, but with the other core busy 2
threads fell to 6-25 tok/s while 1 thread kept 75. The services beside the engine
(NATS, gateway, the worker's own loop) work in short bursts and do not count as a
busy core; a compile, a second engine or a test run does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BUSY = 0.6  # cores of other processes' work that make the engine step aside
QUIET = 0.3  # ... and below which it takes every core again (a gap, so it does not flap)


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative CPU time, in clock ticks: the whole machine's busy time and this process's."""

    machine_busy: int
    machine_total: int  # busy + idle, summed over every core
    own: int


def choose_threads(cores: int, others_busy: float, current: int) -> int:
    """Threads for the next interval, given how many cores' worth other processes used."""
    if cores <= 1:
        return 1
    if others_busy >= BUSY:
        return cores - 1
    if others_busy < QUIET:
        return cores
    return current


def others_busy(before: CpuTimes, after: CpuTimes, cores: int) -> float:
    """Cores' worth of CPU that processes other than this one used between two readings."""
    elapsed = (after.machine_total - before.machine_total) / max(cores, 1)
    if elapsed <= 0:
        return 0.0
    busy = (after.machine_busy - before.machine_busy) - (after.own - before.own)
    return max(0.0, busy / elapsed)


def read_cpu_times() -> CpuTimes | None:
    """From /proc (Linux); None where it is missing, and then the engine keeps every core."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = [int(v) for v in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return CpuTimes(machine_busy=sum(ticks) - idle, machine_total=sum(ticks), own=int(own[11]) + int(own[12]))


class ThreadGovernor:
    """Re-reads the machine's load every `interval` seconds of the engine's clock."""

    def __init__(
        self,
        cores: int | None = None,
        read: Callable[[], CpuTimes | None] = read_cpu_times,
        interval: float = 0.5,
        fixed: int | None = None,
    ) -> None:
        """`fixed`: always that many threads (CORRAL_ENGINE_THREADS), whatever the load."""
        self.cores = fixed or cores or os.cpu_count() or 1
        self.threads = self.cores
        self._read = read if fixed is None else lambda: None
        self._interval = interval
        self._last = read()
        self._last_at = 0.0

    def update(self, now: float) -> int:
        """The thread count to use from `now` on (cheap to call every step)."""
        if now - self._last_at < self._interval:
            return self.threads
        self._last_at = now
        reading = self._read()
        if reading is not None and self._last is not None:
            busy = others_busy(self._last, reading, self.cores)
            self.threads = choose_threads(self.cores, busy, self.threads)
        self._last = reading
        return self.threads
