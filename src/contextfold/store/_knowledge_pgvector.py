"""pgvector on PostgreSQL: when the server has the `vector` extension, chunks keep their vector a second time in a
`vec vector` column beside the float32 `embedding` bytes, and the nearest chunks are ranked in SQL with `<=>`
(cosine distance) under an HNSW index per dimension.

The extension is tried once per store open (`CREATE EXTENSION IF NOT EXISTS vector`); a server without it (or a
role that may not create it) keeps the exact scan, logged once. The `embedding` bytes stay the source of truth:
`vec` is filled from them at ingestion, and chunks embedded before pgvector was there are filled when it appears.

`vec` has no fixed dimension (one table holds every store's chunks, and stores may use different embedding
models), so each dimension gets its own partial expression index, `(vec::vector(D)) WHERE vector_dims(vec) = D`,
and a query of D dimensions reads only vectors of D dimensions (those of another size are left out, as the
exact scan leaves them out). HNSW is approximate: with a filter (stores, files, status) it can return fewer than
`limit`; `hnsw.ef_search` is raised to the candidates asked for so a page is rarely short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import psycopg

from ._knowledge_vectors import unpack
from ._postgres_serving import Connect

_log = logging.getLogger("contextfold.store")

MAX_INDEXED_DIMS = 2000  # pgvector's HNSW limit for `vector`; larger vectors are ranked by `<=>` without an index
_BACKFILL_BATCH = 500


def literal(blob: bytes) -> str:
    """The float32 bytes as pgvector's text form, `[x,y,...]`, exact (repr round-trips a float32 widened)."""
    return "[" + ",".join(repr(x) for x in unpack(blob)) + "]"


def dims(blob: bytes) -> int:
    return len(blob) // 4


def nearest_sql(size: int, by_file: bool) -> str:
    """The nearest-chunks query for vectors of `size` dimensions; parameters: the query vector (pgvector's text
    form), the stores, the files when `by_file`, the limit."""
    only = " AND c.file_id = ANY(%s::text[])" if by_file else ""
    return f"""SELECT c.vec::vector({int(size)}) <=> %s::vector({int(size)}) AS distance, c.id FROM chunks c
               JOIN vector_store_files v ON v.vector_store_id = c.vector_store_id AND v.file_id = c.file_id
               WHERE vector_dims(c.vec) = {int(size)} AND c.vector_store_id = ANY(%s::text[])
                   AND v.status = 'completed'{only}
               ORDER BY distance LIMIT %s"""


class Pgvector:
    """Whether this store ranks with pgvector, found out once; the per-dimension indexes made so far."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        self._lock = asyncio.Lock()
        self._enabled: bool | None = None
        self._indexed: set[int] = set()

    async def enabled(self) -> bool:
        if self._enabled is None:
            async with self._lock:
                if self._enabled is None:
                    self._enabled = await self._enable()
        return self._enabled

    async def _enable(self) -> bool:
        async with self._connect() as conn:
            # Caught here, inside the connection: the pool would turn the error into a store failure.
            try:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except psycopg.Error as exc:
                cur = await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
                if await cur.fetchone() is None:  # else another replica created it at the same moment
                    _log.info(
                        "pgvector is not available on this PostgreSQL server (%s); vector search uses the exact scan. "
                        "Install the pgvector extension (and let this role create it) to rank in SQL under an index",
                        (str(exc).strip().splitlines() or [type(exc).__name__])[0],
                    )
                    return False
            with contextlib.suppress(psycopg.errors.DuplicateColumn):  # another replica added it just now
                await conn.execute("ALTER TABLE chunks ADD COLUMN IF NOT EXISTS vec vector")
        await self._backfill()
        return True

    async def _backfill(self) -> None:
        """Chunks embedded before pgvector was there get their `vec` now, a batch per transaction."""
        while True:
            async with self._connect() as conn, conn.transaction():
                cur = await conn.execute(
                    "SELECT id, embedding FROM chunks WHERE embedding IS NOT NULL AND vec IS NULL LIMIT %s",
                    (_BACKFILL_BATCH,),
                )
                rows = await cur.fetchall()
                async with conn.cursor() as many:
                    await many.executemany(
                        "UPDATE chunks SET vec = %s::vector WHERE id = %s",
                        [(literal(bytes(blob)), int(cid)) for cid, blob in rows],
                    )
            for size in {dims(bytes(blob)) for _, blob in rows}:
                await self.index(size)
            if len(rows) < _BACKFILL_BATCH:
                return

    async def index(self, size: int) -> None:
        """The HNSW index for vectors of `size` dimensions, made the first time such a vector is stored."""
        if size in self._indexed or not 0 < size <= MAX_INDEXED_DIMS:
            return
        async with self._connect() as conn:
            with contextlib.suppress(psycopg.errors.UniqueViolation):  # another replica made it just now
                await conn.execute(
                    f"CREATE INDEX IF NOT EXISTS chunks_vec_hnsw_{size} ON chunks "
                    f"USING hnsw ((vec::vector({size})) vector_cosine_ops) WHERE vector_dims(vec) = {size}"
                )
        self._indexed.add(size)

    async def nearest(
        self, vector_store_ids: list[str], vector: bytes, file_ids: Sequence[str] | None, limit: int
    ) -> list[tuple[float, int]]:
        """The best `limit` (cosine similarity, chunk id) among the stores' `completed` chunks of the query's size.

        The stores are already checked as the tenant's. The dimension is a checked int, so spelling it inline
        is safe, and it must be inline for the planner to match the partial index."""
        sql = nearest_sql(dims(vector), file_ids is not None)
        params = (literal(vector), vector_store_ids, *([list(file_ids)] if file_ids is not None else []), limit)
        async with self._connect() as conn, conn.transaction():
            await conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(min(1000, max(40, limit))),))
            cur = await conn.execute(sql, params)
            return [(1.0 - float(distance), int(cid)) for distance, cid in await cur.fetchall()]
