"""The catalog: an index of the stored models and what the registry says of them (sqlmodel).

Disk stays the truth: every read first syncs the index with the manifests on disk, by
their file stamps alone (a walk of stat calls), and describes again only the manifests
that are new or changed, so a model written by another host on a shared OLLAMA_MODELS
appears, and one deleted there goes. What a description costs (reading the manifest, its
config and the GGUF's metadata) is paid once per manifest version, and kept across
restarts.

A SQLite file by default (`CORRAL_CATALOG`, a SQLAlchemy URL: `postgresql+psycopg://…` for
one catalog shared by many hosts). Writes are upserts keyed by the model's full name, so
registries syncing one shared catalog at the same time do not conflict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, Session, SQLModel, create_engine, select

from services.protocol import CatalogEntry
from services.registry.describe import catalog_entry
from services.registry.store import ModelStore


class CatalogModel(SQLModel, table=True):
    __tablename__ = "corral_models"

    name: str = Field(primary_key=True)  # full: "registry.ollama.ai/library/smollm2:135m"
    stamp: str  # the manifest file's mtime_ns and size: a changed stamp is described again
    entry: str  # the CatalogEntry as JSON: what /api/tags shows of it


class CatalogPull(SQLModel, table=True):
    """A pull under way, so that a registry restarted on the same host finishes it."""

    __tablename__ = "corral_pulls"

    name: str = Field(primary_key=True)  # as the client spelled it
    insecure: bool = False
    host: str  # the registry host that runs it: only that host resumes it
    started_at: float


_TABLE = SQLModel.metadata.tables["corral_models"]
_PULLS = SQLModel.metadata.tables["corral_pulls"]


@dataclass(frozen=True)
class Stamped:
    """A manifest on disk: the model's full name and the file's stamp."""

    name: str
    stamp: str


def stamp_of(path: Path) -> str:
    status = path.stat()
    return f"{status.st_mtime_ns}:{status.st_size}"


def listing(catalog: Catalog, store: ModelStore) -> list[CatalogEntry]:
    """The store's models as /api/tags lists them, through the catalog (synced first)."""
    paths: dict[str, Path] = {}
    on_disk = []
    for name, path in store.manifest_files():
        try:
            on_disk.append(Stamped(name.full, stamp_of(path)))
        except OSError:  # deleted since the walk
            continue
        paths[name.full] = path

    def describe(name: str) -> CatalogEntry | None:
        found = store.load(paths[name])
        return catalog_entry(store, found) if found is not None else None

    catalog.sync(on_disk, describe)
    return catalog.entries()


class Catalog:
    def __init__(self, url: str) -> None:
        self._engine: Engine = create_engine(url)
        SQLModel.metadata.create_all(self._engine, tables=[_TABLE, _PULLS])

    def sync(self, on_disk: list[Stamped], describe: Callable[[str], CatalogEntry | None]) -> int:
        """Make the index match `on_disk`: describe what is new or changed, drop what is gone.
        Returns how many manifests were described."""
        with Session(self._engine) as session:
            known = {row.name: row.stamp for row in session.exec(select(CatalogModel))}
            present = {m.name for m in on_disk}
            gone = [name for name in known if name not in present]
            fresh = []
            for manifest in on_disk:
                if known.get(manifest.name) == manifest.stamp:
                    continue
                entry = describe(manifest.name)
                if entry is not None:  # unreadable now (half-copied by another host): next time
                    fresh.append(
                        {"name": manifest.name, "stamp": manifest.stamp, "entry": entry.model_dump_json()}
                    )
            if gone:
                session.exec(delete(CatalogModel).where(CatalogModel.name.in_(gone)))  # type: ignore[attr-defined]
            if fresh:
                session.exec(self._upsert(_TABLE, fresh))  # type: ignore[call-overload]
            session.commit()
        return len(fresh)

    def entries(self) -> list[CatalogEntry]:
        """Every model in the index, the most recently modified first (as /api/tags)."""
        with Session(self._engine) as session:
            rows = session.exec(select(CatalogModel)).all()
        entries = [CatalogEntry.model_validate_json(row.entry) for row in rows]
        return sorted(entries, key=lambda e: e.modified_at, reverse=True)

    def pull_started(self, name: str, insecure: bool, host: str, now: float) -> None:
        """Record a pull (again: one record per name, the latest start)."""
        row = {"name": name, "insecure": insecure, "host": host, "started_at": now}
        with Session(self._engine) as session:
            session.exec(self._upsert(_PULLS, [row]))  # type: ignore[call-overload]
            session.commit()

    def pull_ended(self, name: str) -> None:
        with Session(self._engine) as session:
            session.exec(delete(CatalogPull).where(CatalogPull.name == name))  # type: ignore[arg-type]
            session.commit()

    def unfinished_pulls(self, host: str) -> list[CatalogPull]:
        """The pulls this host began and did not end (it stopped or died meanwhile)."""
        with Session(self._engine) as session:
            return list(session.exec(select(CatalogPull).where(CatalogPull.host == host)).all())

    def close(self) -> None:
        self._engine.dispose()

    def _upsert(self, table: Table, rows: list[dict[str, Any]]) -> object:
        """INSERT … ON CONFLICT (its key) DO UPDATE the other columns, in the dialect's words:
        registries writing one shared catalog at once never collide."""
        key = [column.name for column in table.primary_key]
        dialect = self._engine.dialect.name
        if dialect == "postgresql":
            pg = postgresql.insert(table).values(rows)
            return pg.on_conflict_do_update(index_elements=key, set_=_others(pg.excluded, key))
        if dialect == "sqlite":
            lite = sqlite.insert(table).values(rows)
            return lite.on_conflict_do_update(index_elements=key, set_=_others(lite.excluded, key))
        raise ValueError(f"CORRAL_CATALOG: {dialect} is not supported (sqlite or postgresql)")


def _others(excluded: Any, key: list[str]) -> dict[str, Any]:
    """The columns an upsert replaces: all but the key."""
    return {column.name: column for column in excluded if column.name not in key}
