"""The placement rules, table-driven (as Ollama's TestSelectLlamaServerPlacement)."""

from __future__ import annotations

import pytest

from services.protocol.messages import instance_id
from services.scheduler.placement import (
    GPU_RESERVE,
    Decision,
    Dispatch,
    Instance,
    Load,
    Policy,
    Refuse,
    Room,
    Wait,
    Want,
    Worker,
    drain,
    place,
)

GB = 1_000_000_000
A, B, C = "sha256:" + "a" * 64, "sha256:" + "b" * 64, "sha256:" + "c" * 64
WANT_A = Want(A, 2048, 100_000_000)
AUTOMATIC_A = Want(A, 2048, 100_000_000, exact=False)  # num_ctx from OLLAMA_CONTEXT_LENGTH
CPU_ONLY = (("cpu", WANT_A.need),)
EXL2_A = Want(A, 2048, 8 * GB, format="exl2")
GPU_A = Want(A, 2048, 8 * GB)
ON_GPU_0 = (("cuda:0", 8 * GB),)
A1, A2 = instance_id(A, 2048), instance_id(A, 2048, 2)  # a worker's first and second instance of A
B1, C1 = instance_id(B, 2048), instance_id(C, 2048)
GPU_WORKERS = frozenset({"gguf", "exl2", "exl3"})  # what a worker with exllamav2 and v3 runs


def inst(
    digest: str = A,
    *,
    busy: int = 0,
    slots: int = 1,
    loading: bool = False,
    num_ctx: int = 2048,
    size: int = GB,
    keep_alive: float = 300.0,
    on: tuple[tuple[str, int], ...] = (),
    id: str = "",
) -> Instance:
    return Instance(digest, num_ctx, slots, busy, loading, size, keep_alive, on, id=id)


def cpu(
    worker: str, memory: int, *instances: Instance, max_loaded: int = 3, formats: frozenset[str] | None = None
) -> Worker:
    """A worker without GPUs (running GGUF only, unless `formats` says more)."""
    return Worker.of(
        worker, (Room("cpu", memory),), instances, max_loaded, formats=formats or frozenset({"gguf"})
    )


def gpus(
    worker: str,
    ram: int,
    *vram: int,
    instances: tuple[Instance, ...] = (),
    policy: Policy | None = None,
    formats: frozenset[str] = GPU_WORKERS,
) -> Worker:
    """A worker with system memory `ram` and one GPU per `vram` (free bytes, the reserve included)."""
    rooms = (Room("cpu", ram), *(Room(f"cuda:{i}", GPU_RESERVE + v) for i, v in enumerate(vram)))
    return Worker.of(worker, rooms, instances, policy=policy, formats=formats)


def busy_on(*devices: str, busy: int = 1, loading: bool = False, id: str = "") -> Instance:
    """An instance of A (8 GB) whose one slot is busy, held on `devices` in equal parts."""
    part = 8 * GB // len(devices)
    return inst(busy=busy, loading=loading, size=8 * GB, on=tuple((d, part) for d in devices), id=id)


