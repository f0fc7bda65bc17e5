"""The server's records on PostgreSQL: stored responses, API keys and turn leases.

Every call is one statement on a pooled autocommit connection (or a short transaction), so any replica can
serve any request. Leases run on the database's clock (`clock_timestamp()`), never a replica's, so replicas
with skewed clocks still agree on when a lease lapsed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from psycopg import AsyncConnection, errors
from psycopg.rows import TupleRow

from .._errors import NotFoundError
from ._common import check_limit
from ._keycache import KeyCache, PostgresListener
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

Connect = Callable[[], AbstractAsyncContextManager[AsyncConnection[TupleRow]]]
"""The store's way to borrow a pooled connection (driver errors come out as StoreError)."""

_COLUMN_LIST = RESPONSE_COLUMNS.split(", ")
_PUT_RESPONSE = (
    f"INSERT INTO responses ({RESPONSE_COLUMNS}) VALUES ({', '.join(['%s'] * len(_COLUMN_LIST))})"
    " ON CONFLICT (id) DO UPDATE SET " + ", ".join(f"{column} = EXCLUDED.{column}" for column in _COLUMN_LIST[1:])
)


# One statement, so racing replicas cannot both win: a second inserter waits on the first's row, then re-checks the
# WHERE against it (now unexpired and someone else's) and gets no row back.
_ACQUIRE = """INSERT INTO turn_leases (conversation_id, owner, expires_at)
   VALUES (%s, %s, clock_timestamp() + make_interval(secs => %s))
   ON CONFLICT (conversation_id) DO UPDATE
       SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
       WHERE turn_leases.expires_at <= clock_timestamp() OR turn_leases.owner = EXCLUDED.owner
   RETURNING owner"""


class PostgresResponses:
    def __init__(self, connect: Connect) -> None:
        self._connect = connect

    async def put(self, record: ResponseRecord) -> None:
        row = response_row(record)
        async with self._connect() as conn:
            try:
                await conn.execute(_PUT_RESPONSE, row)
            except errors.ForeignKeyViolation:
                raise conversation_missing(record.conversation_id) from None

    async def get(self, response_id: str) -> ResponseRecord:
        async with self._connect() as conn:
            cur = await conn.execute(f"SELECT {RESPONSE_COLUMNS} FROM responses WHERE id = %s", (response_id,))
            row = await cur.fetchone()
        if row is None:
            raise response_missing(response_id)
        return response_of(row)

    async def delete(self, response_id: str) -> None:
        async with self._connect() as conn:
            cur = await conn.execute("DELETE FROM responses WHERE id = %s", (response_id,))
            if cur.rowcount == 0:
                raise response_missing(response_id)

    async def for_conversation(self, conversation_id: str, *, limit: int = 100) -> list[ResponseRecord]:
        check_limit(limit, "listing responses")
        async with self._connect() as conn:
            cur = await conn.execute(
                f"""SELECT {RESPONSE_COLUMNS} FROM responses WHERE conversation_id = %s
                    ORDER BY created_at DESC, id DESC LIMIT %s""",
                (conversation_id, limit),
            )
            rows = await cur.fetchall()
            if not rows:  # none, or no such conversation: only then is it worth asking which
                cur = await conn.execute("SELECT 1 FROM conversations WHERE id = %s", (conversation_id,))
                if await cur.fetchone() is None:
                    raise NotFoundError(f"conversation {conversation_id!r} does not exist")
        return [response_of(row) for row in rows]


