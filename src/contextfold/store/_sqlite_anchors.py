"""The proxy's anchors on SQLite: one statement per put (on the writer thread) and per find (on the reader).

Key lists travel as one JSON array read by `json_each`, never as one bound variable per key, so SQLite's
bound-variable limit (999 before 3.32) never caps how many keys a call may carry.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._anchors import ANCHOR_COLUMNS, anchor_of, check_keys, check_seq
from ._protocol import Anchor
from ._serving import check_tenant, conversation_missing

if TYPE_CHECKING:
    from ._sqlite import Worker


class SQLiteAnchors:
    def __init__(self, writer: Worker, reader: Worker) -> None:
        self._writer = writer
        self._reader = reader

    async def put(self, conversation_id: str, seq: int, keys: Sequence[str]) -> None:
        distinct = check_keys(keys)
        check_seq(seq)
        if distinct:
            await self._writer.run(_put, conversation_id, seq, json.dumps(distinct))

    async def find(self, keys: Sequence[str], *, tenant: str) -> list[Anchor]:
        distinct = check_keys(keys)
        check_tenant(tenant, allow_empty=True)
        if not distinct:
            return []
        return await self._reader.now(_find, tenant, json.dumps(distinct))


PUT = """INSERT INTO proxy_anchors (tenant, key, conversation_id, seq, created_at)
    SELECT c.tenant, k.value, c.id, ?, ? FROM conversations c, json_each(?) k WHERE c.id = ?
    ON CONFLICT (tenant, key, conversation_id) DO UPDATE
        SET seq = excluded.seq, created_at = excluded.created_at"""
"""Anchors for (seq, time, keys as a JSON array, conversation id); also run by `_turn` inside a turn's commit."""


# --- functions that run on a worker thread ------------------------------------------------------------------


def _put(conn: sqlite3.Connection, conversation_id: str, seq: int, keys: str) -> None:
    # One statement is one transaction: the tenant is copied from the conversation as the rows are written, and
    # no row is written when there is no such conversation. The time is read here, on the writer thread, so
    # puts from one process are stamped in the order they are written.
    cur = conn.execute(PUT, (seq, time.time(), keys, conversation_id))
    if cur.rowcount == 0:  # there is at least one key, so no row means no conversation
        raise conversation_missing(conversation_id)


def _find(conn: sqlite3.Connection, tenant: str, keys: str) -> list[Anchor]:
    rows = conn.execute(
        f"""SELECT {ANCHOR_COLUMNS} FROM proxy_anchors
            WHERE tenant = ? AND key IN (SELECT value FROM json_each(?))
            ORDER BY created_at DESC, seq DESC, conversation_id, key""",
        (tenant, keys),
    ).fetchall()
    return [anchor_of(row) for row in rows]
