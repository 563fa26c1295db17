"""The registry's NATS shell: answers resolve, list and show from the store on disk, and
changes it: copy, delete, create, blob uploads, pulls and pushes.

The handlers never touch a file on the event loop: each hands its work (the store, the
catalog, an upload's file) to a worker thread in one `asyncio.to_thread` call, or starts a
job whose steps do the same (see `pull`, `download`)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
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
from services.registry.catalog import Catalog, listing
from services.registry.create import create, missing_source
from services.registry.describe import resolve, sendable, show
from services.registry.download import Downloads
from services.registry.hub import DEFAULT_ENDPOINT, HubSettings
from services.registry.pull import job_key, pull, push
from services.registry.remote import new_client
from services.registry.store import InvalidDigest, ModelStore, OutsideStore
from services.registry.transfers import Job, Report, Transfers, in_thread
from services.registry.uploads import IDLE_SECONDS, UploadError, Uploads
from services.telemetry import log_event

SWEEP_SECONDS = IDLE_SECONDS / 4
log = logging.getLogger("corral.registry")


def register(broker: NatsBroker, settings: Settings) -> Callable[[], Awaitable[None]]:
    """Install the bundled model and bind the registry's handlers to `broker`; returns the
    loop to run beside them (it abandons idle uploads, and cleans up on the way out)."""
    store = ModelStore(settings.models)
    install_bundled(store)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(settings.catalog_url)
    host = socket.gethostname()
    uploads = Uploads(store)
    registry_id = uuid.uuid4().hex[:12]
    downloads = Downloads(store)
    transfers = Transfers(lambda: broker.connection)
    client = new_client()
    hub = HubSettings.of(settings.hf_endpoint, settings.hf_token)
    log_event(log, "hub", endpoint=hub.endpoint or DEFAULT_ENDPOINT, token="set" if hub.token else "unset")

    def recorded_pull(name: str, insecure: bool) -> Job:
        """The pull, recorded in the catalog while it runs: a registry restarted on this host
        finishes it (the last client that leaves ends it, as in Ollama)."""

        async def job(report: Report) -> None:
            await asyncio.to_thread(catalog.pull_started, name, insecure, host, time.time())
            try:
                await pull(store, downloads, client, name, insecure, not settings.noprune, report, hub)
            except asyncio.CancelledError:
                if not transfers.closing:  # the clients went away, not the registry
                    await asyncio.to_thread(catalog.pull_ended, name)
                raise
            except BaseException:
                await asyncio.to_thread(catalog.pull_ended, name)
                raise
            await asyncio.to_thread(catalog.pull_ended, name)

        return job

    @broker.subscriber(subjects.REGISTRY_RESOLVE, queue="registry")
    async def on_resolve(request: ResolveRequest) -> ResolveResult:
        return await asyncio.to_thread(resolve, store, request.name)

    @broker.subscriber(subjects.REGISTRY_LIST, queue="registry")
    async def on_list() -> CatalogList:
        return CatalogList(models=await asyncio.to_thread(listing, catalog, store))

    @broker.subscriber(subjects.REGISTRY_SHOW, queue="registry")
    async def on_show(request: ShowRequest) -> ShowResult:
        shown = await asyncio.to_thread(show, store, request.name, request.verbose)
        return sendable(shown, broker.connection.max_payload) if request.verbose else shown

    @broker.subscriber(subjects.REGISTRY_COPY, queue="registry")
    async def on_copy(request: CopyRequest) -> RegistryResult:
        return await asyncio.to_thread(changes.copy, store, request.source, request.destination)

    @broker.subscriber(subjects.REGISTRY_DELETE, queue="registry")
    async def on_delete(request: DeleteRequest) -> RegistryResult:
        return await asyncio.to_thread(changes.delete, store, request.name, not settings.noprune)

    @broker.subscriber(subjects.REGISTRY_CREATE, queue="registry")
    async def on_create(request: CreateModelRequest) -> RegistryResult:
        prune = not settings.noprune
        creating = in_thread(lambda report: create(store, request, prune, report))

        async def job(report: Report) -> None:
            source = await asyncio.to_thread(missing_source, store, request)
            if source is not None:  # as Ollama: pull the base model, its statuses in this stream
                await transfers.join(job_key(source, False), "pull", recorded_pull(source, False), report)
            await creating(report)

        transfers.start(request, job)
        return RegistryResult()  # taken: its progress follows on the reply subject

    @broker.subscriber(subjects.REGISTRY_BLOB_HEAD, queue="registry")
    async def on_blob_head(request: BlobRequest) -> RegistryResult:
        return await asyncio.to_thread(changes.head_blob, store, request.digest)

    @broker.subscriber(subjects.REGISTRY_BLOB_OPEN, queue="registry")
    async def on_blob_open(request: BlobRequest) -> BlobUpload:
        try:
            upload_id = await asyncio.to_thread(uploads.open, request.digest)
        except InvalidDigest as exc:
            return BlobUpload(error=str(exc), code="invalid")
        except OutsideStore as exc:
            return BlobUpload(error=str(exc), code=exc.code)
        if upload_id is None:
            return BlobUpload(exists=True)
        return BlobUpload(subject=subjects.upload_subject(registry_id, upload_id))

    @broker.subscriber(subjects.uploads_of(registry_id))
    async def on_upload(message: NatsMessage) -> RegistryResult | None:
        upload_id = subjects.request_id_of(message.raw_message.subject)
        headers = message.headers
        if subjects.UPLOAD_ABORT in headers:
            await asyncio.to_thread(uploads.abort, upload_id)
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
        key = job_key(request.name, request.insecure)  # a pull of the model under way is followed
        transfers.start(request, recorded_pull(request.name, request.insecure), key)
        return RegistryResult()  # taken: its progress follows on the reply subject

    @broker.subscriber(subjects.REGISTRY_PUSH, queue="registry")
    async def on_push(request: TransferRequest) -> RegistryResult:
        transfers.start(request, lambda report: push(store, client, request.name, request.insecure, report))
        return RegistryResult()

    @broker.subscriber(subjects.CANCEL_ALL)
    async def on_cancel(message: NatsMessage) -> None:
        transfers.cancel(subjects.request_id_of(message.raw_message.subject))

    async def background() -> None:
        """Finishes the pulls a previous run left; abandons idle uploads; on the way out, ends
        transfers and closes the HTTP client."""
        indexed = await asyncio.to_thread(listing, catalog, store)  # sync at start, off the handlers' way
        log_event(log, "catalog", models=len(indexed))
        for unfinished in await asyncio.to_thread(catalog.unfinished_pulls, host):
            log_event(log, "pull_resumed", model=unfinished.name)
            name, insecure = unfinished.name, unfinished.insecure
            resumed = TransferRequest(name=name, insecure=insecure)
            resumed.reply_subject = subjects.resumed_subject(resumed.id)  # nobody listens: no client
            transfers.start(resumed, recorded_pull(name, insecure), job_key(name, insecure))
        try:
            while True:
                await asyncio.to_thread(uploads.sweep)
                await asyncio.to_thread(uploads.remove_orphans)
                await asyncio.sleep(SWEEP_SECONDS)
        finally:
            await asyncio.to_thread(uploads.close)
            await transfers.close()
            await client.aclose()
            await asyncio.to_thread(catalog.close)

    return background
