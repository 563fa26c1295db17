"""Pulling and pushing models (Ollama's PullModel and PushModel), reporting Ollama's statuses.

A pull fetches the manifest, then every layer and the config the store lacks (each verified
before it becomes visible, see `download`), and writes the manifest last, as the registry
served it: a pull that fails or is cut leaves no model that lists or loads. A Hugging Face name
whose repository the registry endpoint does not serve as GGUF is pulled from the Hub API as a
model directory instead (`hub`, `hub_pull`), with the same guarantees. Layers that only
the name's previous manifest used are then pruned (unless OLLAMA_NOPRUNE). The closing
"success" is the transfer's last message (see `transfers`). The store's files are read and
written on worker threads, one call per step, never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx

from services.protocol import Progress
from services.registry.download import Downloads
from services.registry.hub import HubSettings, falls_back, hub_repo
from services.registry.hub_pull import pull_repo
from services.registry.hub_remote import HubRemote
from services.registry.names import InvalidName, ModelName, parse_name
from services.registry.remote import Remote, RemoteError
from services.registry.store import InvalidDigest, ModelStore, manifest_digests
from services.telemetry import log_event

Report = Callable[[Progress], None]
NO_HUB = HubSettings()  # hf.co and huggingface.co alone, anonymously
log = logging.getLogger("corral.registry")


def job_key(text: str, insecure: bool) -> str | None:
    """What makes two pulls one job: the same model (names match case-insensitively, as
    Ollama's do) from the same place by the same scheme. None for a name that is not valid:
    its pull fails at once, alone."""
    try:
        name = parse_name(text)
    except InvalidName:
        return None
    return f"pull {'http' if insecure else 'https'} {name.full.lower()}"


def _name(store: ModelStore, text: str) -> ModelName:
    """The model `text` names, spelled as the store already has it when only the case differs."""
    try:
        name = parse_name(text)
    except InvalidName as exc:
        raise RemoteError(str(exc), "invalid") from exc
    existing = store.find(name)
    return existing.name if existing else name


def _stored(store: ModelStore, text: str) -> tuple[ModelName, dict[str, Any] | None]:
    """The model `text` names (see `_name`) and the manifest the store has for it now."""
    name = _name(store, text)
    return name, store.manifest(name)


def _stored_bytes(store: ModelStore, text: str) -> tuple[ModelName, bytes | None]:
    """The model `text` names (see `_name`) and its stored manifest's bytes."""
    name = _name(store, text)
    return name, store.manifest_bytes(name)


def _layers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The layers, then the config, each once, each with a well-formed digest and size."""
    entries = [*manifest.get("layers", []), *([manifest["config"]] if manifest.get("config") else [])]
    layers: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
            raise RemoteError("invalid manifest: a layer without a digest", "invalid")
        if not isinstance(entry.get("size", 0), int):
            raise RemoteError("invalid manifest: a layer without a size", "invalid")
        layers.setdefault(entry["digest"], entry)
    return list(layers.values())


async def pull(
    store: ModelStore,
    downloads: Downloads,
    client: httpx.AsyncClient,
    text: str,
    insecure: bool,
    prune: bool,
    report: Report,
    hub: HubSettings = NO_HUB,
) -> None:
    name, previous = await asyncio.to_thread(_stored, store, text)
    report(Progress(status="pulling manifest"))
    remote = Remote(client, name, insecure)
    try:
        data = await remote.manifest()
    except RemoteError as exc:
        repo = hub_repo(name, hub)
        if repo is None or not falls_back(exc.status, str(exc)):
            raise RemoteError(f"pull model manifest: {exc}", exc.code) from exc
        log_event(log, "hub_pull", model=name.full, repo=str(repo), registry=str(exc))
        unseen = exc if exc.status != 400 else None  # not shown, rather than "not GGUF"
        hub_remote = HubRemote(client, repo, hub.token)
        await pull_repo(store, downloads, hub_remote, name, previous, prune, report, unseen)
        return
    try:
        manifest = json.loads(data)
        if not isinstance(manifest, dict):
            raise ValueError("not an object")
        layers = _layers(manifest)
    except (RemoteError, ValueError) as exc:
        code = exc.code if isinstance(exc, RemoteError) else "invalid"
        raise RemoteError(f"pull model manifest: {exc}", code) from exc
    for layer in layers:
        digest = layer["digest"]
        status = f"pulling {digest[7:19]}"

        def tell(completed: int, total: int, status: str = status, digest: str = digest) -> None:
            report(Progress(status=status, digest=digest, total=total, completed=completed))

        try:
            await downloads.fetch(remote, digest, tell)
        except InvalidDigest as exc:
            raise RemoteError(f"pull model manifest: invalid digest {digest!r}", "invalid") from exc
    report(Progress(status="verifying sha256 digest"))  # each blob was checked before it was placed
    report(Progress(status="writing manifest"))
    await asyncio.to_thread(store.write_manifest, name, data)
    unused = manifest_digests(previous) - manifest_digests(manifest) if previous else set()
    if unused and prune:
        report(Progress(status="removing unused layers"))
        await asyncio.to_thread(store.prune, unused)


async def push(
    store: ModelStore, client: httpx.AsyncClient, text: str, insecure: bool, report: Report
) -> None:
    name, data = await asyncio.to_thread(_stored_bytes, store, text)  # an invalid name: no status
    report(Progress(status="retrieving manifest"))
    if data is None:
        report(Progress(status="couldn't retrieve manifest"))
        raise RemoteError(f'model "{text}" not found', "not_found")
    remote = Remote(client, name, insecure)
    for layer in _layers(json.loads(data)):
        digest, size = layer["digest"], int(layer.get("size", 0))
        status = f"pushing {digest[7:19]}"
        sent = 0

        def tell(count: int, status: str = status, digest: str = digest, size: int = size) -> None:
            nonlocal sent
            sent += count
            report(Progress(status=status, digest=digest, total=size, completed=sent))

        report(Progress(status=status, digest=digest, total=size, completed=0))
        if await remote.has_blob(digest):
            tell(size)
            continue
        try:
            path = await asyncio.to_thread(store.blob, digest)  # refuses a link out of the store
        except InvalidDigest as exc:
            raise RemoteError(f"invalid digest {digest!r} in the manifest", "invalid") from exc
        await remote.upload_blob(digest, path, tell)
    report(Progress(status="pushing manifest"))
    await remote.put_manifest(data)
