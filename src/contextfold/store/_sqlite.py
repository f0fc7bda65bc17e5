"""SQLite store: one file, WAL mode, each call one function run on its connection's worker.

Writes go through one writer connection and reads through another (WAL lets them overlap). Each store call runs
as one function, so a whole transaction costs at most one hop from the event loop; the small bounded calls of a
turn run on the loop itself while their worker is idle (`Worker.now`), never waiting on a lock. Several processes
may share the file: appends take SQLite's write lock (BEGIN IMMEDIATE) before checking the head, so ordering
holds across them. The server's records (responses, API keys, turn leases) live in `_sqlite_serving`, the
proxy's anchors in `_sqlite_anchors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from .. import _tracing as tracing
from .._errors import ConflictError, InvalidEventError, InvalidRequestError, NotFoundError, StoreError
from ..events import AnyEvent, Compaction, Deletion, Event, decode, new_id
from ._common import (
    Row,
    build_checkpoint,
    check_limit,
    check_page,
    check_query,
    check_targets_found,
    checkpoint_seqs,
    deletion_targets,
    prepare,
    redacted_body,
)
from ._migrations import SQLITE, Migration, plan
from ._protocol import Checkpoint, ConversationInfo, ResponseRecord, SearchHit, TurnAnchors
from ._runs import SQLiteRuns
from ._serving import CONVERSATION_COLUMNS, check_new_id, check_order, check_tenant, cursor_of, page_query
from ._sqlite_anchors import SQLiteAnchors
from ._sqlite_knowledge import SQLiteKnowledge
from ._sqlite_serving import SQLiteKeys, SQLiteLeases, SQLiteResponses
from ._turn import checked_turn, commit_sqlite

T = TypeVar("T")
_BUSY_TIMEOUT_MS = 10_000


def _connect(path: str) -> sqlite3.Connection:
    # not bound to its thread: `Worker.now` uses it on the caller's, one user at a time
    conn = sqlite3.connect(path, isolation_level=None, timeout=_BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    if path != ":memory:":
        _wal(conn)
        # a commit never copies the WAL back itself (that copy and its fsync would stall the caller, which may be
        # the event loop): the writer queues it on its thread (`Worker._maybe_checkpoint`)
        conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA secure_delete = ON")  # erased content is overwritten on disk, not just unlinked
    return conn


def _wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL. The switch needs the file to itself, and SQLite answers "database is locked" at once, without
    its busy handler, while another connection opens the same new file: try again until the busy timeout."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = SQLITE, target: int | None = None) -> int:
    """Apply the migrations the database lacks, up to `target` (default: all). Returns the schema version."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]
        for migration in plan(migrations, current, target):
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
            current = migration.version
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(current)


