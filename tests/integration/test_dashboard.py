"""The dashboard shows real data: a real Prometheus scrapes a running stack's /metrics, and
every query of every panel in deploy/grafana/dashboards/corral.json returns a finite value."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from tests.prometheus import Prometheus, missing
from tests.stack import MODEL, Stack
from tests.watch import DEADLINE

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "dashboards" / "corral.json"
RATE_WINDOW = "1m"  # what Grafana's $__rate_interval becomes here

pytestmark = pytest.mark.skipif(missing() is not None, reason=missing() or "")


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [
        target["expr"].replace("$__rate_interval", RATE_WINDOW)
        for panel in panels
        for target in panel.get("targets", [])
    ]


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory, nats_binary: Path) -> Iterator[Stack]:
    """A stack serving /metrics that holds one model instance at a time (so a second evicts)."""
    overrides = {"CORRAL_METRICS": "1", "OLLAMA_MAX_LOADED_MODELS": "1"}
    running = Stack(tmp_path_factory.mktemp("metered"), nats_binary, env_overrides=overrides).start()
    yield running
    running.stop()


def drive(stack: Stack) -> None:
    """One round of what a dashboard should see: generate and chat (streamed), an embedding,
    an unknown model, a client that leaves early, a second instance (an eviction), an unload."""
    client = ollama.Client(host=stack.url)
    client.generate(model=MODEL, prompt="Why is the sky blue?", options={"num_predict": 8})
    for _ in client.chat(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True, options={"num_predict": 8}
    ):
        pass
    client.embed(model=MODEL, input="hello")
    with pytest.raises(ollama.ResponseError):
        client.generate(model="no-such-model", prompt="x")
    body = {"model": MODEL, "prompt": "Count to a hundred.", "options": {"num_predict": 200}}
    with httpx.stream("POST", f"{stack.url}/api/generate", json=body, timeout=60) as response:
        next(response.iter_lines())  # one chunk, then leave
    client.generate(model=MODEL, prompt="Hello", options={"num_predict": 4, "num_ctx": 1024})  # evicts
    client.generate(model=MODEL, prompt="Hello", options={"num_predict": 4}, keep_alive=0)  # evicts, unloads


def has_data(prometheus: Prometheus, query: str) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in prometheus.query(query))


def test_every_dashboard_query_returns_data_from_a_real_run(metered: Stack, tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) > 20
    with Prometheus().start(tmp_path, "corral", [f"127.0.0.1:{metered.port}"]) as prometheus:
        deadline = time.monotonic() + DEADLINE
        while not has_data(prometheus, 'up{job="corral"} == 1'):
            assert time.monotonic() < deadline, "Prometheus never scraped the gateway"
            time.sleep(0.2)
        # Rates need increments after a series' first scrape: drive rounds until every query
        # has seen some.
        without = queries
        while without:
            assert time.monotonic() < deadline, f"no data for: {without}"
            drive(metered)
            without = [q for q in without if not has_data(prometheus, q)]
