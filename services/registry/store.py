"""The model store under $OLLAMA_MODELS, in Ollama's on-disk layout.

    manifests/<host>/<namespace>/<model>/<tag>   raw manifest JSON
    blobs/sha256-<64 hex>                        content-addressed layers

A model's weights are one GGUF layer (MODEL_MEDIA_TYPE), or, for a model stored as a directory
of files (EXL2/EXL3: config.json, tokenizer files, safetensors shards), one FILE_MEDIA_TYPE layer
per file with the file's name in the layer's `name` field, as Ollama's own per-file layers name
theirs (its safetensors image layers). A file keeps its bytes whole, so identical shards of two
models are one blob, and a worker opens each by digest under the name the model needs.

Every write goes to a temporary file in the same directory and is renamed into
place, so a crash never leaves a half-written blob or manifest under its real name.
An existing Ollama model directory can be pointed at and read as it is.

Nothing outside OLLAMA_MODELS is read or written through the store: names and digests are
checked before they become paths, and a path whose way leads out of the store's real
directory (a symlinked blob, manifest or directory) is refused (`OutsideStore`): a manifest
there is not found, a model using such a blob does not load, a blob there is not read,
written or pruned. Links that stay inside the store are followed. The methods do file I/O:
the registry calls them on worker threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.protocol.messages import ModelFile
from services.registry.errors import RegistryError
from services.registry.names import ModelName

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
TEMPLATE_MEDIA_TYPE = "application/vnd.ollama.image.template"
SYSTEM_MEDIA_TYPE = "application/vnd.ollama.image.system"
PARAMS_MEDIA_TYPE = "application/vnd.ollama.image.params"
PROJECTOR_MEDIA_TYPE = "application/vnd.ollama.image.projector"
LICENSE_MEDIA_TYPE = "application/vnd.ollama.image.license"
MESSAGES_MEDIA_TYPE = "application/vnd.ollama.image.messages"
ADAPTER_MEDIA_TYPE = "application/vnd.ollama.image.adapter"
# corral's own: Ollama's tensor layers hold one tensor each, which no exllama loader opens, and an
# Ollama client must not take a whole safetensors shard for one of those.
FILE_MEDIA_TYPE = "application/vnd.corral.model.file"
MANIFEST_DEPTH = 4  # manifests/<host>/<namespace>/<model>/<tag>
_DIGEST = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")


class InvalidDigest(ValueError):
    def __init__(self, digest: str) -> None:
        super().__init__("invalid digest format")
        self.digest = digest


class OutsideStore(RegistryError):
    """A path of the store that leads out of it (through a symlink): never read or written."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"refusing {path}: it leads outside OLLAMA_MODELS", "internal")
        self.path = path


@dataclass(frozen=True)
class StoredModel:
    """A manifest found on disk, with what /api/tags and the workers need of it."""

    name: ModelName
    manifest_digest: str  # sha256 hex of the manifest bytes (no prefix), as Ollama shows it
    weights_digest: str  # sha256:<hex> of the model layer; of the file set (file_set_digest) for files
    weights_size: int  # a multi-file model's: its files' together
    total_size: int  # layers and config, as Ollama's Manifest.Size()
    modified_at: float
    config: dict[str, object]
    layers: dict[str, str]  # media type -> digest of its (first) layer
    ordered: tuple[tuple[str, str], ...] = ()  # every layer as (media type, digest), in order
    files: tuple[ModelFile, ...] = ()  # a multi-file model's files (no GGUF layer), in order

    def text_layer(self, store: ModelStore, media_type: str) -> str | None:
        """A small layer's text (template, system), or None when the manifest has none."""
        digest = self.layers.get(media_type)
        return store.blob(digest).read_text(encoding="utf-8") if digest else None

    def text_layers(self, store: ModelStore, media_type: str) -> list[str]:
        """The text of every layer of `media_type` (licenses), in order."""
        return [store.blob(d).read_text(encoding="utf-8") for t, d in self.ordered if t == media_type]

    def paths(self, store: ModelStore, media_type: str) -> list[Path]:
        return [store.blob(d) for t, d in self.ordered if t == media_type]


def blob_path(root: Path, digest: str) -> Path:
    """Path of blob `sha256:<hex>` (or `sha256-<hex>`); rejects anything else."""
    match = _DIGEST.fullmatch(digest)
    if not match:
        raise InvalidDigest(digest)
    return root / "blobs" / f"sha256-{match.group(1).lower()}"


