"""corral's own version, read from the installed distribution (the CLI and the gateway show it)."""

from __future__ import annotations

from importlib import metadata

# The Ollama release whose API corral implements: what /api/version reports, since clients gate
# features (thinking, tools, logprobs) on it.
OLLAMA_API_VERSION = "0.14.0"  # the first with everything corral serves (/v1/messages came in 0.14.0)


def corral_version() -> str:
    try:
        return metadata.version("corral")
    except metadata.PackageNotFoundError:
        return "0.0.0"
