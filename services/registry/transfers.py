"""The jobs a registry runs for a client (pulls, pushes, creates): each a task answering one
request, its Progress sent in order to the request's reply subject and ending with a `done`
message: "success", or the job's RegistryError.

Byte counts are sent at most every THROTTLE seconds per layer (and always at its first and
last byte), so a fast download does not flood the gateway. A cancel for the request stops
its job; a download it started goes on and a later pull finds or resumes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NatsClient

from services.protocol import Progress, Tracked
from services.registry.errors import RegistryError
from services.telemetry import log_event

log = logging.getLogger("corral.registry")

THROTTLE = 0.1  # seconds between two byte counts of one layer
Report = Callable[[Progress], None]
Job = Callable[[Report], Awaitable[None]]


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
    """Queues a job's Progress for sending, dropping byte counts that come too close together."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.queue: asyncio.Queue[Progress] = asyncio.Queue()
        self._clock = clock
        self._last: dict[str, float] = {}

    def __call__(self, progress: Progress) -> None:
        if progress.digest and progress.completed not in (0, progress.total):
            now = self._clock()
            if now - self._last.get(progress.digest, -THROTTLE) < THROTTLE:
                return
            self._last[progress.digest] = now
        self.queue.put_nowait(progress)


class Transfers:
    def __init__(
        self, connection: Callable[[], NatsClient], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._connection = connection
        self._clock = clock
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self.closing = False  # set when the registry stops: a job cancelled then is not abandoned

    def start(self, request: Tracked, job: Job) -> None:
        self._jobs[request.id] = asyncio.create_task(self._run(request, job))

    def cancel(self, request_id: str) -> None:
        task = self._jobs.get(request_id)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        self.closing = True
        for task in self._jobs.values():
            task.cancel()
        await asyncio.gather(*self._jobs.values(), return_exceptions=True)

    async def _run(self, request: Tracked, job: Job) -> None:
        reporter = _Reporter(self._clock)
        sender = asyncio.create_task(self._send(request.reply_subject, reporter.queue))
        try:
            await job(reporter)
            final = Progress(status="success", done=True)
        except RegistryError as exc:
            final = Progress(done=True, error=str(exc), code=exc.code)
        except asyncio.CancelledError:
            final = Progress(done=True, error="canceled", code="unavailable")
        except Exception as exc:  # a bug, or the disk: the client still gets an answer
            log.exception("transfer failed", extra={"fields": {"request": request.id}})
            final = Progress(done=True, error=f"{type(exc).__name__}: {exc}", code="internal")
        finally:
            self._jobs.pop(request.id, None)
        reporter.queue.put_nowait(final)
        await sender
        log_event(log, "job_done", request=request.id, kind=type(request).__name__, error=final.error)

    async def _send(self, subject: str, queue: asyncio.Queue[Progress]) -> None:
        while True:
            progress = await queue.get()
            await self._connection().publish(subject, progress.encode())
            if progress.done:
                return
