"""Where a request runs: a pure function of the fleet view and the request.

Rules, in order (as Ollama's `processPending`, spread over many workers):

1. A resident instance of the model (same weights, same `num_ctx`) with a free
   slot takes the request; the worker with the most free slots wins.
2. If such an instance exists but is busy or still loading, the request waits
   for it rather than loading a second copy.
3. Otherwise a worker loads the model: the one with the most free memory among
   those where it fits and the loaded-model limit allows another.
4. If none fits, a worker whose idle instances can be evicted to make room
   loads it after evicting them, least recently used first.
5. Otherwise the request waits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

KV_BYTES_PER_TOKEN_FLOOR = 16 * 1024


@dataclass(frozen=True)
class Instance:
    """A model instance resident (or loading) on a worker."""

    digest: str
    num_ctx: int
    slots: int
    busy: int
    loading: bool
    size: int
    expires_at: float | None = None

    @property
    def free_slots(self) -> int:
        return 0 if self.loading else self.slots - self.busy

    @property
    def idle(self) -> bool:
        return not self.loading and self.busy == 0


@dataclass(frozen=True)
class Worker:
    id: str
    free_memory: int
    instances: tuple[Instance, ...] = ()
    max_loaded: int = 3


@dataclass(frozen=True)
class Want:
    """What a request needs: these weights, with this context size, in `slots` parallel slots."""

    digest: str
    num_ctx: int
    size: int
    slots: int = 1


@dataclass(frozen=True)
class Dispatch:
    worker_id: str


@dataclass(frozen=True)
class Load:
    worker_id: str
    evict: tuple[str, ...] = ()  # digests to unload first


@dataclass(frozen=True)
class Wait:
    reason: str


Decision = Dispatch | Load | Wait


def estimate_memory(size: int, num_ctx: int, slots: int) -> int:
    """Bytes a model needs resident: weights, plus a KV cache per slot.

    A coarse bound until GGUF metadata feeds the estimate: KV bytes per token are
    taken as proportional to the weights (about right for llama-shaped models),
    with a floor so tiny models are not underestimated.
    """
    kv_per_token = max(KV_BYTES_PER_TOKEN_FLOOR, size // 40_000)
    return size + size // 10 + slots * num_ctx * kv_per_token


def place(workers: Sequence[Worker], want: Want) -> Decision:
    matching = [(w, i) for w in workers for i in w.instances if _same_model(i, want)]
    free = [(w, i) for w, i in matching if i.free_slots > 0]
    if free:
        worker, _ = min(free, key=lambda wi: (-wi[1].free_slots, wi[0].id))
        return Dispatch(worker.id)
    if matching:
        loading = any(i.loading for _, i in matching)
        return Wait("model loading" if loading else "all slots busy")
    need = estimate_memory(want.size, want.num_ctx, want.slots)
    fits = [w for w in workers if w.free_memory >= need and len(w.instances) < w.max_loaded]
    if fits:
        return Load(min(fits, key=lambda w: (-w.free_memory, w.id)).id)
    evictions = [(w, ev) for w in workers if (ev := _evictions_to_fit(w, need)) is not None]
    if evictions:
        worker, evict = min(evictions, key=lambda we: (len(we[1]), -we[0].free_memory, we[0].id))
        return Load(worker.id, evict)
    return Wait("no worker has room")


def _same_model(instance: Instance, want: Want) -> bool:
    return instance.digest == want.digest and instance.num_ctx == want.num_ctx


def _evictions_to_fit(worker: Worker, need: int) -> tuple[str, ...] | None:
    """Idle instances to unload, least recently used first, until `need` fits; None if never."""
    idle = sorted((i for i in worker.instances if i.idle), key=lambda i: i.expires_at or 0.0)
    free, count, evict = worker.free_memory, len(worker.instances), []
    for instance in idle:
        if free >= need and count < worker.max_loaded:
            break
        evict.append(instance.digest)
        free += instance.size
        count -= 1
    if free >= need and count < worker.max_loaded and evict:
        return tuple(evict)
    return None
