"""Blob uploads: bytes in order, hashed as written, put in place only with the announced digest."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from services.registry.store import InvalidDigest, ModelStore
from services.registry.uploads import IDLE_SECONDS, PARTIAL_SUFFIX, UploadError, Uploads


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def partials(store: ModelStore) -> list[Path]:
    return list((store.root / "blobs").glob(f"*{PARTIAL_SUFFIX}"))


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path)


def test_chunks_in_order_become_the_blob(store: ModelStore) -> None:
    uploads = Uploads(store)
    data = os.urandom(10_000)
    upload = uploads.open(digest_of(data))
    assert upload is not None
    for offset in range(0, len(data), 4096):
        uploads.write(upload, offset, data[offset : offset + 4096])
    assert not store.blob(digest_of(data)).exists()  # not under its name until it is whole
    uploads.finish(upload)
    assert store.blob(digest_of(data)).read_bytes() == data
    assert partials(store) == []
    assert uploads.open(digest_of(data)) is None  # stored: nothing to upload


def test_a_wrong_digest_leaves_nothing_behind(store: ModelStore) -> None:
    uploads = Uploads(store)
    claimed = digest_of(b"what was promised")
    upload = uploads.open(claimed)
    assert upload is not None
    uploads.write(upload, 0, b"what was sent")
    with pytest.raises(UploadError) as caught:
        uploads.finish(upload)
    assert caught.value.code == "invalid"
    assert str(caught.value) == f'digest mismatch, expected "{claimed}", got "{digest_of(b"what was sent")}"'
    assert list((store.root / "blobs").iterdir()) == []


def test_the_dash_form_of_a_digest_is_the_same_blob(store: ModelStore) -> None:
    uploads = Uploads(store)
    upload = uploads.open(digest_of(b"x").replace(":", "-"))
    assert upload is not None
    uploads.write(upload, 0, b"x")
    uploads.finish(upload)
    assert store.blob(digest_of(b"x")).read_bytes() == b"x"


def test_a_chunk_out_of_order_ends_the_upload(store: ModelStore) -> None:
    uploads = Uploads(store)
    upload = uploads.open(digest_of(b"abcdef"))
    assert upload is not None
    uploads.write(upload, 0, b"abc")
    with pytest.raises(UploadError, match="expected 3"):
        uploads.write(upload, 4, b"def")
    assert partials(store) == []
    with pytest.raises(UploadError) as caught:
        uploads.write(upload, 3, b"def")
    assert caught.value.code == "not_found"


def test_a_malformed_digest_is_refused(store: ModelStore) -> None:
    with pytest.raises(InvalidDigest):
        Uploads(store).open("md5:abc")


def test_idle_uploads_are_abandoned(store: ModelStore) -> None:
    clock = Clock()
    uploads = Uploads(store, clock)
    idle = uploads.open(digest_of(b"idle"))
    busy = uploads.open(digest_of(b"busy"))
    assert idle is not None and busy is not None
    clock.now += IDLE_SECONDS / 2
    uploads.write(busy, 0, b"bu")
    clock.now += IDLE_SECONDS / 2 + 1
    assert uploads.sweep() == [idle]
    uploads.write(busy, 2, b"sy")
    uploads.finish(busy)
    assert store.blob(digest_of(b"busy")).exists() and partials(store) == []


def test_orphaned_partial_files_are_removed(store: ModelStore) -> None:
    uploads = Uploads(store)
    mine = uploads.open(digest_of(b"mine"))
    assert mine is not None
    orphan = store.root / "blobs" / f".dead{PARTIAL_SUFFIX}"
    orphan.write_bytes(b"half")
    now = orphan.stat().st_mtime
    assert uploads.remove_orphans(now + IDLE_SECONDS) == []  # may still be someone's
    assert uploads.remove_orphans(now + 3 * IDLE_SECONDS) == [orphan]
    assert [p.name for p in partials(store)] == [f".{mine}{PARTIAL_SUFFIX}"]  # a live one stays
