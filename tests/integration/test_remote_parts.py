"""The remote-registry harness itself: a real registry v2 over TLS, reached through a real proxy.

These prove the parts the remote pull/push tests stand on, with plain HTTP calls:
the test CA is what makes TLS verify, traffic really goes through tinyproxy (a request
fails once it is down), and distribution 2.8 stores and serves an Ollama-style model
(its layer media types included) byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.remote import DockerRegistry, TestCA, TinyProxy, missing_tools

pytestmark = pytest.mark.skipif(missing_tools() is not None, reason=missing_tools() or "")

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG = "application/vnd.docker.container.image.v1+json"
MODEL = "application/vnd.ollama.image.model"
TEMPLATE = "application/vnd.ollama.image.template"


def proxied(proxy: TinyProxy, ca: TestCA | None, base_url: str = "") -> httpx.Client:
    """A client that goes through `proxy` and trusts `ca` alone (the system's CAs if None)."""
    verify = ca.ssl_context() if ca is not None else ssl.create_default_context()
    return httpx.Client(proxy=proxy.url, verify=verify, trust_env=False, timeout=30, base_url=base_url)


@pytest.fixture(scope="module")
def client(proxy: TinyProxy, ca: TestCA, registry: DockerRegistry) -> Iterator[httpx.Client]:
    with proxied(proxy, ca, registry.url) as running:
        yield running


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def test_registry_answers_through_the_proxy_with_the_test_ca(
    client: httpx.Client, registry: DockerRegistry, proxy: TinyProxy
) -> None:
    response = client.get(f"{registry.url}/v2/")
    assert response.status_code == 200, response.text
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    assert "www-authenticate" not in response.headers  # no auth configured: no 401 challenge
    # Without the test CA the same request fails certificate verification.
    with proxied(proxy, None) as untrusting, pytest.raises(httpx.ConnectError, match="CERTIFICATE"):
        untrusting.get(f"{registry.url}/v2/")


def test_request_fails_once_the_proxy_is_down(tmp_path: Path, ca: TestCA, registry: DockerRegistry) -> None:
    own = TinyProxy().start(tmp_path)
    try:
        with proxied(own, ca) as client:
            assert client.get(f"{registry.url}/v2/").status_code == 200
            assert own.process is not None
            group = own.process.pid
            own.stop()
            with pytest.raises(ProcessLookupError):  # the whole process group is gone
                os.killpg(group, 0)
            with pytest.raises(httpx.ConnectError):
                client.get(f"{registry.url}/v2/")
    finally:
        own.stop()


def push_blob(client: httpx.Client, repository: str, data: bytes) -> str:
    """A monolithic upload: POST for an upload location, then PUT the bytes with their digest."""
    digest = digest_of(data)
    started = client.post(f"/v2/{repository}/blobs/uploads/")
    assert started.status_code == 202, started.text
    # httpx 0.28 replaces a URL's query with `params=`: merge, to keep the upload's _state.
    location = httpx.URL(started.headers["location"]).copy_merge_params({"digest": digest})
    done = client.put(location, content=data, headers={"Content-Type": "application/octet-stream"})
    assert done.status_code == 201, done.text
    assert done.headers["docker-content-digest"] == digest
    return digest


def test_ollama_model_pushed_and_read_back(client: httpx.Client, registry: DockerRegistry) -> None:
    repository, tag = "library/tiny", "135m"
    config = json.dumps({"model_format": "gguf", "model_family": "llama"}).encode()
    model = b"GGUF\x03\x00\x00\x00 not really a model"
    template = b"{{ .Prompt }}"
    blobs = {push_blob(client, repository, data): data for data in (config, model, template)}
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": digest_of(config), "size": len(config)},
            "layers": [
                {"mediaType": MODEL, "digest": digest_of(model), "size": len(model)},
                {"mediaType": TEMPLATE, "digest": digest_of(template), "size": len(template)},
            ],
        }
    ).encode()
    put = client.put(
        f"/v2/{repository}/manifests/{tag}", content=manifest, headers={"Content-Type": MANIFEST}
    )
    assert put.status_code == 201, put.text
    assert put.headers["docker-content-digest"] == digest_of(manifest)

    got = client.get(f"/v2/{repository}/manifests/{tag}", headers={"Accept": MANIFEST})
    assert got.status_code == 200, got.text
    assert got.content == manifest
    assert got.headers["content-type"] == MANIFEST
    assert got.headers["docker-content-digest"] == digest_of(manifest)

    for digest, data in blobs.items():
        blob = client.get(f"/v2/{repository}/blobs/{digest}")
        assert blob.status_code == 200, blob.text  # served directly: no redirect
        assert blob.content == data
        assert blob.headers["docker-content-digest"] == digest
        assert registry.blob_path(digest).read_bytes() == data

    tail = client.get(f"/v2/{repository}/blobs/{digest_of(model)}", headers={"Range": "bytes=3-"})
    assert tail.status_code == 206, tail.text
    assert tail.content == model[3:]
    assert tail.headers["content-range"] == f"bytes 3-{len(model) - 1}/{len(model)}"
