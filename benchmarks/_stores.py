"""The stores the sections measure: a throwaway PostgreSQL server, SQLite files, and logs built into both.

Built SQLite logs are cached in `benchmarks/results/` under a name made of every parameter that shapes them
(events, compactions, seed, budget, workload version, event schema, a digest of the SQLite migrations), so a rerun
reuses them. PostgreSQL runs from `tests/pgserver.py` and is thrown away at exit, so its logs are appended again on
each run, read back from the SQLite cache when there is one (the same events, so both stores hold the same log).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from tests import pgserver

from contextfold.events import SCHEMA_VERSION, AnyEvent
from contextfold.store import PostgresStore, SQLiteStore, Store
from contextfold.store._migrations import SQLITE

from ._workload import DEFAULT_BUDGET, Workload

RESULTS = Path(__file__).resolve().parent / "results"
WORKLOAD_VERSION = 2
"""Bump when `_workload` changes what it generates, so cached logs are rebuilt."""
_SCHEMA_DIGEST = hashlib.sha256("\n".join(s for m in SQLITE for s in m.statements).encode()).hexdigest()[:10]
"""The SQLite schema a cached log was built with: any change to the migrations rebuilds the caches."""
BATCH = 10_000
"""Events per bulk append while building a log."""


class Postgres:
    """One throwaway server for the whole run, started on first use; a fresh database per log."""

    def __init__(self) -> None:
        self._server: pgserver.Server | None = None

    def database(self) -> str:
        if self._server is None:
            self._server, _ = pgserver.start()
        return self._server.create_database()

    def drop(self, url: str) -> None:
        if self._server is not None:
            self._server.drop_database(url)

    def version(self) -> str:
        url = self.database()
        with psycopg.connect(url) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        self.drop(url)
        return str(row[0]) if row else "?"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@dataclass(frozen=True)
class Context:
    """What every section gets: the run's size, the PostgreSQL server, and logs one section left for another."""

    quick: bool
    pg: Postgres
    kept: dict[LogSpec, str] = field(default_factory=dict)
    """PostgreSQL databases (by URL) that hold a built log, for a later section to reuse."""


@dataclass(frozen=True)
class LogSpec:
    """One conversation's log: `events` long, with or without compactions."""

    events: int
    compactions: bool
    seed: int = 1
    budget: int = DEFAULT_BUDGET

    @property
    def name(self) -> str:
        return "with compactions" if self.compactions else "no compactions"

    @property
    def conversation_id(self) -> str:
        return f"conv_bench_{self.events}_{'c' if self.compactions else 'n'}"

    @property
    def path(self) -> Path:
        key = (
            f"log-{self.events}-{'c' if self.compactions else 'n'}-s{self.seed}-b{self.budget}"
            f"-w{WORKLOAD_VERSION}-e{SCHEMA_VERSION}-m{_SCHEMA_DIGEST}"
        )
        return RESULTS / f"{key}.db"


BYTES_BASE = LogSpec(1_000_000, True)
"""The `load` log the `bytes` section continues to turn 100,000 (both generate the same conversation)."""


def progress(message: str) -> None:
    print(f"  … {message}", file=sys.stderr, flush=True)


async def _generated(spec: LogSpec) -> AsyncIterator[list[AnyEvent]]:
    workload = Workload(seed=spec.seed, compactions=spec.compactions, budget=spec.budget)
    async for batch in workload.batches(spec.events, BATCH):
        yield batch


async def _cached(spec: LogSpec) -> AsyncIterator[list[AnyEvent]]:
    store = await SQLiteStore.open(spec.path)
    try:
        head = 0
        while batch := await store.read(spec.conversation_id, after=head, limit=BATCH):
            head = batch[-1].seq
            yield batch
    finally:
        await store.close()


async def build(spec: LogSpec, pg_url: str | None = None) -> float:
    """Make sure the SQLite cache holds `spec`'s log, and append it to the database at `pg_url`; seconds taken.

    The next batch is generated (or read) while the stores take the previous one.
    """
    cached = spec.path.exists()
    if cached and pg_url is None:
        return 0.0
    RESULTS.mkdir(exist_ok=True)
    scratch = spec.path.with_suffix(".building")
    for leftover in RESULTS.glob(scratch.name + "*"):
        leftover.unlink()
    stores: list[Store] = [] if cached else [await SQLiteStore.open(scratch)]
    if pg_url is not None:
        stores.append(await PostgresStore.open(pg_url, max_size=2))
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        for store in stores:
            await store.conversations.create(spec.conversation_id)
        queue: asyncio.Queue[list[AnyEvent] | None] = asyncio.Queue(maxsize=2)

        async def produce() -> None:
            async for batch in _cached(spec) if cached else _generated(spec):
                await queue.put(batch)
            await queue.put(None)

        producer = asyncio.create_task(produce())
        while (batch := await queue.get()) is not None:
            head = batch[0].seq - 1
            await asyncio.gather(*(store.append(spec.conversation_id, batch, head) for store in stores))
            if batch[-1].seq % 100_000 < BATCH:
                progress(f"{spec.name} {spec.events:,}: {batch[-1].seq:,} events appended")
        await producer
    finally:
        for store in stores:
            await store.close()
    if not cached:
        scratch.replace(spec.path)
    return loop.time() - started


def sqlite_size(path: Path) -> int:
    """Bytes of the database file after moving the WAL into it (page_count x page_size)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        ((pages,),) = conn.execute("PRAGMA page_count").fetchall()
        ((page_size,),) = conn.execute("PRAGMA page_size").fetchall()
    return int(pages) * int(page_size)


def pg_size(url: str) -> int:
    """Bytes of the events and conversations tables, with their indexes and TOAST."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT pg_total_relation_size('events') + pg_total_relation_size('conversations')"
        ).fetchone()
    return int(row[0]) if row else 0
