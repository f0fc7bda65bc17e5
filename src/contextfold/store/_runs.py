"""What a background response leaves in the store for every replica: its stream events, and a cancel request.

The replica running a background response writes its stream events here as they happen (in batches), so a client
can resume the stream from any replica; a cancel asked on any replica is a row here, which the running replica
polls for. Both go with their response (and so with its conversation) when it is deleted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from psycopg import errors

from ._postgres_serving import Connect

if TYPE_CHECKING:
    from ._sqlite import Worker

Frames = Sequence[tuple[int, str]]
"""Stream events as (sequence number, the event's JSON)."""


class SQLiteRuns:
    def __init__(self, writer: Worker, reader: Worker) -> None:
        self._writer = writer
        self._reader = reader

    async def add(self, response_id: str, frames: Frames) -> None:
        if frames:
            await self._writer.run(_add, response_id, list(frames))

    async def after(self, response_id: str, seq: int, *, limit: int = 1_000) -> list[tuple[int, str]]:
        return await self._reader.run(_after, response_id, seq, limit)

    async def cancel(self, response_id: str) -> None:
        await self._writer.run(_cancel, response_id)

    async def cancelled(self, response_ids: Sequence[str]) -> list[str]:
        if not response_ids:
            return []
        return await self._reader.run(_cancelled, list(response_ids))


def _add(conn: sqlite3.Connection, response_id: str, frames: list[tuple[int, str]]) -> None:
    with conn:
        conn.executemany(
            "INSERT OR IGNORE INTO response_events (response_id, seq, event) VALUES (?, ?, ?)",
            [(response_id, seq, event) for seq, event in frames],
        )


def _after(conn: sqlite3.Connection, response_id: str, seq: int, limit: int) -> list[tuple[int, str]]:
    rows = conn.execute(
        "SELECT seq, event FROM response_events WHERE response_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (response_id, seq, limit),
    ).fetchall()
    return [(int(r[0]), str(r[1])) for r in rows]


def _cancel(conn: sqlite3.Connection, response_id: str) -> None:
    with conn:
        conn.execute("INSERT OR IGNORE INTO response_cancels (response_id) VALUES (?)", (response_id,))


def _cancelled(conn: sqlite3.Connection, response_ids: list[str]) -> list[str]:
    marks = ", ".join("?" * len(response_ids))
    rows = conn.execute(f"SELECT response_id FROM response_cancels WHERE response_id IN ({marks})", response_ids)
    return [str(r[0]) for r in rows.fetchall()]


class PostgresRuns:
    def __init__(self, connect: Connect) -> None:
        self._connect = connect

    async def add(self, response_id: str, frames: Frames) -> None:
        if not frames:
            return
        async with self._connect() as conn:
            try:
                await conn.execute(
                    """INSERT INTO response_events (response_id, seq, event)
                       SELECT %s, s, e FROM unnest(%s::bigint[], %s::text[]) AS f(s, e)
                       ON CONFLICT DO NOTHING""",
                    (response_id, [s for s, _ in frames], [e for _, e in frames]),
                )
            except errors.ForeignKeyViolation:  # the response was deleted meanwhile: nobody can resume it
                return

    async def after(self, response_id: str, seq: int, *, limit: int = 1_000) -> list[tuple[int, str]]:
        async with self._connect() as conn:
            cur = await conn.execute(
                "SELECT seq, event FROM response_events WHERE response_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                (response_id, seq, limit),
            )
            return [(int(r[0]), str(r[1])) for r in await cur.fetchall()]

    async def cancel(self, response_id: str) -> None:
        async with self._connect() as conn:
            try:
                await conn.execute(
                    "INSERT INTO response_cancels (response_id) VALUES (%s) ON CONFLICT DO NOTHING", (response_id,)
                )
            except errors.ForeignKeyViolation:
                return

    async def cancelled(self, response_ids: Sequence[str]) -> list[str]:
        if not response_ids:
            return []
        async with self._connect() as conn:
            cur = await conn.execute(
                "SELECT response_id FROM response_cancels WHERE response_id = ANY(%s::text[])", (list(response_ids),)
            )
            return [str(r[0]) for r in await cur.fetchall()]
