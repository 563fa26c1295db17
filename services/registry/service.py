"""The registry's NATS shell: answers resolve and list from the store on disk."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from faststream.nats import NatsBroker

from services.config import Settings
from services.protocol import (
    CatalogEntry,
    CatalogList,
    ModelRef,
    Options,
    ResolveRequest,
    ResolveResult,
    subjects,
)
from services.registry.bundled import install_bundled
from services.registry.capabilities import capabilities
from services.registry.gguf_metadata import NotGguf, read_metadata
from services.registry.names import InvalidName, parse_name
from services.registry.store import (
    PARAMS_MEDIA_TYPE,
    PROJECTOR_MEDIA_TYPE,
    SYSTEM_MEDIA_TYPE,
    TEMPLATE_MEDIA_TYPE,
    ModelStore,
    StoredModel,
)

log = logging.getLogger("corral.registry")


def resolve(store: ModelStore, name: str) -> ResolveResult:
    """Map a client's model name to the weights it means (Ollama's 400 / 404 cases)."""
    try:
        parsed = parse_name(name)
    except InvalidName as exc:
        return ResolveResult(error=str(exc), status=400)
    found = store.find(parsed)
    if found is None:
        return ResolveResult(error=f"model '{name}' not found", status=404)
    return ResolveResult(model=model_ref(store, found))


def model_ref(store: ModelStore, found: StoredModel) -> ModelRef:
    """Everything a worker and the gateway need to know of a stored model."""
    template = found.text_layer(store, TEMPLATE_MEDIA_TYPE)
    params = found.text_layer(store, PARAMS_MEDIA_TYPE)
    return ModelRef(
        name=found.name.display_shortest,
        full_name=found.name.full,
        digest=found.weights_digest,
        size=found.weights_size,
        template=template,
        system=found.text_layer(store, SYSTEM_MEDIA_TYPE),
        parameters=Options.model_validate_json(params) if params else None,
        capabilities=capabilities(
            gguf_metadata(store.blob(found.weights_digest)),
            template,
            PROJECTOR_MEDIA_TYPE in found.layers,
        ),
    )


@lru_cache(maxsize=64)
def gguf_metadata(path: Path) -> dict[str, Any]:
    """A weights file's metadata; blobs are content-addressed, so the path names one content."""
    try:
        return read_metadata(path)
    except (OSError, NotGguf):
        return {}


def catalog_entry(model: StoredModel) -> CatalogEntry:
    config = model.config
    return CatalogEntry(
        name=model.name.display_shortest,
        digest=model.manifest_digest,
        size=model.total_size,
        modified_at=model.modified_at,
        format=str(config.get("model_format", "gguf")),
        family=str(config.get("model_family", "")),
        parameter_size=str(config.get("model_type", "")),
        quantization_level=str(config.get("file_type", "")),
    )


def register(broker: NatsBroker, settings: Settings) -> ModelStore:
    """Install the bundled model and bind the registry's handlers to `broker`."""
    store = ModelStore(settings.models)
    install_bundled(store)

    @broker.subscriber(subjects.REGISTRY_RESOLVE, queue="registry")
    async def on_resolve(request: ResolveRequest) -> ResolveResult:
        return resolve(store, request.name)

    @broker.subscriber(subjects.REGISTRY_LIST, queue="registry")
    async def on_list() -> CatalogList:
        return CatalogList(models=[catalog_entry(m) for m in store.list()])

    return store
