"""Model names as Ollama writes them: `[host/][namespace/]model[:tag]` (types/model/name.go)."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
INVALID_NAME = "invalid model name"

_PART = {
    "host": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*"), 350),
    "namespace": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*"), 80),
    "model": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*"), 80),
    "tag": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*"), 80),
}


class InvalidName(ValueError):
    def __init__(self) -> None:
        super().__init__(INVALID_NAME)


@dataclass(frozen=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str

    @property
    def display_shortest(self) -> str:
        """`llama3:latest`, `ns/model:tag`, or the full name off the default registry."""
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    @property
    def full(self) -> str:
        """`registry.ollama.ai/library/llama3:latest`, as Ollama's errors name a model."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def parts(self) -> tuple[str, str, str, str]:
        """Path components of the manifest under `manifests/`."""
        return (self.host, self.namespace, self.model, self.tag)


def parse_name(text: str) -> ModelName:
    """Parse and fill defaults; raise InvalidName unless every part is valid."""
    rest = text.strip()
    tag = DEFAULT_TAG
    colon, slash = rest.rfind(":"), rest.rfind("/")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
    pieces = rest.split("/")
    if len(pieces) > 3 and "://" in rest:
        rest = rest.partition("://")[2]
        pieces = rest.split("/")
    if len(pieces) == 1:
        host, namespace, model = DEFAULT_HOST, DEFAULT_NAMESPACE, pieces[0]
    elif len(pieces) == 2:
        host, (namespace, model) = DEFAULT_HOST, pieces
    elif len(pieces) == 3:
        host, namespace, model = pieces
    else:
        raise InvalidName()
    name = ModelName(host, namespace, model, tag)
    for part, value in zip(("host", "namespace", "model", "tag"), name.parts, strict=True):
        pattern, max_len = _PART[part]
        if not (0 < len(value) <= max_len and pattern.fullmatch(value)):
            raise InvalidName()
    return name
