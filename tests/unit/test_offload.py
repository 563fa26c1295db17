"""How llama.cpp offloads by the scheduler's split (bytes per device): a table."""

from __future__ import annotations

import pytest

from services.worker.engines.offload import ALL_LAYERS, CPU_ONLY, Offload, offload_for

GB = 1_000_000_000

# (case, split, the model's block count, offload)
CASES: list[tuple[str, dict[str, int], int | None, Offload]] = [
    ("all-in-system-memory", {"cpu": 2 * GB}, 30, CPU_ONLY),
    ("no-split", {}, 30, CPU_ONLY),
    ("one-gpu-every-layer", {"cuda:0": 2 * GB}, 30, Offload(ALL_LAYERS, "none", 0)),
    ("the-second-gpu-is-the-main-one", {"cuda:1": 2 * GB}, 30, Offload(ALL_LAYERS, "none", 1)),
    (
        "two-gpus-split-by-their-bytes",
        {"cuda:0": 3 * GB, "cuda:1": 1 * GB},
        30,
        Offload(ALL_LAYERS, "layer", 0, (0.75, 0.25)),
    ),
    (
        "gpus-by-index-with-a-gap",
        {"cuda:2": 1 * GB, "cuda:0": 1 * GB},
        30,
        Offload(ALL_LAYERS, "layer", 0, (0.5, 0.0, 0.5)),
    ),
    # 31 layers (30 blocks and the output), half of the bytes on the GPU: 15 layers
    ("half-on-the-gpu", {"cuda:0": 1 * GB, "cpu": 1 * GB}, 30, Offload(15, "none", 0)),
    ("a-sliver-on-the-gpu-is-none", {"cuda:0": 1, "cpu": 10 * GB}, 30, CPU_ONLY),
    ("partial-with-unknown-layers-stays-on-the-cpu", {"cuda:0": 1 * GB, "cpu": 1 * GB}, None, CPU_ONLY),
    ("whole-with-unknown-layers-is-every-layer", {"cuda:0": 1 * GB}, None, Offload(ALL_LAYERS, "none", 0)),
]


@pytest.mark.parametrize(("split", "layers", "offload"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_offload_for(split: dict[str, int], layers: int | None, offload: Offload) -> None:
    assert offload_for(split, layers) == offload
