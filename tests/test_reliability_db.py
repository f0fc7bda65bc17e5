"""Database faults under load: SQLite's write lock held by another process, and PostgreSQL restarted mid-load.

Clients keep taking turns through the Responses API and the proxy (streamed and not) while the fault lasts. Every
turn must end in an answer or a clear error (503 "the database is unavailable", or a streamed `response.failed`
saying so; the Anthropic route's 529 `overloaded_error`), never a 500 or a stream cut short; nothing answered may be
lost or stored twice; and once the database is back, the same server process serves every conversation again.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from contextfold.server import ServerConfig
from contextfold.store import PostgresStore, SQLiteStore, Store

from . import pgserver
from .fakes.faulty_upstream import FaultyUpstream
from .reliability_fixtures import FastRetries, RouteClient, check_log, check_views, eventually, route
from .server_fixtures import serving

WAYS = ("responses", "responses-stream", "chat", "chat-stream", "messages-stream")


class Load:
    """Clients on every route, each taking turns in a loop until stopped."""

    def __init__(self, http: httpx.AsyncClient, per_way: int = 3) -> None:
        self.clients = [RouteClient(http, way) for way in WAYS for _ in range(per_way)]
        self.stopped = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Load:
        for client in self.clients:
            await client.start()
        self.task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stopped.set()
        if self.task is not None:
            await self.task

    async def _run(self) -> None:
        async def loop(client: RouteClient) -> None:
            n = 0
            while not self.stopped.is_set():
                await client.turn(f"{client.route} turn {n}")
                n += 1

        await asyncio.gather(*(loop(c) for c in self.clients))

    def outcomes(self) -> list[tuple[str, int, str | None]]:
        return [(c.route, o.status, o.kind) for c in self.clients for _, o in c.said]

    def failed(self) -> int:
        return sum(o.text is None for c in self.clients for _, o in c.said)

    async def check(self, store: Store) -> None:
        """Every turn ended in an answer or a database error; every answer is in the log once."""
        for route_name, status, kind in self.outcomes():
            assert status in (200, 503, 529), (route_name, status, kind)
        for client in self.clients:
            for text, outcome in client.said:
                assert outcome.text is not None or outcome.kind == "store", (client.route, text, outcome)
                assert "Traceback" not in outcome.message
            assert client.conversation is not None
            client.check_log(await store.read(client.conversation))

    async def recovered(self, store: Store) -> None:
        """The same process serves again: every client's next turn is answered, and no view shows half a turn."""
        for client in self.clients:
            outcome = await client.turn(f"{client.route} after the fault")
            assert outcome.text is not None, (client.route, outcome)
        for client in self.clients:
            assert client.conversation is not None
            client.check_log(await store.read(client.conversation))
            await check_views(store, client.conversation)


@contextlib.asynccontextmanager
async def server(
    db: str, tmp_path: Path, *, delay: float = 0.01
) -> AsyncIterator[tuple[httpx.AsyncClient, FaultyUpstream]]:
    """The app in-process on `db`, its `faulty` model answering over loopback (4 deltas, `delay` s apart)."""
    with FaultyUpstream(delay=delay, pieces=4) as upstream:
        config = ServerConfig(db=db, routes=(route(upstream),), queue_turns=True)
        registry = FastRetries(config)
        try:
            async with serving(config, registry=registry) as served:
                raw = httpx.AsyncClient(transport=httpx.ASGITransport(app=served.app), base_url="http://test")
                async with raw:
                    yield raw, upstream
        finally:
            await registry.close()


