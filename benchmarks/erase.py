"""`erase`: what a `Deletion` costs on a SQLite database of 100k and 1M events, and what merging the index would add.

The SQLite store erases the content of a deletion's targets in the deletion's transaction. Before SQLite 3.42, FTS5
only marks erased terms deleted; merging the index on every deletion ('optimize') would purge them, and this section
shows why the store does not: on a copy of the cached `load` log (with compactions) it times
- a deletion through `store.append` (the first one, then the median of the next ones);
- the same transaction in raw SQL (prepare, insert the tombstone, rewrite the body, move the head);
- 'optimize' alone, run after each of those raw deletions: what merging on every deletion would add.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import time

from contextfold.events import Deletion, ToolResult
from contextfold.store import SQLiteStore
from contextfold.store._common import prepare, redacted_body

from ._report import Table, median, ms
from ._stores import RESULTS, Context, LogSpec, build, progress

DELETIONS = 5


def _raw_delete(conn: sqlite3.Connection, conversation_id: str, seq: int, head: int) -> None:
    """What the store does for a one-target deletion, in raw SQL."""
    rows = prepare(conversation_id, [Deletion(targets=[seq])], head)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("SELECT head, checkpoint FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
    conn.executemany(
        "INSERT INTO events (conversation_id, seq, id, type, body, search_text) VALUES (?, ?, ?, ?, ?, ?)",
        [(conversation_id, r.seq, r.id, r.type, r.body, r.search_text) for r in rows],
    )
    found = conn.execute(
        "SELECT seq, body FROM events WHERE conversation_id = ? AND seq IN (SELECT value FROM json_each(?))",
        (conversation_id, json.dumps([seq])),
    ).fetchall()
    conn.executemany(
        "UPDATE events SET body = ?, search_text = NULL WHERE conversation_id = ? AND seq = ?",
        [(redacted_body(body), conversation_id, s) for s, body in found],
    )
    conn.execute("UPDATE conversations SET head = ? WHERE id = ?", (rows[-1].seq, conversation_id))
    conn.execute("COMMIT")


def _connect(path: str) -> sqlite3.Connection:
    """A connection set up as the store sets up its own."""
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "foreign_keys = ON", "secure_delete = ON"):
        conn.execute(f"PRAGMA {pragma}")
    return conn


async def run(ctx: Context) -> list[Table]:
    sizes = (100_000,) if ctx.quick else (100_000, 1_000_000)
    table = Table(
        "erase: one Deletion (one ~2 KB tool result) on SQLite",
        [
            "events",
            "database (MB)",
            "full-text index (MB)",
            "first deletion (ms)",
            f"next deletions, median of {DELETIONS - 1} (ms)",
            "raw SQL (ms)",
            "'optimize' it would add (ms)",
        ],
    )
    for size in sizes:
        spec = LogSpec(size, True)
        await build(spec)
        scratch = RESULTS / "erase-scratch.db"
        shutil.copyfile(spec.path, scratch)
        cid = spec.conversation_id
        store = await SQLiteStore.open(scratch)
        try:
            targets: list[int] = []
            for index in range(2 * DELETIONS):
                window = await store.read(cid, after=(index + 1) * size // (2 * DELETIONS + 2), limit=100)
                targets.append(next(e.seq for e in window if isinstance(e, ToolResult)))
            head = (await store.conversations.get(cid)).head
            through_store = []
            for seq in targets[:DELETIONS]:
                started = time.perf_counter()
                await store.append(cid, [Deletion(targets=[seq])], head)
                through_store.append(time.perf_counter() - started)
                head += 1
        finally:
            await store.close()
        with contextlib.closing(_connect(str(scratch))) as conn:
            raw, optimize = [], []
            for seq in targets[DELETIONS:]:
                started = time.perf_counter()
                _raw_delete(conn, cid, seq, head)
                raw.append(time.perf_counter() - started)
                head += 1
                started = time.perf_counter()
                conn.execute("INSERT INTO events_fts(events_fts) VALUES ('optimize')")
                optimize.append(time.perf_counter() - started)
            ((fts_bytes,),) = conn.execute("SELECT sum(length(block)) FROM events_fts_data").fetchall()
            ((pages,),) = conn.execute("PRAGMA page_count").fetchall()
            ((page_size,),) = conn.execute("PRAGMA page_size").fetchall()
        table.add(
            size,
            pages * page_size / 1e6,
            fts_bytes / 1e6,
            ms(through_store[0]),
            ms(median(through_store[1:])),
            ms(median(raw)),
            ms(median(optimize)),
        )
        progress(f"erase {size:,}: {ms(median(through_store[1:])):.0f} ms per deletion")
        for leftover in RESULTS.glob(scratch.name + "*"):
            leftover.unlink()
    table.notes.append(
        "'raw SQL' is the store's deletion transaction replayed on a connection set up like the store's (WAL, "
        "synchronous=NORMAL, secure_delete=ON). The store does not run 'optimize': besides its cost, on SQLite 3.40 "
        "it corrupted the index when run inside the deletion's transaction."
    )
    return [table]
