"""Which models a worker holds, how busy they are, and when each one's keep_alive runs out.

Owned by the worker's event loop alone (engine threads never touch it). The
keep_alive timer of an instance runs only while it is idle: it stops when a
request takes a slot and restarts from the last request's end, as in Ollama.
A request's `keep_alive` replaces the instance's value and sticks; requests
without one inherit it. An instance loaded for a request waits for that request
(at most FIRST_RUN_WAIT, or until it is cancelled) before its timer can run out,
so a keep_alive of 0 unloads after the request, not between its load and its run.

Instances are known by the name the scheduler gave each (`LoadCommand.instance`), so one worker
can hold several of the same weights and context (a replica on another GPU) and a run names the
one it goes to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from services.protocol import ModelRef, ResidentModel
from services.worker.engines.base import LoadedModel

FIRST_RUN_WAIT = 60.0  # seconds a fresh instance waits for the request it was loaded for


def expiry(keep_alive: float, now: float) -> float | None:
    """When an instance idle from `now` unloads; None for forever (negative keep_alive)."""
    return None if keep_alive < 0 else now + keep_alive


@dataclass
class Instance:
    id: str  # its name on this worker (protocol `instance_id`)
    model: ModelRef
    num_ctx: int
    slots: int
    keep_alive: float
    loaded: LoadedModel | None = None  # None while loading
    busy: int = 0
    expires_at: float | None = None
    running: set[str] = field(default_factory=set)
    awaiting: str = ""  # the request it was loaded for, until that request runs or is cancelled

    def describe(self) -> ResidentModel:
        loaded = self.loaded
        return ResidentModel(
            name=self.model.name,
            instance=self.id,
            digest=self.model.digest,
            model_digest=self.model.manifest_digest,
            details=self.model.details,
            num_ctx=self.num_ctx,
            size=loaded.size if loaded else self.model.size,
            size_vram=loaded.size_vram if loaded else 0,
            placement=dict(loaded.placement) if loaded else {},
            slots=self.slots,
            busy=self.busy,
            loading=loaded is None,
            keep_alive=self.keep_alive,
            expires_at=self.expires_at,
        )


class Residency:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._instances: dict[str, Instance] = {}  # by id

    def get(self, instance_id: str) -> Instance | None:
        return self._instances.get(instance_id)

    def find(self, digest: str, num_ctx: int) -> Instance | None:
        """An instance of these weights and context, one with a free slot first (a run that names
        no instance: an older scheduler)."""
        found = [i for i in self._instances.values() if i.model.digest == digest and i.num_ctx == num_ctx]
        return min(found, key=lambda i: i.loaded is None or i.busy >= i.slots, default=None)

    def instances(self) -> list[Instance]:
        return list(self._instances.values())

    def begin_load(
        self,
        instance_id: str,
        model: ModelRef,
        num_ctx: int,
        slots: int,
        keep_alive: float,
        for_request: str = "",
    ) -> Instance:
        instance = Instance(instance_id, model, num_ctx, slots, keep_alive, awaiting=for_request)
        self._instances[instance_id] = instance
        return instance

    def finish_load(self, instance: Instance, loaded: LoadedModel) -> None:
        now = self._clock()
        instance.loaded = loaded
        instance.expires_at = expiry(instance.keep_alive, now)
        if instance.awaiting and instance.expires_at is not None:
            instance.expires_at = max(instance.expires_at, now + FIRST_RUN_WAIT)

    def cancelled(self, request_id: str) -> None:
        """A request that an instance was loaded for will not come: its own timer applies."""
        for instance in self._instances.values():
            if instance.awaiting == request_id:
                instance.awaiting = ""
                if instance.busy == 0 and instance.loaded is not None:
                    instance.expires_at = expiry(instance.keep_alive, self._clock())

    def forget(self, instance: Instance) -> None:
        if self._instances.get(instance.id) is instance:
            del self._instances[instance.id]

    def acquire(self, instance: Instance, request_id: str, keep_alive: float | None) -> bool:
        """Take a slot for `request_id`; False when the instance has none free."""
        if instance.loaded is None or instance.busy >= instance.slots:
            return False
        if keep_alive is not None:
            instance.keep_alive = keep_alive
        instance.busy += 1
        instance.running.add(request_id)
        instance.expires_at = None
        instance.awaiting = ""
        return True

    def release(self, instance: Instance, request_id: str) -> None:
        instance.busy -= 1
        instance.running.discard(request_id)
        if instance.busy == 0:
            instance.expires_at = expiry(instance.keep_alive, self._clock())

    def unload_when_idle(self, digest: str, instance_id: str = "") -> list[Instance]:
        """Set keep_alive to 0 on instance `instance_id` of `digest` (every instance of it when
        ""); return those idle now."""
        now = self._clock()
        idle = []
        for instance in self._instances.values():
            if instance.model.digest == digest and instance_id in ("", instance.id):
                instance.keep_alive = 0.0
                if instance.busy == 0 and instance.loaded is not None:
                    instance.expires_at = now
                    idle.append(instance)
        return idle

    def expired(self) -> list[Instance]:
        now = self._clock()
        return [
            i
            for i in self._instances.values()
            if i.busy == 0 and i.loaded is not None and i.expires_at is not None and i.expires_at <= now
        ]

    def next_expiry(self) -> float | None:
        times = [i.expires_at for i in self._instances.values() if i.expires_at is not None]
        return min(times, default=None)

    def running(self, request_id: str) -> Instance | None:
        return next((i for i in self._instances.values() if request_id in i.running), None)
