"""What a worker host offers: its CPU memory (CUDA devices come with the GPU engine)."""

from __future__ import annotations

import os
from pathlib import Path

from services.protocol import Device


def cpu_device() -> Device:
    return Device(id="cpu", kind="cpu", free_memory=_available_memory(), total_memory=_physical_memory())


def _physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _available_memory() -> int:
    """MemAvailable in bytes; all physical memory where /proc is missing."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return _physical_memory()
