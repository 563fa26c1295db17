"""Nothing outside OLLAMA_MODELS is read or written through a name, a digest or a symlink in the
store: real files and links in a temp dir, the store's own methods and the registry's handlers
on top of them."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest

from services.protocol import CreateModelRequest
from services.registry import changes
from services.registry.create import CreateError, create
from services.registry.describe import resolve
from services.registry.download import Downloads, _open_sized, _save
from services.registry.names import INVALID_NAME, InvalidName, ModelName, parse_name
from services.registry.pull import pull
from services.registry.remote import RemoteError
from services.registry.store import MODEL_MEDIA_TYPE, SYSTEM_MEDIA_TYPE, ModelStore, OutsideStore
from services.registry.uploads import PARTIAL_SUFFIX, Uploads

WEIGHTS = b"GGUF not really weights"
SECRET = b"outside the store"

TRAVERSALS = [
    "../x",
    "..",
    "../../etc/passwd",
    "x/../../y",
    "./x",
    "/etc/passwd",
    "/abs/ns/model:tag",
    "%2e%2e/x",
    "%2e%2e%2fx",
    "ns/%2e%2e:tag",
    "..\\x",
    "ns\\..\\..\\x",
    "C:\\models\\x",
    "x:../y",
    "model:..",
    "model:../../y",
    "host/../model",
    "host/ns/..",
    "x\x00y",
    "x\n../y",
]


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_file(store: ModelStore, data: bytes) -> Path:
    return store.root / "blobs" / digest_of(data).replace(":", "-")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the store, with a file the store must never read or change."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret").write_bytes(SECRET)
    return path


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    """A store with one model, m:v1: weights and a system prompt."""
    store = ModelStore(tmp_path / "models")
    weights = store.put_layer(MODEL_MEDIA_TYPE, WEIGHTS)[0]
    system = store.put_layer(SYSTEM_MEDIA_TYPE, b"Be brief.")[0]
    store.write_model(parse_name("m:v1"), {"model_format": "gguf"}, [weights, system])
    return store


def untouched(outside: Path) -> bool:
    return (
        sorted(p.name for p in outside.iterdir()) == ["secret"]
        and (outside / "secret").read_bytes() == SECRET
    )


@pytest.mark.parametrize("text", TRAVERSALS, ids=repr)
def test_traversal_names_are_ollamas_invalid_name(text: str) -> None:
    with pytest.raises(InvalidName) as raised:
        parse_name(text)
    assert str(raised.value) == INVALID_NAME == "invalid model name"


@pytest.mark.parametrize("text", TRAVERSALS, ids=repr)
def test_traversal_names_are_refused_by_every_handler(text: str, store: ModelStore, outside: Path) -> None:
    assert resolve(store, text).error == "invalid model name"
    assert changes.delete(store, text, True).error == f'name "{text}" is invalid'
    assert changes.copy(store, "m:v1", text).error == f'destination "{text}" is invalid'
    assert changes.copy(store, text, "y").error == f'source "{text}" is invalid'
    with pytest.raises(CreateError, match=r"^invalid model name$"):
        create(store, CreateModelRequest(name=text, from_model="m:v1"), True, lambda progress: None)
    with pytest.raises(RemoteError, match=r"^invalid model name$"):
        asyncio.run(pull_offline(store, text))
    assert untouched(outside)


async def pull_offline(store: ModelStore, text: str) -> None:
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(599))
    ) as client:
        await pull(store, Downloads(store), client, text, False, True, lambda progress: None)


def test_a_blob_linked_out_of_the_store_is_refused(store: ModelStore, outside: Path) -> None:
    digest = digest_of(SECRET)
    (store.root / "blobs" / digest.replace(":", "-")).symlink_to(outside / "secret")
    with pytest.raises(OutsideStore, match="leads outside OLLAMA_MODELS"):
        store.blob(digest)
    head = changes.head_blob(store, digest)
    assert (head.code, head.error) == (
        "internal",
        str(OutsideStore(store.root / "blobs" / digest.replace(":", "-"))),
    )
    with pytest.raises(OutsideStore):
        Uploads(store).open(digest)
    with pytest.raises(OutsideStore):
        store.put_blob_bytes(SECRET)  # not written through the link either
    store.prune({digest})  # the link is not the store's to follow or remove
    assert (store.root / "blobs" / digest.replace(":", "-")).is_symlink()
    assert untouched(outside)


def test_a_model_using_a_blob_linked_out_does_not_load(store: ModelStore, outside: Path) -> None:
    system = blob_file(store, b"Be brief.")
    system.unlink()
    system.symlink_to(outside / "secret")
    assert store.find(parse_name("m:v1")) is None
    assert resolve(store, "m:v1").error == "model 'm:v1' not found"
    assert store.list() == []
    assert untouched(outside)


def test_a_blob_linked_within_the_store_is_followed(store: ModelStore) -> None:
    moved = store.root / "elsewhere-in-the-store"
    weights = blob_file(store, WEIGHTS)
    weights.rename(moved)
    weights.symlink_to(moved)
    assert store.blob(digest_of(WEIGHTS)).read_bytes() == WEIGHTS
    found = store.find(parse_name("m:v1"))
    assert found is not None and found.text_layer(store, SYSTEM_MEDIA_TYPE) == "Be brief."


def test_the_blobs_directory_linked_out_refuses_every_blob(tmp_path: Path, outside: Path) -> None:
    store = ModelStore(tmp_path / "models")
    store.root.mkdir()
    (store.root / "blobs").symlink_to(outside)
    with pytest.raises(OutsideStore):
        store.put_blob_bytes(WEIGHTS)
    with pytest.raises(OutsideStore):
        store.blob(digest_of(SECRET))
    assert untouched(outside)
    stale = outside / f".someone-elses{PARTIAL_SUFFIX}"
    stale.write_bytes(b"")
    assert Uploads(store).remove_orphans(now=2e9) == [] and stale.exists()  # not swept through the link


def write_manifest_outside(store: ModelStore, outside: Path) -> Path:
    """A valid manifest, outside the store, naming the store's own blobs."""
    manifest = store.manifest(parse_name("m:v1"))
    path = outside / "manifest"
    path.write_text(json.dumps(manifest))
    return path


