"""Blob uploads in progress: bytes arrive in order, are hashed as they are written, and
become blob `sha256-<hex>` only when the whole file has the digest it was announced with.

A partial upload lives in blobs/ under a name no reader looks for, so a crash, a client
that goes away or a wrong digest never leaves a half-written blob under its real name.
Uploads idle longer than IDLE_SECONDS are dropped with their partial file (`sweep`).
Every method does file I/O: the registry calls them on worker threads.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from services.protocol.messages import ErrorCode
from services.registry.store import ModelStore

IDLE_SECONDS = 120.0  # an upload no chunk has reached for this long is abandoned
PARTIAL_SUFFIX = ".upload"


class UploadError(Exception):
    def __init__(self, message: str, code: ErrorCode) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Upload:
    digest: str  # as announced: "sha256:<hex>" or "sha256-<hex>"
    target: Path
    partial: Path
    file: BinaryIO
    touched: float
    received: int = 0
    hash: hashlib._Hash = field(default_factory=hashlib.sha256)


class Uploads:
    def __init__(self, store: ModelStore, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._clock = clock
        self._open: dict[str, _Upload] = {}

    def open(self, digest: str) -> str | None:
        """Start an upload of blob `digest`: its id, or None when the blob is stored already.
        Raises InvalidDigest for a malformed digest, OutsideStore for a blob linked out of the
        store."""
        target = self._store.blob(digest)
        if target.exists():
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        upload_id = uuid.uuid4().hex
        partial = target.parent / f".{upload_id}{PARTIAL_SUFFIX}"
        file = partial.open("xb")  # a new file, never one planted there (a symlink out of the store)
        self._open[upload_id] = _Upload(digest, target, partial, file, self._clock())
        return upload_id

    def write(self, upload_id: str, offset: int, data: bytes) -> None:
        """Append `data`, which must start where the bytes so far end."""
        upload = self._get(upload_id)
        if offset != upload.received:
            self.abort(upload_id)
            raise UploadError(
                f"upload out of order: got offset {offset}, expected {upload.received}", "invalid"
            )
        try:
            upload.file.write(data)
        except OSError as exc:
            self.abort(upload_id)
            raise UploadError(f"writing blob: {exc.strerror or exc}", "internal") from exc
        upload.hash.update(data)
        upload.received += len(data)
        upload.touched = self._clock()

    def finish(self, upload_id: str) -> None:
        """Check the digest and put the blob in place; a mismatch leaves nothing behind."""
        upload = self._open.pop(upload_id, None)
        if upload is None:
            raise UploadError("upload not found: it finished or was abandoned", "not_found")
        try:
            upload.file.flush()
            os.fsync(upload.file.fileno())
            upload.file.close()
            got = "sha256:" + upload.hash.hexdigest()
            if self._store.blob(got) != upload.target:
                raise UploadError(f'digest mismatch, expected "{upload.digest}", got "{got}"', "invalid")
            os.replace(upload.partial, upload.target)
        except OSError as exc:
            raise UploadError(f"writing blob: {exc.strerror or exc}", "internal") from exc
        finally:
            upload.file.close()
            upload.partial.unlink(missing_ok=True)

    def abort(self, upload_id: str) -> None:
        upload = self._open.pop(upload_id, None)
        if upload is not None:
            upload.file.close()
            upload.partial.unlink(missing_ok=True)

    def sweep(self) -> list[str]:
        """Abandon the uploads idle for IDLE_SECONDS; their ids."""
        horizon = self._clock() - IDLE_SECONDS
        # list(): another thread may open or end an upload meanwhile
        idle = [upload_id for upload_id, upload in list(self._open.items()) if upload.touched < horizon]
        for upload_id in idle:
            self.abort(upload_id)
        return idle

    def remove_orphans(self, now: float | None = None) -> list[Path]:
        """Delete partial files no upload has written to for twice IDLE_SECONDS: those of a
        registry (this one or another sharing the store) that stopped mid-upload."""
        now = time.time() if now is None else now
        blobs = self._store.root / "blobs"
        mine = {upload.partial for upload in list(self._open.values())}
        orphans = []
        in_store = blobs.is_dir() and self._store.contains(blobs)  # never a directory linked out
        for partial in blobs.glob(f".*{PARTIAL_SUFFIX}") if in_store else ():
            try:
                if partial not in mine and partial.stat().st_mtime < now - 2 * IDLE_SECONDS:
                    partial.unlink()
                    orphans.append(partial)
            except FileNotFoundError:
                continue
        return orphans

    def close(self) -> None:
        for upload_id in list(self._open):
            self.abort(upload_id)

    def _get(self, upload_id: str) -> _Upload:
        upload = self._open.get(upload_id)
        if upload is None:
            raise UploadError("upload not found: it finished or was abandoned", "not_found")
        return upload
