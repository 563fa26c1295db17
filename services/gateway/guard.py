"""The gateway's front door: Ollama's DNS-rebinding rule, and a limit on request bodies.

When the API is bound to a loopback address, a request whose Host header names
anything but this machine (a loopback, private, unspecified or local address;
`localhost`; the host name; a name under .localhost, .local or .internal) gets 403
with no body, and an OPTIONS to such an allowed name (not an address) gets 204: a web
page that rebinds its own name to 127.0.0.1 cannot talk to the API. Bound anywhere
else, every Host is served. CORS (cors.py) runs before this, as in Ollama.
Bodies larger than MAX_BODY are refused with 413 before they are read, bar blob uploads
(UNLIMITED_PREFIX), which are streamed through to the store and never held whole.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.error_bodies import error_body

MAX_BODY = 64 * 1024 * 1024  # bytes; a generation request must also fit a NATS message (8 MiB)
UNLIMITED_PREFIX = "/api/blobs/"
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")


def is_loopback(host: str) -> bool:
    """Whether the API listens on a loopback address (OLLAMA_HOST's host part)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_allowed(host_header: str, local_addresses: frozenset[str], hostname: str) -> bool:
    """Ollama's allowedHostsMiddleware test for one Host header value."""
    host = _strip_port(host_header).lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host in ("", "localhost", hostname.lower()) or host.endswith(_LOCAL_SUFFIXES)
    return address.is_loopback or address.is_private or address.is_unspecified or host in local_addresses


def names_an_address(host_header: str) -> bool:
    """Whether a Host header names an IP address: Ollama passes those on to the routes,
    and answers an OPTIONS to an allowed name itself (204)."""
    try:
        ipaddress.ip_address(_strip_port(host_header))
    except ValueError:
        return False
    return True


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def _local_addresses(hostname: str) -> frozenset[str]:
    try:
        return frozenset(str(info[4][0]) for info in socket.getaddrinfo(hostname, None))
    except OSError:
        return frozenset()


class Guard:
    def __init__(self, app: ASGIApp, bound_host: str) -> None:
        self.app = app
        self.check_hosts = is_loopback(bound_host)
        self.hostname = socket.gethostname()
        self.local = _local_addresses(self.hostname) if self.check_hosts else frozenset()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.check_hosts:
            if not host_allowed(headers.get("host", ""), self.local, self.hostname):
                await _status(send, 403)
                return
            if scope["method"] == "OPTIONS" and not names_an_address(headers.get("host", "")):
                await _status(send, 204)
                return
        if scope["path"].startswith(UNLIMITED_PREFIX):
            await self.app(scope, receive, send)
            return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            error = f"request body too large: {length} bytes, at most {MAX_BODY}"
            await _status(send, 413, error_body(413, error, scope["path"]))
            return
        await self.app(scope, _limited(receive), send)


def _limited(receive: Receive) -> Receive:
    """A body without a length (chunked) is cut off at MAX_BODY too."""
    seen = 0

    async def guarded() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_BODY:
                raise BodyTooLarge()
        return message

    return guarded


class BodyTooLarge(Exception):
    """A chunked body passed MAX_BODY; the gateway answers 413."""


async def _status(send: Send, status: int, error: dict[str, Any] | None = None) -> None:
    body = json.dumps(error).encode() if error else b""
    headers = [(b"content-length", str(len(body)).encode())]
    if error:
        headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
