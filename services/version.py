"""corral's own version, read from the installed distribution (the CLI and the gateway show it)."""

from __future__ import annotations

from importlib import metadata


def corral_version() -> str:
    try:
        return metadata.version("corral")
    except metadata.PackageNotFoundError:
        return "0.0.0"
