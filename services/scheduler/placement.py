"""Where a request runs: a pure function of the fleet view and the request.

Rules, in order (Ollama's `processPending` and its GPU choice, spread over many workers):

0. Only a worker whose engines run the model's format (GGUF, EXL2, EXL3: its heartbeat says) can
   take it. When workers are alive and none of them does, the request is refused (`Refuse`) at
   once, naming the format and what runs it, rather than loaded where it would fail.
1. A resident instance of the model (same weights and `num_ctx`; or, when the request's
   context is the automatic one, not asked for by the request or the model, any larger
   context: Ollama ignores an automatic num_ctx when it compares, and a larger context
   serving it saves the reload of its open #9977) with a free slot takes the request: the
   smallest such context first, then the most free slots, then the worker id. The decision
   names the instance (a worker may hold several of the same model).
2. If such an instance is still loading, the request waits for it. If every one is busy, a
   replica is loaded where it fits without unloading anything (rule 3), up to
   CORRAL_MAX_REPLICAS instances (0: no limit; 1 is Ollama's behaviour) — Ollama's long-standing
   #3902; otherwise the request waits for a slot. A replica goes to another worker, or to GPUs
   of a worker that already holds the model which none of its instances of it uses, wholly on
   them (never in that worker's system memory); the best such place by rule 3's order. A replica
   loads one at a time (a loading instance makes the others wait).
3. Otherwise a worker loads the model where it fits (`fit`): on one GPU when it fits on one
   (the one with the most room), else over the fewest GPUs of the worker, largest first (all
   of them with OLLAMA_SCHED_SPREAD); partly in system memory only on a worker with nothing
   else loaded (Ollama's rule: a partial offload for the first model only), and wholly in
   system memory on a worker without GPUs. Among the workers where it fits (and the loaded-
   model limit allows one more), the one that puts the least on its CPU wins, then the most
   free memory, then the id.
4. If it fits nowhere, a worker whose idle instances can be unloaded to make room loads it
   after unloading them in Ollama's order (shortest keep_alive first, kept-forever last, then
   by digest); the fewest unloads win.
5. A model that would not fit on any of them even empty (all of each device's memory, as the
   heartbeat says; or, not said, what is free with every instance unloaded) is refused at once
   with Ollama's text, "model requires more system memory (X) than is available (Y)": waiting
   could not help it.
6. Otherwise the request waits. One that has waited for room too long (the core decides how
   long) gets a drain (`drain`): the instances whose unloading would make room on one worker
   take no new requests, so they go idle and rule 4 can unload them; the models keep serving
   what they hold meanwhile, and other requests are placed as before.

A GPU's room is its free memory less OLLAMA_GPU_OVERHEAD and the 457 MiB CUDA keeps for
itself (Ollama's MinimumMemory). A load carries its split: the bytes planned on each device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from services.protocol.messages import ErrorCode, instance_id

CPU = "cpu"
NO_ROOM = "no worker has room"  # why a request waits when no worker could take its model
GPU_RESERVE = 457 * 1024 * 1024  # bytes of every GPU that CUDA itself needs (Ollama's MinimumMemory)

Split = tuple[tuple[str, int], ...]  # (device, bytes) for each device a load uses
GGUF_ONLY = frozenset({"gguf"})  # what a worker whose heartbeat does not say runs
# What runs each model format, for the refusal when no worker does (the worker's engines/formats.py).
RUNS_ON = {
    "gguf": "llama.cpp",
    "exl2": "exllamav2 on a CUDA worker",
    "exl3": "exllamav3 on a CUDA worker",
}


@dataclass(frozen=True)
class Room:
    """One device of a worker ("cpu", "cuda:0", …), the bytes free on it, and all it has (0:
    not known)."""

    device: str
    free: int
    total: int = 0

    @property
    def gpu(self) -> bool:
        return self.device != CPU


@dataclass(frozen=True)
class Instance:
    """A model instance resident (or loading) on a worker."""

    digest: str
    num_ctx: int
    slots: int
    busy: int
    loading: bool
    size: int
    keep_alive: float = 0.0  # seconds; negative: kept forever
    placement: Split = ()  # the bytes it holds on each device (empty: all in system memory)
    draining: bool = False  # takes no new request: a starved load waits for it to go idle
    id: str = ""  # its name on the worker; "": the first of its weights and context there

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", instance_id(self.digest, self.num_ctx))

    @property
    def free_slots(self) -> int:
        return 0 if self.loading or self.draining else self.slots - self.busy

    @property
    def idle(self) -> bool:
        return not self.loading and self.busy == 0


@dataclass(frozen=True)
class Policy:
    gpu_overhead: int = 0  # OLLAMA_GPU_OVERHEAD: bytes of each GPU left alone
    spread: bool = False  # OLLAMA_SCHED_SPREAD: always use every GPU of the worker
    max_replicas: int = 0  # CORRAL_MAX_REPLICAS: instances of one model in the fleet; 0: no limit

    def gpu_room(self, free: int) -> int:
        """What a GPU with `free` bytes free can take."""
        return max(0, free - self.gpu_overhead - GPU_RESERVE)


@dataclass(frozen=True)
class Worker:
    """A worker as placement sees it; build it with `Worker.of` (the sums are worked out once)."""

    id: str
    devices: tuple[Room, ...]
    instances: tuple[Instance, ...]
    max_loaded: int
    free_memory: int  # over every device
    gpu_room: int  # what its GPUs together can take
    formats: frozenset[str] = GGUF_ONLY  # the model formats its engines run
    named: bool = True  # False: an older worker, which holds one instance per weights and context

    @classmethod
    def of(
        cls,
        worker_id: str,
        devices: tuple[Room, ...],
        instances: tuple[Instance, ...] = (),
        max_loaded: int = 3,
        policy: Policy | None = None,
        formats: frozenset[str] = GGUF_ONLY,
        named: bool = True,
    ) -> Worker:
        rule = policy or Policy()
        free = sum(room.free for room in devices)
        room = sum(rule.gpu_room(d.free) for d in devices if d.gpu)
        return cls(worker_id, devices, instances, max_loaded, free, room, formats, named)


@dataclass(frozen=True)
class Want:
    """What a request needs: these weights, at least this context per slot, in `slots` parallel
    slots, which take `need` bytes (see `memory.estimate`)."""

    digest: str
    num_ctx: int
    need: int
    slots: int = 1
    exact: bool = True  # False: num_ctx is the automatic default, and a larger one serves too
    format: str = "gguf"  # the model's (protocol ModelFormat): only a worker that runs it can take it

    @property
    def partial_ok(self) -> bool:
        """Whether part of it may sit in system memory: a GGUF's (llama.cpp offloads by layer);
        the GPU engines' formats run wholly on GPUs."""
        return self.format == "gguf"


