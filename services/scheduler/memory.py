"""How much memory a model instance needs: Ollama's classic estimate, from the GGUF's own shape.

    weights = the weights file's size
    kv      = num_ctx × slots × block_count × head_count_kv × (key_length + value_length)
              × bytes per element (f16: 2, q8_0: 1, q4_0: 0.5, as OLLAMA_KV_CACHE_TYPE says)
    graph   = head_count / head_count_kv × kv / 6   (Ollama's compute-buffer estimate for an
              architecture it has no formula for; the worker's engine sizes its own)

Each slot has the whole `num_ctx` (Ollama: "a 2K context with 4 parallel requests will
result in an 8K context"). A model whose shape is not known (not a GGUF) is estimated
coarsely: KV bytes per token proportional to the weights, with a floor, and a tenth of the
weights for the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.protocol import ModelShape

KV_BYTES_PER_ELEMENT = {"": 2.0, "f16": 2.0, "q8_0": 1.0, "q4_0": 0.5}
KV_BYTES_PER_TOKEN_FLOOR = 16 * 1024  # a model of unknown shape: at least this per token


@dataclass(frozen=True)
class Estimate:
    """Bytes an instance holds: weights, KV cache (every slot's), compute graph."""

    weights: int
    kv: int
    graph: int

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.graph


def estimate(
    size: int, shape: ModelShape | None, num_ctx: int, slots: int, kv_cache_type: str = ""
) -> Estimate:
    """The memory of `slots` sequences of `num_ctx` tokens of a model of `size` bytes."""
    tokens = num_ctx * slots
    if shape is None:
        kv = tokens * max(KV_BYTES_PER_TOKEN_FLOOR, size // 40_000)
        return Estimate(size, kv, size // 10)
    per_token = shape.block_count * shape.head_count_kv * (shape.key_length + shape.value_length)
    kv = int(tokens * per_token * KV_BYTES_PER_ELEMENT[kv_cache_type])
    graph = shape.head_count * kv // (max(shape.head_count_kv, 1) * 6)
    return Estimate(size, kv, graph)
