"""Cross-origin requests as Ollama answers them: gin-contrib/cors v1.7.2 with Ollama's config.

A request without an Origin header, or whose Origin is `http://` or `https://` plus its own
Host header (same-origin, e.g. a page's fetch), is not a CORS request and gets nothing.
Any other Origin must be allowed (OLLAMA_ORIGINS, then Ollama's list), whatever the method:
if not, the answer is 403 with no body and the route never runs. An allowed OPTIONS is a
preflight, answered 204 at once with the methods, headers and max-age below (the library
does not look at Access-Control-Request-Method or -Headers); any other allowed request runs
with Access-Control-Allow-Origin (and `Vary: Origin`) added to its answer, streamed or not.

An allowed origin is `*` (then every origin is, and the header is `*`), one written exactly
(compared lower-cased, as the library normalizes its list but not the request), or one
pattern with a single `*` standing for any text, as the library matches it: `app://*` is a
prefix, `*.example.com` a suffix, `http://*.example.com` both.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Ollama's corsConfig: cors.DefaultConfig()'s methods and max-age, its own header list
# (server/routes.go), as the library writes them (upper-cased / canonical, comma-joined).
ALLOW_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
ALLOW_HEADERS = (
    "Authorization",
    "Content-Type",
    "User-Agent",
    "Accept",
    "X-Requested-With",
    # OpenAI compatibility headers
    "Openai-Beta",
    "X-Stainless-Arch",
    "X-Stainless-Async",
    "X-Stainless-Custom-Poll-Interval",
    "X-Stainless-Helper-Method",
    "X-Stainless-Lang",
    "X-Stainless-Os",
    "X-Stainless-Package-Version",
    "X-Stainless-Poll-Helper",
    "X-Stainless-Retry-Count",
    "X-Stainless-Runtime",
    "X-Stainless-Runtime-Version",
    "X-Stainless-Timeout",
)
MAX_AGE = 12 * 3600  # seconds

Headers = tuple[tuple[str, str], ...]

_PREFLIGHT: Headers = (
    ("Access-Control-Allow-Methods", ",".join(ALLOW_METHODS)),
    ("Access-Control-Allow-Headers", ",".join(ALLOW_HEADERS)),
    ("Access-Control-Max-Age", str(MAX_AGE)),
)
_VARY_PREFLIGHT: Headers = (
    ("Vary", "Origin"),
    ("Vary", "Access-Control-Request-Method"),
    ("Vary", "Access-Control-Request-Headers"),
)
_ANY_ORIGIN: Headers = (("Access-Control-Allow-Origin", "*"),)


@dataclass(frozen=True)
class Origins:
    """The allowed origins, split as the library splits them."""

    any: bool
    exact: frozenset[str]
    patterns: tuple[tuple[str, str], ...]  # (before, after) the one `*`

    @classmethod
    def of(cls, allowed: tuple[str, ...]) -> Origins:
        """From OLLAMA_ORIGINS' list (Settings.origins, validated there)."""
        return cls(
            any="*" in allowed,
            exact=frozenset(o.strip().lower() for o in allowed),
            patterns=tuple(
                (before, after) for before, star, after in (o.partition("*") for o in allowed) if star
            ),
        )

    def allow(self, origin: str) -> bool:
        if self.any or origin in self.exact:
            return True
        return any(origin.startswith(before) and origin.endswith(after) for before, after in self.patterns)


@dataclass(frozen=True)
class Decision:
    """What to do with one request: answer at once with `status` and no body, or (status
    None) run the route; either way with `headers` added."""

    status: int | None = None
    headers: Headers = ()


PASS = Decision()
REFUSED = Decision(403)


def decide(origins: Origins, origin: str, host: str, method: str) -> Decision:
    """gin-contrib/cors's applyCors for a request's Origin and Host headers and method."""
    if not origin or origin in (f"http://{host}", f"https://{host}"):
        return PASS  # not a CORS request
    if not origins.allow(origin):
        return REFUSED
    if origins.any:
        allow_origin = _ANY_ORIGIN
    else:
        allow_origin = (("Access-Control-Allow-Origin", origin),)
    if method == "OPTIONS":
        vary = () if origins.any else _VARY_PREFLIGHT
        return Decision(204, _PREFLIGHT + vary + allow_origin)
    vary = () if origins.any else (("Vary", "Origin"),)
    return Decision(None, vary + allow_origin)


class Cors:
    """`decide` as plain ASGI: the added headers go on the route's response start, so a
    streamed body passes through untouched."""

    def __init__(self, app: ASGIApp, origins: tuple[str, ...]) -> None:
        self.app = app
        self.origins = Origins.of(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin, host = _first(scope, b"origin"), _first(scope, b"host")
        decision = decide(self.origins, origin, host, scope["method"])
        added = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in decision.headers]
        if decision.status is not None:
            # net/http sends Content-Length: 0 with an empty 403, and none with a 204.
            length = [] if decision.status == 204 else [(b"content-length", b"0")]
            await send({"type": "http.response.start", "status": decision.status, "headers": added + length})
            await send({"type": "http.response.body", "body": b""})
            return
        if not added:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _first(scope: Scope, name: bytes) -> str:
    """The first value of header `name` (lower-case), as Go's Header.Get; "" when absent."""
    return next((v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == name), "")
