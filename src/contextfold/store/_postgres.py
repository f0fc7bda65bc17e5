"""PostgreSQL store: the same protocol as SQLite, for many processes or machines sharing one database.

Why it is shaped this way:
- Per-conversation ordering lives in the database, not in any process: an append locks its conversation row
  (`SELECT ... FOR UPDATE`), checks the head it was given, inserts, and moves the head in one transaction. Two
  replicas appending to one conversation queue on that row lock; the loser sees the new head and gets a
  `ConflictError`, so no event is lost or interleaved. Appends to different conversations never wait for each
  other.
- psycopg 3's async driver with a small connection pool, so nothing blocks the event loop. Pooled connections
  run in autocommit and every multi-statement operation opens an explicit transaction, so none is left open.
- Search uses PostgreSQL full-text search (`search_tsv`, a stored generated column with a GIN index). The
  query is built from bound parameters only: each word goes through `plainto_tsquery` and the words are OR-ed.
- A checkpointed load reads in one REPEATABLE READ snapshot, so the compaction, what it kept and what followed
  are consistent with each other even while appends land.
- What an append, a deletion or a search accepts is decided in `_common`, shared with the SQLite store; only
  the SQL is here. The server's records (responses, API keys, turn leases) live in `_postgres_serving`, the
  proxy's anchors in `_postgres_anchors`.

Erasure rewrites the row's body and drops its search text in the deleting transaction, so no query can see the
content again. On disk it is not gone at once: the old row version stays until VACUUM prunes it, the GIN index
keeps the erased words as keys until it is rebuilt (VACUUM FULL or REINDEX), and the WAL holds them until it
is recycled.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import psycopg
from psycopg import AsyncConnection, AsyncCursor, errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

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
from ._migrations import POSTGRES, Migration, plan
from ._postgres_anchors import PostgresAnchors
from ._postgres_knowledge import PostgresKnowledge
from ._postgres_serving import PostgresKeys, PostgresLeases, PostgresResponses
from ._protocol import Checkpoint, ConversationInfo, ResponseRecord, SearchHit, TurnAnchors
from ._runs import PostgresRuns
from ._serving import (
    CONVERSATION_COLUMNS,
    check_new_id,
    check_order,
    check_tenant,
    conversation_missing,
    cursor_of,
    page_query,
)
from ._turn import Turn, checked_turn, commit_postgres

Conn = AsyncConnection[TupleRow]
_MIGRATION_LOCK = 0x636F6E7466_6F6C64  # "contextfold": one advisory lock key for every contextfold database
_HEADLINE = "StartSel='', StopSel='', MaxWords=24, MinWords=8, ShortWord=2"


async def migrate(conn: Conn, migrations: Sequence[Migration] = POSTGRES, target: int | None = None) -> int:
    """Apply the migrations the database lacks, up to `target` (default: all). Returns the schema version.

    An advisory lock serialises processes that start at once: the second waits, then finds nothing to do.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
        )
        cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
        current = int((await _one(cur))[0])
        for migration in plan(migrations, current, target):
            for statement in migration.statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                (migration.version, migration.name, time.time()),
            )
            current = migration.version
    return current


