"""Pull and push against a real registry (Debian's docker-registry, TLS from a test CA), reached
only through a real CONNECT proxy (tinyproxy): the stack's registry service trusts the test CA
through SSL_CERT_FILE and finds the proxy through HTTPS_PROXY, as a user behind one would set."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import nats
import ollama
import pytest

from services.protocol import Progress, subjects
from services.registry.bundled import bundled_gguf
from tests.integration.test_cli import CORRAL
from tests.remote import DockerRegistry, TestCA, TinyProxy, missing_tools
from tests.stack import MODEL, Stack
from tests.watch import DEADLINE, until

pytestmark = pytest.mark.skipif(missing_tools() is not None, reason=missing_tools() or "")

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, nats_binary: Path, ca: TestCA, proxy: TinyProxy
) -> Iterator[Stack]:
    behind_proxy = {
        "HTTPS_PROXY": proxy.url,
        "HTTP_PROXY": proxy.url,
        "NO_PROXY": "",
        "no_proxy": "",
        "SSL_CERT_FILE": str(ca.ca_file),
    }
    running = Stack(tmp_path_factory.mktemp("stack"), nats_binary, env_overrides=behind_proxy).start()
    yield running
    running.stop()


@pytest.fixture
def client(stack: Stack) -> ollama.Client:
    return ollama.Client(host=stack.url)


def blobs(stack: Stack) -> Path:
    return stack.root / "models" / "blobs"


def hidden_files(stack: Stack) -> list[str]:
    return [p.name for p in blobs(stack).iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]


def unique_weights(tmp_path: Path) -> Path:
    """The bundled GGUF with another general.name: the same model, a blob of its own."""
    source = bundled_gguf()
    assert source is not None
    data = bytearray(source.read_bytes())
    at = data.find(b"Smollm2 135M", 0, 4096)
    assert at > 0
    data[at : at + 7] = b"Pulled2"
    path = tmp_path / "weights.gguf"
    path.write_bytes(data)
    return path


def test_push_then_pull_back_through_the_proxy_and_generate(
    stack: Stack, client: ollama.Client, registry: DockerRegistry, tmp_path: Path
) -> None:
    name = f"{registry.host}/library/smol:v1"
    weights = client.create_blob(unique_weights(tmp_path))
    client.create(name, files={"model.gguf": weights}, system="You were pulled.")

    pushed = [p.status for p in client.push(name, stream=True)]
    assert pushed[0] == "retrieving manifest" and pushed[-2:] == ["pushing manifest", "success"]
    assert f"pushing {weights[7:19]}" in pushed
    assert registry.blob_path(weights).stat().st_size == (tmp_path / "weights.gguf").stat().st_size

    client.delete(name)
    assert not (blobs(stack) / weights.replace(":", "-")).exists()  # only that model used it

    steps = list(client.pull(name, stream=True))
    statuses = [s.status for s in steps]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layer = [s for s in steps if s.digest == weights]
    assert layer and layer[-1].completed == layer[-1].total == (tmp_path / "weights.gguf").stat().st_size
    stored = blobs(stack) / weights.replace(":", "-")
    assert "sha256:" + hashlib.sha256(stored.read_bytes()).hexdigest() == weights
    assert hidden_files(stack) == []

    assert name in [m.model for m in client.list().models]
    shown = client.show(name)
    assert shown.modelfile is not None and "SYSTEM You were pulled." in shown.modelfile
    assert client.generate(name, prompt="Hi", options={"num_predict": 3}).done

    again = [s.status for s in client.pull(name, stream=True)]  # everything is there: nothing fetched
    assert again[-1] == "success"


def test_create_from_a_remote_model_pulls_it_then_creates(
    stack: Stack, client: ollama.Client, registry: DockerRegistry, tmp_path: Path
) -> None:
    source = f"{registry.host}/library/base:v1"
    weights = client.create_blob(unique_weights(tmp_path))
    client.create(source, files={"model.gguf": weights})
    assert client.push(source).status == "success"
    client.delete(source)

    statuses = [p.status for p in client.create("derived", from_=source, system="Derived.", stream=True)]
    assert statuses[0] == "pulling manifest"
    assert statuses.index("writing manifest") < statuses.index(f"using existing layer {weights}")
    assert statuses[-1] == "success"
    names = [m.model for m in client.list().models]
    assert source in names and "derived:latest" in names  # the base stays, as Ollama's does
    shown = client.show("derived")
    assert shown.modelfile is not None and "SYSTEM Derived." in shown.modelfile
    assert client.generate("derived", prompt="Hi", options={"num_predict": 3}).done


def test_an_unknown_model_is_ollamas_error(stack: Stack, registry: DockerRegistry) -> None:
    response = httpx.post(
        f"{stack.url}/api/pull",
        json={"model": f"{registry.host}/library/nope:v1", "stream": False},
        timeout=60,
    )
    assert (response.status_code, response.json()) == (
        404,
        {"error": "pull model manifest: file does not exist"},
    )


def test_with_the_proxy_down_a_pull_says_so(
    stack: Stack, registry: DockerRegistry, proxy: TinyProxy, tmp_path: Path
) -> None:
    proxy.stop()
    try:
        response = httpx.post(
            f"{stack.url}/api/pull",
            json={"model": f"{registry.host}/library/smol:v1", "stream": False},
            timeout=60,
        )
    finally:
        proxy.start(tmp_path)  # the same port again
    url = f"https://{registry.host}/v2/library/smol/manifests/v1"
    assert response.status_code == 503
    error = response.json()["error"]
    assert error.startswith(f'pull model manifest: Get "{url}": proxyconnect tcp:'), error


def test_a_corrupted_blob_is_refused_and_nothing_appears(
    stack: Stack, client: ollama.Client, registry: DockerRegistry
) -> None:
    name = f"{registry.host}/library/corrupt:v1"
    system = f"A system prompt of its own: {uuid.uuid4()}"
    client.create(name, from_=MODEL, system=system)
    assert client.push(name).status == "success"
    client.delete(name)
    digest = "sha256:" + hashlib.sha256(system.encode()).hexdigest()
    stored = registry.blob_path(digest)
    stored.write_bytes(b"X" + stored.read_bytes()[1:])  # same size, other bytes

    response = httpx.post(f"{stack.url}/api/pull", json={"model": name, "stream": False}, timeout=60)
    assert response.status_code == 400
    got = "sha256:" + hashlib.sha256(stored.read_bytes()).hexdigest()
    assert response.json() == {
        "error": f"digest mismatch, file must be downloaded again: want {digest}, got {got}"
    }
    assert name not in [m.model for m in client.list().models]
    assert not (blobs(stack) / digest.replace(":", "-")).exists()
    assert hidden_files(stack) == []


def raw_push(registry: DockerRegistry, ca: TestCA, repository: str, layers: list[tuple[str, bytes]]) -> None:
    """Put a model in the registry with its plain HTTP API (no proxy: this is the test's setup)."""
    with httpx.Client(base_url=registry.url, verify=ca.ssl_context(), trust_env=False, timeout=120) as http:
        entries = []
        for media_type, data in layers:
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            started = http.post(f"/v2/{repository}/blobs/uploads/")
            location = httpx.URL(started.headers["location"]).copy_merge_params({"digest": digest})
            assert http.put(location, content=data).status_code == 201
            entries.append({"mediaType": media_type, "digest": digest, "size": len(data)})
        config, *rest = entries
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": rest}
        put = http.put(
            f"/v2/{repository}/manifests/v1", content=json.dumps(manifest), headers={"Content-Type": MANIFEST}
        )
        assert put.status_code == 201, put.text


def test_a_pull_cut_mid_blob_resumes_where_it_stopped(
    stack: Stack, registry: DockerRegistry, ca: TestCA
) -> None:
    big = os.urandom(160 * 1024 * 1024)
    digest = "sha256:" + hashlib.sha256(big).hexdigest()
    config = json.dumps({"model_format": "gguf"}).encode()
    raw_push(registry, ca, "library/big", [("application/vnd.docker.container.image.v1+json", config),
                                           ("application/vnd.ollama.image.model", big)])  # fmt: skip
    name = f"{registry.host}/library/big:v1"
    state = blobs(stack) / f".{digest.replace(':', '-')}.partial.json"

    with httpx.stream("POST", f"{stack.url}/api/pull", json={"model": name}, timeout=60) as response:
        lines = response.iter_lines()  # held, so the connection stays open (the client stays)
        for line in lines:
            if json.loads(line).get("digest") == digest:
                break
        until(state.exists, "the download's first saved state")
        stack.stop_service("registry", signal.SIGKILL)  # cut mid-blob: no chance to tidy up
    restart_and_check_resumed(stack, state, digest, big)
    tags = httpx.get(f"{stack.url}/api/tags").json()["models"]
    assert name in [m["name"] for m in tags]


def restart_and_check_resumed(stack: Stack, state: Path, digest: str, data: bytes) -> None:
    """After a registry was killed mid-blob: some of the blob was saved; the restarted registry
    finishes the pull by itself (the catalog recorded it), reporting on a subject no client
    listens to (the test does), from where the saved state says it stopped, to the whole blob."""
    saved = sum(part["done"] for part in json.loads(state.read_text())["parts"])
    assert 0 < saved < len(data)
    progress = asyncio.run(resumed_progress(stack, lambda: stack.start_service("registry")))
    layer = [p for p in progress if p.digest == digest]
    assert layer[0].completed >= saved  # picked up where the saved state says it stopped
    assert progress[-1].status == "success" and progress[-1].done
    assert (blobs(stack) / digest.replace(":", "-")).read_bytes() == data
    assert hidden_files(stack) == []


async def resumed_progress(stack: Stack, restart: Callable[[], None]) -> list[Progress]:
    """What the registry reports of the pulls it resumes, from its restart to the first end."""
    nc = await nats.connect(stack.nats_url)
    try:
        subscription = await nc.subscribe(subjects.resumed_subject("*"))
        await nc.flush()
        restart()
        seen: list[Progress] = []
        while not seen or not seen[-1].done:
            message = await subscription.next_msg(timeout=DEADLINE)
            seen.append(Progress.model_validate_json(message.data))
        return seen
    finally:
        await nc.close()


def test_two_pulls_of_one_model_at_once_both_succeed(
    stack: Stack, registry: DockerRegistry, ca: TestCA
) -> None:
    data = os.urandom(40 * 1024 * 1024)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    raw_push(registry, ca, "library/twice", [("application/vnd.docker.container.image.v1+json", b"{}"),
                                             ("application/vnd.ollama.image.model", data)])  # fmt: skip
    body = {"model": f"{registry.host}/library/twice:v1", "stream": False}
    with ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(lambda _: httpx.post(f"{stack.url}/api/pull", json=body, timeout=120), range(2))
        )
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"status": "success"})] * 2
    assert (blobs(stack) / digest.replace(":", "-")).read_bytes() == data
    assert hidden_files(stack) == []


