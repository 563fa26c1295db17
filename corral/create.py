"""`corral create`: a Modelfile read, its local files uploaded as blobs, the model created.

As `ollama create` does it: "gathering model components", one "copying file <digest> N%"
per local file, then each status the server reports, ending at "success".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from corral.client import Client
from corral.modelfile import Command, create_request, decode_modelfile, parse

Say = Callable[[str, bool], None]  # (text, transient): a transient line is replaced by the next


def read_modelfile(path: Path) -> list[Command]:
    """The commands of `path`; a missing Modelfile means `FROM .` (Ollama's fallback, which
    then looks for model files in the current directory)."""
    if not path.exists():
        return [Command("model", ".")]
    return parse(decode_modelfile(path.read_bytes()))


def create(client: Client, name: str, modelfile: Path, quantize: str | None, say: Say) -> None:
    """Create model `name`; raises ModelfileError, OSError or ClientError."""
    say("gathering model components", True)
    request = create_request(read_modelfile(modelfile), modelfile.parent)
    for warning in request.warnings:
        say(f"warning: {warning}", False)
    for digest, path in request.uploads.items():

        def copying(percent: int, digest: str = digest) -> None:
            say(f"copying file {digest} {percent}%", percent < 100)

        client.upload(f"/api/blobs/{digest}", path, copying)
    body = {"model": name, **request.body}
    if quantize:
        body["quantize"] = quantize
    for progress in client.stream("/api/create", body):
        say(str(progress.get("status", "")), False)