@dataclass(frozen=True)
class Dispatch:
    worker_id: str
    num_ctx: int  # of the instance that takes it (the request's, or larger)
    instance: str  # its id on the worker


@dataclass(frozen=True)
class Load:
    worker_id: str
    evict: tuple[str, ...] = ()  # ids of the instances to unload first
    split: Split = ()


@dataclass(frozen=True)
class Wait:
    reason: str


@dataclass(frozen=True)
class Refuse:
    """No live worker can ever run it (rules 0 and 5): the request fails now, with `code`."""

    reason: str
    code: ErrorCode = "unavailable"


Decision = Dispatch | Load | Wait | Refuse


def place(
    workers: Sequence[Worker],
    want: Want,
    policy: Policy = Policy(),
    no_replica_on: frozenset[str] = frozenset(),
) -> Decision:
    """The decision for one request (the module's rules). `no_replica_on`: workers where a
    replica of the model failed to load lately (the core's memory): none is tried there."""
    able = [w for w in workers if want.format in w.formats]
    if workers and not able:
        return Refuse(cannot_run(want.format))
    matching = [(w, i) for w in able for i in w.instances if _serves(i, want)]
    free = [(w, i) for w, i in matching if i.free_slots > 0]
    if free:
        worker, instance = min(free, key=lambda wi: (wi[1].num_ctx, -wi[1].free_slots, wi[0].id))
        return Dispatch(worker.id, instance.num_ctx, instance.id)
    if matching:
        if any(i.loading for _, i in matching):
            return Wait("model loading")
        if not policy.max_replicas or len(matching) < policy.max_replicas:
            room = [_room_for_replica(w, want.digest, policy) for w in able if w.id not in no_replica_on]
            replica = _load_where_it_fits(room, want, policy)
            if replica is not None:
                return replica
        return Wait("all slots busy")
    load = _load_where_it_fits(able, want, policy)
    if load is not None:
        return load
    evictions = [(w, found) for w in able if (found := _evictions_to_fit(w, want, policy)) is not None]
    if evictions:
        worker, (evict, split) = min(
            evictions, key=lambda we: (len(we[1][0]), _on_cpu(we[1][1]), -we[0].free_memory, we[0].id)
        )
        return Load(worker.id, evict, split)
    if able and not any(_fits_when_empty(w, want, policy) for w in able):
        return Refuse(too_large(able, want, policy), "internal")  # a failed load, as Ollama's
    return Wait(NO_ROOM)