def test_a_manifest_linked_out_is_neither_read_nor_written(store: ModelStore, outside: Path) -> None:
    foreign = write_manifest_outside(store, outside)
    link = store.manifest_path(parse_name("m:v1")).with_name("linked")
    link.symlink_to(foreign)
    name = parse_name("m:linked")
    assert store.find(name) is None and store.manifest_bytes(name) is None
    assert [found.name for found in store.list()] == [parse_name("m:v1")]
    assert [found for found, _ in store.manifest_files()] == [parse_name("m:v1")]
    with pytest.raises(OutsideStore):
        store.write_manifest(name, b"{}")
    with pytest.raises(OutsideStore):
        store.copy(parse_name("m:v1"), name)
    assert changes.copy(store, "m:v1", "m:linked").code == "internal"
    assert not store.delete(name)  # not found: the link and what it points to stay
    assert link.is_symlink() and foreign.read_text() == json.dumps(store.manifest(parse_name("m:v1")))


def test_a_manifest_directory_linked_out_is_neither_listed_nor_written(
    store: ModelStore, outside: Path
) -> None:
    (outside / "m").mkdir()
    write_manifest_outside(store, outside).rename(outside / "m" / "v1")
    namespace = store.root / "manifests" / "registry.ollama.ai" / "elsewhere"
    namespace.symlink_to(outside)
    assert store.find(parse_name("elsewhere/m:v1")) is None
    assert [found.name for found in store.list()] == [parse_name("m:v1")]
    with pytest.raises(OutsideStore):
        store.write_manifest(parse_name("elsewhere/new:v1"), b"{}")
    with pytest.raises(OutsideStore):
        store.write_manifest(parse_name("elsewhere/m:v1"), b"{}")
    assert sorted(p.name for p in outside.iterdir()) == ["m", "secret"]
    assert [p.name for p in (outside / "m").iterdir()] == ["v1"]
    assert json.loads((outside / "m" / "v1").read_text()) == store.manifest(parse_name("m:v1"))


def test_a_store_reached_through_a_symlink_works(tmp_path: Path, store: ModelStore) -> None:
    link = tmp_path / "link-to-models"
    link.symlink_to(store.root)
    through = ModelStore(link)
    assert [found.name for found in through.list()] == [parse_name("m:v1")]
    through.write_manifest(parse_name("m:v2"), store.manifest_bytes(parse_name("m:v1")) or b"")
    assert store.find(parse_name("m:v2")) is not None


def test_a_symlink_loop_is_refused_not_followed(store: ModelStore) -> None:
    blobs = store.root / "blobs"
    (blobs / "sha256-loop-a").symlink_to(blobs / "sha256-loop-b")
    (blobs / "sha256-loop-b").symlink_to(blobs / "sha256-loop-a")
    assert not store.contains(blobs / "sha256-loop-a")
    manifests = store.root / "manifests" / "registry.ollama.ai"
    (manifests / "loop").symlink_to(manifests / "loop")
    assert [found.name for found in store.list()] == [parse_name("m:v1")]
    assert store.find(ModelName("registry.ollama.ai", "loop", "m", "v1")) is None


def test_a_downloads_hidden_files_planted_as_links_are_not_written_through(
    store: ModelStore, outside: Path
) -> None:
    partial = store.root / "blobs" / ".sha256-planted.partial"
    partial.symlink_to(outside / "secret")
    with pytest.raises(OSError):
        _open_sized(partial, 0)  # would have emptied the file outside
    state = store.root / "blobs" / ".sha256-planted.partial.json"
    state.with_name(state.name + ".tmp").symlink_to(outside / "secret")
    with pytest.raises(OSError):
        _save(state, b"{}")
    assert untouched(outside)
    assert os.path.islink(partial)


def test_a_manifest_being_written_is_not_listed(store: ModelStore) -> None:
    writing = store.manifest_path(parse_name("m:v1")).with_name(".tmp-1234.partial")
    writing.write_bytes(store.manifest_bytes(parse_name("m:v1")) or b"")
    assert [found.name for found in store.list()] == [parse_name("m:v1")]
