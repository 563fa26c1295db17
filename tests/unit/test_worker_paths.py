"""The worker opens weights only inside OLLAMA_MODELS, whatever a message says."""

from __future__ import annotations

from pathlib import Path

from services.worker.worker import weights_path


def test_a_blob_symlinked_out_of_the_store_is_not_opened(tmp_path: Path) -> None:
    models, outside = tmp_path / "models", tmp_path / "elsewhere.gguf"
    (models / "blobs").mkdir(parents=True)
    outside.write_bytes(b"GGUF")
    inside, escaping = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    (models / "blobs" / inside.replace(":", "-")).write_bytes(b"GGUF")
    (models / "blobs" / escaping.replace(":", "-")).symlink_to(outside)
    assert weights_path(models, inside) == (models / "blobs" / inside.replace(":", "-")).resolve()
    assert weights_path(models, escaping) is None