class Worker:
    """One connection and the thread that serves it; `run` executes a function there, `now` on the caller's
    thread when that costs no wait.

    A thread of its own fed by a `SimpleQueue`, not a `ThreadPoolExecutor`: the executor's futures chained to
    asyncio's cost a third more per hop than one queue put and one `call_soon_threadsafe` back. Even so a hop is
    two thread wake-ups, and on a loaded machine those cost more than a small transaction itself (a proxy
    request's four store calls took 1.5 ms as hops, 0.7 ms on the loop)."""

    def __init__(self, path: str, name: str, *, checkpoints: bool = False) -> None:
        self._path = path
        self._name = f"contextfold-sqlite-{name}"
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._waits = True  # the connection's busy timeout is SQLite's wait (a `now` call sets it to 0: no wait)
        self._owed = 0  # calls submitted or running: `now` runs inline only at 0, so calls keep their order
        self._owed_lock = threading.Lock()
        self._conn_lock = threading.Lock()  # one user of the connection at a time (the thread, or a `now`)
        self._checkpoints = checkpoints
        self._unchecked = 0  # calls since the WAL was last copied back

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...], *, wait: bool = True) -> T:
        with self._conn_lock:
            if self._conn is None:
                self._conn = _connect(self._path)
                self._waits = True
            if self._waits != wait:  # changed only when the kind of call changes: a run of `now` calls sets none
                self._conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS if wait else 0}")
                self._waits = wait
            try:
                return fn(self._conn, *args)
            except sqlite3.IntegrityError as exc:  # as PostgreSQL's class 23
                raise InvalidEventError(f"event rejected by the store: {exc}") from None
            except sqlite3.DataError as exc:  # as PostgreSQL's class 22: a value too big or out of range
                raise InvalidRequestError(f"the request body holds a value SQLite cannot take: {exc}") from None
            except sqlite3.OperationalError as exc:
                if not wait and (exc.sqlite_errorcode & 0xFF) in _LOCKED:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise _Locked from None
                raise StoreError(f"SQLite error on {self._path}: {exc}") from exc
            except sqlite3.Error as exc:  # locked past the busy timeout, I/O, full disk, a corrupt file: an outage
                raise StoreError(f"SQLite error on {self._path}: {exc}") from exc
            finally:
                self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        """Every `_CHECKPOINT_EVERY` calls of the writer, queue a copy of the WAL back into the database, as
        SQLite's own autocheckpoint does inside a commit, but always on the thread: the calls after it wait for it
        there, and the event loop does not. Run by the writer, so no commit lands while it copies: the copy is
        whole, and the next write starts the WAL over (copied from another connection under a stream of
        commits, the WAL never restarts and grows without end)."""
        if not self._checkpoints:
            return
        self._unchecked += 1
        if self._unchecked >= _CHECKPOINT_EVERY:
            self._unchecked = 0
            self._submit(_passive_checkpoint, (), _ignored)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, done = job
            result, error = None, None
            try:
                result = self._call(fn, args)
            except BaseException as failed:  # handed to the caller, whatever it is
                error = failed
            self._settled()
            done(result, error)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _settled(self) -> None:
        with self._owed_lock:
            self._owed -= 1

    def _submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], done: Callable[[Any, BaseException | None], None]
    ) -> None:
        with self._owed_lock:
            self._owed += 1
        if self._thread is None:  # started on first use, as an executor starts its threads
            # a daemon: a store left open does not keep the interpreter from exiting (SQLite's journal keeps a
            # write cut short at exit whole or absent)
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        self._jobs.put((fn, args, done))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if not tracing.on():
            return await self._hop(fn, args)
        async with _span(fn):
            return await self._hop(fn, args)

    async def now(self, fn: Callable[..., T], *args: Any) -> T:
        """`run`, but on the calling thread when nothing is queued or running here: for the small, bounded calls
        of a turn (a lease, an anchor lookup, a turn's commit), each one transaction. One that would wait for
        another process's lock gives up at once, rolled back, and is run on the thread, which may wait."""
        with self._owed_lock:
            idle = self._owed == 0
            if idle:
                self._owed += 1
        if not idle:
            return await self.run(fn, *args)
        # wait=False: a busy timeout of 0, so the event loop never sleeps in SQLite's busy handler
        try:
            if not tracing.on():
                return self._call(fn, args, wait=False)
            async with _span(fn):
                return self._call(fn, args, wait=False)
        except _Locked:
            pass
        finally:
            self._settled()
        return await self.run(fn, *args)

    async def _hop(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def done(result: Any, error: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits for it
                loop.call_soon_threadsafe(_settle, future, result, error)

        self._submit(fn, args, done)
        return await future

    def close(self) -> None:
        """Close the connection on its own thread, after every job queued before."""
        if self._thread is None:
            return
        self._jobs.put(None)
        self._thread.join()
        self._thread = None


_Job = tuple[Callable[..., Any], tuple[Any, ...], Callable[[Any, "BaseException | None"], None]]
_LOCKED = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_INLINE_ROWS, _INLINE_BYTES = 16, 64 * 1024  # the largest commit `commit_turn` runs on the loop
_CHECKPOINT_EVERY = 64  # calls of the writer: a few hundred WAL pages, below SQLite's own 1,000-page default


def _span(fn: Callable[..., Any]) -> contextlib.AbstractAsyncContextManager[None]:
    return tracing.store_call("sqlite", getattr(fn, "__name__", "call").lstrip("_"))


class _Locked(Exception):
    """A `now` call found the database locked by another connection, and did nothing."""


def _passive_checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _ignored(result: Any, error: BaseException | None) -> None:
    """A checkpoint's outcome: one that failed (a full disk, say) leaves the WAL for the next, and the writes
    themselves report the outage."""


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():  # its caller was cancelled: the work was done, and nobody takes the result
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class SQLiteStore:
    """The default store. `path` is a file path, or ':memory:' for a private in-memory database."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        # An in-memory database exists once per connection, so it gets a single worker for both, and no WAL.
        memory = self.path == ":memory:"
        self._writer = Worker(self.path, "writer", checkpoints=not memory)
        self._reader = self._writer if memory else Worker(self.path, "reader")
        self._conversations = _SQLiteConversations(self)
        self._responses = SQLiteResponses(self._writer, self._reader)
        self._keys = SQLiteKeys(self._writer, self._reader, self.path)
        # Leases are written on every turn, so they queue on the writer thread like an append.
        self._leases = SQLiteLeases(self._writer)
        self._anchors = SQLiteAnchors(self._writer, self._reader)
        self._knowledge = SQLiteKnowledge(self._writer, self._reader)
        self._runs = SQLiteRuns(self._writer, self._reader)

    @property
    def conversations(self) -> _SQLiteConversations:
        return self._conversations

    @property
    def responses(self) -> SQLiteResponses:
        return self._responses

    @property
    def keys(self) -> SQLiteKeys:
        return self._keys

    @property
    def leases(self) -> SQLiteLeases:
        return self._leases

    @property
    def anchors(self) -> SQLiteAnchors:
        return self._anchors

    @property
    def knowledge(self) -> SQLiteKnowledge:
        return self._knowledge

    @property
    def runs(self) -> SQLiteRuns:
        return self._runs

    @classmethod
    async def open(cls, path: str | Path) -> SQLiteStore:
        store = cls(path)
        try:
            await store._writer.run(migrate)
            await store._writer.run(_enable_index_secure_delete)
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        self._keys.close()
        self._writer.close()
        if self._reader is not self._writer:
            self._reader.close()

    async def append(self, conversation_id: str, events: Sequence[Event], expected_head: int) -> list[AnyEvent]:
        rows = prepare(conversation_id, events, expected_head)
        await self._writer.run(_append, conversation_id, rows, expected_head)
        return [row.event for row in rows]

    async def commit_turn(
        self,
        conversation_id: str,
        events: Sequence[Event],
        expected_head: int,
        *,
        response: ResponseRecord | None = None,
        anchors: TurnAnchors | None = None,
        release: str | None = None,
    ) -> list[AnyEvent]:
        rows = prepare(conversation_id, events, expected_head) if events else []
        turn = checked_turn(conversation_id, response, anchors)
        # a turn's few messages commit on the loop; a large batch (an import, a first request carrying a long
        # history) on the thread, so the loop is never held for its indexing
        small = len(rows) <= _INLINE_ROWS and sum(len(row.body) for row in rows) <= _INLINE_BYTES
        await (self._writer.now if small else self._writer.run)(
            commit_sqlite, conversation_id, rows, expected_head, turn, release
        )
        return [row.event for row in rows]

    async def read(
        self,
        conversation_id: str,
        *,
        after: int = 0,
        seqs: Iterable[int] | None = None,
        ids: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[AnyEvent]:
        check_limit(limit, "read")
        sql = "SELECT body FROM events WHERE conversation_id = ? AND seq > ?"
        params: list[Any] = [conversation_id, after]
        if seqs is not None:
            sql += " AND seq IN (SELECT value FROM json_each(?))"
            params.append(json.dumps(list(seqs)))
        if ids is not None:
            sql += " AND id IN (SELECT value FROM json_each(?))"
            params.append(json.dumps(list(ids)))
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return await self._reader.run(_read, conversation_id, sql, params)

    async def checkpoint(self, conversation_id: str) -> Checkpoint:
        return await self._reader.run(_checkpoint, conversation_id)

    async def search(self, conversation_id: str, query: str, *, limit: int = 10, offset: int = 0) -> list[SearchHit]:
        terms = check_query(query)
        check_page(limit, offset)
        match = " OR ".join(f'"{term}"' for term in terms)
        return await self._reader.run(_search, conversation_id, match, limit, offset)


class _SQLiteConversations:
    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    async def create(
        self, conversation_id: str | None = None, metadata: dict[str, str] | None = None, *, tenant: str = ""
    ) -> ConversationInfo:
        check_tenant(tenant, allow_empty=True)
        info = ConversationInfo(
            check_new_id(conversation_id or new_id("conv")), time.time(), 0, 0, dict(metadata or {}), tenant
        )
        await self._store._writer.run(_create, info)
        return info

    async def get(self, conversation_id: str) -> ConversationInfo:
        return await self._store._reader.now(_get, conversation_id)

    async def list(
        self,
        *,
        limit: int = 100,
        after: str | None = None,
        tenant: str | None = None,
        order: Literal["asc", "desc"] = "asc",
    ) -> list[ConversationInfo]:
        check_limit(limit, "listing conversations")
        check_order(order)
        if tenant is not None:
            check_tenant(tenant, allow_empty=True)
        return await self._store._reader.run(_list, limit, after, tenant, order)

    async def update(self, conversation_id: str, metadata: dict[str, str]) -> ConversationInfo:
        return await self._store._writer.run(_update, conversation_id, json.dumps(metadata))

    async def delete(self, conversation_id: str) -> None:
        await self._store._writer.run(_delete, conversation_id)


# --- functions that run on a worker thread ------------------------------------------------------------------


def _enable_index_secure_delete(conn: sqlite3.Connection) -> None:
    """Make FTS5 drop erased terms from the index itself, where SQLite is new enough (3.42+) to offer it.

    Older versions only mark them deleted until segments merge; merging on every deletion ('optimize') is not an
    option, because on 3.40 it corrupted the index when run in the deletion's transaction.
    """
    if sqlite3.sqlite_version_info >= (3, 42, 0):
        conn.execute("INSERT INTO events_fts(events_fts, rank) VALUES ('secure-delete', 1)")


def _head(conn: sqlite3.Connection, conversation_id: str) -> tuple[int, int]:
    row = conn.execute("SELECT head, checkpoint FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"conversation {conversation_id!r} does not exist; create it first")
    return int(row[0]), int(row[1])


def _append(conn: sqlite3.Connection, conversation_id: str, rows: list[Row], expected_head: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        append_rows(conn, conversation_id, rows, expected_head)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def append_rows(conn: sqlite3.Connection, conversation_id: str, rows: list[Row], expected_head: int) -> None:
    """The append, inside the caller's write transaction: the head check, the rows, erasures, the new head."""
    head, checkpoint = _head(conn, conversation_id)
    if head != expected_head:
        raise ConflictError(conversation_id, expected_head, head)
    if not rows:
        return
    conn.executemany(
        "INSERT INTO events (conversation_id, seq, id, type, body, search_text) VALUES (?, ?, ?, ?, ?, ?)",
        [(conversation_id, r.seq, r.id, r.type, r.body, r.search_text) for r in rows],
    )
    for row in rows:
        if isinstance(row.event, Deletion):
            _erase(conn, conversation_id, row.event)
        elif isinstance(row.event, Compaction):
            checkpoint = row.seq
    conn.execute(
        "UPDATE conversations SET head = ?, checkpoint = ? WHERE id = ?",
        (rows[-1].seq, checkpoint, conversation_id),
    )


def _erase(conn: sqlite3.Connection, conversation_id: str, deletion: Deletion) -> None:
    targets = deletion_targets(deletion)
    found = conn.execute(
        "SELECT seq, body FROM events WHERE conversation_id = ? AND seq IN (SELECT value FROM json_each(?))",
        (conversation_id, json.dumps(targets)),
    ).fetchall()
    check_targets_found(deletion, targets, (seq for seq, _ in found))
    conn.executemany(
        "UPDATE events SET body = ?, search_text = NULL WHERE conversation_id = ? AND seq = ?",
        [(redacted_body(body), conversation_id, seq) for seq, body in found],
    )


def _read(conn: sqlite3.Connection, conversation_id: str, sql: str, params: list[Any]) -> list[AnyEvent]:
    conn.execute("BEGIN")
    try:
        _head(conn, conversation_id)
        return [decode(body) for (body,) in conn.execute(sql, params)]
    finally:
        conn.execute("COMMIT")


def _checkpoint(conn: sqlite3.Connection, conversation_id: str) -> Checkpoint:
    conn.execute("BEGIN")  # one snapshot for every read below
    try:
        head, checkpoint = _head(conn, conversation_id)
        after_sql = "SELECT body FROM events WHERE conversation_id = ? AND seq > ? ORDER BY seq"
        if checkpoint == 0:
            after = [decode(body) for (body,) in conn.execute(after_sql, (conversation_id, 0))]
            return build_checkpoint(head, None, [], after)
        (body,) = conn.execute(
            "SELECT body FROM events WHERE conversation_id = ? AND seq = ?", (conversation_id, checkpoint)
        ).fetchone()
        compaction = decode(body)
        wanted = checkpoint_seqs(compaction) if isinstance(compaction, Compaction) else []
        kept = [
            decode(body)
            for (body,) in conn.execute(
                "SELECT body FROM events WHERE conversation_id = ? AND seq IN (SELECT value FROM json_each(?))",
                (conversation_id, json.dumps(wanted)),
            )
        ]
        after = [decode(body) for (body,) in conn.execute(after_sql, (conversation_id, checkpoint))]
        return build_checkpoint(head, compaction, kept, after)
    finally:
        conn.execute("COMMIT")


def _search(conn: sqlite3.Connection, conversation_id: str, match: str, limit: int, offset: int) -> list[SearchHit]:
    _head(conn, conversation_id)
    rows = conn.execute(
        """SELECT e.seq, e.id, e.type, snippet(events_fts, 0, '', '', '…', 24), bm25(events_fts)
           FROM events_fts JOIN events e ON e.rowid = events_fts.rowid
           WHERE events_fts MATCH ? AND e.conversation_id = ?
           ORDER BY bm25(events_fts), e.seq LIMIT ? OFFSET ?""",
        (match, conversation_id, limit, offset),
    ).fetchall()
    return [SearchHit(seq, event_id, kind, snippet, -score) for seq, event_id, kind, snippet, score in rows]


def _create(conn: sqlite3.Connection, info: ConversationInfo) -> None:
    try:
        conn.execute(
            "INSERT INTO conversations (id, created_at, metadata, tenant) VALUES (?, ?, ?, ?)",
            (info.id, info.created_at, json.dumps(info.metadata), info.tenant),
        )
    except sqlite3.IntegrityError:
        raise InvalidRequestError(f"conversation {info.id!r} already exists; pick another id") from None


def _info(row: tuple[Any, ...]) -> ConversationInfo:
    return ConversationInfo(row[0], row[1], row[3], row[4], json.loads(row[2]), row[5])


def _get(conn: sqlite3.Connection, conversation_id: str) -> ConversationInfo:
    row = conn.execute(f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"conversation {conversation_id!r} does not exist")
    return _info(row)


def _list(
    conn: sqlite3.Connection, limit: int, after: str | None, tenant: str | None, order: str
) -> list[ConversationInfo]:
    cursor = None
    if after is not None:
        found = conn.execute("SELECT created_at, id, tenant FROM conversations WHERE id = ?", (after,)).fetchone()
        cursor = cursor_of(found, after, tenant)
    sql, params = page_query("?", tenant, cursor, order)
    return [_info(row) for row in conn.execute(sql, [*params, limit])]


def _update(conn: sqlite3.Connection, conversation_id: str, metadata: str) -> ConversationInfo:
    rows = conn.execute(
        f"UPDATE conversations SET metadata = ? WHERE id = ? RETURNING {CONVERSATION_COLUMNS}",
        (metadata, conversation_id),
    ).fetchall()  # fetch to the end: a RETURNING statement finishes (and commits) only then
    if not rows:
        raise NotFoundError(f"conversation {conversation_id!r} does not exist")
    return _info(rows[0])


def _delete(conn: sqlite3.Connection, conversation_id: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        _head(conn, conversation_id)
        conn.execute("DELETE FROM events WHERE conversation_id = ?", (conversation_id,))
        conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
