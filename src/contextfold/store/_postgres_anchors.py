"""The proxy's anchors on PostgreSQL: one statement per put and per find, on a pooled autocommit connection.

Anchors are stamped on the database's clock, so replicas with skewed clocks still agree on which is newest.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import errors

from ._anchors import ANCHOR_COLUMNS, anchor_of, check_keys, check_seq
from ._postgres_serving import Connect
from ._protocol import Anchor
from ._serving import check_tenant, conversation_missing

# The SELECT's ORDER BY makes every put take its row locks in one order (with the same collation), so two puts
# racing on overlapping keys of one conversation queue rather than deadlock.
_PUT = """INSERT INTO proxy_anchors (tenant, key, conversation_id, seq, created_at)
    SELECT c.tenant, k.key, c.id, %s, extract(epoch FROM statement_timestamp())::double precision
    FROM conversations c CROSS JOIN unnest(%s::text[]) AS k(key)
    WHERE c.id = %s
    ORDER BY k.key COLLATE "C"
    ON CONFLICT (tenant, key, conversation_id) DO UPDATE
        SET seq = EXCLUDED.seq, created_at = EXCLUDED.created_at"""

# Ties broken by byte order ("C"), as SQLite does, so both backends list the same anchors in the same order.
_FIND = (
    f"SELECT {ANCHOR_COLUMNS} FROM proxy_anchors WHERE tenant = %s AND key = ANY(%s::text[])"
    ' ORDER BY created_at DESC, seq DESC, conversation_id COLLATE "C", key COLLATE "C"'
)


class PostgresAnchors:
    def __init__(self, connect: Connect) -> None:
        self._connect = connect

    async def put(self, conversation_id: str, seq: int, keys: Sequence[str]) -> None:
        distinct = check_keys(keys)
        check_seq(seq)
        if not distinct:
            return
        async with self._connect() as conn:
            try:
                cur = await conn.execute(_PUT, (seq, distinct, conversation_id))
            except errors.ForeignKeyViolation:  # the conversation was deleted while the rows went in
                raise conversation_missing(conversation_id) from None
            if cur.rowcount == 0:  # there is at least one key, so no row means no conversation
                raise conversation_missing(conversation_id)

    async def find(self, keys: Sequence[str], *, tenant: str) -> list[Anchor]:
        distinct = check_keys(keys)
        check_tenant(tenant, allow_empty=True)
        if not distinct:
            return []
        async with self._connect() as conn:
            cur = await conn.execute(_FIND, (tenant, distinct))
            return [anchor_of(row) for row in await cur.fetchall()]
