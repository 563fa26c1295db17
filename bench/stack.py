"""The whole system for a benchmark, started the way `corral serve` starts it."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
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


READY_TIMEOUT = 60.0  # seconds a fresh stack may take to place its first request


@contextmanager
def launched_stack(overrides: Mapping[str, str] | None = None) -> Iterator[tuple[str, dict[str, int]]]:
    """A fresh stack (own NATS, own model store) with `overrides`, the model loaded; yields its
    URL and the pid of each process (this one too, as "bench clients"). The preload is retried
    while it answers 503: the request stream can appear a moment after the gateway answers."""
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
            deadline = time.monotonic() + READY_TIMEOUT
            while (
                preload := httpx.post(f"{url}/api/generate", json={"model": MODEL}, timeout=300)
            ).status_code == 503 and time.monotonic() < deadline:
                time.sleep(0.25)
            preload.raise_for_status()
            pids = {name: child.pid for name, child in launcher.children.items()}
            if launcher.nats is not None and launcher.nats.process is not None:
                pids["nats-server"] = launcher.nats.process.pid
            yield url, pids | {"bench clients": os.getpid()}
        finally:
            launcher.stop()


@contextmanager
def running_stack(overrides: Mapping[str, str] | None = None) -> Iterator[str]:
    """`launched_stack`, when only its URL matters."""
    with launched_stack(overrides) as (url, _):
        yield url


def report(name: str, result: Mapping[str, object]) -> None:
    """Print a benchmark's figures as JSON and keep them in bench/results/<name>.json."""
    text = json.dumps(result, indent=2)
    print(text)
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(text)
