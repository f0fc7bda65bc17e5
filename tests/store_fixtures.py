"""Store fixtures: one `store` per backend (SQLite and PostgreSQL), so one contract suite checks both.

Import them in conftest.py with `from .store_fixtures import *`. The PostgreSQL server starts once per
session, only when a PostgreSQL test runs; every test gets a fresh database on it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from contextfold.store import PostgresStore, ServerStore, SQLiteStore, Store
from contextfold.store._postgres import migrate as migrate_postgres
from contextfold.store._sqlite import migrate as migrate_sqlite

from . import pgserver

__all__ = ["BACKENDS", "Backend", "backend", "pg_server", "pg_store", "pg_url", "sqlite_store", "store"]

BACKENDS = ["sqlite", "postgres"]


class Backend:
    """One backend's location and a way to look under the protocol: raw SQL, migrations, size on disk."""

    def __init__(self, name: str, location: str) -> None:
        self.name = name
        self.location = location
        """A SQLite file path or a PostgreSQL URL; `open_store` accepts either."""

    async def open(self) -> ServerStore:
        if self.name == "sqlite":
            return await SQLiteStore.open(self.location)
        return await PostgresStore.open(self.location, max_size=4)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run raw SQL (`?` placeholders on both backends) in a transaction; return its rows, if any."""
        if self.name == "sqlite":
            with sqlite3.connect(self.location) as sconn:
                rows = sconn.execute(sql, params).fetchall()
            sconn.close()
            return rows
        with psycopg.connect(self.location, autocommit=True) as pconn:
            cur = pconn.execute(sql.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []

    async def migrate(self, target: int | None = None) -> int:
        """Bring the schema up to `target` (default: latest) without opening a store."""
        if self.name == "sqlite":
            sconn = sqlite3.connect(self.location, isolation_level=None)
            try:
                return migrate_sqlite(sconn, target=target)
            finally:
                sconn.close()
        async with await psycopg.AsyncConnection.connect(self.location, autocommit=True) as pconn:
            return await migrate_postgres(pconn, target=target)

    def size(self) -> int:
        """Bytes the data takes: the SQLite file's pages, or the PostgreSQL tables and their indexes."""
        if self.name == "sqlite":
            ((pages, page_size),) = self.query(
                "SELECT page_count, page_size FROM pragma_page_count(), pragma_page_size()"
            )
            return int(pages) * int(page_size)
        ((size,),) = self.query(
            "SELECT pg_table_size('events') + pg_indexes_size('events') + pg_total_relation_size('conversations')"
        )
        return int(size)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgserver.Server]:
    """A throwaway PostgreSQL server for the whole session."""
    with pgserver.running() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: pgserver.Server) -> Iterator[str]:
    """The URL of a fresh, empty database, dropped after the test."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """An empty, unmigrated location on each backend."""
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "contextfold.db"))
    return Backend("postgres", request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[ServerStore]:
    """An opened (migrated) store on each backend, closed after the test."""
    opened = await backend.open()
    yield opened
    await opened.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    """A SQLite store on a fresh file, for tests that are not part of the two-backend contract."""
    opened = await SQLiteStore.open(tmp_path / "contextfold.db")
    yield opened
    await opened.close()


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[Store]:
    """A PostgreSQL store on a fresh database."""
    opened = await PostgresStore.open(pg_url, max_size=4)
    yield opened
    await opened.close()
