"""The gateway's FastAPI application: the only HTTP surface of corral."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services import telemetry
from services.config import Settings
from services.gateway import anthropic, changes, errors, info, measure, native, openai, responses, scrape
from services.gateway.cors import Cors
from services.gateway.guard import Guard
from services.gateway.relay import Relay
from services.gateway.state import GatewayState
from services.protocol import WorkerState, subjects
from services.runtime import new_broker
from services.version import corral_version


def create_app(settings: Settings) -> FastAPI:
    broker = new_broker(settings.nats_url or "", "gateway")
    state = GatewayState(settings, broker, Relay(broker, settings.idle_timeout, settings.heartbeat_interval))

    @broker.subscriber(subjects.HEARTBEAT)
    async def on_heartbeat(worker: WorkerState) -> None:
        state.observe(worker)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await broker.start()
        try:
            yield
        finally:
            await broker.stop()
            telemetry.shutdown()

    measure.started()
    own_version = corral_version()
    app = FastAPI(title="corral", version=own_version, lifespan=lifespan)
    app.state.corral = state
    errors.install(app)
    app.add_middleware(VersionHeader, version=own_version)
    # Ollama's order (r.Use(cors.New(...), allowedHostsMiddleware(...))): CORS outermost, then
    # the Host rule. A refused origin is 403 before anything; an allowed preflight is 204
    # whatever the Host; the Host rule's own 403 carries the allowed origin's headers.
    app.add_middleware(Guard, bound_host=settings.host.host)
    app.add_middleware(Cors, origins=settings.origins)

    app.include_router(info.router)
    app.include_router(changes.router)
    app.include_router(native.router)
    app.include_router(openai.router)
    app.include_router(anthropic.router)
    app.include_router(responses.router)
    if settings.metrics:
        app.state.scraper = scrape.Scraper()
        app.include_router(scrape.router)
    return app


class VersionHeader:
    """corral's own version on every response (X-Corral-Version). Plain ASGI rather than
    BaseHTTPMiddleware, which would pass every streamed chunk through another queue."""

    def __init__(self, app: ASGIApp, version: str) -> None:
        self.app = app
        self.header = (b"x-corral-version", version.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, send_with_header)