@contextlib.contextmanager
def write_lock(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding SQLite's write lock on `path` (BEGIN IMMEDIATE) until the block ends."""
    script = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "conn.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
        "conn.execute('COMMIT')\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()


async def test_a_write_lock_shorter_than_the_busy_timeout_only_delays_turns(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    async with server(str(db), tmp_path) as (http, _), Load(http) as load:
        await eventually(lambda: len(load.outcomes()) >= len(load.clients), "a turn per client")
        with write_lock(db):
            await asyncio.sleep(1.0)  # SQLite's busy timeout is 10 s: every writer waits, none fails
        done = len(load.outcomes())
        await eventually(lambda: len(load.outcomes()) >= done + len(load.clients), "more turns after the lock")
    assert load.failed() == 0, load.outcomes()
    store = await SQLiteStore.open(db)
    try:
        await load.check(store)
    finally:
        await store.close()


@pytest.mark.parametrize("way", WAYS)
async def test_the_store_failing_mid_turn_is_a_clear_error_and_the_turn_is_marked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    """The write lock is taken while the model answers: storing the answer fails, and so does marking the turn
    failed. The client is told the database is unavailable (not a 500, not a stream cut short); the turn, left
    open, is marked interrupted when the conversation is next held, and the next turn is answered."""
    monkeypatch.setattr("contextfold.store._sqlite._BUSY_TIMEOUT_MS", 300)
    db = tmp_path / "s.db"
    async with server(str(db), tmp_path, delay=0.2) as (http, upstream):
        client = RouteClient(http, way)
        conversation = await client.start()
        turn = asyncio.create_task(client.turn("answered while the database is locked"))
        await eventually(lambda: upstream.active == 1, "the model answering")
        with write_lock(db):
            outcome = await turn
        assert outcome.kind == "store", outcome
        assert outcome.status in (200, 503, 529), outcome
        assert "database is unavailable" in outcome.message
        after = await client.turn("and after it")
        assert after.text is not None, after
        store = await SQLiteStore.open(db)
        try:
            client.check_log(events := await store.read(conversation))
            assert "interrupted" in check_log(events).values()
            await check_views(store, conversation)
        finally:
            await store.close()


@pytest.mark.slow
async def test_a_write_lock_past_the_busy_timeout_is_a_503_and_the_server_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("contextfold.store._sqlite._BUSY_TIMEOUT_MS", 300)  # 10 s in production: a shorter test
    db = tmp_path / "s.db"
    async with server(str(db), tmp_path) as (http, _):
        async with Load(http) as load:
            await eventually(lambda: len(load.outcomes()) >= len(load.clients), "a turn per client")
            with write_lock(db):
                await eventually(lambda: load.failed() >= len(load.clients), "turns failing on the lock", limit=60)
                await asyncio.sleep(1.0)
        assert load.failed() >= len(load.clients)
        store = await SQLiteStore.open(db)
        try:
            await load.check(store)
            await load.recovered(store)
        finally:
            await store.close()


@pytest.mark.slow
async def test_postgres_restarted_mid_load_is_a_503_and_the_server_recovers(tmp_path: Path) -> None:
    with pgserver.running() as postgres:
        url = postgres.create_database()
        async with server(url, tmp_path) as (http, _):
            async with Load(http) as load:
                await eventually(lambda: len(load.outcomes()) >= 2 * len(load.clients), "turns before the restart")
                before = load.failed()
                await asyncio.to_thread(_stop, postgres)
                await eventually(lambda: load.failed() >= before + len(load.clients), "turns failing", limit=60)
                await asyncio.to_thread(_start, postgres)
                done = len(load.outcomes())
                await eventually(lambda: len(load.outcomes()) >= done + 2 * len(load.clients), "turns after it")
            store = await PostgresStore.open(url, max_size=2)
            try:
                await load.check(store)
                await load.recovered(store)
            finally:
                await store.close()


def _stop(postgres: pgserver.Server) -> None:
    """A fast shutdown: every session is terminated, as a restart or a failover does."""
    postgres._run("pg_ctl", "-D", str(postgres._data), "-m", "fast", "-w", "stop")


def _start(postgres: pgserver.Server) -> None:
    """Start it again on the same port, with the options `pgserver` starts it with."""
    options = (
        f"-p {postgres.port} -h 127.0.0.1 -k {postgres._sock} -F"
        " -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c autovacuum=off -c max_connections=200"
    )
    log = str(postgres._base / "server.log")
    postgres._run("pg_ctl", "-D", str(postgres._data), "-l", log, "-o", options, "-w", "start")
