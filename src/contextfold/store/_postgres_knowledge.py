"""Files, vector stores and chunks on PostgreSQL: pooled autocommit connections, a transaction where a call writes
more than one row.

Chunks carry a generated `tsvector` (English configuration) under a GIN index and are ranked by `ts_rank`.
Deletions cascade through foreign keys, so a deleted file leaves no chunk behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

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
from ._knowledge_pgvector import Pgvector, dims, literal
from ._knowledge_sql import (
    Expiry,
    FilesQuery,
    KnowledgeSQL,
    file_params,
    finished_params,
    page_cursor,
    store_params,
)
from ._postgres_serving import Connect

Conn = AsyncConnection[TupleRow]
_SQL = KnowledgeSQL("%s")


class PostgresKnowledge:
    def __init__(self, connect: Connect) -> None:
        self.files = PostgresFiles(connect)
        self.vector_stores = PostgresVectorStores(connect)
        self.vector_files = PostgresVectorFiles(connect)
        self.index = PostgresIndex(connect)


class _Pooled:
    def __init__(self, connect: Connect) -> None:
        self._connect = connect


class PostgresFiles(_Pooled, BaseFiles):
    async def _put(self, record: FileRecord, content: bytes) -> None:
        async with self._connect() as conn:
            await conn.execute(_SQL.insert_file, file_params(record, content))

    async def get(self, file_id: str, *, tenant: str) -> FileRecord:
        async with self._connect() as conn:
            return await _file(conn, file_id, tenant)

    async def content(self, file_id: str, *, tenant: str) -> bytes:
        async with self._connect() as conn:
            cur = await conn.execute(_SQL.content, (file_id, tenant, CLOCK.now()))
            row = await cur.fetchone()
        if row is None:
            raise file_missing(file_id)
        return bytes(row[0])

    async def _list(
        self, tenant: str, purpose: str | None, after: str | None, limit: int, order: Order
    ) -> list[FileRecord]:
        async with self._connect() as conn:
            cursor = await _cursor(conn, "files", after, tenant)
            cur = await conn.execute(*_SQL.list_files(tenant, purpose, cursor, limit, order))
            return [file_of(row) for row in await cur.fetchall()]

    async def delete(self, file_id: str, *, tenant: str) -> None:
        async with self._connect() as conn:
            cur = await conn.execute(_SQL.delete_file, (file_id, tenant, CLOCK.now()))
            if cur.rowcount == 0:
                raise file_missing(file_id)


class PostgresVectorStores(_Pooled, BaseVectorStores):
    async def _create(self, record: VectorStoreRecord) -> None:
        async with self._connect() as conn:
            await conn.execute(_SQL.insert_store, store_params(record))

    async def get(self, vector_store_id: str, *, tenant: str) -> VectorStoreRecord:
        async with self._connect() as conn:
            return await _with_counts(conn, await _store_row(conn, vector_store_id, tenant))

    async def _list(self, tenant: str, after: str | None, limit: int, order: Order) -> list[VectorStoreRecord]:
        async with self._connect() as conn:
            cursor = await _cursor(conn, "vector_stores", after, tenant)
            cur = await conn.execute(*_SQL.list_stores(tenant, cursor, limit, order))
            return [await _with_counts(conn, tuple(row)) for row in await cur.fetchall()]

    async def _update(
        self, vector_store_id: str, tenant: str, name: str | None, metadata: str | None, expiry: Expiry | None
    ) -> VectorStoreRecord:
        async with self._connect() as conn:
            async with conn.transaction():
                params = _update_params(name, metadata, vector_store_id, tenant)
                cur = await conn.execute(_SQL.update_store, params)
                if cur.rowcount == 0:
                    raise store_missing(vector_store_id)
                if expiry is not None:
                    data = store_of(await _store_row(conn, vector_store_id, tenant)).data
                    await conn.execute(_SQL.set_expiry, expiry.params(data, params[2], vector_store_id))
            return await _with_counts(conn, await _store_row(conn, vector_store_id, tenant))

    async def delete(self, vector_store_id: str, *, tenant: str) -> None:
        async with self._connect() as conn:
            cur = await conn.execute(_SQL.delete_store, (vector_store_id, tenant))
            if cur.rowcount == 0:
                raise store_missing(vector_store_id)


class PostgresVectorFiles(_Pooled, BaseVectorFiles):
    async def _add(
        self, vector_store_id: str, file_ids: list[str], tenant: str, row: tuple[str, str, str | None]
    ) -> list[VectorFile]:
        async with self._connect() as conn:
            async with conn.transaction():
                await _store_row(conn, vector_store_id, tenant)
                for file_id in file_ids:
                    await _file(conn, file_id, tenant)  # another tenant's file is as missing as one never uploaded
                now = CLOCK.now()
                for file_id in file_ids:
                    await conn.execute(_SQL.add_file, (vector_store_id, file_id, tenant, now, *row))
                await conn.execute(_SQL.touch_store, (now, now, vector_store_id))
            return [await _vector_file(conn, vector_store_id, file_id, tenant) for file_id in file_ids]

    async def get(self, vector_store_id: str, file_id: str, *, tenant: str) -> VectorFile:
        async with self._connect() as conn:
            return await _vector_file(conn, vector_store_id, file_id, tenant)

    async def _list(self, vector_store_id: str, tenant: str, query: FilesQuery) -> list[VectorFile]:
        async with self._connect() as conn:
            await _store_row(conn, vector_store_id, tenant)
            cursor = None
            if query.after is not None:
                cur = await conn.execute(_SQL.vector_file_cursor, (vector_store_id, query.after))
                cursor = page_cursor(await cur.fetchone(), query.after)
            cur = await conn.execute(*_SQL.list_vector_files(vector_store_id, query, cursor))
            return [vector_file_of(row) for row in await cur.fetchall()]

    async def _update(self, vector_store_id: str, file_id: str, tenant: str, attributes: str) -> VectorFile:
        async with self._connect() as conn:
            await conn.execute(_SQL.update_vector_file, (attributes, vector_store_id, file_id, tenant))
            return await _vector_file(conn, vector_store_id, file_id, tenant)

    async def remove(self, vector_store_id: str, file_id: str, *, tenant: str) -> None:
        async with self._connect() as conn:
            cur = await conn.execute(_SQL.remove_vector_file, (vector_store_id, file_id, tenant))
            if cur.rowcount == 0:
                await _store_row(conn, vector_store_id, tenant)
                raise vector_file_missing(vector_store_id, file_id)


class PostgresIndex(_Pooled, BaseIndex):
    def __init__(self, connect: Connect) -> None:
        super().__init__(connect)
        self._pgvector = Pgvector(connect)

    async def sweep(self) -> int:
        async with self._connect() as conn:
            # The cascade erases each expired store's files' places in it and their chunks (with their vectors).
            now = CLOCK.now()
            stores = (await conn.execute(_SQL.sweep, (now,))).rowcount
            # An expired file goes the same way: its bytes, its places in every store and their chunks.
            return int(stores) + int((await conn.execute(_SQL.sweep_files, (now,))).rowcount)

    async def pending(self, *, limit: int = 100) -> list[VectorFile]:
        async with self._connect() as conn:
            cur = await conn.execute(_SQL.pending, (limit,))
            return [vector_file_of(row) for row in await cur.fetchall()]

    async def _finish(
        self,
        vector_store_id: str,
        file_id: str,
        chunks: list[str],
        error: dict[str, str] | None,
        vectors: list[bytes | None],
    ) -> bool:
        pgvector = await self._pgvector.enabled()
        async with self._connect() as conn, conn.transaction():
            # The row lock makes two replicas finishing the same file take turns; the second finds it done.
            cur = await conn.execute(_SQL.file_status + " FOR UPDATE", (vector_store_id, file_id))
            row = await cur.fetchone()
            if row is None or row[0] != "in_progress":
                return False
            await conn.execute(_SQL.delete_chunks, (vector_store_id, file_id))
            if error is None and chunks:  # COPY: one round trip for all of a file's chunks
                columns = "vector_store_id, file_id, position, text, embedding" + (", vec" if pgvector else "")
                async with conn.cursor() as cur, cur.copy(f"COPY chunks ({columns}) FROM STDIN") as copy:
                    for n, (text, vector) in enumerate(zip(chunks, vectors, strict=True)):
                        values: tuple[Any, ...] = (vector_store_id, file_id, n, text.replace("\x00", ""), vector)
                        if pgvector:
                            values += (None if vector is None else literal(vector),)
                        await copy.write_row(values)
            await conn.execute(_SQL.finish, finished_params(vector_store_id, file_id, chunks, error))
        if pgvector and error is None:
            for size in {dims(vector) for vector in vectors if vector is not None}:
                await self._pgvector.index(size)
        return True

    async def cancel(self, vector_store_id: str, batch_id: str, *, tenant: str) -> int:
        async with self._connect() as conn:
            await _store_row(conn, vector_store_id, tenant)
            cur = await conn.execute(_SQL.cancel, (vector_store_id, batch_id))
            return int(cur.rowcount)

    async def chunks(self, vector_store_id: str, file_id: str, *, tenant: str) -> list[str]:
        async with self._connect() as conn:
            await _vector_file(conn, vector_store_id, file_id, tenant)
            cur = await conn.execute(_SQL.chunks, (vector_store_id, file_id))
            return [str(row[0]) for row in await cur.fetchall()]

    async def _search(
        self, vector_store_ids: list[str], tenant: str, terms: list[str], file_ids: Sequence[str] | None, limit: int
    ) -> list[tuple[Any, ...]]:
        tsquery = " || ".join(["plainto_tsquery('english', %s)"] * len(terms))
        only = "" if file_ids is None else " AND c.file_id = ANY(%s::text[])"
        # The query is spelled inline (not joined from a subquery) so the planner sees a constant and reads the GIN
        # index; the best chunks are picked first and only they are joined to their files.
        sql = f"""SELECT c.vector_store_id, c.file_id, f.filename, c.text, top.rank, v.attributes
                  FROM (SELECT c.id, ts_rank(c.tsv, {tsquery}) AS rank FROM chunks c
                        WHERE c.tsv @@ ({tsquery}) AND c.vector_store_id = ANY(%s::text[]){only}
                        ORDER BY rank DESC LIMIT %s) AS top
                  JOIN chunks c ON c.id = top.id
                  JOIN vector_store_files v ON v.vector_store_id = c.vector_store_id AND v.file_id = c.file_id
                  JOIN files f ON f.id = c.file_id
                  WHERE v.status = 'completed' AND (f.expires_at IS NULL OR f.expires_at > %s)
                  ORDER BY top.rank DESC, c.file_id, c.position"""
        async with self._connect() as conn:
            for vector_store_id in vector_store_ids:
                await _store_row(conn, vector_store_id, tenant)
            cur = await conn.execute(
                sql,  # only placeholders are interpolated into the text; the words are bound
                (
                    *terms,
                    *terms,
                    vector_store_ids,
                    *([list(file_ids)] if file_ids is not None else []),
                    limit,
                    CLOCK.now(),  # an expired file's chunks are missing with it, before the sweep erases them
                ),
            )
            return [tuple(row) for row in await cur.fetchall()]

    async def _embedded(
        self, vector_store_ids: list[str], tenant: str, file_ids: Sequence[str] | None
    ) -> list[tuple[Any, ...]]:
        only = "" if file_ids is None else " AND c.file_id = ANY(%s::text[])"
        sql = f"""SELECT c.id, c.embedding FROM chunks c
                  JOIN vector_store_files v ON v.vector_store_id = c.vector_store_id AND v.file_id = c.file_id
                  WHERE c.vector_store_id = ANY(%s::text[]) AND c.embedding IS NOT NULL
                      AND v.status = 'completed'{only}"""
        async with self._connect() as conn:
            for vector_store_id in vector_store_ids:
                await _store_row(conn, vector_store_id, tenant)
            cur = await conn.execute(sql, (vector_store_ids, *([list(file_ids)] if file_ids is not None else [])))
            return [tuple(row) for row in await cur.fetchall()]

    async def _nearest(
        self, vector_store_ids: list[str], vector: bytes, tenant: str, file_ids: Sequence[str] | None, limit: int
    ) -> list[tuple[float, int]]:
        if not await self._pgvector.enabled():
            return await super()._nearest(vector_store_ids, vector, tenant, file_ids, limit)
        async with self._connect() as conn:
            for vector_store_id in vector_store_ids:
                await _store_row(conn, vector_store_id, tenant)
        return await self._pgvector.nearest(vector_store_ids, vector, file_ids, limit)

    async def _hit_rows(self, chunk_ids: list[int]) -> list[tuple[Any, ...]]:
        async with self._connect() as conn:
            cur = await conn.execute(
                """SELECT c.id, c.vector_store_id, c.file_id, f.filename, c.text, v.attributes FROM chunks c
                   JOIN vector_store_files v ON v.vector_store_id = c.vector_store_id AND v.file_id = c.file_id
                   JOIN files f ON f.id = c.file_id
                   WHERE c.id = ANY(%s::bigint[]) AND (f.expires_at IS NULL OR f.expires_at > %s)""",
                (chunk_ids, CLOCK.now()),
            )
            return [tuple(row) for row in await cur.fetchall()]

    @staticmethod
    def _rank(rank: float) -> float:
        return rank * 10  # ts_rank is small (about 0.1 for one match): scaled to weigh as a BM25 rank does


async def _file(conn: Conn, file_id: str, tenant: str) -> FileRecord:
    cur = await conn.execute(_SQL.file, (file_id, tenant, CLOCK.now()))
    row = await cur.fetchone()
    if row is None:
        raise file_missing(file_id)
    return file_of(row)


async def _cursor(conn: Conn, table: str, after: str | None, tenant: str) -> tuple[float, str] | None:
    if after is None:
        return None
    cur = await conn.execute(_SQL.cursor(table), (after, tenant))
    return page_cursor(await cur.fetchone(), after)


async def _store_row(conn: Conn, vector_store_id: str, tenant: str) -> tuple[Any, ...]:
    cur = await conn.execute(_SQL.store, (vector_store_id, tenant, CLOCK.now()))
    row = await cur.fetchone()
    if row is None:
        raise store_missing(vector_store_id)
    return tuple(row)


async def _with_counts(conn: Conn, row: tuple[Any, ...]) -> VectorStoreRecord:
    cur = await conn.execute(_SQL.store_counts, (row[0],))
    counts = await cur.fetchall()
    cur = await conn.execute(_SQL.store_usage, (row[0],))
    usage = await cur.fetchone()
    return store_of(row, counts, int(usage[0]) if usage else 0)


async def _vector_file(conn: Conn, vector_store_id: str, file_id: str, tenant: str) -> VectorFile:
    cur = await conn.execute(_SQL.vector_file, (vector_store_id, file_id, tenant))
    row = await cur.fetchone()
    if row is None:
        await _store_row(conn, vector_store_id, tenant)
        raise vector_file_missing(vector_store_id, file_id)
    return vector_file_of(row)


def _update_params(name: str | None, metadata: str | None, vector_store_id: str, tenant: str) -> tuple[Any, ...]:
    now = CLOCK.now()
    return (name, metadata, now, now, vector_store_id, tenant, now)
