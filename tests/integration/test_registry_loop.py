"""The registry's handlers never touch a file on the event loop. The registry runs in this
process on a real nats-server; an audit hook records every file operation Python audits (open,
rename, remove, mkdir, directory listings, truncate, links, flock, sqlite connects) that the
loop's thread makes on the store or the catalog while requests are served. (stat calls are not
audited, so they are not seen here.)"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from corral.nats_server import NatsServer
from services.config import load_settings
from services.protocol import (
    BlobRequest,
    BlobUpload,
    CatalogList,
    CatalogRequest,
    CopyRequest,
    CreateModelRequest,
    DeleteRequest,
    Progress,
    RegistryResult,
    ResolveRequest,
    ResolveResult,
    ShowRequest,
    ShowResult,
    Tracked,
    TransferRequest,
    subjects,
)
from services.protocol.messages import Message
from services.registry.bundled import BUNDLED_NAME, bundled_gguf
from services.registry.service import register
from services.runtime import new_broker
from tests.remote import DockerRegistry, TestCA, missing_tools
from tests.watch import DEADLINE

WATCHED = {
    "open",
    "os.rename",
    "os.remove",
    "os.rmdir",
    "os.mkdir",
    "os.listdir",
    "os.scandir",
    "os.truncate",
    "os.link",
    "os.symlink",
    "os.chmod",
    "os.utime",
    "shutil.copyfile",
    "fcntl.flock",
    "sqlite3.connect",
}
CHUNK = 256 * 1024  # bytes per upload message, as the gateway sends them (below max_payload)


@dataclass
class LoopWatch:
    """Records the audited file operations the watched thread makes under `root`."""

    root: str = ""
    thread: int | None = None
    seen: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, event: str, args: tuple[object, ...]) -> None:
        if self.thread != threading.get_ident() or event not in WATCHED or not args:
            return
        target = args[0]
        if isinstance(target, int) or str(target).startswith(self.root):  # a file descriptor, or ours
            self.seen.append((event, str(target)))

    @contextmanager
    def watching(self, root: Path) -> Iterator[list[tuple[str, str]]]:
        self.root, self.seen = str(root), []
        self.thread = threading.get_ident()  # the test's thread runs the event loop
        try:
            yield self.seen
        finally:
            self.thread = None


WATCH = LoopWatch()
sys.addaudithook(WATCH)  # for good: audit hooks cannot be removed; idle unless watching


@dataclass
class Served:
    client: Client
    root: Path


@pytest.fixture
async def served(
    tmp_path: Path, nats_binary: Path, ca: TestCA, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Served]:
    """A registry in this process, its store and catalog under tmp_path, trusting `ca`."""
    server = NatsServer(nats_binary, tmp_path / "nats")
    url = server.start()
    for variable in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
    env = {"OLLAMA_MODELS": str(tmp_path / "models"), "CORRAL_DATA_DIR": str(tmp_path / "data")}
    broker = new_broker(url, "registry")
    background = asyncio.ensure_future(register(broker, load_settings({**env, "NATS_URL": url}))())
    await broker.start()
    client = await nats.connect(url)
    try:
        yield Served(client, tmp_path)
    finally:
        await client.close()
        background.cancel()
        await asyncio.gather(background, return_exceptions=True)
        await broker.stop()
        server.stop()


async def ask(client: Client, subject: str, body: Message) -> bytes:
    return (await client.request(subject, body.encode(), timeout=DEADLINE)).data


async def run_job(client: Client, subject: str, job: Tracked) -> list[Progress]:
    """A job's progress, up to its `done` message."""
    job.reply_subject = client.new_inbox()
    replies = await client.subscribe(job.reply_subject)
    try:
        assert RegistryResult.model_validate_json(await ask(client, subject, job)).error is None
        seen = [Progress.model_validate_json((await replies.next_msg(timeout=DEADLINE)).data)]
        while not seen[-1].done:
            seen.append(Progress.model_validate_json((await replies.next_msg(timeout=DEADLINE)).data))
        return seen
    finally:
        await replies.unsubscribe()


