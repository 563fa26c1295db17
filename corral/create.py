"""`corral create`: a Modelfile read, its local files uploaded as blobs, the model created.

As `ollama create` does it: "gathering model components", one "copying file <digest> N%"
per local file, then each status the server reports, ending at "success".
"""

from __future__ import annotations

from pathlib import Path

from corral.client import Client
from corral.modelfile import Command, create_request, decode_modelfile, parse
from corral.transfer import Display, Spin


def read_modelfile(path: Path) -> list[Command]:
    """The commands of `path`; a missing Modelfile means `FROM .` (Ollama's fallback, which
    then looks for model files in the current directory)."""
    if not path.exists():
        return [Command("model", ".")]
    return parse(decode_modelfile(path.read_bytes()))


def create(client: Client, name: str, modelfile: Path, quantize: str | None, shown: Display) -> None:
    """Create model `name`; raises ModelfileError, OSError or ClientError."""
    gathering = shown.spinner("gathering model components")
    request = create_request(read_modelfile(modelfile), modelfile.parent)
    gathering.done(lasting=False)
    for warning in request.warnings:
        shown.line(f"warning: {warning}")
    for digest, path in request.uploads.items():
        copying = shown.spinner(f"copying file {digest} 0%")

        def progress(percent: int, digest: str = digest, copying: Spin = copying) -> None:
            copying.update(f"copying file {digest} {percent}%")

        client.upload(f"/api/blobs/{digest}", path, progress)
        copying.update(f"copying file {digest} 100%")
        copying.done(lasting=True)
    body = {"model": name, **request.body}
    if quantize:
        body["quantize"] = quantize
    for step in client.stream("/api/create", body):
        shown.step(step)
