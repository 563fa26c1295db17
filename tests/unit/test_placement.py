"""The placement rules, table-driven (as Ollama's TestSelectLlamaServerPlacement)."""

from __future__ import annotations

import pytest

from services.scheduler.placement import (
    Decision,
    Dispatch,
    Instance,
    Load,
    Wait,
    Want,
    Worker,
    estimate_memory,
    place,
)

GB = 1_000_000_000
A, B, C = "sha256:" + "a" * 64, "sha256:" + "b" * 64, "sha256:" + "c" * 64
WANT_A = Want(A, 2048, 100_000_000)


def inst(
    digest: str = A,
    *,
    busy: int = 0,
    slots: int = 1,
    loading: bool = False,
    num_ctx: int = 2048,
    size: int = GB,
    expires: float | None = None,
) -> Instance:
    return Instance(digest, num_ctx, slots, busy, loading, size, expires)


CASES: list[tuple[str, list[Worker], Want, Decision]] = [
    ("resident-free-slot", [Worker("w1", GB, (inst(),))], WANT_A, Dispatch("w1")),
    (
        "most-free-slots-wins",
        [Worker("w1", GB, (inst(slots=4, busy=3),)), Worker("w2", GB, (inst(slots=4, busy=1),))],
        WANT_A,
        Dispatch("w2"),
    ),
    ("tie-broken-by-id", [Worker("w2", GB, (inst(),)), Worker("w1", GB, (inst(),))], WANT_A, Dispatch("w1")),
    (
        "busy-waits-rather-than-second-copy",
        [Worker("w1", 10 * GB, (inst(busy=1),)), Worker("w2", 10 * GB)],
        WANT_A,
        Wait("all slots busy"),
    ),
    ("loading-waits", [Worker("w1", 10 * GB, (inst(loading=True),))], WANT_A, Wait("model loading")),
    ("other-num-ctx-is-another-model", [Worker("w1", 10 * GB, (inst(num_ctx=4096),))], WANT_A, Load("w1")),
    ("load-on-most-free-memory", [Worker("w1", 2 * GB), Worker("w2", 8 * GB)], WANT_A, Load("w2")),
    ("no-room-anywhere", [Worker("w1", 1000)], WANT_A, Wait("no worker has room")),
    ("no-workers", [], WANT_A, Wait("no worker has room")),
    (
        "max-loaded-evicts-lru-idle",
        [Worker("w1", 10 * GB, (inst(B, expires=20.0), inst(C, expires=10.0)), max_loaded=2)],
        WANT_A,
        Load("w1", (C,)),
    ),
    (
        "memory-evicts-until-fit",
        [Worker("w1", 0, (inst(B, size=GB // 20, expires=1.0), inst(C, size=GB, expires=2.0)))],
        WANT_A,
        Load("w1", (B, C)),
    ),
    (
        "busy-models-are-never-evicted",
        [Worker("w1", 0, (inst(B, busy=1),))],
        WANT_A,
        Wait("no worker has room"),
    ),
]


@pytest.mark.parametrize(("workers", "want", "decision"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_place(workers: list[Worker], want: Want, decision: Decision) -> None:
    assert place(workers, want) == decision


def test_estimate_grows_with_context_and_slots() -> None:
    base = estimate_memory(GB, 2048, 1)
    assert base > GB
    assert estimate_memory(GB, 4096, 1) > base
    assert estimate_memory(GB, 2048, 4) > estimate_memory(GB, 2048, 2) > base
