"""Files, vector stores and chunks on SQLite: each call one function on a worker thread (writes on the writer).

Chunks are indexed by FTS5 (external content, Porter stemming) and ranked by BM25. Deletions cascade through
foreign keys, and the cascade fires the index's delete trigger, so erased text leaves the index too.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..events import new_id
from ._knowledge import (
    CANDIDATES,
    FILE_COLUMNS,
    STORE_COLUMNS,
    VECTOR_FILE_COLUMNS,
    Attributes,
    ChunkHit,
    FileRecord,
    Order,
    VectorFile,
    VectorStoreRecord,
    after_missing,
    best_hits,
    check_attributes,
    check_file_ids,
    check_filename,
    check_metadata,
    check_name,
    check_page_limit,
    check_purpose,
    check_status,
    file_missing,
    file_of,
    fts_match,
    page_clause,
    score_of,
    store_missing,
    store_of,
    vector_file_missing,
    vector_file_of,
)
from ._serving import check_tenant

if TYPE_CHECKING:
    from ._sqlite import Worker


class SQLiteKnowledge:
    def __init__(self, writer: Worker, reader: Worker) -> None:
        self.files = SQLiteFiles(writer, reader)
        self.vector_stores = SQLiteVectorStores(writer, reader)
        self.vector_files = SQLiteVectorFiles(writer, reader)
        self.index = SQLiteIndex(writer, reader)


class _Workers:
    def __init__(self, writer: Worker, reader: Worker) -> None:
        self._writer = writer
        self._reader = reader


class SQLiteFiles(_Workers):
    async def put(self, tenant: str, filename: str, purpose: str, content: bytes) -> FileRecord:
        record = FileRecord(
            new_id("file"),
            check_tenant(tenant),
            check_filename(filename),
            check_purpose(purpose),
            len(content),
            time.time(),
        )
        await self._writer.run(_put_file, record, content)
        return record

    async def get(self, file_id: str, *, tenant: str) -> FileRecord:
        return await self._reader.run(_file, file_id, tenant)

    async def content(self, file_id: str, *, tenant: str) -> bytes:
        return await self._reader.run(_content, file_id, tenant)

    async def list(
        self,
        *,
        tenant: str,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = 20,
        order: Order = "desc",
    ) -> list[FileRecord]:
        check_page_limit(limit, most=10_001)
        return await self._reader.run(_list_files, tenant, purpose, after, limit, order)

    async def delete(self, file_id: str, *, tenant: str) -> None:
        await self._writer.run(_delete_file, file_id, tenant)


class SQLiteVectorStores(_Workers):
    async def create(
        self, tenant: str, *, name: str | None, metadata: dict[str, str], data: dict[str, Any]
    ) -> VectorStoreRecord:
        now = time.time()
        record = VectorStoreRecord(
            new_id("vs"), check_tenant(tenant), now, check_name(name), check_metadata(metadata), dict(data), now
        )
        await self._writer.run(_create_store, record)
        return record

    async def get(self, vector_store_id: str, *, tenant: str) -> VectorStoreRecord:
        return await self._reader.run(_store, vector_store_id, tenant)

    async def list(
        self, *, tenant: str, after: str | None = None, limit: int = 20, order: Order = "desc"
    ) -> list[VectorStoreRecord]:
        check_page_limit(limit)
        return await self._reader.run(_list_stores, tenant, after, limit, order)

    async def update(
        self, vector_store_id: str, *, tenant: str, name: str | None, metadata: dict[str, str] | None
    ) -> VectorStoreRecord:
        check_name(name)
        shown = None if metadata is None else json.dumps(check_metadata(metadata))
        return await self._writer.run(_update_store, vector_store_id, tenant, name, shown)

    async def delete(self, vector_store_id: str, *, tenant: str) -> None:
        await self._writer.run(_delete_store, vector_store_id, tenant)


class SQLiteVectorFiles(_Workers):
    async def add(
        self,
        vector_store_id: str,
        file_ids: Sequence[str],
        *,
        tenant: str,
        attributes: Attributes,
        chunking: dict[str, int],
        batch_id: str | None = None,
    ) -> list[VectorFile]:
        ids = check_file_ids(file_ids)
        row = (json.dumps(check_attributes(attributes)), json.dumps(chunking), batch_id)
        return await self._writer.run(_add, vector_store_id, ids, tenant, row)

    async def get(self, vector_store_id: str, file_id: str, *, tenant: str) -> VectorFile:
        return await self._reader.run(_vector_file, vector_store_id, file_id, tenant)

    async def list(
        self,
        vector_store_id: str,
        *,
        tenant: str,
        status: str | None = None,
        batch_id: str | None = None,
        after: str | None = None,
        limit: int = 20,
        order: Order = "desc",
    ) -> list[VectorFile]:
        check_page_limit(limit, most=10_001)
        check_status(status)
        return await self._reader.run(
            _list_vector_files, vector_store_id, tenant, status, batch_id, after, limit, order
        )

    async def update(self, vector_store_id: str, file_id: str, *, tenant: str, attributes: Attributes) -> VectorFile:
        shown = json.dumps(check_attributes(attributes))
        return await self._writer.run(_update_vector_file, vector_store_id, file_id, tenant, shown)

    async def remove(self, vector_store_id: str, file_id: str, *, tenant: str) -> None:
        await self._writer.run(_remove, vector_store_id, file_id, tenant)


class SQLiteIndex(_Workers):
    async def pending(self, *, limit: int = 100) -> list[VectorFile]:
        return await self._reader.run(_pending, limit)

    async def finish(
        self, vector_store_id: str, file_id: str, *, chunks: Sequence[str] | None, error: dict[str, str] | None = None
    ) -> bool:
        return await self._writer.run(_finish, vector_store_id, file_id, list(chunks or ()), error)

    async def cancel(self, vector_store_id: str, batch_id: str, *, tenant: str) -> int:
        return await self._writer.run(_cancel, vector_store_id, batch_id, tenant)

    async def chunks(self, vector_store_id: str, file_id: str, *, tenant: str) -> list[str]:
        return await self._reader.run(_chunks, vector_store_id, file_id, tenant)

    async def search(
        self,
        vector_store_ids: Sequence[str],
        query: str,
        *,
        tenant: str,
        file_ids: Sequence[str] | None = None,
        limit: int = 10,
    ) -> list[ChunkHit]:
        check_page_limit(limit)
        terms = fts_match(query)
        if terms is None or (file_ids is not None and not file_ids):
            return []
        match = " OR ".join(f'"{term}"' for term in terms)
        rows = await self._reader.run(_search, list(vector_store_ids), tenant, match, file_ids, limit * CANDIDATES)
        hits = [
            ChunkHit(str(vs), str(fid), str(name), str(text), score_of(terms, text, -float(rank)), json.loads(attrs))
            for vs, fid, name, text, rank, attrs in rows
        ]
        return best_hits(hits, limit)


# --- functions that run on a worker thread ------------------------------------------------------------------


def _put_file(conn: sqlite3.Connection, record: FileRecord, content: bytes) -> None:
    conn.execute(
        f"INSERT INTO files ({FILE_COLUMNS}, content) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (record.id, record.tenant, record.filename, record.purpose, record.bytes, record.created_at, content),
    )


def _file(conn: sqlite3.Connection, file_id: str, tenant: str) -> FileRecord:
    row = conn.execute(f"SELECT {FILE_COLUMNS} FROM files WHERE id = ? AND tenant = ?", (file_id, tenant)).fetchone()
    if row is None:
        raise file_missing(file_id)
    return file_of(row)


def _content(conn: sqlite3.Connection, file_id: str, tenant: str) -> bytes:
    row = conn.execute("SELECT content FROM files WHERE id = ? AND tenant = ?", (file_id, tenant)).fetchone()
    if row is None:
        raise file_missing(file_id)
    return bytes(row[0])


def _cursor(conn: sqlite3.Connection, table: str, after: str | None, tenant: str) -> tuple[float, str] | None:
    if after is None:
        return None
    row = conn.execute(f"SELECT created_at, id FROM {table} WHERE id = ? AND tenant = ?", (after, tenant)).fetchone()
    if row is None:
        raise after_missing(after)
    return float(row[0]), str(row[1])


def _list_files(
    conn: sqlite3.Connection, tenant: str, purpose: str | None, after: str | None, limit: int, order: Order
) -> list[FileRecord]:
    clause, params = page_clause("?", order, _cursor(conn, "files", after, tenant))
    where = " AND purpose = ?" if purpose else ""
    rows = conn.execute(
        f"SELECT {FILE_COLUMNS} FROM files WHERE tenant = ?{where}{clause} LIMIT ?",
        (tenant, *([purpose] if purpose else []), *params, limit),
    ).fetchall()
    return [file_of(row) for row in rows]


def _delete_file(conn: sqlite3.Connection, file_id: str, tenant: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        # The cascade erases the file's places in vector stores and their chunks (with their index entries).
        if conn.execute("DELETE FROM files WHERE id = ? AND tenant = ?", (file_id, tenant)).rowcount == 0:
            raise file_missing(file_id)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _create_store(conn: sqlite3.Connection, record: VectorStoreRecord) -> None:
    conn.execute(
        f"INSERT INTO vector_stores ({STORE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            record.id,
            record.tenant,
            record.created_at,
            record.name,
            json.dumps(record.metadata),
            json.dumps(record.data),
            record.last_active_at,
        ),
    )


def _store_row(conn: sqlite3.Connection, vector_store_id: str, tenant: str) -> tuple[Any, ...]:
    row = conn.execute(
        f"SELECT {STORE_COLUMNS} FROM vector_stores WHERE id = ? AND tenant = ?", (vector_store_id, tenant)
    ).fetchone()
    if row is None:
        raise store_missing(vector_store_id)
    return tuple(row)


def _with_counts(conn: sqlite3.Connection, row: tuple[Any, ...]) -> VectorStoreRecord:
    counts = conn.execute(
        "SELECT status, count(*) FROM vector_store_files WHERE vector_store_id = ? GROUP BY status", (row[0],)
    ).fetchall()
    (usage,) = conn.execute(
        "SELECT coalesce(sum(usage_bytes), 0) FROM vector_store_files WHERE vector_store_id = ?", (row[0],)
    ).fetchone()
    return store_of(row, counts, int(usage))


def _store(conn: sqlite3.Connection, vector_store_id: str, tenant: str) -> VectorStoreRecord:
    return _with_counts(conn, _store_row(conn, vector_store_id, tenant))


def _list_stores(
    conn: sqlite3.Connection, tenant: str, after: str | None, limit: int, order: Order
) -> list[VectorStoreRecord]:
    clause, params = page_clause("?", order, _cursor(conn, "vector_stores", after, tenant))
    rows = conn.execute(
        f"SELECT {STORE_COLUMNS} FROM vector_stores WHERE tenant = ?{clause} LIMIT ?", (tenant, *params, limit)
    ).fetchall()
    return [_with_counts(conn, tuple(row)) for row in rows]


def _update_store(
    conn: sqlite3.Connection, vector_store_id: str, tenant: str, name: str | None, metadata: str | None
) -> VectorStoreRecord:
    changed = conn.execute(
        "UPDATE vector_stores SET name = coalesce(?, name), metadata = coalesce(?, metadata), last_active_at = ?"
        " WHERE id = ? AND tenant = ?",
        (name, metadata, time.time(), vector_store_id, tenant),
    )
    if changed.rowcount == 0:
        raise store_missing(vector_store_id)
    return _store(conn, vector_store_id, tenant)


def _delete_store(conn: sqlite3.Connection, vector_store_id: str, tenant: str) -> None:
    if conn.execute("DELETE FROM vector_stores WHERE id = ? AND tenant = ?", (vector_store_id, tenant)).rowcount == 0:
        raise store_missing(vector_store_id)


def _add(
    conn: sqlite3.Connection, vector_store_id: str, file_ids: list[str], tenant: str, row: tuple[str, str, str | None]
) -> list[VectorFile]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        _store_row(conn, vector_store_id, tenant)
        for file_id in file_ids:
            _file(conn, file_id, tenant)  # another tenant's file is as missing as one never uploaded
        now = time.time()
        for file_id in file_ids:
            # Adding a file again queues it again: its old chunks go when the new ones are written.
            conn.execute(
                f"""INSERT INTO vector_store_files ({VECTOR_FILE_COLUMNS})
                    VALUES (?, ?, ?, ?, 'in_progress', ?, ?, NULL, 0, ?)
                    ON CONFLICT (vector_store_id, file_id) DO UPDATE SET status = 'in_progress',
                        attributes = excluded.attributes, chunking = excluded.chunking, last_error = NULL,
                        batch_id = excluded.batch_id, created_at = excluded.created_at""",
                (vector_store_id, file_id, tenant, now, *row),
            )
        conn.execute("UPDATE vector_stores SET last_active_at = ? WHERE id = ?", (now, vector_store_id))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return [_vector_file(conn, vector_store_id, file_id, tenant) for file_id in file_ids]


def _vector_file(conn: sqlite3.Connection, vector_store_id: str, file_id: str, tenant: str) -> VectorFile:
    row = conn.execute(
        f"SELECT {VECTOR_FILE_COLUMNS} FROM vector_store_files WHERE vector_store_id = ? AND file_id = ?"
        " AND tenant = ?",
        (vector_store_id, file_id, tenant),
    ).fetchone()
    if row is None:
        _store_row(conn, vector_store_id, tenant)
        raise vector_file_missing(vector_store_id, file_id)
    return vector_file_of(row)


def _list_vector_files(
    conn: sqlite3.Connection,
    vector_store_id: str,
    tenant: str,
    status: str | None,
    batch_id: str | None,
    after: str | None,
    limit: int,
    order: Order,
) -> list[VectorFile]:
    _store_row(conn, vector_store_id, tenant)
    cursor = None
    if after is not None:
        found = conn.execute(
            "SELECT created_at, file_id FROM vector_store_files WHERE vector_store_id = ? AND file_id = ?",
            (vector_store_id, after),
        ).fetchone()
        if found is None:
            raise after_missing(after)
        cursor = (float(found[0]), str(found[1]))
    clause, params = page_clause("?", order, cursor, "file_id")
    where, extra = "", []
    if status is not None:
        where, extra = " AND status = ?", [status]
    if batch_id is not None:
        where, extra = where + " AND batch_id = ?", [*extra, batch_id]
    rows = conn.execute(
        f"SELECT {VECTOR_FILE_COLUMNS} FROM vector_store_files WHERE vector_store_id = ?{where}{clause} LIMIT ?",
        (vector_store_id, *extra, *params, limit),
    ).fetchall()
    return [vector_file_of(row) for row in rows]


def _update_vector_file(
    conn: sqlite3.Connection, vector_store_id: str, file_id: str, tenant: str, attributes: str
) -> VectorFile:
    conn.execute(
        "UPDATE vector_store_files SET attributes = ? WHERE vector_store_id = ? AND file_id = ? AND tenant = ?",
        (attributes, vector_store_id, file_id, tenant),
    )
    return _vector_file(conn, vector_store_id, file_id, tenant)


def _remove(conn: sqlite3.Connection, vector_store_id: str, file_id: str, tenant: str) -> None:
    gone = conn.execute(
        "DELETE FROM vector_store_files WHERE vector_store_id = ? AND file_id = ? AND tenant = ?",
        (vector_store_id, file_id, tenant),
    )
    if gone.rowcount == 0:
        _store_row(conn, vector_store_id, tenant)
        raise vector_file_missing(vector_store_id, file_id)


def _pending(conn: sqlite3.Connection, limit: int) -> list[VectorFile]:
    rows = conn.execute(
        f"SELECT {VECTOR_FILE_COLUMNS} FROM vector_store_files WHERE status = 'in_progress'"
        " ORDER BY created_at, vector_store_id, file_id LIMIT ?",
        (limit,),
    ).fetchall()
    return [vector_file_of(row) for row in rows]


def _finish(
    conn: sqlite3.Connection, vector_store_id: str, file_id: str, chunks: list[str], error: dict[str, str] | None
) -> bool:
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(
            "SELECT status FROM vector_store_files WHERE vector_store_id = ? AND file_id = ?",
            (vector_store_id, file_id),
        ).fetchone()
        if row is None or row[0] != "in_progress":
            conn.execute("ROLLBACK")
            return False
        conn.execute("DELETE FROM chunks WHERE vector_store_id = ? AND file_id = ?", (vector_store_id, file_id))
        if error is None:
            conn.executemany(
                "INSERT INTO chunks (vector_store_id, file_id, position, text) VALUES (?, ?, ?, ?)",
                [(vector_store_id, file_id, n, text) for n, text in enumerate(chunks)],
            )
        usage = sum(len(text.encode()) for text in chunks) if error is None else 0
        conn.execute(
            "UPDATE vector_store_files SET status = ?, last_error = ?, usage_bytes = ?"
            " WHERE vector_store_id = ? AND file_id = ?",
            (
                "failed" if error else "completed",
                json.dumps(error) if error else None,
                usage,
                vector_store_id,
                file_id,
            ),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return True


def _chunks(conn: sqlite3.Connection, vector_store_id: str, file_id: str, tenant: str) -> list[str]:
    _vector_file(conn, vector_store_id, file_id, tenant)
    rows = conn.execute(
        "SELECT text FROM chunks WHERE vector_store_id = ? AND file_id = ? ORDER BY position",
        (vector_store_id, file_id),
    ).fetchall()
    return [str(row[0]) for row in rows]


def _cancel(conn: sqlite3.Connection, vector_store_id: str, batch_id: str, tenant: str) -> int:
    _store_row(conn, vector_store_id, tenant)
    cur = conn.execute(
        "UPDATE vector_store_files SET status = 'cancelled' WHERE vector_store_id = ? AND batch_id = ?"
        " AND status = 'in_progress'",
        (vector_store_id, batch_id),
    )
    return int(cur.rowcount)


def _search(
    conn: sqlite3.Connection,
    vector_store_ids: list[str],
    tenant: str,
    match: str,
    file_ids: Sequence[str] | None,
    limit: int,
) -> list[tuple[Any, ...]]:
    for vector_store_id in vector_store_ids:
        _store_row(conn, vector_store_id, tenant)
    only = "" if file_ids is None else " AND c.file_id IN (SELECT value FROM json_each(?))"
    rows = conn.execute(
        f"""SELECT c.vector_store_id, c.file_id, f.filename, c.text, bm25(chunks_fts), v.attributes
            FROM chunks_fts JOIN chunks c ON c.rowid = chunks_fts.rowid
            JOIN vector_store_files v ON v.vector_store_id = c.vector_store_id AND v.file_id = c.file_id
            JOIN files f ON f.id = c.file_id
            WHERE chunks_fts MATCH ? AND c.vector_store_id IN (SELECT value FROM json_each(?))
                AND v.status = 'completed'{only}
            ORDER BY bm25(chunks_fts), c.file_id, c.position LIMIT ?""",
        (match, json.dumps(vector_store_ids), *([json.dumps(list(file_ids))] if file_ids is not None else []), limit),
    ).fetchall()
    return [tuple(row) for row in rows]
