"""The whole system for a benchmark, started the way `corral serve` starts it."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from corral.launcher import Launcher
from services.config import load_settings

MODEL = "smollm2:135m"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_stack(overrides: Mapping[str, str] | None = None) -> Iterator[str]:
    """A fresh stack (own NATS, own model store) with `overrides`; yields its URL, model loaded."""
    with tempfile.TemporaryDirectory() as root:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "CORRAL_", "NATS_"))}
        env.update(
            OLLAMA_HOST=f"127.0.0.1:{_free_port()}",
            OLLAMA_MODELS=str(Path(root) / "models"),
            CORRAL_DATA_DIR=str(Path(root) / "corral"),
            **(overrides or {}),
        )
        launcher = Launcher(load_settings(env), env=env)
        try:
            url = launcher.start()
            preload = httpx.post(f"{url}/api/generate", json={"model": MODEL}, timeout=300)
            preload.raise_for_status()
            yield url
        finally:
            launcher.stop()
