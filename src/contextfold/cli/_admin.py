"""`contextfold migrate` and `contextfold doctor`: the database's schema, and whether a setup can serve.

A store migrates itself when it opens, so `serve` needs no separate step; `migrate` exists for deploys that want
the change made (or, with --check, only detected) before any server starts, and to say what it did. The schema
version is read without opening the store, since opening would apply the migrations. The checks of `doctor` live
in `_doctor`.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ._output import stderr, stdout

if TYPE_CHECKING:
    from ..store._migrations import Migration

_CONNECT_TIMEOUT = 10
"""Seconds to wait for PostgreSQL to accept a connection before calling it unreachable."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from . import _doctor

    migrate = commands.add_parser(
        "migrate",
        help="apply the database's pending schema migrations",
        description="Applies the schema migrations the database lacks and prints what it applied. `serve` applies "
        "them as well when it starts; run this to do it ahead of a deploy, or with --check to only look.",
    )
    migrate.add_argument("--db", help="SQLite file or postgresql:// URL (default: as `serve` would use)")
    migrate.add_argument("--config", metavar="FILE", help="TOML config file to take the database from")
    migrate.add_argument(
        "--check",
        action="store_true",
        help="apply nothing; exit 1 if a migration is pending, 0 if the schema is current (for deploy scripts)",
    )
    migrate.set_defaults(handler=migrate_command)
    _doctor.add_parser(commands)


@dataclass(frozen=True, slots=True)
class Schema:
    """What a database's `schema_migrations` says, beside what this build knows."""

    where: str
    """The database, for messages (a PostgreSQL URL without its password)."""
    exists: bool
    applied: tuple[tuple[int, str], ...]
    """(version, name) of every migration recorded as applied."""
    migrations: tuple[Migration, ...]
    """This build's migrations for the database's backend."""

    @property
    def version(self) -> int:
        return max((version for version, _ in self.applied), default=0)

    @property
    def latest(self) -> int:
        return self.migrations[-1].version

    def pending(self) -> list[Migration]:
        """The migrations to apply; raises `StoreError` for a database newer than this build."""
        from ..store._migrations import plan

        return plan(self.migrations, self.version)


async def read_schema(db: str) -> Schema:
    """The schema of the database at `db`, read without changing (or, for SQLite, creating) anything."""
    if db.startswith(("postgresql://", "postgres://")):
        return await _postgres_schema(db)
    return await asyncio.to_thread(_sqlite_schema, db)


def _sqlite_schema(path: str) -> Schema:
    from .._errors import StoreError
    from ..store._migrations import SQLITE

    where = f"SQLite file {path}"
    if path == ":memory:" or not Path(path).is_file():
        return Schema(where, False, (), SQLITE)
    try:
        conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
        try:
            found = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations'").fetchone()
            rows = conn.execute("SELECT version, name FROM schema_migrations").fetchall() if found else []
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {where}: {exc} (is it a contextfold database?)") from None
    return Schema(where, True, tuple((int(v), str(n)) for v, n in rows), SQLITE)


async def _postgres_schema(url: str) -> Schema:
    import psycopg

    from .._errors import StoreError
    from ..store._migrations import POSTGRES
    from ..store._postgres import describe

    where = describe(url)
    try:
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT
        ) as conn:
            cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
            found = await cur.fetchone()
            rows = []
            if found and found[0]:
                rows = await (await conn.execute("SELECT version, name FROM schema_migrations")).fetchall()
    except psycopg.Error as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"cannot read the schema of {where}: {detail}") from None
    return Schema(where, True, tuple((int(v), str(n)) for v, n in rows), POSTGRES)


def migrate_command(args: argparse.Namespace) -> int:
    from ..server._config import load_config

    db = load_config({"db": args.db, "config": args.config}).db
    return asyncio.run(_migrate(db, check=args.check))


async def _migrate(db: str, *, check: bool) -> int:
    from ..store import open_server_store

    before = await read_schema(db)
    pending = before.pending()  # a database newer than this build stops here, with what to do
    out = stdout()
    if not pending:
        out.print(f"{before.where}: schema version {before.version}, up to date", highlight=False)
        return 0
    if check:
        now = f"schema version {before.version}" if before.exists else "not created yet"
        out.print(f"{before.where}: {now}, this contextfold needs {before.latest}; pending:", highlight=False)
        for migration in pending:
            out.print(f"  {migration.version}  {migration.name}", highlight=False)
        stderr().print("`contextfold migrate` applies them (`serve` does too, when it starts)")
        return 1
    store = await open_server_store(db)  # opening migrates, under the backend's own lock
    await store.close()
    after = await read_schema(db)
    out.print(f"{after.where}: schema version {before.version} → {after.version}", highlight=False)
    for version, name in sorted(after.applied):
        if version > before.version:
            out.print(f"  applied {version}  {name}", highlight=False)
    return 0