def describe(url: str) -> str:
    """Where a URL points, without its password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "an unparseable PostgreSQL URL"
    host = params.get("host") or "localhost"
    return f"postgresql://{host}:{params.get('port') or 5432}/{params.get('dbname') or ''}"


class PostgresStore:
    """A store on a PostgreSQL database. Open it with `await PostgresStore.open(url)`."""

    def __init__(self, pool: AsyncConnectionPool[Conn], where: str, url: str = "") -> None:
        self._pool = pool
        self._where = where
        self._conversations = _PostgresConversations(self)
        self._responses = PostgresResponses(self._connection)
        self._keys = PostgresKeys(self._connection, url)  # no URL: keys are not cached
        self._leases = PostgresLeases(self._connection)
        self._anchors = PostgresAnchors(self._connection)
        self._knowledge = PostgresKnowledge(self._connection)
        self._runs = PostgresRuns(self._connection)

    @property
    def conversations(self) -> _PostgresConversations:
        return self._conversations

    @property
    def responses(self) -> PostgresResponses:
        return self._responses

    @property
    def keys(self) -> PostgresKeys:
        return self._keys

    @property
    def leases(self) -> PostgresLeases:
        return self._leases

    @property
    def anchors(self) -> PostgresAnchors:
        return self._anchors

    @property
    def knowledge(self) -> PostgresKnowledge:
        return self._knowledge

    @property
    def runs(self) -> PostgresRuns:
        return self._runs

    @classmethod
    async def open(
        cls, url: str, *, min_size: int = 1, max_size: int = 10, connect_timeout: float = 30.0
    ) -> PostgresStore:
        """Connect (a pool of `min_size`..`max_size` connections) and migrate the database."""
        where = describe(url)
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout,
            kwargs={"autocommit": True},
            open=False,
            name="contextfold",
        )
        store = cls(pool, where, url)
        try:
            try:
                await pool.open(wait=True, timeout=connect_timeout)
            except psycopg.Error as exc:
                raise StoreError(f"cannot connect to {where} within {connect_timeout:g}s: {exc}") from exc
            async with store._connection() as conn:
                await migrate(conn)
        except BaseException:
            await pool.close()
            raise
        return store

    async def close(self) -> None:
        await self._keys.close()
        await self._pool.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        """A pooled connection; driver failures come out classified (`classify`)."""
        try:
            async with tracing.store_call("postgresql", "round trip"), self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            error = classify(exc, self._where)
            raise error from (exc if isinstance(error, StoreError) else None)  # a client's mistake needs no trace

    async def append(self, conversation_id: str, events: Sequence[Event], expected_head: int) -> list[AnyEvent]:
        rows = prepare(conversation_id, events, expected_head)
        async with self._connection() as conn, conn.transaction():
            await _append_rows(conn, conversation_id, rows, expected_head)
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
        async with self._connection() as conn:
            if any(isinstance(row.event, Deletion) for row in rows):  # an erasure reads what it erases first
                async with conn.transaction():
                    await _append_rows(conn, conversation_id, rows, expected_head)
                    await commit_postgres(conn, conversation_id, turn, release)
            else:
                await _commit_pipelined(conn, conversation_id, rows, expected_head, turn, release)
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
        query = "SELECT body FROM events WHERE conversation_id = %s AND seq > %s"
        params: list[Any] = [conversation_id, after]
        if seqs is not None:
            query += " AND seq = ANY(%s)"
            params.append(list(seqs))
        if ids is not None:
            query += " AND id = ANY(%s)"
            params.append(list(ids))
        query += " ORDER BY seq LIMIT %s"
        params.append(limit)  # LIMIT NULL is no limit
        async with self._connection() as conn, conn.transaction():
            await _head(conn, conversation_id)
            cur = await conn.execute(query, params)
            return [decode(body) for (body,) in await cur.fetchall()]

    async def checkpoint(self, conversation_id: str) -> Checkpoint:
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            head, checkpoint = await _head(conn, conversation_id)
            compaction = None
            kept: list[AnyEvent] = []
            if checkpoint:
                compaction = (await _bodies(conn, conversation_id, [checkpoint]))[0]
                if isinstance(compaction, Compaction):
                    kept = await _bodies(conn, conversation_id, checkpoint_seqs(compaction))
            cur = await conn.execute(
                "SELECT body FROM events WHERE conversation_id = %s AND seq > %s ORDER BY seq",
                (conversation_id, checkpoint),
            )
            after = [decode(body) for (body,) in await cur.fetchall()]
        return build_checkpoint(head, compaction, kept, after)

    async def search(self, conversation_id: str, query: str, *, limit: int = 10, offset: int = 0) -> list[SearchHit]:
        terms = check_query(query)
        check_page(limit, offset)
        tsquery = " || ".join(["plainto_tsquery('english', %s)"] * len(terms))
        sql = f"""SELECT e.seq, e.id, e.type, ts_headline('english', e.search_text, q.q, %s),
                         ts_rank(e.search_tsv, q.q) AS score
                  FROM events e, (SELECT {tsquery} AS q) AS q
                  WHERE e.conversation_id = %s AND e.search_tsv @@ q.q
                  ORDER BY score DESC, e.seq LIMIT %s OFFSET %s"""
        async with self._connection() as conn, conn.transaction():
            await _head(conn, conversation_id)
            cur = await conn.execute(
                sql,  # only placeholders are interpolated into the text; the words are bound
                (_HEADLINE, *terms, conversation_id, limit, offset),
            )
            rows = await cur.fetchall()
        return [SearchHit(seq, event_id, kind, snippet, float(score)) for seq, event_id, kind, snippet, score in rows]


class _PostgresConversations:
    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def create(
        self, conversation_id: str | None = None, metadata: dict[str, str] | None = None, *, tenant: str = ""
    ) -> ConversationInfo:
        check_tenant(tenant, allow_empty=True)
        info = ConversationInfo(
            check_new_id(conversation_id or new_id("conv")), time.time(), 0, 0, dict(metadata or {}), tenant
        )
        async with self._store._connection() as conn:
            cur = await conn.execute(
                "INSERT INTO conversations (id, created_at, metadata, tenant) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING",
                (info.id, info.created_at, json.dumps(info.metadata), info.tenant),
            )
            if cur.rowcount == 0:
                raise InvalidRequestError(f"conversation {info.id!r} already exists; pick another id")
        return info

    async def get(self, conversation_id: str) -> ConversationInfo:
        async with self._store._connection() as conn:
            cur = await conn.execute(
                f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = %s", (conversation_id,)
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFoundError(f"conversation {conversation_id!r} does not exist")
        return _info(row)

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
        async with self._store._connection() as conn:
            cursor = None
            if after is not None:
                cur = await conn.execute("SELECT created_at, id, tenant FROM conversations WHERE id = %s", (after,))
                cursor = cursor_of(await cur.fetchone(), after, tenant)
            sql, params = page_query("%s", tenant, cursor, order)
            cur = await conn.execute(sql, [*params, limit])
            return [_info(row) for row in await cur.fetchall()]

    async def update(self, conversation_id: str, metadata: dict[str, str]) -> ConversationInfo:
        async with self._store._connection() as conn:
            cur = await conn.execute(
                f"UPDATE conversations SET metadata = %s WHERE id = %s RETURNING {CONVERSATION_COLUMNS}",
                (json.dumps(metadata), conversation_id),
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFoundError(f"conversation {conversation_id!r} does not exist")
        return _info(row)

    async def delete(self, conversation_id: str) -> None:
        async with self._store._connection() as conn:
            cur = await conn.execute("DELETE FROM conversations WHERE id = %s", (conversation_id,))
            if cur.rowcount == 0:
                raise NotFoundError(f"conversation {conversation_id!r} does not exist")


# --- helpers that run inside a transaction ------------------------------------------------------------------


def _info(row: TupleRow) -> ConversationInfo:
    return ConversationInfo(row[0], row[1], int(row[3]), int(row[4]), json.loads(row[2]), row[5])


_CLIENT_DATA = "22"
"""SQLSTATE class 22, data exception: a value the request carried that PostgreSQL cannot take (a character the
encoding cannot hold, a string or number out of range). The client's to fix, never an outage."""
_CONSTRAINT = "23"
"""Class 23, integrity constraint violation: the request names something that clashes with what is stored."""
_NUL = "NUL (0x00)"
"""psycopg refuses a NUL byte in a text parameter itself, before sending (a DataError with no SQLSTATE)."""


