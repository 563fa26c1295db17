"""Downloading blobs from a registry (or a Hugging Face repository's files, see `Source`) into the
store, as Ollama's download.go does, and safer.

A blob is fetched in up to MAX_PARTS ranged parts at once into the hidden `.sha256-<hex>.partial`,
with the parts' progress kept beside it (`.partial.json`), so a download cut by a failure or a
restart resumes where it stopped. A failing part is retried with growing pauses. When all
parts are in, the file is hashed: only a file with the right digest is renamed to its blob
name, so an unverified byte is never visible. One download runs per digest: in this process
later askers join it; across hosts sharing the store, a lock file makes the second wait and
then find the blob in place.

Nothing here touches a file on the event loop: a download's file operations run, in the order
they were asked, on one thread of its own (`_Fetch.io`), so a write still in flight when a
part is cancelled always lands before its file is closed; the lock is waited for by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import random
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import httpx

from services.registry.remote import RemoteError
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
LOCK_POLL = 0.25  # seconds between two tries at a blob's lock another process holds
_OPEN = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW  # a hidden file planted as a symlink is refused

Listener = Callable[[int, int], None]  # (completed, total) bytes
T = TypeVar("T")


class Source(Protocol):
    """Where a blob's bytes come from: a registry (`remote.Remote`) or a Hugging Face file
    (`hub_remote.HubFile`)."""

    async def blob_size(self, digest: str) -> int: ...

    def blob_range(self, digest: str, start: int, stop: int) -> AbstractAsyncContextManager[httpx.Response]:
        """The bytes [start, stop) as a streaming response; RemoteError(retry=True) for a
        failure worth another try."""
        ...


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

    async def fetch(self, remote: Source, digest: str, listener: Listener) -> bool:
        """Make blob `digest` present, telling `listener` the bytes as they arrive; True when it
        was there already. The download goes on if the caller is cancelled (a retry resumes
        it, or finds it done)."""
        # InvalidDigest for anything but sha256:<64 hex>; OutsideStore for a link out of the store
        target, size = await asyncio.to_thread(_present, self._store, digest)
        if size is not None:
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

    async def _run(self, remote: Source, download: _Download, target: Path) -> None:
        try:
            async with _exclusive(_beside(target, ".lock")):
                size = await asyncio.to_thread(_size, target)  # another host may have placed it
                if size is None:
                    size = await _Fetch(remote, download, target).run()
            download.completed = download.total = size
            download.tell()
        finally:
            del self._active[download.digest]


class _Fetch:
    """One blob's download into its partial file, with its parts' state saved beside it."""

    def __init__(self, remote: Source, download: _Download, target: Path) -> None:
        self.remote = remote
        self.download = download
        self.target = target
        self.partial = _beside(target, ".partial")
        self.state = _beside(target, ".partial.json")
        self.parts: list[Part] = []
        self.unsaved = 0
        self._io = ThreadPoolExecutor(1, thread_name_prefix="blob-io")

    async def io(self, work: Callable[..., T], *args: object) -> T:
        """`work(*args)` on this download's file thread, after everything asked before it."""
        return await asyncio.get_running_loop().run_in_executor(self._io, work, *args)

    async def run(self) -> int:
        """Download the blob into place; its size."""
        try:
            return await self._run()
        finally:
            self._io.shutdown(wait=False)  # what is queued still runs (the closing of the file)

    async def _run(self) -> int:
        resumed = await self.io(self._resume)
        self.parts = resumed or plan_parts(await self.remote.blob_size(self.download.digest))
        self.download.total = sum(p.size for p in self.parts)
        self.download.completed = sum(p.done for p in self.parts)
        self.download.tell()
        fd = await self.io(_open_sized, self.partial, self.download.total)
        try:
            try:
                async with asyncio.TaskGroup() as parts:  # one failing part stops the others
                    for part in self.parts:
                        if part.done < part.size:
                            parts.create_task(self._part(fd, part))
            except* RemoteError as failed:
                raise failed.exceptions[0] from None
            await self.io(os.fsync, fd)
        finally:
            await self.io(self._close, fd, self._state())
        got = await self.io(sha256_file, self.partial)
        if got != self.download.digest:
            await self.io(self._discard)
            message = (
                f"digest mismatch, file must be downloaded again: want {self.download.digest}, got {got}"
            )
            raise RemoteError(message, "invalid")
        await self.io(self._place)
        return self.download.total

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
        await self.io(os.pwrite, fd, data, part.start + part.done)
        part.done += len(data)
        self.download.completed += len(data)
        self.unsaved += len(data)
        if self.unsaved >= SAVE_EVERY:
            self.unsaved = 0
            await self.io(_save, self.state, self._state())
        self.download.tell()

    def _state(self) -> bytes:
        """The parts' progress as saved (taken on the loop, where the parts change)."""
        parts = [{"start": p.start, "stop": p.stop, "done": p.done} for p in self.parts]
        return json.dumps({"parts": parts}).encode()

    def _resume(self) -> list[Part] | None:
        """The parts of an earlier attempt at this blob, when its files are both still there
        (and neither is a symlink, which is not read through)."""
        files = (self.state, self.partial)
        if not all(f.is_file() and not f.is_symlink() for f in files):
            return None
        try:
            saved = json.loads(self.state.read_text())
            return [Part(int(p["start"]), int(p["stop"]), int(p["done"])) for p in saved["parts"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _close(self, fd: int, state: bytes) -> None:
        os.close(fd)
        _save(self.state, state)

    def _discard(self) -> None:
        self.partial.unlink(missing_ok=True)
        self.state.unlink(missing_ok=True)

    def _place(self) -> None:
        """The verified file under its blob name, in one rename."""
        os.replace(self.partial, self.target)
        self.state.unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def _exclusive(path: Path) -> AsyncIterator[None]:
    """An exclusive lock on `path` (created if need be), waited for: one downloader per blob
    among the processes sharing the store. Tried again every LOCK_POLL seconds rather than
    waited for on a thread, so a wait holds no thread and can be cancelled."""
    fd = await asyncio.to_thread(os.open, path, _OPEN, 0o644)
    try:
        while not await asyncio.to_thread(_try_lock, fd):
            await asyncio.sleep(LOCK_POLL)
        yield
    finally:
        await asyncio.to_thread(os.close, fd)  # which releases the lock


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _save(state: Path, data: bytes) -> None:
    """The parts' state replaced in one rename (its one writer is the download's file thread)."""
    tmp = state.with_name(state.name + ".tmp")
    with os.fdopen(os.open(tmp, _OPEN | os.O_TRUNC, 0o644), "wb") as f:
        f.write(data)
    os.replace(tmp, state)


def _open_sized(path: Path, size: int) -> int:
    fd = os.open(path, _OPEN, 0o644)
    os.ftruncate(fd, size)
    return fd


def _size(path: Path) -> int | None:
    """The size of the file at `path`, None when there is none."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _present(store: ModelStore, digest: str) -> tuple[Path, int | None]:
    """Blob `digest`'s path, and its size when it is in the store."""
    target = store.blob(digest)
    return target, _size(target)


def _beside(target: Path, suffix: str) -> Path:
    """A hidden file next to blob `target`, which no reader of the store looks at."""
    return target.with_name(f".{target.name}{suffix}")