async def upload(client: Client, data: bytes) -> str:
    """Send `data` as a blob, as the gateway does; its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    opened = BlobUpload.model_validate_json(
        await ask(client, subjects.REGISTRY_BLOB_OPEN, BlobRequest(digest=digest))
    )
    assert opened.error is None and opened.subject
    for offset in range(0, len(data), CHUNK):
        headers = {subjects.UPLOAD_OFFSET: str(offset)}
        answer = await client.request(
            opened.subject, data[offset : offset + CHUNK], DEADLINE, headers=headers
        )
        assert RegistryResult.model_validate_json(answer.data).error is None
    end = await client.request(opened.subject, b"", DEADLINE, headers={subjects.UPLOAD_END: "1"})
    assert RegistryResult.model_validate_json(end.data).error is None
    return digest


def unique_weights() -> bytes:
    """The bundled GGUF under another general.name: a weights blob of the test's own."""
    source = bundled_gguf()
    assert source is not None
    data = bytearray(source.read_bytes())
    at = data.find(b"Smollm2 135M", 0, 4096)
    data[at : at + 7] = b"LoopTst"
    return bytes(data)


async def test_serving_requests_touches_no_file_on_the_loop(served: Served) -> None:
    client = served.client
    weights = await asyncio.to_thread(unique_weights)
    with WATCH.watching(served.root) as seen:
        digest = await upload(client, weights)
        head = RegistryResult.model_validate_json(
            await ask(client, subjects.REGISTRY_BLOB_HEAD, BlobRequest(digest=digest))
        )
        assert head.error is None
        abandoned = BlobUpload.model_validate_json(
            await ask(client, subjects.REGISTRY_BLOB_OPEN, BlobRequest(digest="sha256:" + "0" * 64))
        )
        await client.publish(abandoned.subject, b"", headers={subjects.UPLOAD_ABORT: "1"})

        created = await run_job(
            client,
            subjects.REGISTRY_CREATE,
            CreateModelRequest(name="loop:v1", files={"m.gguf": digest}, system="Loop."),
        )
        assert created[-1].status == "success", created[-1]
        derived = await run_job(
            client,
            subjects.REGISTRY_CREATE,
            CreateModelRequest(name="derived:v1", from_model=BUNDLED_NAME, system="Derived."),
        )
        assert derived[-1].status == "success", derived[-1]
        resolved = ResolveResult.model_validate_json(
            await ask(client, subjects.REGISTRY_RESOLVE, ResolveRequest(name="loop:v1"))
        )
        assert resolved.model is not None and resolved.model.system == "Loop."
        shown = ShowResult.model_validate_json(
            await ask(client, subjects.REGISTRY_SHOW, ShowRequest(name="derived:v1"))
        )
        assert shown.error is None
        copied = RegistryResult.model_validate_json(
            await ask(client, subjects.REGISTRY_COPY, CopyRequest(source="loop:v1", destination="copy:v1"))
        )
        assert copied.error is None
        listed = CatalogList.model_validate_json(await ask(client, subjects.REGISTRY_LIST, CatalogRequest()))
        assert {"loop:v1", "copy:v1", "derived:v1", BUNDLED_NAME} <= {m.name for m in listed.models}
        for name in ("copy:v1", "loop:v1", "derived:v1"):
            deleted = RegistryResult.model_validate_json(
                await ask(client, subjects.REGISTRY_DELETE, DeleteRequest(name=name))
            )
            assert deleted.error is None
    assert seen == []


@pytest.mark.skipif(missing_tools() is not None, reason=missing_tools() or "")
async def test_pulls_and_pushes_touch_no_file_on_the_loop(served: Served, registry: DockerRegistry) -> None:
    client = served.client
    weights = await asyncio.to_thread(unique_weights)
    name = f"{registry.host}/library/loop:v1"
    with WATCH.watching(served.root) as seen:
        digest = await upload(client, weights)
        created = await run_job(
            client, subjects.REGISTRY_CREATE, CreateModelRequest(name=name, files={"m.gguf": digest})
        )
        assert created[-1].status == "success", created[-1]
        pushed = await run_job(client, subjects.REGISTRY_PUSH, TransferRequest(name=name))
        assert pushed[-1].status == "success", pushed[-1]
        deleted = RegistryResult.model_validate_json(
            await ask(client, subjects.REGISTRY_DELETE, DeleteRequest(name=name))
        )
        assert deleted.error is None  # and its weights pruned: the pull fetches them again
        pulled = await run_job(client, subjects.REGISTRY_PULL, TransferRequest(name=name))
        assert pulled[-1].status == "success", pulled[-1]
        assert any(p.digest == digest and p.completed == len(weights) for p in pulled)
    assert seen == []
