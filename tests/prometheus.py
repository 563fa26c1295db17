"""A real Prometheus for tests: Debian's `prometheus`, scraping targets every second.

`scripts/apt-test-deps` (run by `make setup`) installs it; where it could not, `missing()`
says why and the test skips with that reason.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Self

import httpx
import yaml

from tests.remote import _Process
from tests.stack import free_port
from tests.watch import DEADLINE

BINARY = "prometheus"
SCRAPE_INTERVAL = "1s"


def missing() -> str | None:
    if shutil.which(BINARY) is None:
        return "prometheus not installed (Debian package prometheus; `make setup` installs it as root)"
    return None


class Prometheus(_Process):
    """Prometheus on 127.0.0.1:<free port>, its data under the test's directory."""

    name = "prometheus"

    def __init__(self) -> None:
        super().__init__()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, root: Path, job: str, targets: list[str], timeout: float = DEADLINE) -> Self:
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
        }
        config_file = root / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        argv = [
            BINARY,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        self._launch(argv, root, timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        self._wait_answering(lambda: httpx.get(f"{self.url}/-/ready", timeout=2, trust_env=False), timeout)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (raises on a query Prometheus refuses)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10, trust_env=False)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"query {expr!r} refused: {body.get('error')}")
        return list(body["data"]["result"])
