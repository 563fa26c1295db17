"""Pulling's parts: how a blob is split into parts, retry pauses, progress throttling, which
pulls are one job, and jobs shared by the requests that follow them."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from typing import Any

import pytest

from services.protocol import Progress, TransferRequest
from services.registry.download import MAX_PAUSE, MIN_PART, Part, pause, plan_parts
from services.registry.errors import RegistryError
from services.registry.pull import job_key
from services.registry.transfers import THROTTLE, Report, Transfers, _Reporter

WAIT = 5.0  # seconds: a bound on every wait below, none of which should take long

MB = 1024 * 1024


@pytest.mark.parametrize(
    ("total", "sizes"),
    [
        (0, []),
        (10, [10]),  # a small blob is one part
        (MIN_PART, [MIN_PART]),
        (MIN_PART + 1, [MIN_PART, 1]),
        (100 * MB, [32 * MB, 32 * MB, 32 * MB, 4 * MB]),
        (8 * 100 * MB, [100 * MB] * 8),  # large: MAX_PARTS even parts
        (8 * 100 * MB + 7, [100 * MB] * 8 + [7]),
    ],
)
def test_plan_parts_covers_the_blob_once(total: int, sizes: list[int]) -> None:
    parts = plan_parts(total)
    assert [p.size for p in parts] == sizes
    assert all(a.stop == b.start for a, b in itertools.pairwise(parts))
    assert (parts[0].start if parts else 0) == 0 and (parts[-1].stop if parts else 0) == total
    assert all(p.done == 0 for p in parts)


def test_parts_are_capped_at_the_largest_size() -> None:
    assert {p.size for p in plan_parts(40 * 1024 * MB)} == {1024 * MB}
    assert Part(5, 9, 2).size == 4


def test_pauses_grow_and_stay_capped() -> None:
    assert 0.25 <= pause(0) <= 0.75
    assert 2.0 <= pause(3) <= 6.0
    assert all(pause(n) <= MAX_PAUSE * 1.5 for n in range(20))


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_byte_counts_are_throttled_but_first_last_and_statuses_pass() -> None:
    clock = Clock()
    sent: list[Progress] = []
    reporter = _Reporter(clock, sent.append)

    def layer(done: int) -> Progress:
        return Progress(status="pulling abc", digest="sha256:abc", total=100, completed=done)

    for step in (Progress(status="pulling manifest"), layer(0), layer(10), layer(20)):
        reporter(step)
    clock.now += 2 * THROTTLE
    for step in (layer(30), layer(40), layer(100), Progress(status="writing manifest")):
        reporter(step)
    assert [(p.status, p.completed) for p in sent] == [
        ("pulling manifest", None),
        ("pulling abc", 0),
        ("pulling abc", 10),
        ("pulling abc", 30),
        ("pulling abc", 100),
        ("writing manifest", None),
    ]


SAME = "registry.ollama.ai/library/smollm2:latest"
KEYS = [
    ("the default spelling", "smollm2", False, SAME),
    ("the full name", "registry.ollama.ai/library/smollm2:latest", False, SAME),
    ("another case", "SmolLM2:Latest", False, SAME),
    ("plain http", "smollm2", True, "http"),
    ("another tag", "smollm2:135m", False, "smollm2:135m"),
    ("another host", "example.com:5000/library/smollm2", False, "example.com"),
]


@pytest.mark.parametrize(("text", "insecure", "expected"), [k[1:] for k in KEYS], ids=[k[0] for k in KEYS])
def test_pulls_of_one_model_have_one_key(text: str, insecure: bool, expected: str) -> None:
    key = job_key(text, insecure)
    assert key is not None
    assert (key == job_key(SAME, False)) == (expected == SAME)
    assert expected.lower() in key


@pytest.mark.parametrize("text", ["", "../x", "/etc/passwd", "a/b/c/d", "%2e%2e/x"])
def test_an_invalid_name_has_no_key(text: str) -> None:
    assert job_key(text, False) is None


class Broker:
    """Stands in for the NATS connection: what was published, by subject."""

    def __init__(self) -> None:
        self.sent: dict[str, list[Progress]] = defaultdict(list)
        self._changed = asyncio.Condition()

    async def publish(self, subject: str, data: bytes) -> None:
        async with self._changed:
            self.sent[subject].append(Progress.model_validate_json(data))
            self._changed.notify_all()

    async def received(self, subject: str, count: int) -> list[Progress]:
        """The first `count` messages sent to `subject`, once they are there."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.sent[subject]) >= count), WAIT)
        return self.sent[subject][:count]

    async def ended(self, subject: str) -> list[Progress]:
        """Everything sent to `subject`, once its `done` message is there."""
        async with self._changed:
            ended = self._changed.wait_for(lambda: any(p.done for p in self.sent[subject]))
            await asyncio.wait_for(ended, WAIT)
        return self.sent[subject]


