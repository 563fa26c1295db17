"""Talking to a model registry: Ollama's (registry.ollama.ai), Hugging Face's (hf.co) or any
Docker/OCI registry v2, over HTTPS unless `insecure`.

Every request goes through HTTPS_PROXY / HTTP_PROXY (NO_PROXY honoured), manifests included,
and is verified against the system's trust store plus SSL_CERT_FILE / SSL_CERT_DIR. A 401
with a Bearer challenge is answered once with a token from the challenge's realm. Failures
become RemoteError with the texts Ollama's users know, in this one place.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from services.protocol.messages import ErrorCode
from services.registry.errors import RegistryError
from services.registry.names import ModelName
from services.registry.store import MANIFEST_MEDIA_TYPE
from services.version import corral_version

TIMEOUT = httpx.Timeout(30.0, read=60.0)  # seconds: connect and each read; a stalled read retries
UPLOAD_BLOCK = 1 << 20  # bytes read from a blob file and sent at a time


class RemoteError(RegistryError):
    def __init__(
        self, message: str, code: ErrorCode = "unavailable", retry: bool = False, status: int | None = None
    ) -> None:
        super().__init__(message, code)
        self.retry = retry  # a network failure worth another try, not an answer
        self.status = status  # the HTTP status that answered, when one did


def trust_context() -> ssl.SSLContext:
    """The system's trust store, plus the CA bundle or directory SSL_CERT_FILE / SSL_CERT_DIR name
    (OpenSSL's default paths read those; the system file is added back when they replace it)."""
    context = ssl.create_default_context()
    system = ssl.get_default_verify_paths().openssl_cafile
    if os.environ.get("SSL_CERT_FILE") and system and Path(system).is_file():
        context.load_verify_locations(cafile=system)
    return context


def new_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        trust_env=True,  # HTTP(S)_PROXY, ALL_PROXY, NO_PROXY
        verify=trust_context(),
        timeout=TIMEOUT,
        follow_redirects=True,
        headers={"User-Agent": f"corral/{corral_version()}"},
    )