def classify(exc: psycopg.Error, where: str) -> StoreError | InvalidRequestError | InvalidEventError | NotFoundError:
    """A driver error as the error it is, by SQLSTATE class. A text value holding a NUL byte (which PostgreSQL
    cannot store, so no stored id holds one) is a lookup that finds nothing: `NotFoundError`, as on SQLite, where
    such an id simply matches no row (the stores refuse it in the ids they create). Other data exceptions are the
    request's mistake (`InvalidRequestError`), constraint violations `InvalidEventError`. Everything else, connection
    failures, a shut-down or overloaded server, serialization failures, is an outage: `StoreError` (a 503)."""
    state = exc.sqlstate or ""
    detail = _detail(exc)
    if isinstance(exc, psycopg.DataError) and _NUL in str(exc):
        return NotFoundError(f"nothing is stored under a value holding a NUL (0x00) byte: {detail}")
    if state.startswith(_CLIENT_DATA) or (isinstance(exc, psycopg.DataError) and not state):
        return InvalidRequestError(f"the request body holds a value PostgreSQL cannot take: {detail}")
    if state.startswith(_CONSTRAINT):
        return InvalidEventError(f"event rejected by the store: {detail}")
    return StoreError(f"PostgreSQL error on {where}: {detail}")


def _detail(exc: psycopg.Error) -> str:
    diag = exc.diag.message_detail if isinstance(exc, errors.UniqueViolation) else None
    return f"{str(exc).strip()} ({diag})" if diag and diag not in str(exc) else str(exc).strip()


async def _one(cur: AsyncCursor[TupleRow]) -> TupleRow:
    row = await cur.fetchone()
    assert row is not None
    return row