def test_a_second_pull_of_a_model_follows_the_running_job(
    stack: Stack, registry: DockerRegistry, ca: TestCA
) -> None:
    """Two clients pull one model: the second follows the first's job (it starts from the job's
    latest status, never "pulling manifest" of a job of its own), the first leaving does not
    stop it, and it ends with "success". The test holds the weights' download lock (as another
    host downloading them would) so that the job is surely still running when the second asks."""
    system, weights = b"Followed.", os.urandom(8 * 1024 * 1024)
    small, big = ("sha256:" + hashlib.sha256(data).hexdigest() for data in (system, weights))
    raw_push(registry, ca, "library/shared", [("application/vnd.docker.container.image.v1+json", b"{}"),
                                              ("application/vnd.ollama.image.system", system),
                                              ("application/vnd.ollama.image.model", weights)])  # fmt: skip
    body = {"model": f"{registry.host}/library/shared:v1"}
    lock = os.open(blobs(stack) / f".{big.replace(':', '-')}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        with httpx.Client(timeout=DEADLINE) as one, httpx.Client(timeout=DEADLINE) as two:
            first = one.send(one.build_request("POST", f"{stack.url}/api/pull", json=body), stream=True)
            lines = first.iter_lines()  # held, so the connection stays open (the client stays)
            for line in lines:
                step = json.loads(line)
                if step.get("digest") == small and step.get("completed") == len(system):
                    break  # the job now waits for the weights' lock
            second = two.send(two.build_request("POST", f"{stack.url}/api/pull", json=body), stream=True)
            followed = second.iter_lines()
            joined = json.loads(next(followed))
            first.close()  # the first client leaves; the second still follows the job
            os.close(lock)  # the weights may come now
            lock = -1
            steps = [joined, *(json.loads(line) for line in followed)]
            second.close()
    finally:
        if lock >= 0:
            os.close(lock)
    assert joined == {"status": f"pulling {small[7:19]}", "digest": small, "total": len(system),
                      "completed": len(system)}  # fmt: skip
    statuses = [step.get("status") for step in steps]
    assert "pulling manifest" not in statuses  # no job of its own
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    assert [s["completed"] for s in steps if s.get("digest") == big][-1] == len(weights)
    assert (blobs(stack) / big.replace(":", "-")).read_bytes() == weights
    assert hidden_files(stack) == []


def test_corral_pull_prints_ollamas_statuses(stack: Stack, registry: DockerRegistry) -> None:
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{stack.port}"}
    name = f"{registry.host}/library/smol:v1"
    done = subprocess.run([CORRAL, "pull", name], env=env, capture_output=True, text=True, timeout=DEADLINE)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == "pulling manifest" and lines[-3:] == [
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    missing = subprocess.run(
        [CORRAL, "pull", f"{registry.host}/library/nope:v1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        "pulling manifest",
        "Error: pull model manifest: file does not exist",
    ]


def test_corral_push_prints_ollamas_statuses(stack: Stack, registry: DockerRegistry) -> None:
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{stack.port}"}
    name = f"{registry.host}/library/smolcli:v1"
    ollama.Client(host=stack.url).copy(MODEL, name)
    done = subprocess.run([CORRAL, "push", name], env=env, capture_output=True, text=True, timeout=DEADLINE)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == "retrieving manifest" and lines[-2:] == ["pushing manifest", "success"]
    assert done.stdout == f"\nYou can find your model at:\n\n\t{name}\n"
    assert ollama.Client(host=stack.url).pull(name).status == "success"  # it is there to pull back
