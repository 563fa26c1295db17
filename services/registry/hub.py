"""Hugging Face model repositories as corral pulls them: which names mean one, when a registry's
answer sends a pull to the Hub API, which files of a repository a model needs, and what the
Hub's headers say of a file. Pure functions; the HTTP is in `hub_remote`, the steps in `hub_pull`.

Naming (Ollama's, extended): `hf.co/{user}/{repo}:{tag}` (or `huggingface.co/…`) is first
asked of Hugging Face's registry endpoint, as Ollama does, which serves a GGUF repository's
file for the quantization `tag`. When it answers that the repository holds no GGUF (its 400
"Repository is not GGUF or is not compatible with llama.cpp"), or that it knows no such
repository (401/404: a private or gated one is hidden from it), the pull asks the Hub API for the
repository at revision `tag` (a branch, tag or commit: turboderp's EXL2 repositories keep each
bitrate on a branch, `hf.co/turboderp/Llama-3.1-8B-Instruct-exl2:4.0bpw`) and stores its model
files. `latest`, the tag a name without one gets, is the repository's default branch.

HF_ENDPOINT (huggingface_hub's variable) moves the Hub API elsewhere (a mirror, a private Hub):
names on hf.co and huggingface.co then ask it, and so do names on its own host. HF_TOKEN is sent
to the Hub as a Bearer token (never to the CDN a file is redirected to).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from services.registry.names import DEFAULT_TAG, ModelName

HUB_HOSTS = frozenset({"hf.co", "huggingface.co"})  # both serve Ollama's hf.co names (HF's docs)
DEFAULT_ENDPOINT = "https://huggingface.co"
NOT_GGUF = "is not gguf"  # in HF's 400 answer for a repository without GGUF files

# The files an engine reads of a model directory (exllamav2/v3 and the worker's tokenizer); the
# rest (READMEs, images, .gitattributes, GGUF or PyTorch weights, EXL2's measurement.json, any
# subdirectory) is left on the Hub.
MODEL_FILES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "quantization_config.json",  # exllamav3's per-tensor bits
        "tokenizer.json",
        "tokenizer_config.json",
        "tokenizer.model",
        "special_tokens_map.json",
        "added_tokens.json",
        "chat_template.jinja",
        "chat_template.json",
    }
)
WEIGHTS_SUFFIX = ".safetensors"
INDEX_SUFFIX = ".safetensors.index.json"
REQUIRED = ("config.json", "tokenizer.json")  # the worker loads none without them (hf_model.py)
# A file's name as it may be stored (the wire's FileName): no path, nothing hidden.
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,254}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class HubSettings:
    endpoint: str | None = None  # HF_ENDPOINT
    token: str | None = None  # HF_TOKEN

    @classmethod
    def of(cls, endpoint: str, token: str) -> HubSettings:
        """From the settings' HF_ENDPOINT and HF_TOKEN ("" when unset)."""
        return cls(endpoint=endpoint.strip().rstrip("/") or None, token=token.strip() or None)


@dataclass(frozen=True)
class HubRepo:
    endpoint: str  # "https://huggingface.co"
    repo_id: str  # "turboderp/Llama-3.1-8B-Instruct-exl2"
    revision: str | None  # "4.0bpw"; None: the default branch

    def __str__(self) -> str:
        return f"{self.repo_id}:{self.revision or 'default branch'}"


def hub_repo(name: ModelName, hub: HubSettings) -> HubRepo | None:
    """The Hugging Face repository `name` means, when its host is a Hub's; else None."""
    host = name.host.lower()
    own = urlsplit(hub.endpoint).netloc.lower() if hub.endpoint else None
    if host not in HUB_HOSTS and host != own:
        return None
    revision = None if name.tag.lower() == DEFAULT_TAG else name.tag
    return HubRepo(hub.endpoint or DEFAULT_ENDPOINT, f"{name.namespace}/{name.model}", revision)


