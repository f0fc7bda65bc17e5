"""The server's records on SQLite: stored responses, API keys and turn leases.

Each call runs as one function on one of the store's worker threads (writes on the writer, reads on the reader),
so the event loop never blocks. Most writes are a single statement; SQLite's database lock serialises them across
every process sharing the file, which is what makes a lease exclusive.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any

from .._errors import NotFoundError
from ._common import check_limit
from ._keycache import KeyCache, SQLiteRevision, unchanging
from ._protocol import ApiKey, ResponseRecord
from ._serving import (
    KEY_COLUMNS,
    RESPONSE_COLUMNS,
    check_lease,
    check_tenant,
    conversation_missing,
    key_missing,
    key_of,
    lookup_hash,
    new_key,
    response_missing,
    response_of,
    response_row,
    verified,
)

if TYPE_CHECKING:
    from ._sqlite import Worker


class SQLiteResponses:
    def __init__(self, writer: Worker, reader: Worker) -> None:
        self._writer = writer
        self._reader = reader

    async def put(self, record: ResponseRecord) -> None:
        await self._writer.run(_put_response, response_row(record))

    async def get(self, response_id: str) -> ResponseRecord:
        return await self._reader.run(_get_response, response_id)

    async def delete(self, response_id: str) -> None:
        await self._writer.run(_delete_response, response_id)

    async def for_conversation(self, conversation_id: str, *, limit: int = 100) -> list[ResponseRecord]:
        check_limit(limit, "listing responses")
        return await self._reader.run(_responses_for, conversation_id, limit)


class SQLiteKeys:
    def __init__(self, writer: Worker, reader: Worker, path: str) -> None:
        self._writer = writer
        self._reader = reader
        self._revision = SQLiteRevision(path) if path != ":memory:" else None
        self._cache = KeyCache(self._revision or unchanging)

    async def create(self, tenant: str, name: str = "") -> tuple[str, ApiKey]:
        secret, key, digest = new_key(tenant, name)
        await self._writer.run(_create_key, key, digest)
        self._cache.changed()
        return secret, key

    async def verify(self, secret: str) -> ApiKey | None:
        digest = lookup_hash(secret)
        if digest is None:
            return None
        generation = self._cache.begin()
        if generation is not None and (hit := self._cache.key(digest)) is not None:
            return hit
        key = await self._reader.run(_verify_key, digest)
        self._cache.keep(generation, digest, key)
        return key

    def close(self) -> None:
        if self._revision is not None:
            self._revision.close()

    async def list(self, *, tenant: str | None = None, include_revoked: bool = False) -> list[ApiKey]:
        if tenant is not None:
            check_tenant(tenant)
        return await self._reader.run(_list_keys, tenant, include_revoked)

    async def revoke(self, key_id: str) -> ApiKey:
        try:
            return await self._writer.run(_revoke_key, key_id)
        finally:
            self._cache.changed()  # after the commit: a lookup begun before it keeps nothing

    async def active(self) -> int:
        generation = self._cache.begin()
        if generation is not None and (count := self._cache.active()) is not None:
            return count
        count = await self._reader.run(_count_active_keys)
        self._cache.keep_active(generation, count)
        return count


class SQLiteLeases:
    """Leases on the local clock: the processes sharing a SQLite file share a machine, and so a clock."""

    def __init__(self, writer: Worker) -> None:
        self._writer = writer

    async def acquire(self, conversation_id: str, owner: str, ttl: float) -> bool:
        check_lease(owner, ttl)
        return await self._writer.now(_acquire, conversation_id, owner, ttl)

    async def take(self, conversation_id: str, owner: str, ttl: float) -> int | None:
        check_lease(owner, ttl)
        return await self._writer.now(_take, conversation_id, owner, ttl)

    async def renew(self, conversation_id: str, owner: str, ttl: float) -> bool:
        check_lease(owner, ttl)
        return await self._writer.now(_renew, conversation_id, owner, ttl)

    async def release(self, conversation_id: str, owner: str) -> None:
        await self._writer.now(_release, conversation_id, owner)


# --- functions that run on a worker thread ------------------------------------------------------------------
# A RETURNING statement finishes (and, outside a transaction, commits) only once its rows are fetched to the end,
# hence fetchall() even where one row is expected.


# Unix time read by SQLite as the statement runs, after it got the write lock: a time taken before the statement
# would be stale by however long it waited for another process, and shorten the lease by as much.
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"


def _exists(conn: sqlite3.Connection, conversation_id: str) -> bool:
    return conn.execute("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)).fetchone() is not None


def _put_response(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    columns = RESPONSE_COLUMNS.split(", ")
    updates = ", ".join(f"{column} = excluded.{column}" for column in columns[1:])
    try:
        conn.execute(
            f"INSERT INTO responses ({RESPONSE_COLUMNS}) VALUES ({', '.join('?' * len(columns))})"
            f" ON CONFLICT (id) DO UPDATE SET {updates}",
            row,
        )
    except sqlite3.IntegrityError:
        if _exists(conn, row[2]):
            raise
        raise conversation_missing(row[2]) from None


def _get_response(conn: sqlite3.Connection, response_id: str) -> ResponseRecord:
    row = conn.execute(f"SELECT {RESPONSE_COLUMNS} FROM responses WHERE id = ?", (response_id,)).fetchone()
    if row is None:
        raise response_missing(response_id)
    return response_of(row)


def _delete_response(conn: sqlite3.Connection, response_id: str) -> None:
    if conn.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount == 0:
        raise response_missing(response_id)


def _responses_for(conn: sqlite3.Connection, conversation_id: str, limit: int) -> list[ResponseRecord]:
    rows = conn.execute(
        f"""SELECT {RESPONSE_COLUMNS} FROM responses WHERE conversation_id = ?
            ORDER BY created_at DESC, id DESC LIMIT ?""",
        (conversation_id, limit),
    ).fetchall()
    if not rows and not _exists(conn, conversation_id):
        raise NotFoundError(f"conversation {conversation_id!r} does not exist")
    return [response_of(row) for row in rows]


def _create_key(conn: sqlite3.Connection, key: ApiKey, digest: str) -> None:
    conn.execute(
        f"INSERT INTO api_keys ({KEY_COLUMNS}, secret_hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (key.id, key.tenant, key.name, key.prefix, key.created_at, key.revoked_at, digest),
    )


def _verify_key(conn: sqlite3.Connection, digest: str) -> ApiKey | None:
    row = conn.execute(
        f"SELECT {KEY_COLUMNS}, secret_hash FROM api_keys WHERE secret_hash = ? AND revoked_at IS NULL", (digest,)
    ).fetchone()
    return verified(row, digest)


def _list_keys(conn: sqlite3.Connection, tenant: str | None, include_revoked: bool) -> list[ApiKey]:
    sql = f"SELECT {KEY_COLUMNS} FROM api_keys WHERE (? IS NULL OR tenant = ?)"
    if not include_revoked:
        sql += " AND revoked_at IS NULL"
    return [key_of(row) for row in conn.execute(sql + " ORDER BY created_at, id", (tenant, tenant))]


def _revoke_key(conn: sqlite3.Connection, key_id: str) -> ApiKey:
    rows = conn.execute(
        f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ? RETURNING {KEY_COLUMNS}",
        (time.time(), key_id),
    ).fetchall()
    if not rows:
        raise key_missing(key_id)
    return key_of(rows[0])


def _count_active_keys(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL").fetchone()[0])


def _acquire(conn: sqlite3.Connection, conversation_id: str, owner: str, ttl: float) -> bool:
    # One statement: insert the lease, or take it over where it lapsed or is already ours. SQLite's write lock
    # serialises racing processes, and each sees the winner's row, so only one can ever get a row back.
    try:
        rows = conn.execute(
            f"""INSERT INTO turn_leases (conversation_id, owner, expires_at) VALUES (?, ?, {_NOW} + ?)
                ON CONFLICT (conversation_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
                WHERE turn_leases.expires_at <= {_NOW} OR turn_leases.owner = excluded.owner
                RETURNING owner""",
            (conversation_id, owner, ttl),
        ).fetchall()
    except sqlite3.IntegrityError:  # the only constraint an upsert can break here is the conversation's key
        raise conversation_missing(conversation_id) from None
    return bool(rows)


def _take(conn: sqlite3.Connection, conversation_id: str, owner: str, ttl: float) -> int | None:
    # One transaction holding the write lock: no other process can append between the lease and the head read.
    conn.execute("BEGIN IMMEDIATE")
    try:
        head = None
        if _acquire(conn, conversation_id, owner, ttl):
            head = int(conn.execute("SELECT head FROM conversations WHERE id = ?", (conversation_id,)).fetchone()[0])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return head


def _renew(conn: sqlite3.Connection, conversation_id: str, owner: str, ttl: float) -> bool:
    rows = conn.execute(
        f"UPDATE turn_leases SET expires_at = {_NOW} + ? WHERE conversation_id = ? AND owner = ? RETURNING owner",
        (ttl, conversation_id, owner),
    ).fetchall()
    return bool(rows)


def _release(conn: sqlite3.Connection, conversation_id: str, owner: str) -> None:
    conn.execute("DELETE FROM turn_leases WHERE conversation_id = ? AND owner = ?", (conversation_id, owner))
