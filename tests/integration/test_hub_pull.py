"""Pulling EXL2/EXL3 model repositories from a Hugging Face Hub imitation (tests/hub.py: the
Hub's registry endpoint, its API, and its resolve URLs redirecting to a CDN on another port),
over TLS from a test CA, reached only through a real CONNECT proxy (tinyproxy): the registry
service finds the Hub through HF_ENDPOINT, sends HF_TOKEN, trusts the CA through SSL_CERT_FILE
and the proxy through HTTPS_PROXY, as a user behind one would set them."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from tests.hub import HubImitation, exl2_repository, exl2_shard
from tests.integration.test_pull import blobs, hidden_files, restart_and_check_resumed
from tests.remote import TestCA, TinyProxy
from tests.stack import Stack
from tests.watch import DEADLINE, until

pytestmark = pytest.mark.skipif(shutil.which("tinyproxy") is None, reason="tinyproxy not installed")

TOKEN = "hf_corraltests"
USER = "corral-tests"
KEPT = [
    "config.json",
    "generation_config.json",
    "output-00001-of-00002.safetensors",
    "output-00002-of-00002.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
]  # of exl2_repository's files: not README.md, .gitattributes, measurement.json, cover.png


@pytest.fixture(scope="module")
def hub(ca: TestCA) -> Iterator[HubImitation]:
    with HubImitation(ca, token=TOKEN).start() as running:
        yield running


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    nats_binary: Path,
    ca: TestCA,
    proxy: TinyProxy,
    hub: HubImitation,
) -> Iterator[Stack]:
    behind_proxy = {
        "HTTPS_PROXY": proxy.url,
        "HTTP_PROXY": proxy.url,
        "NO_PROXY": "",
        "no_proxy": "",
        "SSL_CERT_FILE": str(ca.ca_file),
        "HF_ENDPOINT": hub.endpoint,
        "HF_TOKEN": TOKEN,
    }
    running = Stack(tmp_path_factory.mktemp("stack"), nats_binary, env_overrides=behind_proxy)
    running.start(("registry", "gateway"))  # nothing runs an EXL2 model here: no worker needed
    try:
        until(lambda: _answers(f"{running.url}/api/tags"), "the gateway and the registry")
        yield running
    finally:
        running.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def client(stack: Stack) -> ollama.Client:
    return ollama.Client(host=stack.url, timeout=DEADLINE)


def manifest(stack: Stack, name: str) -> dict[str, Any]:
    host, rest = name.split("/", 1)
    repo, _, tag = rest.partition(":")
    path = stack.root / "models" / "manifests" / host / repo / (tag or "latest")
    return dict(json.loads(path.read_text()))


def stored(stack: Stack, digest: str) -> Path:
    return blobs(stack) / digest.replace(":", "-")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_an_exl2_branch_is_pulled_through_the_proxy_from_the_hub_and_its_cdn(
    stack: Stack, client: ollama.Client, hub: HubImitation, proxy: TinyProxy
) -> None:
    repo = f"{USER}/SmolLM2-135M-Instruct-exl2"
    files = exl2_repository(bits=4.0)
    hub.add(repo, "main", {"README.md": files["README.md"], "measurement.json": files["measurement.json"]})
    hub.add(repo, "4.0bpw", files)  # turboderp's layout: one branch per bitrate
    name = f"{hub.host}/{repo}:4.0bpw"

    steps = list(client.pull(name, stream=True))
    statuses = [s.status for s in steps]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layers = manifest(stack, name)["layers"]
    assert [layer["name"] for layer in layers] == KEPT
    for layer in layers:
        assert layer["mediaType"] == "application/vnd.corral.model.file"
        data = files[layer["name"]]
        assert (layer["digest"], layer["size"]) == (sha256(data), len(data))
        assert stored(stack, layer["digest"]).read_bytes() == data  # verified, in place
        shown = [s for s in steps if s.digest == layer["digest"]]
        assert shown[-1].status == f"pulling {layer['digest'][7:19]}"
        assert shown[-1].completed == shown[-1].total == len(data)
    assert hidden_files(stack) == []
    modes = {stored(stack, layer["digest"]).stat().st_mode for layer in layers}
    assert len(modes) == 1  # a file kept in git is as readable to a worker as a shard

    listed = {m.model: m for m in client.list().models}
    assert name in listed
    details = listed[name].details
    assert details is not None
    assert (details.format, details.family, details.quantization_level) == ("exl2", "llama", "4.0bpw")
    shown_model = client.show(name)
    assert shown_model.details is not None and shown_model.details.format == "exl2"

    # The registry endpoint first (as Ollama asks it), then the API; the shards from the CDN,
    # which never saw the token; every connection through the proxy.
    assert [s.path for s in hub.seen("hub")][:2] == [
        f"/v2/{repo}/manifests/4.0bpw",
        f"/api/models/{repo}/revision/4.0bpw",
    ]
    assert all(s.authorization for s in hub.seen("hub") if not s.path.startswith("/v2/"))
    cdn = hub.seen("cdn", "GET")
    assert cdn and not any(s.authorization for s in cdn)
    assert {s.path for s in cdn} == {
        f"/lfs/{sha256(files[n])[7:]}" for n in KEPT if n.endswith(".safetensors")
    }
    log = proxy.log()
    assert f"CONNECT {hub.host}" in log and f"CONNECT {hub.cdn_host}" in log, log[-2000:]

    hub.forget()  # pulled again: nothing is downloaded twice (the files' HEADs say they are there)
    assert client.pull(name).status == "success"
    assert hub.seen("cdn") == []
    assert not any("/resolve/" in s.path for s in hub.seen("hub", "GET"))


def test_a_private_exl3_repository_is_found_with_hf_token_at_its_default_branch(
    stack: Stack, client: ollama.Client, hub: HubImitation
) -> None:
    repo = f"{USER}/SmolLM2-135M-Instruct-exl3-private"
    files = exl2_repository(bits=3.0, method="exl3")
    hub.add(repo, "main", files, private=True)
    name = f"{hub.host}/{repo}"  # no tag: "latest", the default branch

    assert client.pull(name).status == "success"
    hub_requests = [(s.method, s.path) for s in hub.seen("hub") if repo in s.path]
    assert hub_requests[:2] == [("GET", f"/v2/{repo}/manifests/latest"), ("GET", f"/api/models/{repo}")]
    details = client.show(f"{name}:latest").details
    assert details is not None
    assert (details.format, details.quantization_level) == ("exl3", "3.0bpw")


def test_a_file_whose_bytes_are_not_the_ones_the_hub_names_is_refused_and_nothing_appears(
    stack: Stack, client: ollama.Client, hub: HubImitation
) -> None:
    repo = f"{USER}/SmolLM2-135M-Instruct-exl2-corrupt"
    files = exl2_repository(bits=6.0)
    shard = "output-00002-of-00002.safetensors"
    claimed = hashlib.sha256(b"the bytes the Hub says it has").hexdigest()
    hub.add(repo, "6.0bpw", files, lies={shard: claimed})
    name = f"{hub.host}/{repo}:6.0bpw"

    response = httpx.post(f"{stack.url}/api/pull", json={"model": name, "stream": False}, timeout=DEADLINE)
    assert response.status_code == 400
    got = sha256(files[shard])
    assert response.json() == {
        "error": f"digest mismatch, file must be downloaded again: want sha256:{claimed}, got {got}"
    }
    assert name not in [m.model for m in client.list().models]
    assert not stored(stack, sha256(files[shard])).exists()
    assert not stored(stack, f"sha256:{claimed}").exists()
    assert hidden_files(stack) == []


@pytest.mark.parametrize(
    ("tag", "error"),
    [
        pytest.param(
            "4.0bpw",
            'pull model manifest: repository "corral-tests/no-such-repo" not found on {host}'
            " (a private or gated one needs HF_TOKEN)",
            id="no-repository",
        ),
        pytest.param(
            "9.9bpw",
            'pull model manifest: revision "9.9bpw" not found in corral-tests/{repo}',
            id="no-revision",
        ),
        pytest.param(
            "main",
            "pull model manifest: corral-tests/{repo}:main has no config.json, tokenizer.json, *.safetensors:"
            " not a model directory",
            id="no-model-files",
        ),
    ],
)
def test_what_is_not_there_is_a_clear_404(stack: Stack, hub: HubImitation, tag: str, error: str) -> None:
    repo = "SmolLM2-135M-Instruct-exl2-sparse"
    hub.add(f"{USER}/{repo}", "main", {"README.md": b"# measurements only\n", "measurement.json": b"{}"})
    missing = "no-such-repo" if "repository" in error else repo
    response = httpx.post(
        f"{stack.url}/api/pull",
        json={"model": f"{hub.host}/{USER}/{missing}:{tag}", "stream": False},
        timeout=DEADLINE,
    )
    assert (response.status_code, response.json()) == (404, {"error": error.format(host=hub.host, repo=repo)})


def test_a_pull_cut_mid_file_resumes_where_it_stopped(stack: Stack, hub: HubImitation) -> None:
    repo = f"{USER}/SmolLM2-135M-Instruct-exl2-big"
    files = {
        **{k: v for k, v in exl2_repository(bits=8.0).items() if not k.endswith(".safetensors")},
        "output.safetensors": exl2_shard(80, range(30), 40 * 1024 * 1024),
    }
    big = files["output.safetensors"]
    digest = sha256(big)
    hub.add(repo, "8.0bpw", files)
    name = f"{hub.host}/{repo}:8.0bpw"
    state = blobs(stack) / f".{digest.replace(':', '-')}.partial.json"

    hub.release.clear()
    hub.stall_after = 20 * 1024 * 1024  # each CDN answer stops there: more than one save's worth
    try:
        with httpx.stream("POST", f"{stack.url}/api/pull", json={"model": name}, timeout=60) as response:
            lines = response.iter_lines()  # held, so the connection stays open (the client stays)
            for line in lines:
                if json.loads(line).get("digest") == digest:
                    break
            until(state.exists, "the download's first saved state")
            stack.stop_service("registry", signal.SIGKILL)  # cut mid-file: no chance to tidy up
    finally:
        hub.stall_after = None
        hub.release.set()
    restart_and_check_resumed(stack, state, digest, big)
    tags = httpx.get(f"{stack.url}/api/tags").json()["models"]
    assert name in [m["name"] for m in tags]