def falls_back(status: int | None, message: str) -> bool:
    """Whether a Hub host's registry answer sends the pull to the Hub API: "not GGUF", or a
    repository it does not show (401, 404). Any other answer (another 400, such as "The
    specified tag is not available in the repository", a 429, a network failure) is the pull's."""
    if status == 400:
        return NOT_GGUF in message.lower()
    return status in (401, 404)


def wanted_files(paths: Iterable[str]) -> list[str]:
    """The files of a repository's listing that corral stores, in name order."""
    return sorted(
        {
            path
            for path in paths
            if _FILE_NAME.fullmatch(path)
            and (path in MODEL_FILES or path.endswith(WEIGHTS_SUFFIX) or path.endswith(INDEX_SUFFIX))
        }
    )


def missing_files(names: Iterable[str]) -> list[str]:
    """What a model directory lacks of the files every engine needs."""
    present = set(names)
    missing = [name for name in REQUIRED if name not in present]
    if not any(name.endswith(WEIGHTS_SUFFIX) for name in present):
        missing.append(f"*{WEIGHTS_SUFFIX}")
    return missing


def parse_etag(value: str | None) -> str | None:
    """An ETag's value, without the weak marker and the quotes, lowercase; None when empty."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"').lower() or None


@dataclass(frozen=True)
class FileMeta:
    """One file of a revision as the Hub's HEAD of it describes it."""

    name: str
    size: int
    sha256: str | None = None  # "sha256:<hex>" of a file kept in LFS (or Xet): its blob's digest
    git_sha1: str | None = None  # the git blob id of a small file kept in git itself

    @property
    def large(self) -> bool:
        return self.sha256 is not None


def file_meta(name: str, headers: Mapping[str, str]) -> FileMeta:
    """What the HEAD of a file's resolve URL says (huggingface_hub's get_hf_file_metadata): the
    linked file's ETag (sha256 for LFS) and size when it redirects to the CDN, else its own
    (the git blob id of a small file). ValueError when neither identifies the content."""
    lowered = {key.lower(): value for key, value in headers.items()}
    linked = parse_etag(lowered.get("x-linked-etag"))
    etag = linked or parse_etag(lowered.get("etag"))
    size_text = lowered.get("x-linked-size") or lowered.get("content-length")
    try:
        size = int(size_text or "")
    except ValueError:
        raise ValueError(f"{name}: the Hub gave no size") from None
    if size < 0:
        raise ValueError(f"{name}: the Hub gave no size")
    if etag and _SHA256.fullmatch(etag):
        return FileMeta(name, size, sha256=f"sha256:{etag}")
    if etag and _GIT_SHA1.fullmatch(etag) and not linked:
        return FileMeta(name, size, git_sha1=etag)
    raise ValueError(f"{name}: the Hub gave no sha256 or git hash to verify it by (ETag {etag!r})")


def git_blob_sha1(data: bytes) -> str:
    """The git blob id of `data` (`git hash-object`): what the Hub's ETag of a small file is."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def manifest_config(config: Mapping[str, Any]) -> dict[str, object]:
    """The manifest's config for a model directory, as Ollama's ConfigV2 names things: its format
    (exl3 when quantization_config.quant_method says so, else exl2), family and quantization
    (the bits per weight, "4.0bpw")."""
    quantization = config.get("quantization_config")
    quantization = quantization if isinstance(quantization, dict) else {}
    method = str(quantization.get("quant_method") or "").lower()
    bits = quantization.get("bits")
    inner = config.get("text_config")
    family = (inner if isinstance(inner, dict) else {}).get("model_type") or config.get("model_type")
    described: dict[str, object] = {
        "model_format": "exl3" if method == "exl3" else "exl2",
        "model_family": str(family or ""),
        "file_type": f"{bits}bpw" if isinstance(bits, int | float) and not isinstance(bits, bool) else "",
    }
    if family:
        described["model_families"] = [str(family)]
    return described
