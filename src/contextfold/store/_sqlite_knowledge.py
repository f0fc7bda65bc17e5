"""Files, vector stores and chunks on SQLite: each call one function on a worker thread (writes on the writer).

Chunks are indexed by FTS5 (external content, Porter stemming) and ranked by BM25. Deletions cascade through
foreign keys, and the cascade fires the index's delete trigger, so erased text leaves the index too.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._knowledge import (
    CLOCK,
    FileRecord,
    Order,
    VectorFile,
    VectorStoreRecord,
    file_missing,
    file_of,
    store_missing,
    store_of,
    vector_file_missing,
    vector_file_of,
)
from ._knowledge_base import BaseFiles, BaseIndex, BaseVectorFiles, BaseVectorStores
from ._knowledge_sql import (
    Expiry,
    FilesQuery,
    KnowledgeSQL,
    file_params,
    finished_params,
    page_cursor,
    store_params,
)

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


class SQLiteFiles(_Workers, BaseFiles):
    async def _put(self, record: FileRecord, content: bytes) -> None:
        await self._writer.run(_put_file, record, content)

    async def get(self, file_id: str, *, tenant: str) -> FileRecord:
        return await self._reader.run(_file, file_id, tenant)

    async def content(self, file_id: str, *, tenant: str) -> bytes:
        return await self._reader.run(_content, file_id, tenant)

    async def _list(
        self, tenant: str, purpose: str | None, after: str | None, limit: int, order: Order
    ) -> list[FileRecord]:
        return await self._reader.run(_list_files, tenant, purpose, after, limit, order)

    async def delete(self, file_id: str, *, tenant: str) -> None:
        await self._writer.run(_delete_file, file_id, tenant)


class SQLiteVectorStores(_Workers, BaseVectorStores):
    async def _create(self, record: VectorStoreRecord) -> None:
        await self._writer.run(_create_store, record)

    async def get(self, vector_store_id: str, *, tenant: str) -> VectorStoreRecord:
        return await self._reader.run(_store, vector_store_id, tenant)

    async def _list(self, tenant: str, after: str | None, limit: int, order: Order) -> list[VectorStoreRecord]:
        return await self._reader.run(_list_stores, tenant, after, limit, order)

    async def _update(
        self, vector_store_id: str, tenant: str, name: str | None, metadata: str | None, expiry: Expiry | None
    ) -> VectorStoreRecord:
        return await self._writer.run(_update_store, vector_store_id, tenant, name, metadata, expiry)

    async def delete(self, vector_store_id: str, *, tenant: str) -> None:
        await self._writer.run(_delete_store, vector_store_id, tenant)


class SQLiteVectorFiles(_Workers, BaseVectorFiles):
    async def _add(
        self, vector_store_id: str, file_ids: list[str], tenant: str, row: tuple[str, str, str | None]
    ) -> list[VectorFile]:
        return await self._writer.run(_add, vector_store_id, file_ids, tenant, row)

    async def get(self, vector_store_id: str, file_id: str, *, tenant: str) -> VectorFile:
        return await self._reader.run(_vector_file, vector_store_id, file_id, tenant)

    async def _list(self, vector_store_id: str, tenant: str, query: FilesQuery) -> list[VectorFile]:
        return await self._reader.run(_list_vector_files, vector_store_id, tenant, query)

    async def _update(self, vector_store_id: str, file_id: str, tenant: str, attributes: str) -> VectorFile:
        return await self._writer.run(_update_vector_file, vector_store_id, file_id, tenant, attributes)

    async def remove(self, vector_store_id: str, file_id: str, *, tenant: str) -> None:
        await self._writer.run(_remove, vector_store_id, file_id, tenant)


class SQLiteIndex(_Workers, BaseIndex):
    async def pending(self, *, limit: int = 100) -> list[VectorFile]:
        return await self._reader.run(_pending, limit)

    async def sweep(self) -> int:
        return await self._writer.run(_sweep)

    async def _finish(
        self,
        vector_store_id: str,
        file_id: str,
        chunks: list[str],
        error: dict[str, str] | None,
        vectors: list[bytes | None],
    ) -> bool:
        return await self._writer.run(_finish, vector_store_id, file_id, chunks, error, vectors)

    async def _embedded(
        self, vector_store_ids: list[str], tenant: str, file_ids: Sequence[str] | None
    ) -> list[tuple[Any, ...]]:
        return await self._reader.run(_embedded, vector_store_ids, tenant, file_ids)

    async def _hit_rows(self, chunk_ids: list[int]) -> list[tuple[Any, ...]]:
        return await self._reader.run(_hit_rows, chunk_ids)

    async def cancel(self, vector_store_id: str, batch_id: str, *, tenant: str) -> int:
        return await self._writer.run(_cancel, vector_store_id, batch_id, tenant)

    async def chunks(self, vector_store_id: str, file_id: str, *, tenant: str) -> list[str]:
        return await self._reader.run(_chunks, vector_store_id, file_id, tenant)

    async def _search(
        self, vector_store_ids: list[str], tenant: str, terms: list[str], file_ids: Sequence[str] | None, limit: int
    ) -> list[tuple[Any, ...]]:
        match = " OR ".join(f'"{term}"' for term in terms)
        return await self._reader.run(_search, vector_store_ids, tenant, match, file_ids, limit)

    @staticmethod
    def _rank(rank: float) -> float:
        return -rank  # BM25 is lower for a better match


# --- functions that run on a worker thread ------------------------------------------------------------------

_SQL = KnowledgeSQL("?")


def _put_file(conn: sqlite3.Connection, record: FileRecord, content: bytes) -> None:
    conn.execute(_SQL.insert_file, file_params(record, content))


def _file(conn: sqlite3.Connection, file_id: str, tenant: str) -> FileRecord:
    row = conn.execute(_SQL.file, (file_id, tenant, CLOCK.now())).fetchone()
    if row is None:
        raise file_missing(file_id)
    return file_of(row)


def _content(conn: sqlite3.Connection, file_id: str, tenant: str) -> bytes:
    row = conn.execute(_SQL.content, (file_id, tenant, CLOCK.now())).fetchone()
    if row is None:
        raise file_missing(file_id)
    return bytes(row[0])


def _cursor(conn: sqlite3.Connection, table: str, after: str | None, tenant: str) -> tuple[float, str] | None:
    if after is None:
        return None
    return page_cursor(conn.execute(_SQL.cursor(table), (after, tenant)).fetchone(), after)


def _list_files(
    conn: sqlite3.Connection, tenant: str, purpose: str | None, after: str | None, limit: int, order: Order
) -> list[FileRecord]:
    sql, params = _SQL.list_files(tenant, purpose, _cursor(conn, "files", after, tenant), limit, order)
    return [file_of(row) for row in conn.execute(sql, params).fetchall()]


def _delete_file(conn: sqlite3.Connection, file_id: str, tenant: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        # The cascade erases the file's places in vector stores and their chunks (with their index entries).
        if conn.execute(_SQL.delete_file, (file_id, tenant, CLOCK.now())).rowcount == 0:
            raise file_missing(file_id)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _create_store(conn: sqlite3.Connection, record: VectorStoreRecord) -> None:
    conn.execute(_SQL.insert_store, store_params(record))


def _store_row(conn: sqlite3.Connection, vector_store_id: str, tenant: str) -> tuple[Any, ...]:
    row = conn.execute(_SQL.store, (vector_store_id, tenant, CLOCK.now())).fetchone()
    if row is None:
        raise store_missing(vector_store_id)
    return tuple(row)


def _with_counts(conn: sqlite3.Connection, row: tuple[Any, ...]) -> VectorStoreRecord:
    counts = conn.execute(_SQL.store_counts, (row[0],)).fetchall()
    (usage,) = conn.execute(_SQL.store_usage, (row[0],)).fetchone()
    return store_of(row, counts, int(usage))


def _store(conn: sqlite3.Connection, vector_store_id: str, tenant: str) -> VectorStoreRecord:
    return _with_counts(conn, _store_row(conn, vector_store_id, tenant))


def _list_stores(
    conn: sqlite3.Connection, tenant: str, after: str | None, limit: int, order: Order
) -> list[VectorStoreRecord]:
    sql, params = _SQL.list_stores(tenant, _cursor(conn, "vector_stores", after, tenant), limit, order)
    return [_with_counts(conn, tuple(row)) for row in conn.execute(sql, params).fetchall()]


def _update_store(
    conn: sqlite3.Connection,
    vector_store_id: str,
    tenant: str,
    name: str | None,
    metadata: str | None,
    expiry: Expiry | None,
) -> VectorStoreRecord:
    params = _update_params(name, metadata, vector_store_id, tenant)
    changed = conn.execute(_SQL.update_store, params)
    if changed.rowcount == 0:
        raise store_missing(vector_store_id)
    if expiry is not None:
        data = _store(conn, vector_store_id, tenant).data
        conn.execute(_SQL.set_expiry, expiry.params(data, params[2], vector_store_id))
    return _store(conn, vector_store_id, tenant)


def _delete_store(conn: sqlite3.Connection, vector_store_id: str, tenant: str) -> None:
    if conn.execute(_SQL.delete_store, (vector_store_id, tenant)).rowcount == 0:
        raise store_missing(vector_store_id)


def _add(
    conn: sqlite3.Connection, vector_store_id: str, file_ids: list[str], tenant: str, row: tuple[str, str, str | None]
) -> list[VectorFile]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        _store_row(conn, vector_store_id, tenant)
        for file_id in file_ids:
            _file(conn, file_id, tenant)  # another tenant's file is as missing as one never uploaded
        now = CLOCK.now()
        for file_id in file_ids:
            conn.execute(_SQL.add_file, (vector_store_id, file_id, tenant, now, *row))
        conn.execute(_SQL.touch_store, (now, now, vector_store_id))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return [_vector_file(conn, vector_store_id, file_id, tenant) for file_id in file_ids]


def _vector_file(conn: sqlite3.Connection, vector_store_id: str, file_id: str, tenant: str) -> VectorFile:
    row = conn.execute(_SQL.vector_file, (vector_store_id, file_id, tenant)).fetchone()
    if row is None:
        _store_row(conn, vector_store_id, tenant)
        raise vector_file_missing(vector_store_id, file_id)
    return vector_file_of(row)


def _list_vector_files(
    conn: sqlite3.Connection, vector_store_id: str, tenant: str, query: FilesQuery
) -> list[VectorFile]:
    _store_row(conn, vector_store_id, tenant)
    cursor = None
    if query.after is not None:
        found = conn.execute(_SQL.vector_file_cursor, (vector_store_id, query.after)).fetchone()
        cursor = page_cursor(found, query.after)
    sql, params = _SQL.list_vector_files(vector_store_id, query, cursor)
    return [vector_file_of(row) for row in conn.execute(sql, params).fetchall()]


def _update_vector_file(
    conn: sqlite3.Connection, vector_store_id: str, file_id: str, tenant: str, attributes: str
) -> VectorFile:
    conn.execute(_SQL.update_vector_file, (attributes, vector_store_id, file_id, tenant))
    return _vector_file(conn, vector_store_id, file_id, tenant)


def _remove(conn: sqlite3.Connection, vector_store_id: str, file_id: str, tenant: str) -> None:
    if conn.execute(_SQL.remove_vector_file, (vector_store_id, file_id, tenant)).rowcount == 0:
        _store_row(conn, vector_store_id, tenant)
        raise vector_file_missing(vector_store_id, file_id)


def _pending(conn: sqlite3.Connection, limit: int) -> list[VectorFile]:
    return [vector_file_of(row) for row in conn.execute(_SQL.pending, (limit,)).fetchall()]


def _finish(
    conn: sqlite3.Connection,
    vector_store_id: str,
    file_id: str,
    chunks: list[str],
    error: dict[str, str] | None,
    vectors: list[bytes | None],
) -> bool:
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(_SQL.file_status, (vector_store_id, file_id)).fetchone()
        if row is None or row[0] != "in_progress":
            conn.execute("ROLLBACK")
            return False
        conn.execute(_SQL.delete_chunks, (vector_store_id, file_id))
        if error is None:
            conn.executemany(
                "INSERT INTO chunks (vector_store_id, file_id, position, text, embedding) VALUES (?, ?, ?, ?, ?)",
                [
                    (vector_store_id, file_id, n, text, vector)
                    for n, (text, vector) in enumerate(zip(chunks, vectors, strict=True))
                ],
            )
        conn.execute(_SQL.finish, finished_params(vector_store_id, file_id, chunks, error))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return True


def _chunks(conn: sqlite3.Connection, vector_store_id: str, file_id: str, tenant: str) -> list[str]:
    _vector_file(conn, vector_store_id, file_id, tenant)
    return [str(row[0]) for row in conn.execute(_SQL.chunks, (vector_store_id, file_id)).fetchall()]


def _cancel(conn: sqlite3.Connection, vector_store_id: str, batch_id: str, tenant: str) -> int:
    _store_row(conn, vector_store_id, tenant)
    return int(conn.execute(_SQL.cancel, (vector_store_id, batch_id)).rowcount)


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
                AND v.status = 'completed'{only} AND (f.expires_at IS NULL OR f.expires_at > ?)
            ORDER BY bm25(chunks_fts), c.file_id, c.position LIMIT ?""",
        (
            match,
            json.dumps(vector_store_ids),
            *([json.dumps(list(file_ids))] if file_ids is not None else []),
            CLOCK.now(),  # an expired file's chunks are missing with it, before the sweep erases them
            limit,
        ),
    ).fetchall()
    return [tuple(row) for row in rows]