class Steps:
    """A job the test drives: each run reports what the test says, and ends when told to.
    `events` records the runs' starts and their way out when cancelled."""

    def __init__(self) -> None:
        self.runs = 0
        self.events: list[str] = []
        self._steps: asyncio.Queue[Progress | Exception | None] = asyncio.Queue()

    def say(self, *steps: Progress) -> None:
        for step in steps:
            self._steps.put_nowait(step)

    def fail(self, error: Exception) -> None:
        self._steps.put_nowait(error)

    def end(self) -> None:
        self._steps.put_nowait(None)

    async def __call__(self, report: Report) -> None:
        self.runs += 1
        self.events.append(f"run {self.runs} started")
        try:
            while (step := await self._steps.get()) is not None:
                if isinstance(step, Exception):
                    raise step
                report(step)
        except asyncio.CancelledError:
            await asyncio.sleep(0)  # a way out that takes a while (a pull's record, on a thread)
            self.events.append(f"run {self.runs} cleaned up")
            raise


MANIFEST = Progress(status="pulling manifest")


def layer(completed: int) -> Progress:
    return Progress(
        status="pulling 0123456789ab", digest="sha256:0123456789ab", total=100, completed=completed
    )


def shown(progress: list[Progress]) -> list[tuple[str, int | None, str | None]]:
    return [(p.status, p.completed, p.error) for p in progress]


def request(subject: str) -> TransferRequest:
    return TransferRequest(name="smollm2", reply_subject=subject)


def transfers_on(broker: Broker) -> Transfers:
    connection: Any = broker
    return Transfers(lambda: connection, clock=Clock())


async def test_a_request_for_a_running_key_follows_that_job_from_where_it_stands() -> None:
    broker, job = Broker(), Steps()
    transfers = transfers_on(broker)
    transfers.start(request("a"), job, "k")
    job.say(MANIFEST, layer(10))
    await broker.received("a", 2)
    transfers.start(request("b"), job, "k")
    job.say(layer(100))
    job.end()
    a, b = await broker.ended("a"), await broker.ended("b")
    assert job.runs == 1
    success = ("success", None, None)
    assert shown(a) == [("pulling manifest", None, None), ("pulling 0123456789ab", 10, None),
                        ("pulling 0123456789ab", 100, None), success]  # fmt: skip
    assert shown(b) == [("pulling 0123456789ab", 10, None), ("pulling 0123456789ab", 100, None), success]


async def test_requests_with_other_keys_or_none_run_jobs_of_their_own() -> None:
    broker, job = Broker(), Steps()
    transfers = transfers_on(broker)
    transfers.start(request("a"), job, "k")
    transfers.start(request("b"), job, "other")
    transfers.start(request("c"), job, None)
    transfers.start(request("d"), job, None)
    for _ in range(4):
        job.end()
    for subject in "abcd":
        assert shown(await broker.ended(subject)) == [("success", None, None)]
    assert job.runs == 4


async def test_the_jobs_error_ends_every_follower() -> None:
    broker, job = Broker(), Steps()
    transfers = transfers_on(broker)
    transfers.start(request("a"), job, "k")
    job.say(MANIFEST)
    await broker.received("a", 1)
    transfers.start(request("b"), job, "k")
    job.fail(RegistryError("pull model manifest: file does not exist", "not_found"))
    for subject in "ab":
        last = (await broker.ended(subject))[-1]
        assert (last.error, last.code) == ("pull model manifest: file does not exist", "not_found")
    assert job.runs == 1