class Remote:
    """One registry conversation per model name: its base URL and any token it was given."""

    def __init__(self, client: httpx.AsyncClient, name: ModelName, insecure: bool) -> None:
        self._client = client
        self._name = name
        scheme = "http" if insecure else "https"
        self._base = f"{scheme}://{name.host}/v2/{name.namespace}/{name.model}"
        self._token: str | None = None
        self._asked = False  # whether a request has been answered (and any token taken)

    async def manifest(self) -> bytes:
        response = await self._send("GET", f"{self._base}/manifests/{self._name.tag}", accept=True)
        return response.content

    async def put_manifest(self, data: bytes) -> None:
        headers = {"Content-Type": MANIFEST_MEDIA_TYPE}
        await self._send("PUT", f"{self._base}/manifests/{self._name.tag}", headers=headers, content=data)

    async def blob_size(self, digest: str) -> int:
        response = await self._send("HEAD", f"{self._base}/blobs/{digest}")
        return int(response.headers.get("content-length", "0"))

    async def has_blob(self, digest: str) -> bool:
        try:
            await self._send("HEAD", f"{self._base}/blobs/{digest}")
        except RemoteError as exc:
            if exc.code == "not_found":
                return False
            raise
        return True

    @asynccontextmanager
    async def blob_range(self, digest: str, start: int, stop: int) -> AsyncIterator[httpx.Response]:
        """The bytes [start, stop) of a blob, as a streaming response (206, or 200 from 0)."""
        url = f"{self._base}/blobs/{digest}"
        headers = {"Range": f"bytes={start}-{stop - 1}"}
        async with self._stream("GET", url, headers) as response:
            if response.status_code == 200 and start > 0:
                raise RemoteError(f"registry ignored the range request for {digest}", retry=True)
            yield response

    async def upload_blob(self, digest: str, path: Path, progress: Callable[[int], None]) -> None:
        """A monolithic upload: POST for a location, then PUT the file's bytes to it."""
        started = await self._send("POST", f"{self._base}/blobs/uploads/")
        location = started.headers.get("location")
        if not location:
            raise RemoteError("registry answered an upload without a Location")
        url = httpx.URL(f"{self._base}/").join(location)
        url = url.copy_merge_params({"digest": digest})

        async def body() -> AsyncIterator[bytes]:  # the file read on worker threads, a block at a time
            f = await asyncio.to_thread(path.open, "rb")
            try:
                while block := await asyncio.to_thread(f.read, UPLOAD_BLOCK):
                    yield block
                    progress(len(block))
            finally:
                await asyncio.to_thread(f.close)

        size = (await asyncio.to_thread(path.stat)).st_size
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        await self._send("PUT", str(url), headers=headers, content=body())

    async def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        content: Any = None,
        accept: bool = False,
    ) -> httpx.Response:
        headers = dict(headers or {})
        if accept:
            headers["Accept"] = MANIFEST_MEDIA_TYPE
        for attempt in range(2):
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            try:
                response = await self._client.request(method, url, headers=headers, content=content)
            except httpx.HTTPError as exc:
                raise network_error(method, url, exc) from exc
            if response.status_code == 401 and attempt == 0 and _challenge(response):
                self._token = await self._authorize(_challenge(response))
                continue
            self._asked = True
            return checked(response)
        raise RemoteError("unauthorized: access denied", "unavailable", status=401)

    @asynccontextmanager
    async def _stream(self, method: str, url: str, headers: dict[str, str]) -> AsyncIterator[httpx.Response]:
        if not self._asked:
            await self._send("HEAD", url)  # takes a token first when the registry wants one
        if self._token:
            headers = {**headers, "Authorization": f"Bearer {self._token}"}
        try:
            async with self._client.stream(method, url, headers=headers) as response:
                if response.status_code >= 400:
                    await response.aread()
                yield checked(response)
        except httpx.HTTPError as exc:
            raise network_error(method, url, exc) from exc

    async def _authorize(self, challenge: dict[str, str]) -> str:
        """An anonymous token from the challenge's realm (Docker's token protocol)."""
        params = {key: challenge[key] for key in ("service", "scope") if challenge.get(key)}
        try:
            response = await self._client.get(challenge["realm"], params=params)
        except httpx.HTTPError as exc:
            raise network_error("GET", challenge["realm"], exc) from exc
        if response.status_code != 200:
            raise RemoteError("unauthorized: access denied", status=401)
        answer = response.json()
        token = answer.get("token") or answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise RemoteError("unauthorized: access denied", status=401)
        return token


def _challenge(response: httpx.Response) -> dict[str, str]:
    """The parameters of a `Bearer realm="…",service="…",scope="…"` challenge; {} for others."""
    header = response.headers.get("www-authenticate", "")
    if not header.lower().startswith("bearer "):
        return {}
    values: dict[str, str] = {}
    for item in httpx.Headers({"x": header[7:]}).get_list("x", split_commas=True):
        key, _, value = item.strip().partition("=")
        values[key.lower()] = value.strip().strip('"')
    return values if values.get("realm") else {}


def checked(response: httpx.Response) -> httpx.Response:
    """The response, or Ollama's error for its status (a missing manifest or blob is
    "file does not exist", as Go's os.ErrNotExist reads)."""
    status = response.status_code
    if status < 400:
        return response
    if status == 404:
        raise RemoteError("file does not exist", "not_found", status=status)
    if status == 401:
        raise RemoteError("unauthorized: access denied", status=status)
    retry = status >= 500 or status == 429
    raise RemoteError(f"{status}: {response.text.strip()}", retry=retry, status=status)


def network_error(method: str, url: str, exc: httpx.HTTPError) -> RemoteError:
    """Go's `Get "<url>": <reason>` shape, with the reason a user can act on."""
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ProxyError):
        reason = f"proxyconnect tcp: {reason}"
    elif isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in reason:
        reason = f"tls: failed to verify certificate: {reason}"
    elif isinstance(exc, httpx.ConnectError) and _proxied(url):
        reason = f"proxyconnect tcp: {reason}"
    return RemoteError(f'{method.title()} "{url}": {reason}', retry=True)


def _proxied(url: str) -> bool:
    """Whether the environment sends `url` through a proxy (NO_PROXY considered)."""
    parsed = httpx.URL(url)
    return parsed.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(parsed.host)