class PostgresKeys:
    def __init__(self, connect: Connect, conninfo: str) -> None:
        self._connect = connect
        self._listener = PostgresListener(conninfo)
        self._cache = KeyCache(self._listener)

    async def close(self) -> None:
        await self._listener.close()

    async def create(self, tenant: str, name: str = "") -> tuple[str, ApiKey]:
        secret, key, digest = new_key(tenant, name)
        async with self._connect() as conn:
            await conn.execute(
                f"INSERT INTO api_keys ({KEY_COLUMNS}, secret_hash) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (key.id, key.tenant, key.name, key.prefix, key.created_at, key.revoked_at, digest),
            )
        self._cache.changed()
        return secret, key

    async def verify(self, secret: str) -> ApiKey | None:
        digest = lookup_hash(secret)
        if digest is None:
            return None
        generation = self._cache.begin()
        if generation is not None and (hit := self._cache.key(digest)) is not None:
            return hit
        async with self._connect() as conn:
            cur = await conn.execute(
                f"SELECT {KEY_COLUMNS}, secret_hash FROM api_keys WHERE secret_hash = %s AND revoked_at IS NULL",
                (digest,),
            )
            row = await cur.fetchone()
        key = verified(row, digest)
        self._cache.keep(generation, digest, key)
        return key

    async def list(self, *, tenant: str | None = None, include_revoked: bool = False) -> list[ApiKey]:
        if tenant is not None:
            check_tenant(tenant)
        sql = f"SELECT {KEY_COLUMNS} FROM api_keys WHERE (%s::text IS NULL OR tenant = %s)"
        if not include_revoked:
            sql += " AND revoked_at IS NULL"
        async with self._connect() as conn:
            cur = await conn.execute(sql + " ORDER BY created_at, id", (tenant, tenant))
            return [key_of(row) for row in await cur.fetchall()]

    async def revoke(self, key_id: str) -> ApiKey:
        try:
            return await self._revoke(key_id)
        finally:
            self._cache.changed()  # at once here; other processes hear the trigger's NOTIFY

    async def _revoke(self, key_id: str) -> ApiKey:
        async with self._connect() as conn:
            cur = await conn.execute(
                f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, %s) WHERE id = %s RETURNING {KEY_COLUMNS}",
                (time.time(), key_id),  # the clock created_at came from
            )
            row = await cur.fetchone()
        if row is None:
            raise key_missing(key_id)
        return key_of(row)

    async def active(self) -> int:
        generation = self._cache.begin()
        if generation is not None and (count := self._cache.active()) is not None:
            return count
        async with self._connect() as conn:
            cur = await conn.execute("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
            row = await cur.fetchone()
        count = 0 if row is None else int(row[0])
        self._cache.keep_active(generation, count)
        return count


class PostgresLeases:
    def __init__(self, connect: Connect) -> None:
        self._connect = connect

    async def acquire(self, conversation_id: str, owner: str, ttl: float) -> bool:
        check_lease(owner, ttl)
        async with self._connect() as conn:
            try:
                cur = await conn.execute(_ACQUIRE, (conversation_id, owner, float(ttl)))
            except errors.ForeignKeyViolation:
                raise conversation_missing(conversation_id) from None
            return await cur.fetchone() is not None

    async def take(self, conversation_id: str, owner: str, ttl: float) -> int | None:
        check_lease(owner, ttl)
        async with self._connect() as conn:
            try:
                # Two statements in one pipeline (one network round trip). The head is read by the second, in a
                # snapshot taken after the lease was won: a CTE would read it in the lease statement's snapshot,
                # taken before it waited on a previous holder's row, and miss what that holder committed.
                async with conn.pipeline():
                    leased = await conn.execute(_ACQUIRE, (conversation_id, owner, float(ttl)))
                    head = await conn.execute(
                        "SELECT head FROM conversations WHERE id = %s AND EXISTS"
                        " (SELECT 1 FROM turn_leases WHERE conversation_id = %s AND owner = %s)",
                        (conversation_id, conversation_id, owner),
                    )
                    won = await leased.fetchone()
                    row = await head.fetchone()
            except errors.ForeignKeyViolation:
                raise conversation_missing(conversation_id) from None
        return int(row[0]) if won is not None and row is not None else None

    async def renew(self, conversation_id: str, owner: str, ttl: float) -> bool:
        check_lease(owner, ttl)
        async with self._connect() as conn:
            cur = await conn.execute(
                """UPDATE turn_leases SET expires_at = clock_timestamp() + make_interval(secs => %s)
                   WHERE conversation_id = %s AND owner = %s RETURNING owner""",
                (float(ttl), conversation_id, owner),
            )
            return await cur.fetchone() is not None

    async def release(self, conversation_id: str, owner: str) -> None:
        async with self._connect() as conn:
            await conn.execute(
                "DELETE FROM turn_leases WHERE conversation_id = %s AND owner = %s", (conversation_id, owner)
            )
