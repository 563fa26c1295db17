"""The memory estimate (Ollama's classic one) from a GGUF's own shape, against the bundled model
and the reference's worked example."""

from __future__ import annotations

from services.protocol import ModelShape
from services.registry.bundled import bundled_gguf
from services.registry.describe import model_shape
from services.registry.gguf_metadata import read_metadata
from services.scheduler.memory import KV_BYTES_PER_TOKEN_FLOOR, Estimate, estimate

MiB = 1024 * 1024
SMOLLM2 = ModelShape(
    block_count=30, head_count=9, head_count_kv=3, key_length=64, value_length=64, embedding_length=576
)
LLAMA3_8B = ModelShape(
    block_count=32, head_count=32, head_count_kv=8, key_length=128, value_length=128, embedding_length=4096
)


def test_the_bundled_model_shape_comes_from_its_gguf() -> None:
    """Key and value lengths are not in its metadata: embedding_length / head_count (576 / 9)."""
    assert model_shape(read_metadata(bundled_gguf())) == SMOLLM2


def test_a_gguf_without_attention_metadata_has_no_shape() -> None:
    assert model_shape({"general.architecture": "clip", "clip.block_count": 12}) is None


def test_per_layer_head_counts_take_the_largest() -> None:
    metadata = {
        "general.architecture": "gemma3n",
        "gemma3n.block_count": 2,
        "gemma3n.embedding_length": 512,
        "gemma3n.attention.head_count": [8, 8],
        "gemma3n.attention.head_count_kv": [2, 4],
    }
    shape = model_shape(metadata)
    assert shape is not None and (shape.head_count_kv, shape.key_length) == (4, 64)


def test_the_bundled_model_at_ollamas_default_context() -> None:
    kv = 2048 * 30 * 3 * (64 + 64) * 2  # tokens × layers × kv heads × (K + V) × f16 bytes
    assert estimate(98_362_432, SMOLLM2, 2048, 1) == Estimate(98_362_432, kv, 9 * kv // (3 * 6))


def test_the_reference_example_llama3_8b_kv_is_512_mib() -> None:
    assert estimate(0, LLAMA3_8B, 4096, 1).kv == 512 * MiB


def test_every_slot_has_the_whole_context() -> None:
    """Ollama's FAQ: a 2K context with 4 parallel requests is an 8K context."""
    assert estimate(0, LLAMA3_8B, 2048, 4).kv == estimate(0, LLAMA3_8B, 8192, 1).kv


def test_a_quantized_kv_cache_takes_less() -> None:
    f16, q8, q4 = (estimate(0, LLAMA3_8B, 4096, 1, kv).kv for kv in ("f16", "q8_0", "q4_0"))
    assert (q8, q4) == (f16 // 2, f16 // 4)


def test_an_unknown_shape_is_estimated_from_the_weights() -> None:
    coarse = estimate(10**9, None, 2048, 2)
    assert coarse == Estimate(10**9, 2 * 2048 * max(KV_BYTES_PER_TOKEN_FLOOR, 10**9 // 40_000), 10**8)
