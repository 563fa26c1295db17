"""Downloading blobs from a registry into the store, as Ollama's download.go does, and safer.

A blob is fetched in up to MAX_PARTS ranged parts at once into the hidden `.sha256-<hex>.partial`,
with the parts' progress kept beside it (`.partial.json`), so a download cut by a failure or a
restart resumes where it stopped. A failing part is retried with growing pauses. When all
parts are in, the file is hashed: only a file with the right digest is renamed to its blob
name, so an unverified byte is never visible. One download runs per digest: in this process
later askers join it; across hosts sharing the store, a lock file makes the second wait and
then find the blob in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from services.registry.remote import Remote, RemoteError
from services.registry.store import ModelStore, sha256_file
from services.telemetry import log_event

log = logging.getLogger("corral.registry")

MAX_PARTS = 8  # ranged requests in flight for one blob
MIN_PART = 32 * 1024 * 1024  # bytes: smaller blobs come in fewer parts
MAX_PART = 1024 * 1024 * 1024
RETRIES = 6  # attempts of one part before the download fails
MAX_PAUSE = 10.0  # seconds between attempts, at most
WRITE_BLOCK = 1024 * 1024  # bytes gathered before each write to the file
SAVE_EVERY = 16 * 1024 * 1024  # bytes of progress between saves of the parts' state

Listener = Callable[[int, int], None]  # (completed, total) bytes


@dataclass
class Part:
    start: int
    stop: int  # exclusive
    done: int = 0  # bytes of it on disk

    @property
    def size(self) -> int:
        return self.stop - self.start


def plan_parts(
    total: int, parts: int = MAX_PARTS, smallest: int = MIN_PART, largest: int = MAX_PART
) -> list[Part]:
    """Ollama's split: total / parts bytes each, kept between `smallest` and `largest`."""
    size = min(max(total // parts, smallest), largest)
    return [Part(start, min(start + size, total)) for start in range(0, total, size)]


def pause(attempt: int) -> float:
    """Seconds before attempt `attempt + 1`: doubling from half a second, jittered, capped."""
    return float(min(0.5 * 2**attempt, MAX_PAUSE) * random.uniform(0.5, 1.5))


@dataclass
class _Download:
    digest: str
    total: int = 0
    completed: int = 0
    listeners: list[Listener] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def tell(self) -> None:
        for listener in list(self.listeners):
            listener(self.completed, self.total)


class Downloads:
    """The blob downloads of one registry process, at most one per digest."""

    def __init__(self, store: ModelStore) -> None:
        self._store = store
        self._active: dict[str, _Download] = {}

    async def fetch(self, remote: Remote, digest: str, listener: Listener) -> bool:
        """Make blob `digest` present, telling `listener` the bytes as they arrive; True when it
        was there already. The download goes on if the caller is cancelled (a retry resumes
        it, or finds it done)."""
        target = self._store.blob(digest)  # InvalidDigest for anything but sha256:<64 hex>
        if target.exists():
            size = target.stat().st_size
            listener(size, size)
            return True
        download = self._active.get(digest)
        if download is None:
            download = _Download(digest)
            self._active[digest] = download
            download.task = asyncio.create_task(self._run(remote, download, target))
        download.listeners.append(listener)
        try:
            assert download.task is not None
            await asyncio.shield(download.task)
        finally:
            download.listeners.remove(listener)
        return False

    async def _run(self, remote: Remote, download: _Download, target: Path) -> None:
        try:
            with await asyncio.to_thread(_locked, _beside(target, ".lock")):
                if not target.exists():
                    await _Fetch(remote, download, target).run()
            download.completed = download.total = target.stat().st_size
            download.tell()
        finally:
            del self._active[download.digest]


class _Fetch:
    """One blob's download into its partial file, with its parts' state saved beside it."""

    def __init__(self, remote: Remote, download: _Download, target: Path) -> None:
        self.remote = remote
        self.download = download
        self.target = target
        self.partial = _beside(target, ".partial")
        self.state = _beside(target, ".partial.json")
        self.parts: list[Part] = []
        self.unsaved = 0

    async def run(self) -> None:
        self.parts = self._resume() or plan_parts(await self.remote.blob_size(self.download.digest))
        self.download.total = sum(p.size for p in self.parts)
        self.download.completed = sum(p.done for p in self.parts)
        self.download.tell()
        fd = os.open(self.partial, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, self.download.total)
            try:
                async with asyncio.TaskGroup() as parts:  # one failing part stops the others
                    for part in self.parts:
                        if part.done < part.size:
                            parts.create_task(self._part(fd, part))
            except* RemoteError as failed:
                raise failed.exceptions[0] from None
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)
            self._save()
        got = await asyncio.to_thread(sha256_file, self.partial)
        if got != self.download.digest:
            self.partial.unlink(missing_ok=True)
            self.state.unlink(missing_ok=True)
            message = (
                f"digest mismatch, file must be downloaded again: want {self.download.digest}, got {got}"
            )
            raise RemoteError(message, "invalid")
        os.replace(self.partial, self.target)
        self.state.unlink(missing_ok=True)

    async def _part(self, fd: int, part: Part) -> None:
        for attempt in range(RETRIES):
            try:
                await self._fetch_part(fd, part)
                return
            except RemoteError as exc:
                if not exc.retry:
                    raise
                if attempt == RETRIES - 1:
                    raise RemoteError(f"max retries exceeded: {exc}", exc.code) from exc
                log_event(
                    log, "part_retry", digest=self.download.digest[:19], attempt=attempt + 1, error=str(exc)
                )
                await asyncio.sleep(pause(attempt))

    async def _fetch_part(self, fd: int, part: Part) -> None:
        pending = bytearray()
        async with self.remote.blob_range(
            self.download.digest, part.start + part.done, part.stop
        ) as response:
            async for chunk in response.aiter_bytes():
                pending += chunk
                if len(pending) >= WRITE_BLOCK:
                    await self._write(fd, part, pending)
                    pending = bytearray()
            await self._write(fd, part, pending)
        if part.done != part.size:
            raise RemoteError(f"part ended after {part.done} of {part.size} bytes", retry=True)

    async def _write(self, fd: int, part: Part, data: bytearray) -> None:
        if not data:
            return
        if part.done + len(data) > part.size:
            raise RemoteError("registry sent more bytes than asked for", retry=True)
        await asyncio.to_thread(os.pwrite, fd, data, part.start + part.done)
        part.done += len(data)
        self.download.completed += len(data)
        self.unsaved += len(data)
        if self.unsaved >= SAVE_EVERY:
            self._save()
        self.download.tell()

    def _resume(self) -> list[Part] | None:
        """The parts of an earlier attempt at this blob, when its files are both still there."""
        if not (self.state.is_file() and self.partial.is_file()):
            return None
        try:
            saved = json.loads(self.state.read_text())
            return [Part(int(p["start"]), int(p["stop"]), int(p["done"])) for p in saved["parts"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _save(self) -> None:
        self.unsaved = 0
        data = json.dumps({"parts": [{"start": p.start, "stop": p.stop, "done": p.done} for p in self.parts]})
        tmp = self.state.with_name(self.state.name + ".tmp")
        tmp.write_text(data)
        os.replace(tmp, self.state)


@contextlib.contextmanager
def _held(fd: int) -> Iterator[None]:
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _locked(path: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive lock on `path` (created if need be), waited for: one downloader per blob
    among the processes sharing the store."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return _held(fd)


def _beside(target: Path, suffix: str) -> Path:
    """A hidden file next to blob `target`, which no reader of the store looks at."""
    return target.with_name(f".{target.name}{suffix}")
