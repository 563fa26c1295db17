"""The CUDA devices of a worker host, through NVML (the `pynvml` module of nvidia-ml-py, in the
`gpu` extra): name, total and free memory. A host without the library or a driver has none."""

from __future__ import annotations

import logging
from typing import Any

from services.protocol import Device

log = logging.getLogger("corral.worker")


def cuda_devices() -> list[Device]:
    """Every CUDA device as "cuda:<index>", or [] when NVML is missing or finds none."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # pynvml.NVMLError: no driver
        return []
    try:
        return [
            _device(index, pynvml.nvmlDeviceGetHandleByIndex(index))
            for index in range(pynvml.nvmlDeviceGetCount())
        ]
    finally:
        pynvml.nvmlShutdown()


def _device(index: int, handle: Any) -> Device:
    import pynvml

    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    name = pynvml.nvmlDeviceGetName(handle)
    return Device(
        id=f"cuda:{index}",
        kind="cuda",
        name=name.decode() if isinstance(name, bytes) else str(name),
        free_memory=int(memory.free),
        total_memory=int(memory.total),
    )
