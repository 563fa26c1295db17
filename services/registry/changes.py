"""Copying and deleting models, and asking for blobs, with Ollama's errors (CopyHandler,
DeleteHandler, HeadBlobHandler). Blocking: the registry runs them on worker threads."""

from __future__ import annotations

from services.protocol import RegistryResult
from services.registry.names import InvalidName, parse_name
from services.registry.store import InvalidDigest, ModelStore, OutsideStore


def copy(store: ModelStore, source: str, destination: str) -> RegistryResult:
    try:
        src = parse_name(source)
    except InvalidName:
        return RegistryResult(error=f'source "{source}" is invalid', code="invalid")
    try:
        dst = parse_name(destination)
    except InvalidName:
        return RegistryResult(error=f'destination "{destination}" is invalid', code="invalid")
    try:
        copied = store.copy(src, dst)
    except OutsideStore as exc:
        return RegistryResult(error=str(exc), code=exc.code)
    if not copied:
        return RegistryResult(error=f'model "{source}" not found', code="not_found")
    return RegistryResult()


def delete(store: ModelStore, name: str, prune: bool) -> RegistryResult:
    try:
        parsed = parse_name(name)
    except InvalidName:
        return RegistryResult(error=f'name "{name}" is invalid', code="invalid")
    if not store.delete(parsed, prune):
        return RegistryResult(error=f"model '{name}' not found", code="not_found")
    return RegistryResult()


def head_blob(store: ModelStore, digest: str) -> RegistryResult:
    try:
        path = store.blob(digest)
    except InvalidDigest as exc:
        return RegistryResult(error=str(exc), code="invalid")
    except OutsideStore as exc:
        return RegistryResult(error=str(exc), code=exc.code)
    if not path.is_file():
        return RegistryResult(error=f'blob "{digest}" not found', code="not_found")
    return RegistryResult()
