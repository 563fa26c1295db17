"""Ollama's DNS-rebinding rule: which Host headers a loopback-bound API serves."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from services.gateway import anthropic_format, openai_format
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
