"""The registry's NATS shell: answers resolve, list and show from the store on disk."""

from __future__ import annotations

from faststream.nats import NatsBroker

from services.config import Settings
from services.protocol import (
    CatalogList,
    CopyRequest,
    DeleteRequest,
    RegistryResult,
    ResolveRequest,
    ResolveResult,
    ShowRequest,
    ShowResult,
    subjects,
)
from services.registry import changes
from services.registry.bundled import install_bundled
from services.registry.describe import catalog_entry, resolve, show
from services.registry.store import ModelStore


def register(broker: NatsBroker, settings: Settings) -> ModelStore:
    """Install the bundled model and bind the registry's handlers to `broker`."""
    store = ModelStore(settings.models)
    install_bundled(store)

    @broker.subscriber(subjects.REGISTRY_RESOLVE, queue="registry")
    async def on_resolve(request: ResolveRequest) -> ResolveResult:
        return resolve(store, request.name)

    @broker.subscriber(subjects.REGISTRY_LIST, queue="registry")
    async def on_list() -> CatalogList:
        return CatalogList(models=[catalog_entry(store, m) for m in store.list()])

    @broker.subscriber(subjects.REGISTRY_SHOW, queue="registry")
    async def on_show(request: ShowRequest) -> ShowResult:
        return show(store, request.name, request.verbose)

    @broker.subscriber(subjects.REGISTRY_COPY, queue="registry")
    async def on_copy(request: CopyRequest) -> RegistryResult:
        return changes.copy(store, request.source, request.destination)

    @broker.subscriber(subjects.REGISTRY_DELETE, queue="registry")
    async def on_delete(request: DeleteRequest) -> RegistryResult:
        return changes.delete(store, request.name)

    return store
