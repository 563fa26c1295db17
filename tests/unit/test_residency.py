"""keep_alive timers on a worker, driven by an injected clock (no sleeping)."""

from __future__ import annotations

from services.protocol import ModelRef
from services.protocol.messages import instance_id
from services.worker.residency import FIRST_RUN_WAIT, Residency, expiry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Model:
    def __init__(self) -> None:
        self.size, self.size_vram, self.placement = 10, 0, {"cpu": 10}

    def close(self) -> None:
        pass


MODEL = ModelRef(name="m:1", full_name="registry.ollama.ai/library/m:1", digest="sha256:" + "a" * 64, size=10)
FIRST, SECOND = instance_id(MODEL.digest, 2048), instance_id(MODEL.digest, 2048, 2)


def loaded(clock: Clock, keep_alive: float, slots: int = 1):  # type: ignore[no-untyped-def]
    residency = Residency(clock)
    instance = residency.begin_load(FIRST, MODEL, 2048, slots, keep_alive)
    residency.finish_load(instance, Model())  # type: ignore[arg-type]
    return residency, instance


def test_expiry_forever_and_finite() -> None:
    assert expiry(-1.0, 5.0) is None
    assert expiry(0.0, 5.0) == 5.0
    assert expiry(300.0, 5.0) == 305.0


def test_timer_runs_only_while_idle() -> None:
    clock = Clock()
    residency, instance = loaded(clock, keep_alive=60)
    assert residency.acquire(instance, "r1", None)
    assert instance.expires_at is None
    clock.now += 500
    assert residency.expired() == []
    residency.release(instance, "r1")
    assert instance.expires_at == clock.now + 60
    clock.now += 59
    assert residency.expired() == []
    clock.now += 1
    assert residency.expired() == [instance]


def test_request_keep_alive_sticks() -> None:
    clock = Clock()
    residency, instance = loaded(clock, keep_alive=300)
    residency.acquire(instance, "r1", -1.0)
    residency.release(instance, "r1")
    residency.acquire(instance, "r2", None)
    residency.release(instance, "r2")
    assert instance.keep_alive == -1.0 and instance.expires_at is None


def test_slots_limit_and_unload_when_idle() -> None:
    clock = Clock()
    residency, instance = loaded(clock, keep_alive=300, slots=2)
    assert residency.acquire(instance, "r1", None)
    assert residency.acquire(instance, "r2", None)
    assert not residency.acquire(instance, "r3", None)
    assert residency.unload_when_idle(MODEL.digest) == []
    residency.release(instance, "r1")
    residency.release(instance, "r2")
    assert residency.expired() == [instance]
    assert residency.next_expiry() == clock.now


def loaded_for(clock: Clock, keep_alive: float, request_id: str):  # type: ignore[no-untyped-def]
    residency = Residency(clock)
    instance = residency.begin_load(FIRST, MODEL, 2048, 1, keep_alive, for_request=request_id)
    residency.finish_load(instance, Model())  # type: ignore[arg-type]
    return residency, instance


def test_keep_alive_zero_waits_for_the_request_it_was_loaded_for() -> None:
    """keep_alive 0 (the request's or OLLAMA_KEEP_ALIVE's): unload after the run, not before it."""
    clock = Clock()
    residency, instance = loaded_for(clock, keep_alive=0, request_id="r1")
    clock.now += 1
    assert residency.expired() == []
    assert residency.acquire(instance, "r1", 0)
    residency.release(instance, "r1")
    assert residency.expired() == [instance]


def test_a_fresh_instance_waits_no_longer_once_its_request_is_cancelled() -> None:
    clock = Clock()
    residency, instance = loaded_for(clock, keep_alive=0, request_id="r1")
    residency.cancelled("other")
    assert residency.expired() == []
    residency.cancelled("r1")
    assert residency.expired() == [instance]


def test_a_fresh_instance_waits_at_most_first_run_wait_for_a_request_that_never_comes() -> None:
    clock = Clock()
    residency, instance = loaded_for(clock, keep_alive=0, request_id="r1")
    clock.now += FIRST_RUN_WAIT - 1
    assert residency.expired() == []
    clock.now += 1
    assert residency.expired() == [instance]


def test_a_longer_keep_alive_is_not_shortened_and_forever_stays_forever() -> None:
    clock = Clock()
    _, instance = loaded_for(clock, keep_alive=600, request_id="r1")
    assert instance.expires_at == clock.now + 600
    _, forever = loaded_for(clock, keep_alive=-1, request_id="r1")
    assert forever.expires_at is None


def test_two_instances_of_one_model_are_held_apart_by_their_ids() -> None:
    """A replica on another GPU of the same worker: same weights and context, its own slots."""
    clock = Clock()
    residency, first = loaded(clock, keep_alive=300)
    second = residency.begin_load(SECOND, MODEL, 2048, 1, 300)
    assert residency.find(MODEL.digest, 2048) is first  # the loading one has no slot yet
    residency.finish_load(second, Model())  # type: ignore[arg-type]
    assert (residency.get(FIRST), residency.get(SECOND)) == (first, second)
    assert [m.instance for m in (first.describe(), second.describe())] == [FIRST, SECOND]
    assert residency.acquire(first, "r1", None)
    assert residency.find(MODEL.digest, 2048) is second  # a run that names no instance: a free one
    assert residency.acquire(second, "r2", None)
    assert (residency.running("r1"), residency.running("r2")) == (first, second)


def test_an_unload_naming_an_instance_leaves_the_other() -> None:
    clock = Clock()
    residency, first = loaded(clock, keep_alive=300)
    second = residency.begin_load(SECOND, MODEL, 2048, 1, 300)
    residency.finish_load(second, Model())  # type: ignore[arg-type]
    assert residency.unload_when_idle(MODEL.digest, SECOND) == [second]
    assert first.keep_alive == 300 and second.keep_alive == 0
    residency.forget(second)
    assert residency.instances() == [first]
    assert residency.unload_when_idle(MODEL.digest) == [first]  # no instance named: every one
