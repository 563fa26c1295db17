"""The jobs a registry runs for clients (pulls, pushes, creates): each a task whose Progress goes,
in order, to every request following it, the last message `done`: "success", or the job's
RegistryError.

A job may have a key (a pull's: its model, see `pull.job_key`). A request whose key names a
job already running follows that job instead of starting another: it is sent the job's
latest status at once, then everything after it, up to the same last message. A cancel for a
request ends its following; the job itself stops only when nobody follows it any more (the
last follower hears "canceled", as before). A download the job started goes on either way,
for a later pull to find or resume.

Byte counts are sent at most every THROTTLE seconds per layer (and always at its first and
last byte), so a fast download does not flood the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nats.aio.client import Client as NatsClient

from services.protocol import Progress, Tracked
from services.registry.errors import RegistryError
from services.telemetry import log_event

log = logging.getLogger("corral.registry")

THROTTLE = 0.1  # seconds between two byte counts of one layer
Report = Callable[[Progress], None]
Job = Callable[[Report], Awaitable[None]]
Deliver = Callable[[Progress], Awaitable[None]]


def in_thread(work: Callable[[Report], None]) -> Job:
    """A job for blocking `work` (file I/O, llama.cpp): run on a worker thread, its reports
    handed back to the event loop."""

    async def job(report: Report) -> None:
        loop = asyncio.get_running_loop()

        def from_thread(progress: Progress) -> None:
            loop.call_soon_threadsafe(report, progress)

        await asyncio.to_thread(work, from_thread)

    return job


class _Reporter:
    """Passes a job's Progress on to `sink`, dropping byte counts that come too close together."""

    def __init__(self, clock: Callable[[], float], sink: Report) -> None:
        self._clock = clock
        self._sink = sink
        self._last: dict[str, float] = {}

    def __call__(self, progress: Progress) -> None:
        if progress.digest and progress.completed not in (0, progress.total):
            now = self._clock()
            if now - self._last.get(progress.digest, -THROTTLE) < THROTTLE:
                return
            self._last[progress.digest] = now
        self._sink(progress)


class _Follower:
    """One request's end of a job: its Progress delivered one at a time, in order, up to the
    `done` one."""

    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._queue: asyncio.Queue[Progress] = asyncio.Queue()
        self.sent = asyncio.create_task(self._send())

    def __call__(self, progress: Progress) -> None:
        self._queue.put_nowait(progress)

    def stop(self) -> None:
        self.sent.cancel()

    async def _send(self) -> None:
        while True:
            progress = await self._queue.get()
            await self._deliver(progress)
            if progress.done:
                return


@dataclass
class _Running:
    """A job under way: the request that started it, its key, and who follows it."""

    id: str
    kind: str
    key: str | None
    followers: dict[str, _Follower] = field(default_factory=dict)
    last: Progress | None = None  # the latest status passed on: where a new follower starts
    task: asyncio.Task[None] = field(init=False)

    def tell(self, progress: Progress) -> None:
        self.last = progress
        for follower in self.followers.values():
            follower(progress)


class Transfers:
    def __init__(
        self, connection: Callable[[], NatsClient], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._connection = connection
        self._clock = clock
        self._following: dict[str, _Running] = {}  # request id -> the job it follows
        self._keyed: dict[str, _Running] = {}  # key -> the job running under it
        self.closing = False  # set when the registry stops: a job cancelled then is not abandoned

    def start(self, request: Tracked, job: Job, key: str | None = None) -> None:
        """Run `job` for `request`, its progress to the request's reply subject; with a `key`
        whose job is running, follow that one instead."""
        subject = request.reply_subject

        async def publish(progress: Progress) -> None:
            await self._connection().publish(subject, progress.encode())

        self._follow(request.id, type(request).__name__, _Follower(publish), job, key)

    async def join(self, key: str | None, kind: str, job: Job, report: Report) -> None:
        """Run `job` (or follow the one running under `key`) as a step of another job, its
        progress told to `report`; raises the RegistryError it ends with. Cancelling the caller
        leaves the job, as a client that goes away does."""
        ended: asyncio.Future[Progress] = asyncio.get_running_loop().create_future()

        async def relay(progress: Progress) -> None:
            if not progress.done:
                report(progress)
            elif not ended.done():
                ended.set_result(progress)

        follower_id = uuid.uuid4().hex
        self._follow(follower_id, kind, _Follower(relay), job, key)
        try:
            final = await ended
        finally:
            self.cancel(follower_id)  # nothing once the job has ended
        if final.error is not None:
            raise RegistryError(final.error, final.code)

    def cancel(self, request_id: str) -> None:
        """`request_id` stops following its job; the job stops when it was the last to follow."""
        running = self._following.get(request_id)
        if running is None:
            return
        if len(running.followers) == 1:
            running.task.cancel()  # it hears "canceled" as the job ends
            self._unkey(running)  # a pull asked for meanwhile is a job of its own
            return
        del self._following[request_id]
        running.followers.pop(request_id).stop()
        log_event(log, "job_left", request=request_id, job=running.id, followers=len(running.followers))

    async def close(self) -> None:
        self.closing = True
        tasks = {running.task for running in self._following.values()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _follow(self, follower_id: str, kind: str, follower: _Follower, job: Job, key: str | None) -> None:
        running = self._keyed.get(key) if key is not None else None
        if running is None:
            stopping = self._stopping(key)  # before this job is among them
            running = _Running(follower_id, kind, key)
            if key is not None:
                self._keyed[key] = running
            running.task = asyncio.create_task(self._run(running, job, stopping))
        else:
            if running.last is not None:
                follower(running.last)  # where the job stands; what follows comes as it happens
            log_event(log, "job_joined", request=follower_id, job=running.id, key=key)
        running.followers[follower_id] = follower
        self._following[follower_id] = running

    def _stopping(self, key: str | None) -> set[asyncio.Task[None]]:
        """The cancelled jobs of `key` that have not ended yet: a new one starts after them, so
        that what they do on the way out (a pull's record) comes before it begins."""
        if key is None:
            return set()
        return {running.task for running in self._following.values() if running.key == key}

    def _unkey(self, running: _Running) -> None:
        if running.key is not None and self._keyed.get(running.key) is running:
            del self._keyed[running.key]

    async def _run(self, running: _Running, job: Job, after: set[asyncio.Task[None]]) -> None:
        try:
            if after:
                await asyncio.wait(after)
            await job(_Reporter(self._clock, running.tell))
            final = Progress(status="success", done=True)
        except RegistryError as exc:
            final = Progress(done=True, error=str(exc), code=exc.code)
        except asyncio.CancelledError:
            final = Progress(done=True, error="canceled", code="unavailable")
        except Exception as exc:  # a bug, or the disk: the client still gets an answer
            log.exception("transfer failed", extra={"fields": {"request": running.id}})
            final = Progress(done=True, error=f"{type(exc).__name__}: {exc}", code="internal")
        self._unkey(running)  # from here on, a request for the key starts a job of its own
        for follower_id, follower in running.followers.items():
            follower(final)
            self._following.pop(follower_id, None)
        await asyncio.gather(*(f.sent for f in running.followers.values()), return_exceptions=True)
        log_event(
            log,
            "job_done",
            request=running.id,
            kind=running.kind,
            followers=len(running.followers),
            error=final.error,
        )
