"""Talking to the Hugging Face Hub's HTTP API, as huggingface_hub does (hf_api.model_info,
file_download.get_hf_file_metadata and http_get), through `remote.new_client()`'s client: so
HTTPS_PROXY / NO_PROXY and the trust store with SSL_CERT_FILE / SSL_CERT_DIR hold here as for
any registry.

    GET  {endpoint}/api/models/{repo}[/revision/{revision}]   the commit (`sha`) and `siblings`
    HEAD {endpoint}/{repo}/resolve/{sha}/{file}                X-Linked-Etag / X-Linked-Size (LFS,
                                                               a 302 to the CDN) or ETag (git)
    GET  {endpoint}/{repo}/resolve/{sha}/{file}                the bytes, ranged, via the CDN

Files are asked for at the revision's commit, so a branch that moves during a pull cannot mix
two versions. A HEAD follows only relative redirects (a renamed repository), never the CDN's;
a GET follows both, and the client drops the Bearer token when the redirect leaves the Hub's
origin. The Hub's answers become RemoteError here, at one boundary, with texts that name what
is missing (repository, revision, file) or what is refused (gated, a token that is not valid).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote, urlsplit

import httpx

from services.registry.download import pause
from services.registry.hub import FileMeta, HubRepo, file_meta
from services.registry.remote import RemoteError, checked, network_error
from services.telemetry import log_event

log = logging.getLogger("corral.registry")

ATTEMPTS = 3  # tries of one metadata request (or small file) that failed for want of a network
AT_ONCE = 8  # HEADs in flight for one revision's files
SMALL_FILE_LIMIT = 64 << 20  # bytes: the Hub keeps files over 10 MB in LFS; one over this is refused
REDIRECTS = 5  # relative redirects a HEAD follows
_COMMIT = re.compile(r"[0-9a-f]{40}")
T = TypeVar("T")


@dataclass(frozen=True)
class Revision:
    sha: str  # the commit the revision names now
    files: tuple[str, ...]  # every file's path in it


class HubRemote:
    """One repository's conversation with the Hub."""

    def __init__(self, client: httpx.AsyncClient, repo: HubRepo, token: str | None) -> None:
        self._client = client
        self.repo = repo
        self._token = token
        self.host = urlsplit(repo.endpoint).netloc

    async def revision(self) -> Revision:
        """The commit the repository's revision names, and its files."""
        url = f"{self.repo.endpoint}/api/models/{self.repo.repo_id}"
        if self.repo.revision is not None:
            url += f"/revision/{quote(self.repo.revision, safe='')}"
        response = await self._retrying(lambda: self._request("GET", url))
        try:
            answer = response.json()
            sha = answer["sha"]
            files = tuple(str(sibling["rfilename"]) for sibling in answer["siblings"])
        except (ValueError, KeyError, TypeError) as exc:
            text = f"the Hub's answer for {self.repo} is not a model's: {exc!r}"
            raise RemoteError(text, "invalid") from exc
        if not isinstance(sha, str) or not _COMMIT.fullmatch(sha):
            raise RemoteError(f"the Hub's answer for {self.repo} has no commit", "invalid")
        return Revision(sha, files)

    async def files(self, sha: str, names: Sequence[str]) -> list[FileMeta]:
        """Every named file's size and hash, AT_ONCE HEADs at a time, in the order given."""
        limit = asyncio.Semaphore(AT_ONCE)

        async def one(name: str) -> FileMeta:
            async with limit:
                return await self._retrying(lambda: self._file_meta(sha, name))

        try:
            async with asyncio.TaskGroup() as group:  # one failing stops the others
                asked = [group.create_task(one(name)) for name in names]
        except* RemoteError as failed:
            raise failed.exceptions[0] from None
        return [task.result() for task in asked]

    async def small_file(self, sha: str, meta: FileMeta) -> bytes:
        """A file kept in git (a config, a tokenizer): its bytes, in one request."""

        async def get() -> bytes:
            data = bytearray()
            async with self.stream(self.resolve_url(sha, meta.name), {}) as response:
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > SMALL_FILE_LIMIT:
                        raise RemoteError(f"{meta.name} is larger than {SMALL_FILE_LIMIT} bytes", "invalid")
            if len(data) != meta.size:
                raise RemoteError(f"{meta.name}: {len(data)} bytes of {meta.size}", retry=True)
            return bytes(data)

        return await self._retrying(get)

    def file(self, sha: str, meta: FileMeta) -> HubFile:
        """A large file as `Downloads` fetches a blob."""
        return HubFile(self, self.resolve_url(sha, meta.name), meta)

    def resolve_url(self, sha: str, name: str) -> str:
        return f"{self.repo.endpoint}/{self.repo.repo_id}/resolve/{sha}/{quote(name)}"

    @asynccontextmanager
    async def stream(self, url: str, headers: dict[str, str]) -> AsyncIterator[httpx.Response]:
        """A GET of a file's bytes as they are stored (no content coding), redirects followed."""
        try:
            async with self._client.stream("GET", url, headers=self._headers(headers)) as response:
                if response.status_code >= 400:
                    await response.aread()
                yield self._answer(response)
        except httpx.HTTPError as exc:
            raise network_error("GET", url, exc) from exc

    async def _file_meta(self, sha: str, name: str) -> FileMeta:
        url = self.resolve_url(sha, name)
        for _ in range(REDIRECTS):
            response = await self._request("HEAD", url, follow_redirects=False)
            location = response.headers.get("location")
            if response.is_redirect and location and not urlsplit(location).netloc:
                url = str(httpx.URL(url).join(location))  # a renamed repository: still the Hub
                continue
            try:
                return file_meta(name, response.headers)
            except ValueError as exc:
                raise RemoteError(str(exc), "invalid") from exc
        raise RemoteError(f"{name}: too many redirects", "invalid")

    async def _request(self, method: str, url: str, follow_redirects: bool = True) -> httpx.Response:
        try:
            response = await self._client.request(
                method, url, headers=self._headers({}), follow_redirects=follow_redirects
            )
        except httpx.HTTPError as exc:
            raise network_error(method, url, exc) from exc
        return self._answer(response)

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        headers = {"Accept-Encoding": "identity", **extra}  # sizes and ranges count stored bytes
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _answer(self, response: httpx.Response) -> httpx.Response:
        """The response, or the Hub's error in words (its X-Error-Code names what is missing;
        an anonymous 401 means a repository it does not show, as huggingface_hub reads it)."""
        status = response.status_code
        if status < 400:
            return response
        code = response.headers.get("x-error-code", "")
        message = response.headers.get("x-error-message", "")
        repo = self.repo
        if message == "Invalid credentials in Authorization header":
            raise RemoteError(f"{status}: {message} (HF_TOKEN)", status=status)
        if code == "RevisionNotFound":
            text = f'revision "{repo.revision}" not found in {repo.repo_id}'
            raise RemoteError(text, "not_found", status=status)
        if code == "EntryNotFound":
            raise RemoteError(f"a file of {repo} not found on the Hub", "not_found", status=status)
        if code == "GatedRepo":
            text = f"{repo.repo_id} is gated: accept its conditions on the Hub and set HF_TOKEN"
            raise RemoteError(text, status=status)
        if code == "RepoNotFound" or status == 401:
            text = f'repository "{repo.repo_id}" not found on {self.host}'
            text += " (a private or gated one needs HF_TOKEN)"
            raise RemoteError(text, "not_found", status=status)
        if status == 403:
            raise RemoteError(f"403: {message or response.text.strip()}", status=status)
        return checked(response)

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt()`, tried again after a growing pause while it fails for want of a network
        (or a 5xx, a 429), at most ATTEMPTS times."""
        for tries in range(1, ATTEMPTS + 1):
            try:
                return await attempt()
            except RemoteError as exc:
                if not exc.retry or tries == ATTEMPTS:
                    raise
                log_event(log, "hub_retry", repo=str(self.repo), attempt=tries, error=str(exc))
                await asyncio.sleep(pause(tries - 1))
        raise AssertionError("unreachable")


class HubFile:
    """One large file of a revision as `download.Source`: its size from the HEAD, its bytes by
    ranged GETs of its resolve URL (each redirected to the CDN afresh: the CDN's signed URLs
    expire, a redirect does not)."""

    def __init__(self, hub: HubRemote, url: str, meta: FileMeta) -> None:
        self._hub = hub
        self._url = url
        self._meta = meta

    async def blob_size(self, digest: str) -> int:
        return self._meta.size

    @asynccontextmanager
    async def blob_range(self, digest: str, start: int, stop: int) -> AsyncIterator[httpx.Response]:
        async with self._hub.stream(self._url, {"Range": f"bytes={start}-{stop - 1}"}) as response:
            if response.status_code == 200 and start > 0:
                raise RemoteError(f"the Hub ignored the range request for {self._meta.name}", retry=True)
            yield response
