"""CORS as Ollama answers it (gin-contrib/cors v1.7.2 with Ollama's config): the decision
for one request, and the middleware that acts on it before the Host rule and the routes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from services.config import load_settings
from services.gateway.app import VersionHeader, create_app
from services.gateway.cors import Cors, Decision, Origins, decide
from services.gateway.guard import Guard

HOST = "127.0.0.1:11434"
DEFAULTS = load_settings({}).origins
PREFLIGHT = (
    ("Access-Control-Allow-Methods", "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"),
    (
        "Access-Control-Allow-Headers",
        "Authorization,Content-Type,User-Agent,Accept,X-Requested-With,Openai-Beta,"
        "X-Stainless-Arch,X-Stainless-Async,X-Stainless-Custom-Poll-Interval,"
        "X-Stainless-Helper-Method,X-Stainless-Lang,X-Stainless-Os,X-Stainless-Package-Version,"
        "X-Stainless-Poll-Helper,X-Stainless-Retry-Count,X-Stainless-Runtime,"
        "X-Stainless-Runtime-Version,X-Stainless-Timeout",
    ),
    ("Access-Control-Max-Age", "43200"),
)
VARY_PREFLIGHT = (
    ("Vary", "Origin"),
    ("Vary", "Access-Control-Request-Method"),
    ("Vary", "Access-Control-Request-Headers"),
)
ANY_ORIGIN = (("Access-Control-Allow-Origin", "*"),)
PASS = Decision()
REFUSED = Decision(403)


def allowed(origin: str) -> Decision:
    return Decision(None, (("Vary", "Origin"), ("Access-Control-Allow-Origin", origin)))


def preflight(origin: str) -> Decision:
    return Decision(204, PREFLIGHT + VARY_PREFLIGHT + (("Access-Control-Allow-Origin", origin),))


def origins(extra: str = "") -> Origins:
    """The allowed origins of a gateway started with OLLAMA_ORIGINS=`extra`."""
    return Origins.of(load_settings({"OLLAMA_ORIGINS": extra}).origins)


@pytest.mark.parametrize(
    ("extra", "origin", "host", "method", "expected"),
    [
        ("", "", HOST, "POST", PASS),
        ("", "http://localhost:3000", HOST, "POST", allowed("http://localhost:3000")),
        ("", "http://127.0.0.1", HOST, "GET", allowed("http://127.0.0.1")),
        ("", "https://0.0.0.0:8443", HOST, "GET", allowed("https://0.0.0.0:8443")),
        ("", "vscode-webview://1a2b", HOST, "POST", allowed("vscode-webview://1a2b")),
        ("", "https://evil.example", HOST, "POST", REFUSED),
        ("", "https://evil.example", HOST, "GET", REFUSED),
        ("", "http://localhost.evil.example", HOST, "POST", REFUSED),
        ("", "http://evil.example:11434", "evil.example:11434", "POST", PASS),
        ("", "https://evil.example", "evil.example", "GET", PASS),
        ("", "http://Evil.example", "evil.example", "GET", REFUSED),
        ("*", "https://evil.example", HOST, "POST", Decision(None, ANY_ORIGIN)),
        ("*", "https://evil.example", HOST, "OPTIONS", Decision(204, PREFLIGHT + ANY_ORIGIN)),
        ("http://localhost:*", "http://localhost:8080", HOST, "GET", allowed("http://localhost:8080")),
        ("https://*.example.com", "https://chat.example.com", HOST, "POST", allowed("https://chat.example.com")),
        ("https://*.example.com", "https://example.com", HOST, "POST", REFUSED),
        ("https://Chat.Example.com", "https://chat.example.com", HOST, "POST", allowed("https://chat.example.com")),
        ("", "chrome-extension://abcdef", HOST, "POST", REFUSED),
        ("chrome-extension://*", "chrome-extension://abcdef", HOST, "POST", allowed("chrome-extension://abcdef")),
        ("moz-extension://abcdef", "moz-extension://abcdef", HOST, "GET", allowed("moz-extension://abcdef")),
        ("", "http://localhost:3000", HOST, "OPTIONS", preflight("http://localhost:3000")),
        ("", "http://localhost:3000", "evil.example", "OPTIONS", preflight("http://localhost:3000")),
        ("", "https://evil.example", HOST, "OPTIONS", REFUSED),
        ("", "http://evil.example:11434", "evil.example:11434", "OPTIONS", PASS),
    ],
    ids=[
        "no-origin-not-cors",
        "default-localhost-any-port",
        "default-loopback-no-port",
        "default-unspecified-https",
        "default-vscode-webview",
        "foreign-origin-post-refused",
        "foreign-origin-get-refused",
        "localhost-lookalike-refused",
        "same-origin-http",
        "same-origin-https",
        "same-origin-compared-as-written",
        "ollama-origins-star-post",
        "ollama-origins-star-preflight",
        "wildcard-port",
        "wildcard-subdomain",
        "wildcard-subdomain-not-the-apex",
        "exact-origin-lower-cased",
        "browser-extension-not-by-default",
        "browser-extension-wildcard",
        "browser-extension-exact",
        "preflight-allowed",
        "preflight-answered-before-the-host-rule",
        "preflight-refused",
        "same-origin-options-not-cors",
    ],
)  # fmt: skip
def test_decide(extra: str, origin: str, host: str, method: str, expected: Decision) -> None:
    assert decide(origins(extra), origin, host, method) == expected


ran: list[str] = []  # the methods `route` ran for, in this test


@pytest.fixture(autouse=True)
def no_route_ran() -> None:
    ran.clear()


async def route(scope: Scope, receive: Receive, send: Send) -> None:
    """A streaming route: its answer goes out in two chunks."""
    ran.append(scope["method"])
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/x-ndjson")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"response":"a"}\n', "more_body": True})
    await send({"type": "http.response.body", "body": b'{"done":true}\n'})


def call(app: Any, method: str, headers: dict[str, str]) -> tuple[list[Message], list[str]]:
    """Run one request through `app`: the messages sent back, and the routes that ran."""
    sent: list[Message] = []
    scope = {
        "type": "http",
        "method": method,
        "path": "/api/generate",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent, ran


def headers_of(start: Message) -> list[tuple[str, str]]:
    return [(k.decode(), v.decode()) for k, v in start["headers"]]


def test_a_refused_origin_gets_403_with_no_body_and_the_route_never_runs() -> None:
    sent, routes = call(Cors(route, DEFAULTS), "POST", {"Host": HOST, "Origin": "https://evil.example"})
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 403 and headers_of(sent[0]) == [("content-length", "0")]
    assert sent[1]["body"] == b"" and routes == []


def test_an_allowed_origin_streams_through_with_its_headers() -> None:
    sent, routes = call(Cors(route, DEFAULTS), "POST", {"Host": HOST, "Origin": "http://localhost:3000"})
    assert routes == ["POST"]
    assert headers_of(sent[0]) == [
        ("content-type", "application/x-ndjson"),
        ("vary", "Origin"),
        ("access-control-allow-origin", "http://localhost:3000"),
    ]
    assert [m.get("body") for m in sent[1:]] == [b'{"response":"a"}\n', b'{"done":true}\n']


def test_an_allowed_preflight_is_204_with_no_length_and_the_route_never_runs() -> None:
    headers = {"Host": HOST, "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"}
    sent, routes = call(Cors(route, DEFAULTS), "OPTIONS", headers)
    assert sent[0]["status"] == 204 and routes == []
    assert "content-length" not in dict(headers_of(sent[0]))


def test_the_host_rule_refuses_after_cors_with_cors_headers_on_its_403() -> None:
    """As gin runs cors.New before allowedHostsMiddleware: the headers are already set."""
    front = Cors(Guard(route, "127.0.0.1"), DEFAULTS)
    sent, routes = call(front, "POST", {"Host": "evil.example", "Origin": "http://localhost:3000"})
    assert sent[0]["status"] == 403 and routes == []
    assert ("access-control-allow-origin", "http://localhost:3000") in headers_of(sent[0])


def test_the_gateway_puts_cors_outermost_then_the_host_rule() -> None:
    app = create_app(load_settings({}))
    outermost_first: list[object] = [m.cls for m in app.user_middleware]
    assert outermost_first == [Cors, Guard, VersionHeader]
