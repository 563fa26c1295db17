"""The catalog indexes the store's manifests, on SQLite and on the local PostgreSQL alike."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.registry.bundled import install_bundled
from services.registry.catalog import Catalog, Stamped, listing, stamp_of
from services.registry.names import parse_name
from services.registry.store import ModelStore

POSTGRES = os.environ.get("CORRAL_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def postgres_database() -> Iterator[str]:
    """A database of the test's own on the local PostgreSQL, dropped afterwards."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    admin = sqlalchemy.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    name = f"corral_catalog_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {POSTGRES}: {exc.orig}")
    try:
        yield POSTGRES.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
    else:
        yield from postgres_database()


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "models")
    install_bundled(store)
    return store


def names(catalog: Catalog, store: ModelStore) -> list[str]:
    return [entry.name for entry in listing(catalog, store)]


def test_the_index_follows_the_disk_and_describes_each_version_once(url: str, store: ModelStore) -> None:
    catalog = Catalog(url)
    try:
        assert names(catalog, store) == ["smollm2:135m"]
        (entry,) = catalog.entries()
        assert entry.details.family == "llama" and entry.digest and entry.size > 0

        assert store.copy(parse_name("smollm2:135m"), parse_name("other/copy:v1"))
        assert sorted(names(catalog, store)) == ["other/copy:v1", "smollm2:135m"]
        # A manifest written by another host (a copy made outside this registry) appears;
        # one deleted there goes: disk stays the truth.
        manifests = store.root / "manifests" / "registry.ollama.ai"
        shutil.copytree(manifests / "other", manifests / "third")
        assert "third/copy:v1" in names(catalog, store)
        shutil.rmtree(manifests / "other")
        assert sorted(names(catalog, store)) == ["smollm2:135m", "third/copy:v1"]
    finally:
        catalog.close()


def test_a_restart_keeps_the_descriptions(url: str, store: ModelStore) -> None:
    first = Catalog(url)
    names(first, store)
    first.close()
    again = Catalog(url)
    try:
        assert [e.name for e in again.entries()] == ["smollm2:135m"]
        described: list[str] = []

        def describe(name: str) -> None:
            described.append(name)

        on_disk = [Stamped(name.full, stamp_of(path)) for name, path in store.manifest_files()]
        assert again.sync(on_disk, describe) == 0 and described == []  # same stamps: nothing parsed
    finally:
        again.close()


def test_two_registries_sharing_one_catalog_do_not_conflict(url: str, store: ModelStore) -> None:
    one, two = Catalog(url), Catalog(url)
    try:
        assert names(one, store) == names(two, store) == ["smollm2:135m"]
        store.copy(parse_name("smollm2:135m"), parse_name("shared:v1"))
        assert sorted(names(two, store)) == sorted(names(one, store)) == ["shared:v1", "smollm2:135m"]
    finally:
        one.close()
        two.close()


def test_pulls_are_recorded_until_they_end_and_resumed_by_their_host_alone(url: str) -> None:
    catalog = Catalog(url)
    try:
        catalog.pull_started("a:v1", False, "host-a", 1.0)
        catalog.pull_started("b:v1", True, "host-b", 2.0)
        catalog.pull_started("a:v1", False, "host-a", 3.0)  # asked again: one record
        assert [(p.name, p.started_at) for p in catalog.unfinished_pulls("host-a")] == [("a:v1", 3.0)]
        assert [(p.name, p.insecure) for p in catalog.unfinished_pulls("host-b")] == [("b:v1", True)]
        catalog.pull_ended("a:v1")
        assert catalog.unfinished_pulls("host-a") == []
    finally:
        catalog.close()
