"""The scheduler's view of the fleet, built from worker heartbeats and its own commands.

Heartbeats are snapshots; the scheduler also changes the view the moment it
commits to a dispatch or a load, and keeps that reservation until the worker has
answered, so one free slot is never handed out twice while the worker's next
snapshot is on its way (the worker refuses a run it has no slot for anyway). A snapshot with a lower `seq`
than one already seen is stale and dropped.

Placement reads the view once per waiting request, so it is built once per change: each
worker's part is kept until that worker's snapshot or reservations change (at 1,000 workers a
rebuild costs milliseconds, a kept view microseconds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from services.protocol import ResidentModel, WorkerState
from services.scheduler.placement import Instance, Policy, Room, Split, Worker


@dataclass
class _Entry:
    state: WorkerState
    seen_at: float
    pending_loads: dict[tuple[str, int], Split] = field(default_factory=dict)  # -> planned bytes
    reserved: dict[tuple[str, int], int] = field(default_factory=dict)
    draining: set[str] = field(default_factory=set)  # digests that take no new request
    view: Worker | None = None  # what placement sees of it; None after a change


class Fleet:
    def __init__(self, max_loaded: Callable[[int], int], policy: Policy | None = None) -> None:
        """`max_loaded(gpu_count)`: how many instances a worker with that many GPUs may hold;
        `policy`: what room a GPU has."""
        self._max_loaded = max_loaded
        self._policy = policy or Policy()
        self._workers: dict[str, _Entry] = {}
        self._view: list[Worker] | None = None  # every worker's view; None after any change

    def update(self, state: WorkerState, now: float) -> bool:
        """Take a snapshot; False when it is older than one already applied."""
        entry = self._workers.get(state.worker_id)
        if entry is not None and state.seq < entry.state.seq:
            return False
        if entry is None:
            self._workers[state.worker_id] = _Entry(state, now)
            self._view = None
            return True
        entry.state, entry.seen_at = state, now
        for model in state.resident:
            entry.pending_loads.pop((model.digest, model.num_ctx), None)
        self._changed(entry)
        return True

    def stale(self, now: float, max_age: float) -> list[str]:
        """The workers silent for longer than `max_age` (still in the view: `drop` them)."""
        return [wid for wid, e in self._workers.items() if now - e.seen_at > max_age]

    def __contains__(self, worker_id: str) -> bool:
        return worker_id in self._workers

    def drop(self, worker_id: str) -> bool:
        """Forget a worker known to be gone; False if it was not in the view."""
        self._view = None
        return self._workers.pop(worker_id, None) is not None

    def drain(self, worker_id: str, digests: tuple[str, ...]) -> None:
        """Let these instances take no new request, so they go idle (a starved load waits)."""
        if (entry := self._workers.get(worker_id)) is not None:
            entry.draining |= set(digests)
            self._changed(entry)

    def undrain(self, worker_id: str) -> None:
        if (entry := self._workers.get(worker_id)) is not None and entry.draining:
            entry.draining.clear()
            self._changed(entry)

    def reserve_slot(self, worker_id: str, digest: str, num_ctx: int) -> None:
        entry = self._workers[worker_id]
        key = (digest, num_ctx)
        entry.reserved[key] = entry.reserved.get(key, 0) + 1
        self._changed(entry)

    def release_slot(self, worker_id: str, digest: str, num_ctx: int) -> None:
        entry = self._workers.get(worker_id)
        key = (digest, num_ctx)
        if entry and entry.reserved.get(key, 0) > 0:
            entry.reserved[key] -= 1
            self._changed(entry)

    def mark_loading(self, worker_id: str, digest: str, num_ctx: int, split: Split = ()) -> None:
        """A load is out: its instance counts, and its bytes are taken, until a heartbeat shows it."""
        entry = self._workers[worker_id]
        entry.pending_loads[(digest, num_ctx)] = split
        self._changed(entry)

    def load_finished(self, worker_id: str, digest: str, num_ctx: int) -> None:
        entry = self._workers.get(worker_id)
        if entry:
            entry.pending_loads.pop((digest, num_ctx), None)
            self._changed(entry)

    def workers(self) -> list[Worker]:
        """The view placement decides on: snapshots plus this scheduler's own commitments."""
        if self._view is None:
            for entry in self._workers.values():
                if entry.view is None:
                    entry.view = self._worker(entry)
            self._view = [entry.view for entry in self._workers.values() if entry.view is not None]
        return self._view

    def _changed(self, entry: _Entry) -> None:
        entry.view, self._view = None, None

    def holders(self, digest: str) -> list[str]:
        """Workers that have `digest` resident, for an unload."""
        return [wid for wid, e in self._workers.items() if any(m.digest == digest for m in e.state.resident)]

    def _worker(self, entry: _Entry) -> Worker:
        state = entry.state
        instances = [self._instance(m, entry.reserved, m.digest in entry.draining) for m in state.resident]
        known = {(m.digest, m.num_ctx) for m in state.resident}
        free = {d.id: d.free_memory for d in state.devices}
        for (digest, num_ctx), split in entry.pending_loads.items():
            if (digest, num_ctx) in known:
                continue
            instances.append(Instance(digest, num_ctx, slots=1, busy=0, loading=True, size=0))
            for device, size in split:
                free[device] = max(0, free.get(device, 0) - size)
        gpus = sum(1 for d in state.devices if d.kind == "cuda")
        return Worker.of(
            state.worker_id,
            devices=tuple(Room(device, size) for device, size in free.items()),
            instances=tuple(instances),
            max_loaded=self._max_loaded(gpus),
            policy=self._policy,
        )

    @staticmethod
    def _instance(m: ResidentModel, reserved: dict[tuple[str, int], int], draining: bool) -> Instance:
        return Instance(
            digest=m.digest,
            num_ctx=m.num_ctx,
            slots=m.slots,
            busy=min(m.slots, m.busy + reserved.get((m.digest, m.num_ctx), 0)),
            loading=m.loading,
            size=m.size,
            keep_alive=m.keep_alive,
            placement=tuple(m.placement.items()),
            draining=draining,
        )