async def test_a_follower_that_leaves_does_not_stop_the_job_others_follow() -> None:
    broker, job = Broker(), Steps()
    transfers = transfers_on(broker)
    first, second = request("a"), request("b")
    transfers.start(first, job, "k")
    job.say(MANIFEST)
    await broker.received("a", 1)
    transfers.start(second, job, "k")
    await broker.received("b", 1)
    transfers.cancel(first.id)
    job.say(layer(100))
    job.end()
    assert shown(await broker.ended("b"))[-2:] == [
        ("pulling 0123456789ab", 100, None),
        ("success", None, None),
    ]
    assert shown(broker.sent["a"]) == [("pulling manifest", None, None)]  # nothing after it left
    assert job.events == ["run 1 started"]  # never cancelled


async def test_the_last_follower_leaving_cancels_and_a_new_request_starts_after_it() -> None:
    broker, job = Broker(), Steps()
    transfers = transfers_on(broker)
    first = request("a")
    transfers.start(first, job, "k")
    job.say(MANIFEST)
    await broker.received("a", 1)
    transfers.cancel(first.id)
    transfers.start(request("b"), job, "k")  # asked again at once: a job of its own
    job.end()
    assert shown(await broker.ended("a")) == [("pulling manifest", None, None), ("", None, "canceled")]
    assert shown(await broker.ended("b")) == [("success", None, None)]
    # the new run began only once the cancelled one was out of the way
    assert job.events == ["run 1 started", "run 1 cleaned up", "run 2 started"]


async def test_a_job_that_ended_is_not_followed_again() -> None:
    broker, job = Broker(), Steps()
    transfers = transfers_on(broker)
    transfers.start(request("a"), job, "k")
    job.end()
    await broker.ended("a")
    transfers.start(request("b"), job, "k")
    job.end()
    assert shown(await broker.ended("b")) == [("success", None, None)]
    assert job.runs == 2


async def test_a_step_of_another_job_joins_the_running_one_and_gets_its_statuses() -> None:
    broker, job = Broker(), Steps()
    transfers = transfers_on(broker)
    transfers.start(request("a"), job, "k")
    job.say(MANIFEST)
    await broker.received("a", 1)
    told: list[Progress] = []
    first_told = asyncio.Event()

    def report(progress: Progress) -> None:
        told.append(progress)
        first_told.set()

    step = asyncio.create_task(transfers.join("k", "pull", job, report))
    await asyncio.wait_for(first_told.wait(), WAIT)
    job.say(layer(100))
    job.end()
    await asyncio.wait_for(step, WAIT)
    assert job.runs == 1
    assert shown(told) == [
        ("pulling manifest", None, None),
        ("pulling 0123456789ab", 100, None),
    ]  # no "success"
    assert shown(await broker.ended("a"))[-1] == ("success", None, None)


async def test_a_joined_job_that_fails_raises_its_error_in_the_step() -> None:
    job = Steps()
    transfers = transfers_on(Broker())
    step = asyncio.create_task(transfers.join("k", "pull", job, lambda progress: None))
    job.fail(RegistryError("file does not exist", "not_found"))
    with pytest.raises(RegistryError, match="file does not exist") as raised:
        await asyncio.wait_for(step, WAIT)
    assert raised.value.code == "not_found"


async def test_a_cancelled_step_leaves_the_job_and_stops_it_when_alone() -> None:
    broker, job = Broker(), Steps()
    transfers = transfers_on(broker)
    told = asyncio.Event()
    alone = asyncio.create_task(transfers.join("k", "pull", job, lambda progress: told.set()))
    job.say(MANIFEST)
    await asyncio.wait_for(told.wait(), WAIT)
    alone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await alone
    transfers.start(request("a"), job, "k")  # starts after the cancelled run is out of the way
    job.end()
    assert shown(await broker.ended("a")) == [("success", None, None)]
    assert job.events == ["run 1 started", "run 1 cleaned up", "run 2 started"]
