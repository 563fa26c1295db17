"""The front door: Ollama's DNS-rebinding rule (which Host headers a loopback-bound API serves),
the body limit, and the one log line every error response the gateway maps writes."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from services.gateway import anthropic_format, errors, openai_format
from services.gateway.guard import MAX_BODY, Guard, host_allowed, is_loopback

LOCAL = frozenset({"192.0.2.10"})  # the machine's own (non-private) address


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost", True),
        ("localhost:11434", True),
        ("127.0.0.1:11434", True),
        ("[::1]:11434", True),
        ("0.0.0.0", True),
        ("10.1.2.3", True),
        ("192.168.1.5:11434", True),
        ("192.0.2.10", True),
        ("myhost", True),
        ("MyHost:8080", True),
        ("ollama.local", True),
        ("box.internal:11434", True),
        ("app.localhost", True),
        ("", True),
        ("example.com", False),
        ("evil.example:11434", False),
        ("8.8.8.8", False),
        ("localhost.evil.com", False),
    ],
)
def test_host_allowed(host: str, allowed: bool) -> None:
    assert host_allowed(host, LOCAL, "myhost") is allowed


@pytest.mark.parametrize(
    ("bound", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("", False),
        ("10.0.0.2", False),
    ],
)
def test_only_a_loopback_bind_checks_hosts(bound: str, loopback: bool) -> None:
    assert is_loopback(bound) is loopback


@pytest.mark.parametrize(
    ("path", "body_of"),
    [
        ("/api/chat", lambda error: {"error": error}),
        ("/v1/chat/completions", lambda error: openai_format.error(413, error)),
        ("/v1/messages", lambda error: anthropic_format.error(413, error)),
    ],
    ids=["ollama", "openai", "anthropic"],
)
def test_an_announced_oversized_body_is_refused_in_the_routes_own_words(
    path: str, body_of: Callable[[str], dict[str, Any]]
) -> None:
    """The front door answers before any route or handler: with the flavour's error body all
    the same (one mapping, error_bodies)."""
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("the body should have been refused before the app")

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": True}

    async def send(message: Message) -> None:
        sent.append(message)

    length = str(MAX_BODY + 1).encode()
    scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-length", length)]}
    asyncio.run(Guard(app, "0.0.0.0")(scope, receive, send))
    assert sent[0]["status"] == 413
    error = f"request body too large: {MAX_BODY + 1} bytes, at most {MAX_BODY}"
    body, expected = json.loads(sent[1]["body"]), body_of(error)
    body.pop("request_id", None), expected.pop("request_id", None)  # Anthropic's: fresh each time
    assert body == expected


async def _route(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"route"})


@pytest.mark.parametrize(
    ("host", "method", "status"),
    [
        ("localhost:11434", "OPTIONS", 204),
        ("ollama.local", "OPTIONS", 204),
        ("127.0.0.1:11434", "OPTIONS", 200),
        ("[::1]:11434", "OPTIONS", 200),
        ("localhost:11434", "GET", 200),
        ("evil.example", "OPTIONS", 403),
    ],
    ids=["name-options", "local-name-options", "address-options", "v6-address-options", "name-get",
         "foreign-options"],
)  # fmt: skip
def test_an_options_to_an_allowed_name_is_answered_at_the_door(host: str, method: str, status: int) -> None:
    """Ollama answers OPTIONS itself (204) for an allowed name; an address goes on to the routes."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/api/tags", "headers": [(b"host", host.encode())]}
    asyncio.run(Guard(_route, "127.0.0.1")(scope, receive, send))
    assert sent[0]["status"] == status


def _error_app() -> FastAPI:
    app = FastAPI()
    errors.install(app)

    @app.post("/api/generate")
    async def generate(request: Request) -> None:
        await request.body()
        raise errors.NotFound("model 'missing' not found")

    @app.post("/api/crash")
    async def crash() -> None:
        raise RuntimeError("a bug")

    return app


@pytest.mark.parametrize(
    ("path", "status", "logged"),
    [
        ("/api/generate", 404, [("POST", "/api/generate", 404, "model 'missing' not found")]),
        ("/api/nowhere", 404, [("POST", "/api/nowhere", 404, "not found")]),
        ("/api/crash", 500, []),  # uvicorn logs its traceback: the mapping adds nothing
    ],
    ids=["route-error", "unknown-route", "unhandled-exception"],
)
def test_an_error_response_logs_one_line_without_the_body(
    caplog: pytest.LogCaptureFixture, path: str, status: int, logged: list[tuple[str, str, int, str]]
) -> None:
    caplog.set_level(logging.INFO, "corral.gateway")
    client = TestClient(_error_app(), raise_server_exceptions=False)
    response = client.post(path, json={"model": "missing", "prompt": "a secret prompt"})
    assert response.status_code == status
    lines = [r for r in caplog.records if r.msg == "error_response"]
    fields = [r.fields for r in lines]  # type: ignore[attr-defined]
    assert [(f["method"], f["path"], f["status"], f["error"]) for f in fields] == logged
    assert "secret" not in caplog.text
