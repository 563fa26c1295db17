"""The scheduler's view of the fleet, built from worker heartbeats and its own commands.

Heartbeats are snapshots; the scheduler also changes the view the moment it
commits to a dispatch or a load, and keeps that reservation until the worker has
answered, so one free slot is never handed out twice while the worker's next
snapshot is on its way (the worker refuses a run it has no slot for anyway). A snapshot with a lower `seq`
than one already seen is stale and dropped.

Placement reads the view once per waiting request, so it is built once per change: each
worker's part is kept until that worker's snapshot or reservations change (at 1,000 workers a
rebuild costs milliseconds, a kept view microseconds).

Instances are known by their id on their worker (`ResidentModel.id`, chosen here for each load:
`new_instance`), so a worker may hold two of one model and a reservation names the one it took.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from services.protocol import ResidentModel, WorkerState
from services.protocol.messages import instance_id
from services.scheduler.placement import Instance, Policy, Room, Split, Worker


@dataclass(frozen=True)
class _PendingLoad:
    digest: str
    num_ctx: int
    split: Split  # the bytes it will take on each device


@dataclass
class _Entry:
    state: WorkerState
    seen_at: float
    pending_loads: dict[str, _PendingLoad] = field(default_factory=dict)  # by instance id
    reserved: dict[str, int] = field(default_factory=dict)  # slots taken, by instance id
    draining: set[str] = field(default_factory=set)  # instances that take no new request
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
            entry.pending_loads.pop(model.id, None)
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

    def drain(self, worker_id: str, instances: tuple[str, ...]) -> None:
        """Let these instances take no new request, so they go idle (a starved load waits)."""
        if (entry := self._workers.get(worker_id)) is not None:
            entry.draining |= set(instances)
            self._changed(entry)

    def undrain(self, worker_id: str) -> None:
        if (entry := self._workers.get(worker_id)) is not None and entry.draining:
            entry.draining.clear()
            self._changed(entry)

    def reserve_slot(self, worker_id: str, instance: str) -> None:
        entry = self._workers[worker_id]
        entry.reserved[instance] = entry.reserved.get(instance, 0) + 1
        self._changed(entry)

    def release_slot(self, worker_id: str, instance: str) -> None:
        entry = self._workers.get(worker_id)
        if entry and entry.reserved.get(instance, 0) > 0:
            entry.reserved[instance] -= 1
            self._changed(entry)

    def new_instance(self, worker_id: str, digest: str, num_ctx: int) -> str:
        """An id for a new instance of these weights and context on this worker: the first
        replica number that no instance there, resident or loading, has."""
        entry = self._workers[worker_id]
        taken = {m.id for m in entry.state.resident} | set(entry.pending_loads)
        return next(
            name for n in range(1, len(taken) + 2) if (name := instance_id(digest, num_ctx, n)) not in taken
        )

    def mark_loading(
        self, worker_id: str, instance: str, digest: str, num_ctx: int, split: Split = ()
    ) -> None:
        """A load is out: its instance counts, and its bytes are taken, until a heartbeat shows it."""
        entry = self._workers[worker_id]
        entry.pending_loads[instance] = _PendingLoad(digest, num_ctx, split)
        self._changed(entry)

    def load_finished(self, worker_id: str, instance: str) -> None:
        entry = self._workers.get(worker_id)
        if entry:
            entry.pending_loads.pop(instance, None)
            self._changed(entry)

    def digest_of(self, worker_id: str, instance: str) -> str | None:
        """The weights of instance `instance` on this worker, as its last heartbeat says."""
        entry = self._workers.get(worker_id)
        resident = entry.state.resident if entry else []
        return next((m.digest for m in resident if m.id == instance), None)

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
        instances = [self._instance(m, entry.reserved, m.id in entry.draining) for m in state.resident]
        known = {m.id for m in state.resident}
        free = {d.id: d.free_memory for d in state.devices}
        total = {d.id: d.total_memory for d in state.devices}
        for name, load in entry.pending_loads.items():
            if name in known:
                continue
            instances.append(
                Instance(load.digest, load.num_ctx, 1, 0, True, 0, placement=load.split, id=name)
            )
            for device, size in load.split:
                free[device] = max(0, free.get(device, 0) - size)
        gpus = sum(1 for d in state.devices if d.kind == "cuda")
        return Worker.of(
            state.worker_id,
            devices=tuple(Room(device, size, total.get(device, 0)) for device, size in free.items()),
            instances=tuple(instances),
            max_loaded=self._max_loaded(gpus),
            policy=self._policy,
            formats=frozenset(state.formats),
            named=all(m.instance for m in state.resident),  # an older worker names none
        )

    @staticmethod
    def _instance(m: ResidentModel, reserved: dict[str, int], draining: bool) -> Instance:
        return Instance(
            digest=m.digest,
            num_ctx=m.num_ctx,
            slots=m.slots,
            busy=min(m.slots, m.busy + reserved.get(m.id, 0)),
            loading=m.loading,
            size=m.size,
            keep_alive=m.keep_alive,
            placement=tuple(m.placement.items()),
            draining=draining,
            id=m.id,
        )
