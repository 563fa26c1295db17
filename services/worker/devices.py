"""What a worker host offers: CPU memory always, CUDA GPUs when NVML reports any."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from services.protocol import Device


def cpu_device() -> Device:
    total, available = _meminfo()
    return Device(
        id="cpu",
        kind="cpu",
        name=platform.processor() or platform.machine(),
        total_memory=total,
        free_memory=available,
    )


def cuda_devices() -> list[Device]:
    """GPUs as NVML sees them; empty without the `gpu` extra or without a driver."""
    try:
        import pynvml  # provided by nvidia-ml-py, in the `gpu` extra
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    devices = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        name = pynvml.nvmlDeviceGetName(handle)
        devices.append(
            Device(
                id=f"cuda:{index}",
                kind="cuda",
                name=name.decode() if isinstance(name, bytes) else name,
                total_memory=int(memory.total),
                free_memory=int(memory.free),
            )
        )
    return devices


def _meminfo() -> tuple[int, int]:
    """(MemTotal, MemAvailable) in bytes; sysconf where /proc is missing."""
    try:
        fields = dict(
            line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines()
        )
        return (
            int(fields["MemTotal"].split()[0]) * 1024,
            int(fields["MemAvailable"].split()[0]) * 1024,
        )
    except (OSError, KeyError, ValueError):
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return total, total