CASES: list[tuple[str, list[Worker], Want, Policy, Decision]] = [
    ("resident-free-slot", [cpu("w1", GB, inst())], WANT_A, Policy(), Dispatch("w1", 2048, A1)),
    (
        "most-free-slots-wins",
        [cpu("w1", GB, inst(slots=4, busy=3)), cpu("w2", GB, inst(slots=4, busy=1))],
        WANT_A,
        Policy(),
        Dispatch("w2", 2048, A1),
    ),
    (
        "tie-broken-by-id",
        [cpu("w2", GB, inst()), cpu("w1", GB, inst())],
        WANT_A,
        Policy(),
        Dispatch("w1", 2048, A1),
    ),
    (
        "the-instance-with-a-free-slot-of-two-on-one-worker",
        [
            gpus(
                "w1",
                64 * GB,
                24 * GB,
                24 * GB,
                instances=(busy_on("cuda:0"), busy_on("cuda:1", busy=0, id=A2)),
            )
        ],
        WANT_A,
        Policy(),
        Dispatch("w1", 2048, A2),
    ),
    (
        "all-busy-loads-a-replica-on-another-worker",
        [cpu("w1", 10 * GB, inst(busy=1)), cpu("w2", 10 * GB)],
        WANT_A,
        Policy(),
        Load("w2", (), CPU_ONLY),
    ),
    (
        "max-replicas-1-is-ollama-it-waits",
        [cpu("w1", 10 * GB, inst(busy=1)), cpu("w2", 10 * GB)],
        WANT_A,
        Policy(max_replicas=1),
        Wait("all slots busy"),
    ),
    (
        "replicas-up-to-the-limit",
        [cpu("w1", 10 * GB, inst(busy=1)), cpu("w2", 10 * GB, inst(busy=1)), cpu("w3", 10 * GB)],
        WANT_A,
        Policy(max_replicas=2),
        Wait("all slots busy"),
    ),
    (
        "a-replica-never-unloads-anything",
        [cpu("w1", 10 * GB, inst(busy=1)), cpu("w2", 0, inst(B))],
        WANT_A,
        Policy(),
        Wait("all slots busy"),
    ),
    (
        "no-replica-on-a-worker-that-holds-the-model",
        [cpu("w1", 10 * GB, inst(busy=1)), cpu("w2", 10 * GB, inst(num_ctx=1024, busy=1))],
        WANT_A,
        Policy(),
        Wait("all slots busy"),
    ),
    (
        "one-replica-loads-at-a-time",
        [cpu("w1", 10 * GB, inst(busy=1)), cpu("w2", 10 * GB, inst(loading=True)), cpu("w3", 10 * GB)],
        WANT_A,
        Policy(),
        Wait("model loading"),
    ),
    ("loading-waits", [cpu("w1", 10 * GB, inst(loading=True))], WANT_A, Policy(), Wait("model loading")),
    (
        "a-larger-context-serves-the-automatic-one-without-reload",
        [cpu("w1", 10 * GB, inst(num_ctx=8192))],
        AUTOMATIC_A,
        Policy(),
        Dispatch("w1", 8192, instance_id(A, 8192)),
    ),
    (
        "the-smallest-context-that-serves-first",
        [cpu("w1", 10 * GB, inst(num_ctx=8192), inst(num_ctx=4096))],
        AUTOMATIC_A,
        Policy(),
        Dispatch("w1", 4096, instance_id(A, 4096)),
    ),
    (
        "a-context-asked-for-gets-its-own-instance",
        [cpu("w1", 10 * GB, inst(num_ctx=8192))],
        WANT_A,
        Policy(),
        Load("w1", (), CPU_ONLY),
    ),
    (
        "a-smaller-context-is-another-instance",
        [cpu("w1", 10 * GB, inst(num_ctx=1024))],
        WANT_A,
        Policy(),
        Load("w1", (), CPU_ONLY),
    ),
    (
        "load-on-most-free-memory",
        [cpu("w1", 2 * GB), cpu("w2", 8 * GB)],
        WANT_A,
        Policy(),
        Load("w2", (), CPU_ONLY),
    ),
    (
        "no-room-now-but-the-worker-has-enough",
        [Worker.of("w1", (Room("cpu", 1000, 8 * GB),))],
        WANT_A,
        Policy(),
        Wait("no worker has room"),
    ),
    (
        "a-model-larger-than-every-worker-is-refused",
        [cpu("w1", 1000), Worker.of("w2", (Room("cpu", 2 * GB, 4 * GB), Room("cuda:0", 2 * GB, 3 * GB)))],
        Want(A, 2048, 10 * GB),
        Policy(),
        Refuse("model requires more system memory (7.0 GiB) than is available (3.7 GiB)", "internal"),
    ),
    (
        "an-exl2-model-never-goes-partly-to-system-memory",
        [gpus("w1", 64 * GB, 4 * GB)],
        EXL2_A,
        Policy(),
        Refuse("model requires more GPU memory (7.5 GiB) than is available (3.7 GiB)", "internal"),
    ),
    (
        "a-gguf-model-may-go-partly-to-system-memory",
        [gpus("w1", 64 * GB, 4 * GB)],
        GPU_A,
        Policy(),
        Load("w1", (), (("cuda:0", 4 * GB), ("cpu", 4 * GB))),
    ),
    (
        "fits-once-its-busy-instances-unload-so-it-waits",
        [cpu("w1", 0, inst(B, busy=1, size=GB))],
        WANT_A,
        Policy(),
        Wait("no worker has room"),
    ),
    ("no-workers", [], WANT_A, Policy(), Wait("no worker has room")),
    (
        "max-loaded-evicts-the-shortest-keep-alive-first",
        [cpu("w1", 10 * GB, inst(B, keep_alive=600.0), inst(C, keep_alive=60.0), max_loaded=2)],
        WANT_A,
        Policy(),
        Load("w1", (C1,), CPU_ONLY),
    ),
    (
        "kept-forever-is-evicted-last",
        [cpu("w1", 10 * GB, inst(B, keep_alive=-1.0), inst(C, keep_alive=3600.0), max_loaded=2)],
        WANT_A,
        Policy(),
        Load("w1", (C1,), CPU_ONLY),
    ),
    (
        "memory-evicts-until-fit-equal-keep-alive-by-digest",
        [cpu("w1", 0, inst(B, size=GB // 20), inst(C, size=GB))],
        WANT_A,
        Policy(),
        Load("w1", (B1, C1), CPU_ONLY),
    ),
    (
        "busy-models-are-never-evicted",
        [cpu("w1", 0, inst(B, busy=1))],
        WANT_A,
        Policy(),
        Wait("no worker has room"),
    ),
    # GPUs: room is free memory less the reserve CUDA keeps and OLLAMA_GPU_OVERHEAD
    (
        "one-gpu-when-it-fits-on-one-the-roomiest",
        [gpus("w1", 64 * GB, 16 * GB, 24 * GB)],
        Want(A, 2048, 10 * GB),
        Policy(),
        Load("w1", (), (("cuda:1", 10 * GB),)),
    ),
    (
        "spread-over-the-fewest-gpus",
        [gpus("w1", 64 * GB, 16 * GB, 24 * GB, 8 * GB)],
        Want(A, 2048, 30 * GB),
        Policy(),
        Load("w1", (), (("cuda:1", 18 * GB), ("cuda:0", 12 * GB))),
    ),
    (
        "sched-spread-uses-every-gpu",
        [gpus("w1", 64 * GB, 10 * GB, 30 * GB)],
        Want(A, 2048, 8 * GB),
        Policy(spread=True),
        Load("w1", (), (("cuda:1", 6 * GB), ("cuda:0", 2 * GB))),
    ),
    (
        "gpu-overhead-leaves-room-alone",
        [gpus("w1", 64 * GB, 10 * GB, policy=Policy(gpu_overhead=2 * GB))],
        Want(A, 2048, 9 * GB),
        Policy(gpu_overhead=2 * GB),
        Load("w1", (), (("cuda:0", 8 * GB), ("cpu", 1 * GB))),
    ),
    (
        "partly-in-system-memory-for-a-first-model",
        [gpus("w1", 64 * GB, 24 * GB)],
        Want(A, 2048, 40 * GB),
        Policy(),
        Load("w1", (), (("cuda:0", 24 * GB), ("cpu", 16 * GB))),
    ),
    (
        "no-partial-beside-another-model-it-is-evicted",
        [gpus("w1", 64 * GB, 20 * GB, instances=(inst(B, size=4 * GB, on=(("cuda:0", 4 * GB),)),))],
        Want(A, 2048, 22 * GB),
        Policy(),
        Load("w1", (B1,), (("cuda:0", 22 * GB),)),
    ),
    (
        "a-whole-gpu-fit-beats-system-memory",
        [cpu("w1", 256 * GB), gpus("w2", 8 * GB, 12 * GB)],
        Want(A, 2048, 10 * GB),
        Policy(),
        Load("w2", (), (("cuda:0", 10 * GB),)),
    ),
    # Replicas on another GPU of the same worker (GPU_A: 8 GB, as much as each instance holds)
    (
        "a-replica-on-another-gpu-of-the-same-worker",
        [gpus("w1", 64 * GB, 16 * GB, 24 * GB, instances=(busy_on("cuda:0"),))],
        GPU_A,
        Policy(),
        Load("w1", (), (("cuda:1", 8 * GB),)),
    ),
    (
        "a-replica-never-shares-a-gpu-with-its-model",
        [gpus("w1", 64 * GB, 16 * GB, instances=(busy_on("cuda:0"),))],
        GPU_A,
        Policy(),
        Wait("all slots busy"),
    ),
    (
        "a-replica-beside-its-model-never-goes-to-system-memory",
        [gpus("w1", 64 * GB, 16 * GB, 4 * GB, instances=(busy_on("cuda:0"),))],
        GPU_A,
        Policy(),
        Wait("all slots busy"),
    ),
    (
        "a-replica-spreads-over-the-other-gpus",
        [gpus("w1", 64 * GB, 16 * GB, 6 * GB, 6 * GB, instances=(busy_on("cuda:0"),))],
        GPU_A,
        Policy(),
        Load("w1", (), (("cuda:1", 4 * GB), ("cuda:2", 4 * GB))),
    ),
    (
        "a-free-gpu-of-the-same-worker-beats-system-memory-elsewhere",
        [gpus("w1", 0, 16 * GB, 24 * GB, instances=(busy_on("cuda:0"),)), cpu("w2", 256 * GB)],
        GPU_A,
        Policy(),
        Load("w1", (), (("cuda:1", 8 * GB),)),
    ),
    (
        "a-third-instance-on-a-third-gpu",
        [
            gpus(
                "w1",
                64 * GB,
                16 * GB,
                16 * GB,
                24 * GB,
                instances=(busy_on("cuda:0"), busy_on("cuda:1", id=A2)),
            )
        ],
        GPU_A,
        Policy(),
        Load("w1", (), (("cuda:2", 8 * GB),)),
    ),
    (
        "max-replicas-counts-the-instances-on-one-worker",
        [
            gpus(
                "w1",
                64 * GB,
                16 * GB,
                16 * GB,
                24 * GB,
                instances=(busy_on("cuda:0"), busy_on("cuda:1", id=A2)),
            )
        ],
        GPU_A,
        Policy(max_replicas=2),
        Wait("all slots busy"),
    ),
    (
        "one-replica-loads-at-a-time-on-one-worker",
        [
            gpus(
                "w1",
                64 * GB,
                16 * GB,
                16 * GB,
                24 * GB,
                instances=(busy_on("cuda:0"), busy_on("cuda:1", busy=0, loading=True, id=A2)),
            )
        ],
        GPU_A,
        Policy(),
        Wait("model loading"),
    ),
    (
        "no-second-instance-on-an-older-worker",
        [Worker.of("w1", gpus("w1", 64 * GB, 16 * GB, 24 * GB).devices, (busy_on("cuda:0"),), named=False)],
        GPU_A,
        Policy(),
        Wait("all slots busy"),
    ),
    # Formats: only a worker that runs the model's format takes it
    (
        "a-worker-that-cannot-run-the-format-is-passed-over",
        [cpu("w1", 256 * GB), gpus("w2", 8 * GB, 12 * GB)],
        EXL2_A,
        Policy(),
        Load("w2", (), ON_GPU_0),
    ),
    (
        "no-live-worker-runs-the-format-it-is-refused",
        [cpu("w1", 256 * GB), cpu("w2", 256 * GB)],
        EXL2_A,
        Policy(),
        Refuse("no worker can run exl2 models (exllamav2 on a CUDA worker)"),
    ),
    (
        "an-older-heartbeat-runs-gguf-only",
        [Worker.of("w1", (Room("cpu", 256 * GB),))],
        Want(A, 2048, GB, format="exl3"),
        Policy(),
        Refuse("no worker can run exl3 models (exllamav3 on a CUDA worker)"),
    ),
    (
        "gguf-is-refused-by-a-fleet-without-llama-cpp",
        [gpus("w1", 8 * GB, 12 * GB, formats=frozenset({"exl2"}))],
        WANT_A,
        Policy(),
        Refuse("no worker can run gguf models (llama.cpp)"),
    ),
    (
        "a-worker-that-runs-it-but-has-no-room-it-waits",
        [
            cpu("w1", 256 * GB),
            gpus("w2", 0, 4 * GB, instances=(inst(B, busy=1, size=8 * GB, on=(("cuda:0", 8 * GB),)),)),
        ],
        EXL2_A,
        Policy(),
        Wait("no worker has room"),
    ),
    ("no-worker-yet-it-waits-for-one", [], EXL2_A, Policy(), Wait("no worker has room")),
]


@pytest.mark.parametrize(
    ("workers", "want", "policy", "decision"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_place(workers: list[Worker], want: Want, policy: Policy, decision: Decision) -> None:
    assert place(workers, want, policy) == decision


def test_a_drain_is_planned_only_on_a_worker_that_runs_the_format() -> None:
    full = inst(B, busy=1, size=8 * GB, on=(("cuda:0", 8 * GB),))
    workers = [cpu("w1", 0, inst(B, busy=1, size=10 * GB)), gpus("w2", 0, 0, instances=(full,))]
    assert drain(workers, EXL2_A) == ("w2", (B1,))
    assert drain(workers[:1], EXL2_A) is None