def _empty(worker: Worker) -> tuple[Room, ...]:
    """The most each device of the worker could ever offer: all it has, or (not known) what is
    free with every instance's bytes given back. Memory other processes hold now may be freed."""
    held: dict[str, int] = {}
    for instance in worker.instances:
        for device, size in instance.placement or ((CPU, instance.size),):
            held[device] = held.get(device, 0) + size
    return tuple(Room(d.device, max(d.total, d.free + held.get(d.device, 0))) for d in worker.devices)


def _fits_when_empty(worker: Worker, want: Want, policy: Policy) -> bool:
    return fit(_empty(worker), want.need, policy, partial=want.partial_ok) is not None


def too_large(workers: Sequence[Worker], want: Want, policy: Policy) -> str:
    """Ollama's refusal of a model larger than the roomiest worker, emptied: the bytes that would
    be left for system memory after its GPUs, and the system memory it has (for a format that
    runs wholly on GPUs, the GPU memory it needs and has, in the same words)."""
    shares = []
    for devices in map(_empty, workers):
        gpu_room = sum(policy.gpu_room(d.free) for d in devices if d.gpu)
        if want.partial_ok:
            shares.append((max(0, want.need - gpu_room), sum(d.free for d in devices if not d.gpu)))
        else:
            shares.append((want.need, gpu_room))
    required, available = min(shares, key=lambda share: share[0] - share[1])  # the closest to fitting
    memory = "system memory" if want.partial_ok else "GPU memory"
    needed, has = human_bytes2(required), human_bytes2(available)
    return f"model requires more {memory} ({needed}) than is available ({has})"