def file_set_digest(files: tuple[ModelFile, ...]) -> str:
    """The identity of a multi-file model's weights: sha256 over its files' names and digests, in
    name order. Two manifests with the same files (other templates, say) share it, as two GGUF
    models sharing a weights layer do; it names no blob."""
    lines = "".join(f"{file.name}\0{file.digest}\n" for file in sorted(files, key=lambda f: f.name))
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._real = root.resolve()

    def contains(self, path: Path) -> bool:
        """Whether `path`, every link on its way followed, stays in the store (it need not exist)."""
        try:
            return path.resolve().is_relative_to(self._real)
        except (OSError, RuntimeError):  # a symlink loop
            return False

    def inside(self, path: Path) -> Path:
        """`path`, when it stays in the store; else OutsideStore."""
        if not self.contains(path):
            raise OutsideStore(path)
        return path

    def blob(self, digest: str) -> Path:
        """Path of blob `digest`: InvalidDigest unless `sha256:<64 hex>`, OutsideStore when it
        is a link out of the store."""
        return self.inside(blob_path(self.root, digest))

    def manifest_path(self, name: ModelName) -> Path:
        """Where the manifest of `name` is written (OutsideStore when that leads out)."""
        return self.inside(self.root.joinpath("manifests", *name.parts))

    def put_blob_file(self, source: Path, digest: str) -> Path:
        """Place `source` as blob `digest`: hard link when possible, else an atomic copy."""
        target = self.blob(digest)
        if target.exists() and target.stat().st_size == source.stat().st_size:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkstemp(dir=target.parent, prefix="sha256-", suffix=".partial")[1])
        try:
            tmp.unlink()
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def put_blob_bytes(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        target = self.blob(digest)
        if not target.exists():
            _atomic_write(target, data)
        return digest

    def put_layer(self, media_type: str, data: bytes) -> tuple[dict[str, Any], str]:
        """Store `data` as a layer of `media_type`: the layer, and Ollama's status for it
        ("creating new layer sha256:…", or "using existing layer sha256:…" when stored already)."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        created = not self.blob(digest).exists()
        self.put_blob_bytes(data)
        status = f"{'creating new' if created else 'using existing'} layer {digest}"
        return {"mediaType": media_type, "digest": digest, "size": len(data)}, status

    def manifest(self, name: ModelName) -> dict[str, Any] | None:
        """The stored manifest of `name` as JSON, or None."""
        data = self.manifest_bytes(name)
        try:
            return json.loads(data) if data is not None else None
        except ValueError:
            return None

    def manifest_bytes(self, name: ModelName) -> bytes | None:
        """The stored manifest of `name` as its bytes (whose sha256 is the model's id), or None."""
        path = self._existing_manifest(name)
        try:
            return path.read_bytes() if path else None
        except OSError:
            return None

    def write_manifest(self, name: ModelName, manifest: dict[str, object] | bytes) -> None:
        """Write the manifest of `name`, as JSON or as the exact bytes a registry served."""
        data = manifest if isinstance(manifest, bytes) else json.dumps(manifest, indent=None).encode()
        _atomic_write(self.manifest_path(name), data)

    def write_model(
        self, name: ModelName, config: Mapping[str, object], layers: list[dict[str, Any]]
    ) -> None:
        """Store `config` as the config blob (JSON, as Go's encoder writes it) and write the
        manifest of `name` over it and `layers`, in that order."""
        config_bytes = (json.dumps(config) + "\n").encode()
        config_digest = self.put_blob_bytes(config_bytes)
        self.write_manifest(
            name,
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_MEDIA_TYPE,
                "config": {
                    "mediaType": CONFIG_MEDIA_TYPE,
                    "digest": config_digest,
                    "size": len(config_bytes),
                },
                "layers": layers,
            },
        )

    def prune(self, digests: set[str]) -> None:
        """Remove those of `digests` no stored manifest refers to (a link out of the store stays)."""
        unused = set(digests)
        for remaining in self._manifests():
            try:
                unused -= manifest_digests(json.loads(remaining.read_bytes()))
            except (OSError, ValueError):
                continue
        for digest in unused:
            try:
                self.blob(digest).unlink(missing_ok=True)
            except (InvalidDigest, OutsideStore):
                continue

    def copy(self, source: ModelName, destination: ModelName) -> bool:
        """`destination` becomes a second name for `source`'s manifest; False if there is none."""
        path = self._existing_manifest(source)
        if path is None:
            return False
        _atomic_write(self.manifest_path(destination), path.read_bytes())
        return True

    def delete(self, name: ModelName, prune: bool = True) -> bool:
        """Remove `name`, then (with `prune`) every blob of it no other manifest uses; False if
        there is none.

        A worker that has the weights loaded keeps them: an unlinked file stays readable
        through the mapping it already holds."""
        path = self._existing_manifest(name)
        if path is None:
            return False
        digests = manifest_digests(json.loads(path.read_bytes()))
        path.unlink()
        if prune:
            self.prune(digests)
        return True

    def find(self, name: ModelName) -> StoredModel | None:
        """The stored model for `name`, matched case-insensitively per part as Ollama does."""
        path = self._existing_manifest(name)
        return self.load(path) if path else None

    def list(self) -> list[StoredModel]:
        models = [m for m in (self.load(p) for p in self._manifests()) if m]
        return sorted(models, key=lambda m: m.modified_at, reverse=True)

    def manifest_files(self) -> Iterator[tuple[ModelName, Path]]:
        """Every manifest on disk, by the name its path spells."""
        base = self.root / "manifests"
        for path in self._manifests():
            yield ModelName(*path.relative_to(base).parts), path

    def _existing_manifest(self, name: ModelName) -> Path | None:
        """The manifest file of `name`, each part matched case-insensitively; None when there
        is none, or the way to it leads out of the store."""
        path = self.root / "manifests"
        for part in name.parts:
            path = next((c for c in self._entries(path) if c.name.lower() == part.lower()), path / part)
        return path if path.is_file() and self.contains(path) else None

    def _manifests(self) -> Iterator[Path]:
        """Every manifest file (manifests/<host>/<namespace>/<model>/<tag>) in the store; hidden
        names (a manifest being written) are none."""
        level: tuple[Path, ...] = (self.root / "manifests",)
        for _ in range(MANIFEST_DEPTH):
            level = tuple(
                child
                for directory in level
                for child in self._entries(directory)
                if not child.name.startswith(".")
            )
        yield from (p for p in level if p.is_file() and self.contains(p))

    def _entries(self, directory: Path) -> tuple[Path, ...]:
        """What `directory` holds; nothing when it is not a directory in the store."""
        if not self.contains(directory):
            return ()
        try:
            return tuple(directory.iterdir())
        except OSError:  # not a directory, or gone meanwhile (another host deleted it)
            return ()

    def load(self, path: Path) -> StoredModel | None:
        """The model a manifest file describes; None when it cannot be read (yet)."""
        try:
            raw = self.inside(path).read_bytes()
            manifest = json.loads(raw)
            layers = manifest.get("layers", [])
            weights = next((layer for layer in layers if layer["mediaType"] == MODEL_MEDIA_TYPE), None)
            files = () if weights is not None else _files(layers)
            if weights is None:
                if not files:
                    return None  # no weights at all
                weights = {"digest": file_set_digest(files), "size": sum(f.size for f in files)}
            for digest in manifest_digests(manifest):
                self.blob(digest)  # every layer a well-formed digest, none leading out of the store
            config_digest = manifest.get("config", {}).get("digest")
            config = json.loads(self.blob(config_digest).read_bytes()) if config_digest else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError, OutsideStore):
            return None  # (a file layer the wire refuses raises pydantic's ValidationError, a ValueError)
        return StoredModel(
            name=ModelName(*path.relative_to(self.root / "manifests").parts),
            manifest_digest=hashlib.sha256(raw).hexdigest(),
            weights_digest=weights["digest"],
            weights_size=int(weights["size"]),
            total_size=sum(int(layer["size"]) for layer in layers)
            + int(manifest.get("config", {}).get("size", 0)),
            modified_at=path.stat().st_mtime,
            config=config,
            layers={layer["mediaType"]: layer["digest"] for layer in reversed(layers)},
            ordered=tuple((layer["mediaType"], layer["digest"]) for layer in layers),
            files=files,
        )


def _files(layers: list[dict[str, Any]]) -> tuple[ModelFile, ...]:
    """The file layers of a manifest, in order; ValueError when two share a name or a name is not
    a plain file name (the wire's rule)."""
    files = tuple(
        ModelFile(name=str(layer.get("name", "")), digest=layer["digest"], size=int(layer["size"]))
        for layer in layers
        if layer["mediaType"] == FILE_MEDIA_TYPE
    )
    if len({file.name for file in files}) != len(files):
        raise ValueError("two files of one model share a name")
    return files


def manifest_digests(manifest: dict[str, Any]) -> set[str]:
    """Every blob a manifest refers to: its layers and its config."""
    layers = [*manifest.get("layers", []), manifest.get("config") or {}]
    return {str(layer["digest"]) for layer in layers if layer.get("digest")}


def _atomic_write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
