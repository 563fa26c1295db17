"""What the gateway holds while it runs: its broker, the relay, and the fleet as heartbeats tell it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import nats.errors
from faststream.nats import NatsBroker

from services.config import Settings
from services.gateway.errors import Unavailable, failure
from services.gateway.relay import Relay
from services.gateway.upload import send_blob
from services.protocol import (
    BlobRequest,
    BlobUpload,
    CatalogList,
    CatalogRequest,
    CopyRequest,
    DeleteRequest,
    ModelRef,
    Progress,
    QueueRequest,
    QueueState,
    RegistryResult,
    ResolveRequest,
    ResolveResult,
    ShowRequest,
    ShowResult,
    Tracked,
    WorkerState,
    subjects,
)
from services.protocol.messages import Message
from services.runtime import request

REGISTRY_TIMEOUT = 5.0  # seconds, for questions the registry (or scheduler) answers from memory


@dataclass
class GatewayState:
    settings: Settings
    broker: NatsBroker
    relay: Relay
    workers: dict[str, tuple[WorkerState, float]] = field(default_factory=dict)

    def observe(self, state: WorkerState) -> None:
        known = self.workers.get(state.worker_id)
        if known is None or state.seq >= known[0].seq:
            self.workers[state.worker_id] = (state, time.monotonic())

    def live_workers(self) -> list[WorkerState]:
        horizon = time.monotonic() - self.settings.stale_after
        return [state for state, seen in self.workers.values() if seen >= horizon]

    async def resolve(self, name: str) -> ModelRef:
        result = ResolveResult.model_validate_json(
            await self._ask(ResolveRequest(name=name), subjects.REGISTRY_RESOLVE)
        )
        if result.model is None:
            raise failure(result.error or f"model '{name}' not found", result.code)
        return result.model

    async def queue(self, client_id: str = "") -> QueueState:
        """The scheduler's queue, and where the request the client named `client_id` waits."""
        try:
            question = QueueRequest(client_id=client_id)
            data = await request(self.broker, subjects.SCHEDULER_QUEUE, question, REGISTRY_TIMEOUT)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
            raise Unavailable("scheduler is not available") from exc
        return QueueState.model_validate_json(data)

    async def show(self, name: str, verbose: bool) -> ShowResult:
        result = ShowResult.model_validate_json(
            await self._ask(ShowRequest(name=name, verbose=verbose), subjects.REGISTRY_SHOW)
        )
        if result.model is None:
            raise failure(result.error or f"model '{name}' not found", result.code)
        return result

    async def change(self, request: CopyRequest | DeleteRequest) -> None:
        """Copy or delete a model in the store; Ollama's errors raise ApiError."""
        subject = subjects.REGISTRY_COPY if isinstance(request, CopyRequest) else subjects.REGISTRY_DELETE
        result = RegistryResult.model_validate_json(await self._ask(request, subject))
        if result.error is not None:
            raise failure(result.error, result.code)

    async def head_blob(self, digest: str) -> None:
        """Return when blob `digest` is stored; raise ApiError (400, 404) when not."""
        result = RegistryResult.model_validate_json(
            await self._ask(BlobRequest(digest=digest), subjects.REGISTRY_BLOB_HEAD)
        )
        if result.error is not None:
            raise failure(result.error, result.code)

    async def upload_blob(self, digest: str, body: AsyncIterator[bytes]) -> bool:
        """Stream `body` into the store as blob `digest`: True when it was created, False when
        the store had it (and `body` was not read). A body that fails to arrive, or does not
        hash to `digest`, leaves nothing behind."""
        opened = BlobUpload.model_validate_json(
            await self._ask(BlobRequest(digest=digest), subjects.REGISTRY_BLOB_OPEN)
        )
        if opened.error is not None:
            raise failure(opened.error, opened.code)
        if opened.exists:
            return False
        await send_blob(self.broker.connection, opened.subject, body)
        return True

    async def follow(self, subject: str, job: Tracked) -> AsyncIterator[Progress]:
        """Hand `job` (a pull, push or create) to the registry and yield its progress, the last
        one `done`. No registry to take it is a 503; leaving early cancels the job."""
        job.reply_subject = subjects.reply_subject(job.id)
        connection = self.broker.connection
        replies = await connection.subscribe(job.reply_subject)
        done = False
        try:
            await self._ask(job, subject)  # the registry took it
            while not done:
                try:
                    message = await replies.next_msg(timeout=self.settings.idle_timeout)
                except nats.errors.TimeoutError as exc:
                    raise Unavailable("model registry stopped answering") from exc
                progress = Progress.model_validate_json(message.data)
                done = progress.done
                yield progress
        finally:
            await replies.unsubscribe()
            if not done:
                await connection.publish(subjects.cancel_subject(job.id), b"")

    async def catalog(self) -> CatalogList:
        return CatalogList.model_validate_json(await self._ask(CatalogRequest(), subjects.REGISTRY_LIST))

    async def _ask(self, body: Message, subject: str, timeout: float = REGISTRY_TIMEOUT) -> bytes:
        try:
            return await request(self.broker, subject, body, timeout)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
            raise Unavailable("model registry is not available") from exc