def human_bytes2(size: int) -> str:
    """Ollama's format.HumanBytes2: binary units, one decimal."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _load_where_it_fits(workers: Sequence[Worker], want: Want, policy: Policy) -> Load | None:
    """Rule 3: a load on the best worker where the model fits without unloading anything."""
    room = [w for w in workers if len(w.instances) < w.max_loaded and w.free_memory >= want.need]
    on_gpus = [w for w in room if w.gpu_room >= want.need]  # `gpu_room` was worked out by `policy`
    if on_gpus:  # wholly on GPUs: the roomiest such worker wins (nothing goes to its CPU)
        worker = min(on_gpus, key=lambda w: (-w.free_memory, w.id))
        if (split := fit(worker.devices, want.need, policy, partial=False)) is not None:
            return Load(worker.id, (), split)
    fits = [
        (split, w)
        for w in room
        if (split := fit(w.devices, want.need, policy, partial=not w.instances and want.partial_ok))
        is not None
    ]
    if fits:
        split, worker = min(fits, key=lambda sw: (_on_cpu(sw[0]), -sw[1].free_memory, sw[1].id))
        return Load(worker.id, (), split)
    return None


def cannot_run(format: str) -> str:
    """Why a request for a model of `format` fails when no live worker runs it."""
    return f"no worker can run {format} models ({RUNS_ON.get(format, 'an engine for it')})"


def _room_for_replica(worker: Worker, digest: str, policy: Policy) -> Worker:
    """The worker as a replica of `digest` may use it: whole, when it holds no instance of those
    weights; else only the GPUs none of them uses (another GPU serves in parallel; a second copy
    beside the first would share its compute, and one in system memory would be slow), and none
    on an older worker, which cannot hold a second instance."""
    held = [i for i in worker.instances if i.digest == digest]
    if not held:
        return worker
    used = {device for i in held for device, _ in i.placement or ((CPU, i.size),)}
    devices = tuple(d for d in worker.devices if d.gpu and d.device not in used and worker.named)
    return Worker.of(worker.id, devices, worker.instances, worker.max_loaded, policy, worker.formats, False)


def fit(devices: Sequence[Room], need: int, policy: Policy, *, partial: bool) -> Split | None:
    """Where `need` bytes go on these devices (see the module's rule 3), or None."""
    gpus = sorted((d for d in devices if d.gpu), key=lambda d: (-d.free, d.device))
    ram = sum(d.free for d in devices if not d.gpu)
    if not gpus:
        return ((CPU, need),) if ram >= need else None
    room = {d.device: policy.gpu_room(d.free) for d in gpus}
    for count in [len(gpus)] if policy.spread else range(1, len(gpus) + 1):
        chosen = [d.device for d in gpus[:count]]
        if chosen and sum(room[c] for c in chosen) >= need:
            return _share(need, chosen, room)
    if gpus and not partial:
        return None
    on_gpus = min(need, sum(room.values()))
    if need - on_gpus > ram:
        return None
    used = [d.device for d in gpus if room[d.device] > 0]
    split = _share(on_gpus, used, room) if on_gpus else ()
    return split + (((CPU, need - on_gpus),) if need > on_gpus else ())


def processor(split: Split) -> tuple[int, int]:
    """(bytes in system memory, bytes on GPUs) of a split."""
    cpu = _on_cpu(split)
    return cpu, sum(size for _, size in split) - cpu


def _share(need: int, chosen: Sequence[str], room: dict[str, int]) -> Split:
    """`need` bytes over `chosen` in proportion to their room (the remainder on the first)."""
    total = sum(room[c] for c in chosen)
    parts = [need * room[c] // total for c in chosen]
    parts[0] += need - sum(parts)
    return tuple(zip(chosen, parts, strict=True))


def _on_cpu(split: Split) -> int:
    return sum(size for device, size in split if device == CPU)


def _serves(instance: Instance, want: Want) -> bool:
    if instance.digest != want.digest:
        return False
    return instance.num_ctx == want.num_ctx or (not want.exact and instance.num_ctx > want.num_ctx)


def _eviction_order(instance: Instance) -> tuple[float, str, str]:
    """Ollama's ByDurationAndName: shortest keep_alive first, kept forever last, then by digest
    (then by id, for two instances of one model)."""
    return (math.inf if instance.keep_alive < 0 else instance.keep_alive, instance.digest, instance.id)


def drain(
    workers: Sequence[Worker], want: Want, policy: Policy = Policy()
) -> tuple[str, tuple[str, ...]] | None:
    """For a request starved of room: the worker, and the ids of the instances on it (busy ones
    too) whose unloading would make it fit, fewest first; None when no worker could ever take it."""
    plans = [
        (w, found[0])
        for w in workers
        if want.format in w.formats
        and (found := _evictions_to_fit(w, want, policy, busy_too=True)) is not None
    ]
    if not plans:
        return None
    worker, ids = min(plans, key=lambda wi: (len(wi[1]), -wi[0].free_memory, wi[0].id))
    return worker.id, ids


def _evictions_to_fit(
    worker: Worker, want: Want, policy: Policy, *, busy_too: bool = False
) -> tuple[tuple[str, ...], Split] | None:
    """Idle instances (or, `busy_too`, any that is not loading) to unload, in Ollama's order,
    until `need` fits, and the split then; None if it never does."""
    free = {room.device: room.free for room in worker.devices}
    count, evict = len(worker.instances), []
    candidates = (i for i in worker.instances if i.idle or (busy_too and not i.loading))
    for instance in sorted(candidates, key=_eviction_order):
        evict.append(instance.id)
        for device, size in instance.placement or ((CPU, instance.size),):
            free[device] = free.get(device, 0) + size
        count -= 1
        rooms = tuple(Room(device, size) for device, size in free.items())
        partial = count == 0 and want.partial_ok
        if (
            count < worker.max_loaded
            and (split := fit(rooms, want.need, policy, partial=partial)) is not None
        ):
            return tuple(evict), split
    return None
