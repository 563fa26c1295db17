"""Blobs and /api/create through the real stack, with the official client where it reaches."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import httpx
import ollama
import pytest

from services.registry.uploads import PARTIAL_SUFFIX
from tests.models import f16_weights
from tests.stack import MODEL, Stack
from tests.watch import until


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blobs(stack: Stack) -> Path:
    return stack.root / "models" / "blobs"


def partials(stack: Stack) -> list[Path]:
    return list(blobs(stack).glob(f"*{PARTIAL_SUFFIX}"))


def test_a_blob_is_uploaded_once_and_kept_whole(stack: Stack) -> None:
    data = os.urandom(9 * 1024 * 1024 + 123)  # several upload messages and a remainder
    url = f"{stack.url}/api/blobs/{digest_of(data)}"
    assert httpx.head(url).status_code == 404
    assert httpx.post(url, content=data, timeout=120).status_code == 201
    assert httpx.post(url, content=data, timeout=120).status_code == 200  # stored already
    assert httpx.head(url).status_code == 200
    assert (blobs(stack) / digest_of(data).replace(":", "-")).read_bytes() == data


def test_a_blob_with_the_wrong_digest_is_refused_and_not_kept(stack: Stack) -> None:
    claimed = digest_of(b"promised")
    response = httpx.post(f"{stack.url}/api/blobs/{claimed}", content=b"delivered", timeout=60)
    assert response.status_code == 400
    assert response.json() == {
        "error": f'digest mismatch, expected "{claimed}", got "{digest_of(b"delivered")}"'
    }
    assert not (blobs(stack) / claimed.replace(":", "-")).exists()
    assert not (blobs(stack) / digest_of(b"delivered").replace(":", "-")).exists()
    assert partials(stack) == []


@pytest.mark.parametrize("method", ["HEAD", "POST"])
def test_a_malformed_digest_is_a_400(stack: Stack, method: str) -> None:
    response = httpx.request(method, f"{stack.url}/api/blobs/sha256:abc", content=b"x")
    assert response.status_code == 400
    if method == "POST":
        assert response.json() == {"error": "invalid digest format"}


def test_an_upload_the_client_abandons_leaves_nothing(stack: Stack) -> None:
    data = os.urandom(6 * 1024 * 1024)
    head = (
        f"POST /api/blobs/{digest_of(data + b'rest')} HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Length: {len(data) + 4}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", stack.port), timeout=60) as conn:
        conn.sendall(head.encode() + data)
        until(lambda: bool(partials(stack)), "the upload to begin")
    until(lambda: not partials(stack), "the abandoned upload to be removed")
    assert not (blobs(stack) / digest_of(data + b"rest").replace(":", "-")).exists()


def test_create_from_an_uploaded_gguf_with_the_official_client(stack: Stack, tmp_path: Path) -> None:
    client = ollama.Client(host=stack.url)
    source = client.show(MODEL).modelfile
    assert source is not None
    gguf = Path(next(line[5:] for line in source.splitlines() if line.startswith("FROM /")))
    digest = client.create_blob(gguf)
    progress = [p.status for p in client.create("gguf-only", files={"model.gguf": digest}, stream=True)]
    assert progress == ["parsing GGUF", f"using existing layer {digest}", "writing manifest", "success"]
    shown = client.show("gguf-only")
    assert shown.details is not None and shown.details.parameter_size == "134.52M"
    assert shown.template is None or shown.template == ""  # the GGUF's own chat template renders
    answer = client.chat(
        "gguf-only", messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 4}
    )
    assert answer.done and answer.message.role == "assistant"
    client.delete("gguf-only")


def test_create_from_an_exl2_directory_then_no_worker_can_run_it(stack: Stack, tmp_path: Path) -> None:
    """An EXL2 model directory is kept as its files (for a GPU worker's exllamav2); this CPU-only
    stack lists and shows it, and a chat is refused at once by the scheduler, which knows from
    the heartbeats that no worker runs exl2 (no load is tried), not a hang."""
    client = ollama.Client(host=stack.url)
    config = {"model_type": "llama", "num_hidden_layers": 30, "num_attention_heads": 9, "hidden_size": 576,
              "num_key_value_heads": 3, "max_position_embeddings": 8192,
              "quantization_config": {"quant_method": "exl2", "bits": 4.0}}  # fmt: skip
    directory = {
        "config.json": json.dumps(config).encode(),
        "output.safetensors": b"\x02" + b"\x00" * 7 + b"{}",
    }
    files = {}
    for name, data in directory.items():
        (tmp_path / name).write_bytes(data)
        files[name] = client.create_blob(tmp_path / name)
    progress = [p.status for p in client.create("gpu-only", files=files, stream=True)]
    assert progress[-2:] == ["writing manifest", "success"]
    shown = client.show("gpu-only")
    assert shown.details is not None and (shown.details.format, shown.details.quantization_level) == (
        "exl2",
        "4.0bpw",
    )
    chat = {"model": "gpu-only", "messages": [{"role": "user", "content": "Hi"}]}
    response = httpx.post(f"{stack.url}/api/chat", json=chat, timeout=120)
    assert (response.status_code, response.json()) == (
        503,
        {"error": "no worker can run exl2 models (exllamav2 on a CUDA worker)"},
    )  # as when no worker is available at all
    client.delete("gpu-only")


def test_create_from_a_model_with_system_parameters_and_messages(stack: Stack) -> None:
    client = ollama.Client(host=stack.url)
    conversation = [
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "A pirate!"},
    ]
    done = client.create(
        "pirate",
        from_=MODEL,
        system="Talk like a pirate.",
        parameters={"temperature": 0, "num_predict": 3},
        messages=conversation,
    )
    assert done.status == "success"
    shown = client.show("pirate")
    assert shown.modelfile is not None and "SYSTEM Talk like a pirate.\n" in shown.modelfile
    assert shown.parameters is not None
    assert "temperature" in shown.parameters and "num_predict" in shown.parameters
    assert shown.modelfile.endswith("MESSAGE user Who are you?\nMESSAGE assistant A pirate!\n")
    assert "pirate:latest" in [m.model for m in client.list().models]

    ask = [{"role": "user", "content": "Hello"}]
    plain = client.chat("pirate", messages=ask, options={"num_predict": 1})
    client.create("pirate-no-history", from_=MODEL, system="Talk like a pirate.")
    without = client.chat("pirate-no-history", messages=ask, options={"num_predict": 1})
    assert plain.prompt_eval_count > without.prompt_eval_count  # the model's messages come first
    assert plain.eval_count == 1  # the request's option over the model's num_predict 3
    assert client.generate("pirate", prompt="Hi").eval_count <= 3  # the model's parameter applies
    client.delete("pirate")
    client.delete("pirate-no-history")


def test_create_quantizes_an_f16_model(stack: Stack, tmp_path: Path) -> None:
    client = ollama.Client(host=stack.url)
    digest = client.create_blob(f16_weights(tmp_path / "f16.gguf"))
    progress = [
        p.status for p in client.create("quantized", files={"m.gguf": digest}, quantize="q8_0", stream=True)
    ]
    assert progress[:3] == ["parsing GGUF", "quantizing F16 model to Q8_0", "verifying conversion"]
    assert progress[-2:] == ["writing manifest", "success"]
    shown = client.show("quantized")
    assert shown.details is not None and shown.details.quantization_level == "Q8_0"
    assert shown.details.parameter_size == "134.52M"
    answer = client.generate(
        "quantized", prompt="The capital of France is", options={"num_predict": 4, "temperature": 0}
    )
    assert answer.done and answer.response.strip()
    client.delete("quantized")


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"model": "x"}, 400, "neither 'from' or 'files' was specified"),
        ({"model": "bad name!", "from": MODEL}, 400, "invalid model name"),
        ({"model": "x", "from": MODEL, "parameters": {"temperature": "hot"}}, 400,
         'option "temperature" must be of type float32'),
        ({"model": "x", "from": MODEL, "messages": [{"role": "robot", "content": "hi"}]}, 400,
         "invalid role 'robot': expected system, user, assistant or tool"),
        ({"model": "x", "from": MODEL, "quantize": "q4_K_M"}, 400,
         "quantization is only supported for F16, BF16 and F32 models"),
        ({"model": "x", "files": {"model.gguf": "sha256:" + "0" * 64}}, 404,
         f'blob "sha256:{"0" * 64}" not found'),
        ({"model": "x", "from": 3}, 400,
         "json: cannot unmarshal number into Go struct field CreateRequest.from of type string"),
    ],
)  # fmt: skip
def test_create_errors(stack: Stack, body: dict, status: int, error: str) -> None:
    response = httpx.post(f"{stack.url}/api/create", json=body, timeout=60)
    assert (response.status_code, response.json()) == (status, {"error": error})


def test_create_from_a_model_not_stored_pulls_it_first(stack: Stack) -> None:
    """As Ollama: `from` a model that is not here is pulled (from registry.ollama.ai, which
    this machine cannot reach), its statuses in the create's stream; its failure ends it."""
    response = httpx.post(f"{stack.url}/api/create", json={"model": "x", "from": "nope"}, timeout=60)
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert response.status_code == 200 and lines[0] == {"status": "pulling manifest"}
    assert lines[-1]["error"].startswith("pull model manifest: ")
    assert "x:latest" not in [m["name"] for m in httpx.get(f"{stack.url}/api/tags").json()["models"]]
