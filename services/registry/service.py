"""The registry's NATS shell: answers resolve, list and show from the store on disk, and
changes it: copy, delete, create, and blob uploads."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from faststream.nats import NatsBroker, NatsMessage

from services.config import Settings
from services.protocol import (
    BlobRequest,
    BlobUpload,
    CatalogList,
    CopyRequest,
    CreateModelRequest,
    DeleteRequest,
    RegistryResult,
    ResolveRequest,
    ResolveResult,
    ShowRequest,
    ShowResult,
    TransferRequest,
    subjects,
)
from services.registry import changes
from services.registry.bundled import install_bundled
from services.registry.create import create
from services.registry.describe import catalog_entry, resolve, show
from services.registry.download import Downloads
from services.registry.pull import pull, push
from services.registry.remote import new_client
from services.registry.store import InvalidDigest, ModelStore
from services.registry.transfers import Transfers, in_thread
from services.registry.uploads import IDLE_SECONDS, UploadError, Uploads

SWEEP_SECONDS = IDLE_SECONDS / 4


def register(broker: NatsBroker, settings: Settings) -> Callable[[], Awaitable[None]]:
    """Install the bundled model and bind the registry's handlers to `broker`; returns the
    loop to run beside them (it abandons idle uploads, and cleans up on the way out)."""
    store = ModelStore(settings.models)
    install_bundled(store)
    uploads = Uploads(store)
    registry_id = uuid.uuid4().hex[:12]
    downloads = Downloads(store)
    transfers = Transfers(lambda: broker.connection)
    client = new_client()

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
        return changes.delete(store, request.name, not settings.noprune)

    @broker.subscriber(subjects.REGISTRY_CREATE, queue="registry")
    async def on_create(request: CreateModelRequest) -> RegistryResult:
        prune = not settings.noprune
        transfers.start(request, in_thread(lambda report: create(store, request, prune, report)))
        return RegistryResult()  # taken: its progress follows on the reply subject

    @broker.subscriber(subjects.REGISTRY_BLOB_HEAD, queue="registry")
    async def on_blob_head(request: BlobRequest) -> RegistryResult:
        return changes.head_blob(store, request.digest)

    @broker.subscriber(subjects.REGISTRY_BLOB_OPEN, queue="registry")
    async def on_blob_open(request: BlobRequest) -> BlobUpload:
        try:
            upload_id = uploads.open(request.digest)
        except InvalidDigest as exc:
            return BlobUpload(error=str(exc), code="invalid")
        if upload_id is None:
            return BlobUpload(exists=True)
        return BlobUpload(subject=subjects.upload_subject(registry_id, upload_id))

    @broker.subscriber(subjects.uploads_of(registry_id))
    async def on_upload(message: NatsMessage) -> RegistryResult | None:
        upload_id = subjects.request_id_of(message.raw_message.subject)
        headers = message.headers
        if subjects.UPLOAD_ABORT in headers:
            uploads.abort(upload_id)
            return None
        try:
            if subjects.UPLOAD_END in headers:
                await asyncio.to_thread(uploads.finish, upload_id)
            else:
                offset = int(headers.get(subjects.UPLOAD_OFFSET, "-1"))
                await asyncio.to_thread(uploads.write, upload_id, offset, message.body)
        except UploadError as exc:
            return RegistryResult(error=str(exc), code=exc.code)
        return RegistryResult()

    @broker.subscriber(subjects.REGISTRY_PULL, queue="registry")
    async def on_pull(request: TransferRequest) -> RegistryResult:
        prune = not settings.noprune
        transfers.start(
            request,
            lambda report: pull(store, downloads, client, request.name, request.insecure, prune, report),
        )
        return RegistryResult()  # taken: its progress follows on the reply subject

    @broker.subscriber(subjects.REGISTRY_PUSH, queue="registry")
    async def on_push(request: TransferRequest) -> RegistryResult:
        transfers.start(request, lambda report: push(store, client, request.name, request.insecure, report))
        return RegistryResult()

    @broker.subscriber(subjects.CANCEL_ALL)
    async def on_cancel(message: NatsMessage) -> None:
        transfers.cancel(subjects.request_id_of(message.raw_message.subject))

    async def background() -> None:
        """Abandons idle uploads; on the way out, ends transfers and closes the HTTP client."""
        try:
            while True:
                uploads.sweep()
                uploads.remove_orphans()
                await asyncio.sleep(SWEEP_SECONDS)
        finally:
            uploads.close()
            await transfers.close()
            await client.aclose()

    return background