def _embedded(
    conn: sqlite3.Connection, vector_store_ids: list[str], tenant: str, file_ids: Sequence[str] | None
) -> list[tuple[Any, ...]]:
    for vector_store_id in vector_store_ids:
        _store_row(conn, vector_store_id, tenant)
    only = "" if file_ids is None else " AND c.file_id IN (SELECT value FROM json_each(?))"
    rows = conn.execute(
        f"""SELECT c.rowid, c.embedding FROM chunks c
            JOIN vector_store_files v ON v.vector_store_id = c.vector_store_id AND v.file_id = c.file_id
            WHERE c.vector_store_id IN (SELECT value FROM json_each(?)) AND c.embedding IS NOT NULL
                AND v.status = 'completed'{only}""",
        (json.dumps(vector_store_ids), *([json.dumps(list(file_ids))] if file_ids is not None else [])),
    ).fetchall()
    return [tuple(row) for row in rows]


def _update_params(name: str | None, metadata: str | None, vector_store_id: str, tenant: str) -> tuple[Any, ...]:
    now = CLOCK.now()
    return (name, metadata, now, now, vector_store_id, tenant, now)


def _sweep(conn: sqlite3.Connection) -> int:
    # The cascade erases each expired store's files' places in it and their chunks (with their vectors).
    # An expired file goes the same way: its bytes, its places in every store and their chunks.
    now = CLOCK.now()
    return int(conn.execute(_SQL.sweep, (now,)).rowcount) + int(conn.execute(_SQL.sweep_files, (now,)).rowcount)


def _hit_rows(conn: sqlite3.Connection, chunk_ids: list[int]) -> list[tuple[Any, ...]]:
    rows = conn.execute(
        """SELECT c.rowid, c.vector_store_id, c.file_id, f.filename, c.text, v.attributes FROM chunks c
            JOIN vector_store_files v ON v.vector_store_id = c.vector_store_id AND v.file_id = c.file_id
            JOIN files f ON f.id = c.file_id
            WHERE c.rowid IN (SELECT value FROM json_each(?)) AND (f.expires_at IS NULL OR f.expires_at > ?)""",
        (json.dumps(chunk_ids), CLOCK.now()),
    ).fetchall()
    return [tuple(row) for row in rows]
