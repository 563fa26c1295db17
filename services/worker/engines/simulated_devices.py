"""The simulated engine's devices (CORRAL_SIM_DEVICES): "cpu" and "cuda:0", "cuda:1", … in the
order written, each with its declared size; free memory is the size less what loaded models
hold. For scheduler tests and benchmarks only.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from services.protocol import Device


def lay_out(need: int, free: Mapping[str, int]) -> dict[str, int] | None:
    """Bytes of a load on each device: the GPU with the most free memory first (the first written
    among equals), then the next GPUs, then the CPU; None when all together lack room."""
    gpus = sorted((d for d in free if d != "cpu"), key=lambda d: -free[d])
    parts: dict[str, int] = {}
    left = need
    for device in [*gpus, *(d for d in free if d == "cpu")]:
        take = min(left, free[device])
        if take > 0:
            parts[device] = take
            left -= take
    return parts if left == 0 else None


class SimulatedDevices:
    """The declared devices and the bytes loaded models hold on them (loads and closes come from
    several threads)."""

    def __init__(self, declared: Sequence[tuple[str, int]]) -> None:
        self._lock = threading.Lock()
        self._kinds: dict[str, str] = {}
        self._total: dict[str, int] = {}
        self._used: dict[str, int] = {}
        gpus = 0
        for kind, size in declared:
            device_id = "cpu" if kind == "cpu" else f"cuda:{gpus}"
            gpus += kind != "cpu"
            self._kinds[device_id], self._total[device_id], self._used[device_id] = kind, size, 0

    def report(self) -> list[Device]:
        with self._lock:
            return [
                Device(
                    id=d,
                    kind="cpu" if kind == "cpu" else "cuda",
                    free_memory=self._total[d] - self._used[d],
                    total_memory=self._total[d],
                )
                for d, kind in self._kinds.items()
            ]

    def take(self, need: int) -> dict[str, int] | None:
        """Hold `need` bytes (see `lay_out`); None, holding nothing, when they do not fit."""
        with self._lock:
            parts = lay_out(need, {d: self._total[d] - self._used[d] for d in self._total})
            for device, size in (parts or {}).items():
                self._used[device] += size
            return parts

    def take_as_planned(self, parts: Mapping[str, int]) -> str | None:
        """Hold `parts` (bytes per device) as a placement planned them; None when held, else why
        not (holding nothing)."""
        with self._lock:
            for device, size in parts.items():
                if device not in self._total:
                    return f"there is no device {device}"
                if self._total[device] - self._used[device] < size:
                    return f"{device} has {self._total[device] - self._used[device]} bytes free, not {size}"
            for device, size in parts.items():
                self._used[device] += size
            return None

    def give_back(self, parts: Mapping[str, int]) -> None:
        with self._lock:
            for device, size in parts.items():
                self._used[device] -= size
