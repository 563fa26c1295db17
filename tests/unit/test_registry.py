"""Model names, the Ollama-layout store, and the bundled SmolLM2 model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.registry.bundled import BUNDLED_NAME, bundled_gguf, install_bundled
from services.registry.describe import resolve
from services.registry.names import InvalidName, parse_name
from services.registry.store import InvalidDigest, ModelStore, blob_path, sha256_file

NAMES = [
    ("llama3", "registry.ollama.ai", "library", "llama3", "latest", "llama3:latest"),
    ("smollm2:135m", "registry.ollama.ai", "library", "smollm2", "135m", "smollm2:135m"),
    ("ns/model:tag", "registry.ollama.ai", "ns", "model", "tag", "ns/model:tag"),
    ("example.com:5000/ns/m:1.0", "example.com:5000", "ns", "m", "1.0", "example.com:5000/ns/m:1.0"),
    # Hugging Face by Ollama's naming: the repository's GGUF with that quantization.
    ("hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M", "hf.co", "bartowski", "SmolLM2-135M-Instruct-GGUF",
     "Q4_K_M", "hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M"),
    ("hf.co/unsloth/Qwen3-0.6B-GGUF", "hf.co", "unsloth", "Qwen3-0.6B-GGUF", "latest",
     "hf.co/unsloth/Qwen3-0.6B-GGUF:latest"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "host", "ns", "model", "tag", "short"), NAMES, ids=[n[0] for n in NAMES])
def test_parse_name(text: str, host: str, ns: str, model: str, tag: str, short: str) -> None:
    name = parse_name(text)
    assert name.parts == (host, ns, model, tag)
    assert name.display_shortest == short


@pytest.mark.parametrize("text", ["", "model:", "ns/", "a/b/c/d", "bad name", "-x", "n.s/m", "m:" + "t" * 81])
def test_invalid_names(text: str) -> None:
    with pytest.raises(InvalidName, match="invalid model name"):
        parse_name(text)


def test_blob_paths_accept_only_sha256() -> None:
    root = Path("/m")
    assert blob_path(root, "sha256:" + "A" * 64) == root / "blobs" / ("sha256-" + "a" * 64)
    for bad in ("sha256:123", "md5:" + "a" * 64, "../etc/passwd"):
        with pytest.raises(InvalidDigest):
            blob_path(root, bad)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    store = ModelStore(tmp_path_factory.mktemp("models"))
    assert install_bundled(store) is not None
    return store


def test_bundled_model_is_stored_in_ollamas_layout(store: ModelStore) -> None:
    manifest_path = store.root / "manifests/registry.ollama.ai/library/smollm2/135m"
    manifest = json.loads(manifest_path.read_text())
    weights = manifest["layers"][0]
    assert weights["mediaType"] == "application/vnd.ollama.image.model"
    blob = store.blob(weights["digest"])
    assert blob.stat().st_size == weights["size"]
    assert sha256_file(blob) == weights["digest"]
    source = bundled_gguf()
    assert source is not None and source.read_bytes()[:4] == b"GGUF"
    config = json.loads(store.blob(manifest["config"]["digest"]).read_text())
    assert config["model_format"] == "gguf"
    assert not list(store.root.rglob("*.partial"))


def test_install_is_idempotent(store: ModelStore) -> None:
    before = sorted(p.name for p in (store.root / "blobs").iterdir())
    assert install_bundled(store) == parse_name(BUNDLED_NAME)
    assert sorted(p.name for p in (store.root / "blobs").iterdir()) == before


def test_resolve_is_case_insensitive_and_reports_errors(store: ModelStore) -> None:
    found = resolve(store, "SmolLM2:135M")
    assert found.model is not None and found.model.name == "smollm2:135m"
    missing = resolve(store, "smollm2:1b")
    assert (missing.code, missing.error) == ("not_found", "model 'smollm2:1b' not found")
    invalid = resolve(store, "bad name")
    assert (invalid.code, invalid.error) == ("invalid", "invalid model name")


def test_list_shows_the_manifest_digest(store: ModelStore) -> None:
    [model] = store.list()
    assert model.name.display_shortest == "smollm2:135m"
    assert len(model.manifest_digest) == 64 and model.total_size > model.weights_size


def test_delete_prunes_only_blobs_no_other_manifest_uses(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    shared = store.put_blob_bytes(b"weights")
    own = store.put_blob_bytes(b"template of a")
    other = store.put_blob_bytes(b"template of b")

    def manifest(*digests: str) -> dict[str, object]:
        return {
            "layers": [
                {"mediaType": "application/vnd.ollama.image.model", "digest": d, "size": 1} for d in digests
            ]
        }

    store.write_manifest(parse_name("a:1"), manifest(shared, own))
    store.write_manifest(parse_name("b:1"), manifest(shared, other))
    assert store.copy(parse_name("a:1"), parse_name("a:copy"))
    assert store.delete(parse_name("a:1"))
    assert store.blob(own).exists()  # a:copy still uses it
    assert store.delete(parse_name("a:copy"))
    assert not store.blob(own).exists() and store.blob(shared).exists() and store.blob(other).exists()
    assert not store.delete(parse_name("a:1")) and not store.copy(parse_name("nope"), parse_name("x"))


def test_a_verbose_show_too_large_for_one_message_is_refused_clearly() -> None:
    from services.protocol import ShowResult
    from services.registry.describe import sendable

    shown = ShowResult(model_info={"tokenizer.ggml.tokens": ["token"] * 1000})
    assert sendable(shown, 1_000_000) is shown
    refused = sendable(shown, 1000)
    assert refused.model is None and refused.code == "too_large"
    assert refused.error is not None and refused.error.startswith("model metadata too large to send: ")


@pytest.mark.parametrize(
    ("value", "written"),
    [(9.999999747378752e-06, 1e-05), (10000.0, 10000.0), (0.10000000149011612, 0.1), (0.0, 0.0),
     (3.4028234663852886e38, 3.4028235e38), (-1.5, -1.5)],
    ids=["norm-epsilon", "rope-base", "tenth", "zero", "max", "negative"],
)  # fmt: skip
def test_float32_metadata_reads_as_go_writes_it(value: float, written: float) -> None:
    from services.registry.gguf_metadata import shortest_float32

    assert shortest_float32(value) == written
