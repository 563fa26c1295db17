"""What the gateway holds while it runs: its broker, the relay, and the fleet as heartbeats tell it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import nats.errors
from faststream.nats import NatsBroker

from services.config import Settings
from services.gateway.errors import Unavailable, failure
from services.gateway.relay import Relay
from services.protocol import (
    CatalogList,
    CatalogRequest,
    CopyRequest,
    DeleteRequest,
    ModelRef,
    RegistryResult,
    ResolveRequest,
    ResolveResult,
    ShowRequest,
    ShowResult,
    WorkerState,
    subjects,
)
from services.protocol.messages import Message
from services.runtime import request

REGISTRY_TIMEOUT = 5.0


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

    async def catalog(self) -> CatalogList:
        return CatalogList.model_validate_json(await self._ask(CatalogRequest(), subjects.REGISTRY_LIST))

    async def _ask(self, body: Message, subject: str) -> bytes:
        try:
            return await request(self.broker, subject, body, REGISTRY_TIMEOUT)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
            raise Unavailable("model registry is not available") from exc
