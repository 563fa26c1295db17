"""How llama.cpp offloads a model by the scheduler's split (bytes per device): a pure rule.

All of it on GPUs: every layer offloaded. Partly on the CPU: the share of the model's
layers (its blocks and the output layer, as Ollama counts them) that the GPU bytes pay for,
rounded down. One GPU: split mode "none" with that GPU as the main one; several: layers
split across them in proportion to their bytes (llama.cpp's tensor_split, by CUDA index).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

ALL_LAYERS = 0x7FFFFFFF  # llama.cpp's "offload everything"
CUDA = "cuda:"


@dataclass(frozen=True)
class Offload:
    n_gpu_layers: int  # 0: none; ALL_LAYERS: every one
    split_mode: Literal["none", "layer"] = "none"
    main_gpu: int = 0
    tensor_split: tuple[float, ...] = ()  # a share per CUDA index (empty: no split)

    @property
    def uses_gpu(self) -> bool:
        return self.n_gpu_layers > 0


CPU_ONLY = Offload(0)


def offload_for(split: Mapping[str, int], layers: int | None) -> Offload:
    """The offload for a split over "cpu" and "cuda:<index>" devices; `layers` is the model's
    block count (None: unknown, and then a partial offload puts nothing on the GPUs)."""
    gpus = {int(device.removeprefix(CUDA)): size for device, size in split.items() if device.startswith(CUDA)}
    on_gpus, total = sum(gpus.values()), sum(split.values())
    if not on_gpus or not total:
        return CPU_ONLY
    if on_gpus >= total:
        count = ALL_LAYERS
    elif layers is None:
        return CPU_ONLY
    else:
        count = (layers + 1) * on_gpus // total
        if count == 0:
            return CPU_ONLY
    if len(gpus) == 1:
        return Offload(count, "none", next(iter(gpus)))
    shares = tuple(gpus.get(index, 0) / on_gpus for index in range(max(gpus) + 1))
    return Offload(count, "layer", min(gpus), shares)
