"""Ollama's DNS-rebinding rule: which Host headers a loopback-bound API serves."""

from __future__ import annotations

import pytest

from services.gateway.guard import host_allowed, is_loopback

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
