"""A turn's writes in one transaction (`ServerStore.commit_turn`), on both stores.

A turn used to write four times: its events, its response record, the proxy's anchors and the lease release, each
its own round trip. Here they are one transaction on one connection: the append's head check first (a stale head
is a `ConflictError` and writes nothing), then the rows, the record, the anchors, and the release last, so the
conversation is given back only with everything in it. Arguments are checked before anything is sent, with the
same rules as the one-by-one calls (`_common.prepare`, `_serving.response_row`, `_anchors.check_keys`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import InvalidRequestError
from ._anchors import check_keys, check_seq
from ._protocol import ResponseRecord, TurnAnchors
from ._serving import conversation_missing, response_row

if TYPE_CHECKING:
    from ._common import Row
    from ._postgres import Conn


@dataclass(frozen=True, slots=True)
class Turn:
    """A turn's records, checked and as rows: the response row, and the anchors' seq and distinct keys."""

    response: tuple[Any, ...] | None
    anchor_seq: int
    anchor_keys: list[str]


def checked_turn(conversation_id: str, response: ResponseRecord | None, anchors: TurnAnchors | None) -> Turn:
    if response is not None and response.conversation_id != conversation_id:
        raise InvalidRequestError(
            f"response {response.id!r} belongs to conversation {response.conversation_id!r}, "
            f"not {conversation_id!r}: commit a turn's response with its own conversation"
        )
    row = response_row(response) if response is not None else None
    keys = check_keys(anchors.keys) if anchors is not None else []
    seq = check_seq(anchors.seq) if anchors is not None else 0
    return Turn(row, seq, keys)


def commit_sqlite(
    conn: sqlite3.Connection, conversation_id: str, rows: list[Row], expected_head: int, turn: Turn, release: str | None
) -> None:
    """On the SQLite writer thread: everything inside one BEGIN IMMEDIATE."""
    from ._sqlite import append_rows
    from ._sqlite_anchors import PUT as put_anchors
    from ._sqlite_serving import _put_response as put_response

    conn.execute("BEGIN IMMEDIATE")
    try:
        append_rows(conn, conversation_id, rows, expected_head)  # raises NotFoundError for no conversation
        if turn.response is not None:
            put_response(conn, turn.response)
        if turn.anchor_keys:
            conn.execute(put_anchors, (turn.anchor_seq, time.time(), json.dumps(turn.anchor_keys), conversation_id))
        if release is not None:
            conn.execute("DELETE FROM turn_leases WHERE conversation_id = ? AND owner = ?", (conversation_id, release))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


async def commit_postgres(conn: Conn, conversation_id: str, turn: Turn, release: str | None) -> None:
    """The records after the append, inside its transaction (the conversation row is locked: it exists)."""
    from psycopg import errors  # here: SQLite-only users never load the PostgreSQL driver

    from ._postgres_anchors import _PUT as put_anchors
    from ._postgres_serving import _PUT_RESPONSE as put_response

    try:
        if turn.response is not None:
            await conn.execute(put_response, turn.response)
        if turn.anchor_keys:
            await conn.execute(put_anchors, (turn.anchor_seq, turn.anchor_keys, conversation_id))
    except errors.ForeignKeyViolation:
        raise conversation_missing(conversation_id) from None
    if release is not None:
        await conn.execute(
            "DELETE FROM turn_leases WHERE conversation_id = %s AND owner = %s", (conversation_id, release)
        )
