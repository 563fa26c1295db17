"""Pulling a Hugging Face model repository (EXL2/EXL3: config.json, tokenizer files, safetensors
shards) into the store, with the guarantees of a registry pull (see `pull`).

The revision's files an engine needs (`hub.wanted_files`) become one FILE_MEDIA_TYPE layer each,
named by the file's name (see `store`). A large file (LFS) is a blob like any registry layer: its
sha256 is known before a byte comes (the Hub's ETag), so `Downloads` fetches it in ranged parts,
resumes it after a cut, and renames it into place only once its hash matches. A small file kept
in git is fetched whole and placed only when its git blob id matches the Hub's ETag; one the
name's previous manifest holds with that id is not fetched again. The manifest, with a config
describing the model (`hub.manifest_config`), is written last.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from typing import Any

from services.protocol import Progress
from services.registry.download import Downloads
from services.registry.hub import FileMeta, git_blob_sha1, manifest_config, missing_files, wanted_files
from services.registry.hub_remote import HubRemote
from services.registry.names import ModelName
from services.registry.remote import RemoteError
from services.registry.store import FILE_MEDIA_TYPE, ModelStore, manifest_digests
from services.registry.transfers import Report

_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW  # never through a planted link


async def pull_repo(
    store: ModelStore,
    downloads: Downloads,
    hub: HubRemote,
    name: ModelName,
    previous: dict[str, Any] | None,
    prune: bool,
    report: Report,
    registry_error: RemoteError | None = None,
) -> None:
    """Pull `hub`'s repository as `name` (its statuses continue the registry's "pulling manifest").
    `registry_error`: the registry's answer, when it did not show the repository (rather than
    say it is not GGUF): a repository that turns out to be no model directory fails with it."""
    try:
        revision = await hub.revision()
    except RemoteError as exc:
        raise RemoteError(f"pull model manifest: {exc}", exc.code, status=exc.status) from exc
    names = wanted_files(revision.files)
    missing = missing_files(names)
    if missing and registry_error is not None:
        raise RemoteError(f"pull model manifest: {registry_error}", registry_error.code) from registry_error
    if missing:
        text = f"pull model manifest: {hub.repo} has no {', '.join(missing)}: not a model directory"
        raise RemoteError(text, "not_found")
    metas = await hub.files(revision.sha, names)
    earlier = _earlier_files(previous)
    digests: dict[str, str] = {}
    for meta in sorted(metas, key=lambda m: m.large):  # the small files first: fail early
        digests[meta.name] = await _fetch(store, downloads, hub, revision.sha, meta, earlier, report)
    layers = [
        {"mediaType": FILE_MEDIA_TYPE, "digest": digests[meta.name], "size": meta.size, "name": meta.name}
        for meta in metas
    ]
    report(Progress(status="verifying sha256 digest"))  # each file was checked before it was placed
    report(Progress(status="writing manifest"))
    manifest = await asyncio.to_thread(_write, store, name, layers)
    unused = manifest_digests(previous) - manifest_digests(manifest) if previous else set()
    if unused and prune:
        report(Progress(status="removing unused layers"))
        await asyncio.to_thread(store.prune, unused)


async def _fetch(
    store: ModelStore,
    downloads: Downloads,
    hub: HubRemote,
    sha: str,
    meta: FileMeta,
    earlier: dict[str, str],
    report: Report,
) -> str:
    """Make one file a blob of the store; its digest."""
    if meta.sha256 is not None:
        digest = meta.sha256
        status = f"pulling {digest[7:19]}"

        def tell(completed: int, total: int) -> None:
            report(Progress(status=status, digest=digest, total=total, completed=completed))

        await downloads.fetch(hub.file(sha, meta), digest, tell)
        return digest
    assert meta.git_sha1 is not None
    kept = await asyncio.to_thread(_same_as_before, store, earlier.get(meta.name), meta.git_sha1)
    if kept is None:
        data = await hub.small_file(sha, meta)
        kept = await asyncio.to_thread(_place_small, store, meta, data)
    report(Progress(status=f"pulling {kept[7:19]}", digest=kept, total=meta.size, completed=meta.size))
    return kept


def _earlier_files(previous: dict[str, Any] | None) -> dict[str, str]:
    """The previous manifest's files by name: their digests."""
    layers = (previous or {}).get("layers", [])
    return {
        str(layer["name"]): str(layer["digest"])
        for layer in layers
        if isinstance(layer, dict) and layer.get("mediaType") == FILE_MEDIA_TYPE and layer.get("name")
    }


def _same_as_before(store: ModelStore, digest: str | None, git_sha1: str) -> str | None:
    """`digest`, when that blob is in the store and has git blob id `git_sha1`."""
    if digest is None:
        return None
    try:
        data = store.blob(digest).read_bytes()
    except (OSError, ValueError):  # gone, or not a digest the store takes
        return None
    return digest if git_blob_sha1(data) == git_sha1 else None


def _place_small(store: ModelStore, meta: FileMeta, data: bytes) -> str:
    """Store a small file's bytes as a blob once they are the ones the Hub named: written to a
    hidden file of its own, then renamed, readable by every worker as a downloaded blob is."""
    got = git_blob_sha1(data)
    if got != meta.git_sha1:
        raise RemoteError(
            f"digest mismatch, file must be downloaded again: want git {meta.git_sha1}, got git {got}"
            f" ({meta.name})",
            "invalid",
        )
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    target = store.blob(digest)
    if target.exists():
        return digest
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with os.fdopen(os.open(partial, _NEW, 0o644), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return digest


def _write(store: ModelStore, name: ModelName, layers: list[dict[str, Any]]) -> dict[str, Any]:
    """The config (described from the stored config.json) and then the manifest; the manifest."""
    config_digest = next(layer["digest"] for layer in layers if layer["name"] == "config.json")
    try:
        config = json.loads(store.blob(config_digest).read_bytes())
    except ValueError as exc:
        raise RemoteError(f"config.json of {name.full} is not JSON: {exc}", "invalid") from exc
    if not isinstance(config, dict):
        raise RemoteError(f"config.json of {name.full} is not a JSON object", "invalid")
    store.write_model(name, manifest_config(config), layers)
    manifest = store.manifest(name)
    assert manifest is not None
    return manifest