async def _head(conn: Conn, conversation_id: str, *, lock: bool = False) -> tuple[int, int]:
    """The head and checkpoint of a conversation; with `lock`, its row stays locked until commit."""
    cur = await conn.execute(
        "SELECT head, checkpoint FROM conversations WHERE id = %s" + (" FOR UPDATE" if lock else ""),
        (conversation_id,),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError(f"conversation {conversation_id!r} does not exist; create it first")
    return int(row[0]), int(row[1])


async def _append_rows(conn: Conn, conversation_id: str, rows: list[Row], expected_head: int) -> None:
    """The append inside the caller's transaction: lock the conversation row, check the head, insert, move it."""
    head, checkpoint = await _head(conn, conversation_id, lock=True)
    if head != expected_head:
        raise ConflictError(conversation_id, expected_head, head)
    if not rows:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO events (conversation_id, seq, id, type, body, search_text) VALUES (%s, %s, %s, %s, %s, %s)",
            [(conversation_id, r.seq, r.id, r.type, r.body, r.search_text) for r in rows],
        )
        for row in rows:
            if isinstance(row.event, Deletion):
                await _erase(cur, conversation_id, row.event)
            elif isinstance(row.event, Compaction):
                checkpoint = row.seq
    await conn.execute(
        "UPDATE conversations SET head = %s, checkpoint = %s WHERE id = %s",
        (rows[-1].seq, checkpoint, conversation_id),
    )


_INSERT_EVENTS = (
    "INSERT INTO events (conversation_id, seq, id, type, body, search_text) VALUES (%s, %s, %s, %s, %s, %s)"
)
_MOVE_HEAD = (
    "UPDATE conversations SET head = %s, checkpoint = COALESCE(%s, checkpoint) WHERE id = %s AND head = %s"
    " RETURNING head"
)


class _NotAtHead(Exception):
    """The conversation's head was not where the commit expected it (or the conversation is gone)."""


async def _commit_pipelined(
    conn: Conn, conversation_id: str, rows: list[Row], expected_head: int, turn: Turn, release: str | None
) -> None:
    """The append and the turn's records in one pipeline: every statement is sent at once, then one sync shows
    that the head was where the caller expected it (the UPDATE found the row there, and holds its lock to the
    end), and one more sends the COMMIT: two network round trips, where a statement at a time took seven. A head
    that moved (or a conversation gone) fails the UPDATE's match or an insert after it; the transaction rolls
    back, and a read of the head after it says which."""
    new_head = rows[-1].seq if rows else expected_head
    checkpoint = max((row.seq for row in rows if isinstance(row.event, Compaction)), default=None)
    try:
        async with conn.pipeline(), conn.transaction():
            moved = await conn.execute(_MOVE_HEAD, (new_head, checkpoint, conversation_id, expected_head))
            if rows:
                await conn.cursor().executemany(
                    _INSERT_EVENTS, [(conversation_id, r.seq, r.id, r.type, r.body, r.search_text) for r in rows]
                )
            await commit_postgres(conn, conversation_id, turn, release)
            if await moved.fetchone() is None:
                raise _NotAtHead
    except (_NotAtHead, errors.IntegrityError) as error:
        cur = await conn.execute("SELECT head FROM conversations WHERE id = %s", (conversation_id,))
        found = await cur.fetchone()
        if found is None:
            raise conversation_missing(conversation_id) from None
        if isinstance(error, _NotAtHead) or int(found[0]) != expected_head:
            raise ConflictError(conversation_id, expected_head, int(found[0])) from None
        raise  # at the head: the rows themselves were refused (a duplicate id), the client's error


async def _bodies(conn: Conn, conversation_id: str, seqs: list[int]) -> list[AnyEvent]:
    cur = await conn.execute(
        "SELECT body FROM events WHERE conversation_id = %s AND seq = ANY(%s) ORDER BY seq",
        (conversation_id, seqs),
    )
    return [decode(body) for (body,) in await cur.fetchall()]


async def _erase(cur: AsyncCursor[TupleRow], conversation_id: str, deletion: Deletion) -> None:
    targets = deletion_targets(deletion)
    await cur.execute(
        "SELECT seq, body FROM events WHERE conversation_id = %s AND seq = ANY(%s)",
        (conversation_id, targets),
    )
    found: list[tuple[int, bytes]] = [(int(seq), bytes(body)) for seq, body in await cur.fetchall()]
    check_targets_found(deletion, targets, (seq for seq, _ in found))
    await cur.executemany(
        "UPDATE events SET body = %s, search_text = NULL WHERE conversation_id = %s AND seq = %s",
        [(redacted_body(body), conversation_id, seq) for seq, body in found],
    )
