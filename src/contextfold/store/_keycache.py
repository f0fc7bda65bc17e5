"""Verified API keys kept in memory, dropped the moment any key changes anywhere.

Every request checks its key, and asking the store each time is a round trip. The cache answers instead, but only
while it can tell that no key changed since it filled: every key change (create, revoke, delete, by any process,
even by hand in SQL) is seen through the database itself. On SQLite, triggers count changes in `key_revision`, and
each lookup reads that counter first (one indexed row on a connection of its own: no thread hop, never waiting on a
lock; if it cannot read at once, the lookup goes to the store). On PostgreSQL, a trigger sends NOTIFY on every
change to a listening connection; while that connection is not known to be listening (starting, dropped,
reconnecting) nothing is cached and every lookup goes to the store. In this process, `changed()` drops everything
as a revoke returns.

A lookup takes a generation before it asks the store and keeps the answer only if no change was seen meanwhile, so
an answer read before a revocation is never kept after it. Unknown secrets are never kept (the cache cannot be
filled with guesses), and at most `capacity` keys are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable

from ._protocol import ApiKey

log = logging.getLogger("contextfold.store")

Revision = Callable[[], int | None]
"""The database's count of key changes, or None when it cannot be told now (then nothing is cached)."""


class KeyCache:
    def __init__(self, revision: Revision, capacity: int = 4_096) -> None:
        self._revision = revision
        self._seen: int | None = None
        self._generation = 0
        self._keys: OrderedDict[str, ApiKey] = OrderedDict()
        self._active: tuple[int, int] | None = None  # (generation, count)
        self.capacity = capacity

    def begin(self) -> int | None:
        """The generation a lookup starts in, after catching up with the database; None: do not cache now."""
        revision = self._revision()
        if revision is None:
            self.changed()
            return None
        if revision != self._seen:
            self.changed()
            self._seen = revision
        return self._generation

    def changed(self) -> None:
        self._generation += 1
        self._keys.clear()
        self._active = None

    def key(self, digest: str) -> ApiKey | None:
        key = self._keys.get(digest)
        if key is not None:
            self._keys.move_to_end(digest)
        return key

    def keep(self, generation: int | None, digest: str, key: ApiKey | None) -> None:
        if key is None or generation != self._generation:
            return
        self._keys[digest] = key
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)

    def active(self) -> int | None:
        return self._active[1] if self._active is not None and self._active[0] == self._generation else None

    def keep_active(self, generation: int | None, count: int) -> None:
        if generation == self._generation:
            self._active = (generation, count)


class SQLiteRevision:
    """The `key_revision` counter, read on the calling thread from a connection of its own."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __call__(self) -> int | None:
        if not self._lock.acquire(blocking=False):  # another thread is reading it: go to the store instead
            return None
        try:
            if self._conn is None:
                # timeout 0: a read in WAL mode takes no lock a writer holds; should it ever have to wait (a
                # checkpoint's brief moment), it fails at once and the lookup asks the store on its thread
                self._conn = sqlite3.connect(self._path, timeout=0, isolation_level=None, check_same_thread=False)
            row = self._conn.execute("SELECT n FROM key_revision WHERE id = 1").fetchone()
            return None if row is None else int(row[0])
        except sqlite3.Error:
            return None
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def unchanging() -> int:
    """The revision of a database no other process can change (SQLite in memory): only `changed()` counts."""
    return 0


class PostgresListener:
    """A connection of its own that LISTENs for key changes; its count of them is the revision, None while it is
    not known to be listening. Started on first use, so a store that never checks a key opens no extra connection.
    A silent drop is caught by a liveness query every `probe` seconds without a notification."""

    CHANNEL = "contextfold_keys"

    def __init__(self, conninfo: str, probe: float = 5.0) -> None:
        self._conninfo = conninfo
        self._probe = probe
        self._count = 0
        self._listening = False
        self._task: asyncio.Task[None] | None = None

    def __call__(self) -> int | None:
        if not self._conninfo:
            return None
        if self._task is None:
            try:
                self._task = asyncio.get_running_loop().create_task(self._listen(), name="contextfold key listener")
            except RuntimeError:  # no running loop: nothing can listen, so nothing is cached
                return None
        return self._count if self._listening else None

    async def _listen(self) -> None:
        import psycopg  # here: SQLite-only users never load the PostgreSQL driver

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {self.CHANNEL}")
                    self._count += 1  # changes made while nobody listened are unknown: start afresh
                    self._listening = True
                    while True:
                        async for _ in conn.notifies(timeout=self._probe):
                            self._count += 1
                        await conn.execute("SELECT 1")
            except psycopg.Error as error:
                log.warning("the API key listener lost its connection; checking every key in the store: %s", error)
            finally:
                self._listening = False
                self._count += 1
            await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self._task
            self._task = None
