"""Quantizing GGUF weights with llama.cpp's own quantizer (llama_model_quantize), as Ollama's
create does for F16, BF16 and F32 models.

llama-cpp-python is imported only when a quantization is asked for: the registry needs it
for nothing else.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

# Ollama's ggml.ParseFileType: what `quantize` may name, and the type each means.
QUANTIZE_TYPES = {
    "F32": "F32",
    "F16": "F16",
    "BF16": "BF16",
    "Q8_0": "Q8_0",
    "Q4_K_S": "Q4_K_S",
    "Q4_K_M": "Q4_K_M",
    "Q4_K": "Q4_K_M",
}
QUANTIZABLE = ("F16", "BF16", "F32")  # the source types Ollama quantizes from
_LLAMA_FTYPES = {
    "F32": "LLAMA_FTYPE_ALL_F32",
    "F16": "LLAMA_FTYPE_MOSTLY_F16",
    "BF16": "LLAMA_FTYPE_MOSTLY_BF16",
    "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "Q4_K_S": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
}


class QuantizeError(Exception):
    pass


def quantize(source: Path, file_type: str, threads: int = 0) -> Path:
    """Write `source` quantized to `file_type` (a QUANTIZE_TYPES value) to a hidden file beside
    it and return that file's path; the caller renames it into place or removes it."""
    import llama_cpp

    target = source.with_name(f".quantize-{uuid.uuid4().hex}.partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, _LLAMA_FTYPES[file_type])
    params.nthread = threads or (os.cpu_count() or 1)
    try:
        failed = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if failed or not target.is_file():
        target.unlink(missing_ok=True)
        raise QuantizeError(f"llama.cpp could not quantize the model to {file_type}")
    return target
