"""The CLI's HTTP client: the server named by OLLAMA_HOST, as `ollama` finds it.

Local traffic (loopback or private addresses, `localhost`) never goes through
HTTP(S)_PROXY. Errors become one `ClientError` with the server's message.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import httpx

from services.config import load_settings

TIMEOUT = httpx.Timeout(10.0, read=None)  # a generation may think for as long as it likes
UPLOAD_BLOCK = 1 << 20  # bytes read from a file and sent at a time


class ClientError(RuntimeError):
    """What went wrong, in one line for the terminal; `status` is the HTTP status when the
    server answered with an error (404: no such model), None for an error mid-stream or no answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def base_url() -> str:
    return load_settings().host.connectable_url


def _local(url: str) -> bool:
    host = httpx.URL(url).host
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private


class Client:
    def __init__(self, url: str | None = None) -> None:
        self.url = url or base_url()
        self._http = httpx.Client(base_url=self.url, timeout=TIMEOUT, trust_env=not _local(self.url))

    def get(self, path: str) -> Any:
        return self._check(self._send("GET", path)).json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self._check(self._send("POST", path, body))
        return response.json() if response.content else None

    def delete(self, path: str, body: dict[str, Any]) -> None:
        self._check(self._send("DELETE", path, body))

    def stream(self, path: str, body: dict[str, Any]) -> Generator[dict[str, Any], None, None]:
        """The NDJSON lines of a streamed answer; an error line raises ClientError."""
        try:
            with self._http.stream("POST", path, json=body) as response:
                if response.status_code != 200:
                    response.read()
                    self._check(response)
                for line in response.iter_lines():
                    if not line:
                        continue
                    data = json.loads(line)
                    if "error" in data:
                        raise ClientError(str(data["error"]))
                    yield data
        except httpx.TransportError as exc:
            raise ClientError(self._unreachable(exc)) from exc

    def upload(self, path: str, file: Path, progress: Callable[[int], None]) -> None:
        """POST `file`'s bytes to `path`, reporting the percentage sent as it changes."""
        size = file.stat().st_size

        def chunks() -> Iterator[bytes]:
            sent, shown = 0, -1
            with file.open("rb") as f:
                while block := f.read(UPLOAD_BLOCK):
                    yield block
                    sent += len(block)
                    if (percent := sent * 100 // max(size, 1)) != shown:
                        shown = percent
                        progress(percent)
            if size == 0:
                progress(100)

        try:
            response = self._http.post(path, content=chunks(), headers={"Content-Length": str(size)})
        except httpx.TransportError as exc:
            raise ClientError(self._unreachable(exc)) from exc
        self._check(response)

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return self._http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise ClientError(self._unreachable(exc)) from exc

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code < 400:
            return response
        try:
            message = response.json().get("error") or response.text
        except ValueError:
            message = response.text or response.reason_phrase
        raise ClientError(str(message), response.status_code)

    def _unreachable(self, exc: Exception) -> str:
        return f"could not connect to corral at {self.url} ({exc}); is `corral serve` running?"
