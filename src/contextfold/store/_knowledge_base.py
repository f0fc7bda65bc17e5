"""The knowledge protocols' calls as both stores answer them: each checks its arguments and builds its records here,
then hands a store's own method (`_put`, `_list`, ...) only what it must write or read, so the SQLite and PostgreSQL
stores cannot drift in what they accept."""

from __future__ import annotations

import asyncio
import heapq
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from ._knowledge import (
    CANDIDATES,
    MAX_PAGE,
    Attributes,
    ChunkHit,
    FileRecord,
    Order,
    VectorFile,
    VectorStoreRecord,
    best_hits,
    check_attributes,
    check_expires_after,
    check_file_ids,
    check_page_limit,
    check_status,
    fts_match,
)
from ._knowledge_sql import KEEP, Expiry, FilesQuery, hits_of, new_file, new_store, store_changes
from ._knowledge_vectors import similarities

MAX_LISTED_FILES = 10_001
"""How long a page of files (or of a vector store's files) may be: the HTTP edge lists up to 10,000, and reads one
row more to say whether more follow."""


class BaseFiles(ABC):
    @abstractmethod
    async def _put(self, record: FileRecord, content: bytes) -> None: ...

    @abstractmethod
    async def _list(
        self, tenant: str, purpose: str | None, after: str | None, limit: int, order: Order
    ) -> list[FileRecord]: ...

    async def put(
        self, tenant: str, filename: str, purpose: str, content: bytes, *, lifetime: int | None = None
    ) -> FileRecord:
        """Keep the file; given `lifetime` (seconds, checked by `check_file_expiry`), it expires that long after."""
        record = new_file(tenant, filename, purpose, content, lifetime)
        await self._put(record, content)
        return record

    async def list(
        self,
        *,
        tenant: str,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = 20,
        order: Order = "desc",
    ) -> list[FileRecord]:
        check_page_limit(limit, most=MAX_LISTED_FILES)
        return await self._list(tenant, purpose, after, limit, order)


class BaseVectorStores(ABC):
    @abstractmethod
    async def _create(self, record: VectorStoreRecord) -> None: ...

    @abstractmethod
    async def _list(self, tenant: str, after: str | None, limit: int, order: Order) -> list[VectorStoreRecord]: ...

    @abstractmethod
    async def _update(
        self, vector_store_id: str, tenant: str, name: str | None, metadata: str | None, expiry: Expiry | None
    ) -> VectorStoreRecord:
        """Set the name and the metadata (JSON) where they are not None; given `expiry`, the new expires_after
        too (anchored at this update), in the same transaction."""

    async def create(
        self, tenant: str, *, name: str | None, metadata: dict[str, str], data: dict[str, Any]
    ) -> VectorStoreRecord:
        record = new_store(tenant, name, metadata, data)
        await self._create(record)
        return record

    async def list(
        self, *, tenant: str, after: str | None = None, limit: int = 20, order: Order = "desc"
    ) -> list[VectorStoreRecord]:
        check_page_limit(limit)
        return await self._list(tenant, after, limit, order)

    async def update(
        self,
        vector_store_id: str,
        *,
        tenant: str,
        name: str | None,
        metadata: dict[str, str] | None,
        expires_after: Any = KEEP,
    ) -> VectorStoreRecord:
        """`expires_after` (OpenAI's shape, or None: never expire) replaces the store's; KEEP leaves it."""
        expiry = None if expires_after is KEEP else Expiry(expires_after, check_expires_after(expires_after))
        return await self._update(vector_store_id, tenant, *store_changes(name, metadata), expiry)


class BaseVectorFiles(ABC):
    @abstractmethod
    async def _add(
        self, vector_store_id: str, file_ids: list[str], tenant: str, row: tuple[str, str, str | None]
    ) -> list[VectorFile]:
        """Queue the (checked, distinct) files with `row`: their attributes and chunking (JSON) and batch."""

    @abstractmethod
    async def _list(self, vector_store_id: str, tenant: str, query: FilesQuery) -> list[VectorFile]: ...

    @abstractmethod
    async def _update(self, vector_store_id: str, file_id: str, tenant: str, attributes: str) -> VectorFile: ...

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
        row = (json.dumps(check_attributes(attributes)), json.dumps(chunking), batch_id)
        return await self._add(vector_store_id, check_file_ids(file_ids), tenant, row)

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
        check_page_limit(limit, most=MAX_LISTED_FILES)
        check_status(status)
        return await self._list(vector_store_id, tenant, FilesQuery(status, batch_id, after, limit, order))

    async def update(self, vector_store_id: str, file_id: str, *, tenant: str, attributes: Attributes) -> VectorFile:
        return await self._update(vector_store_id, file_id, tenant, json.dumps(check_attributes(attributes)))


class BaseIndex(ABC):
    @abstractmethod
    async def _finish(
        self,
        vector_store_id: str,
        file_id: str,
        chunks: list[str],
        error: dict[str, str] | None,
        vectors: list[bytes | None],
    ) -> bool: ...

    @abstractmethod
    async def _embedded(
        self, vector_store_ids: list[str], tenant: str, file_ids: Sequence[str] | None
    ) -> list[tuple[Any, ...]]:
        """Every embedded chunk's (id, embedding) in the tenant's stores (a missing one is NotFoundError),
        `completed` files only, given `file_ids` those."""

    @abstractmethod
    async def _hit_rows(self, chunk_ids: list[int]) -> list[tuple[Any, ...]]:
        """The chunks' (id, vector store, file, filename, text, attributes), any order."""

    @abstractmethod
    async def _search(
        self, vector_store_ids: list[str], tenant: str, terms: list[str], file_ids: Sequence[str] | None, limit: int
    ) -> list[tuple[Any, ...]]:
        """The best `limit` chunks' rows (vector store, file, filename, text, rank, attributes) that hold any of
        `terms`, in the tenant's stores (a missing one is NotFoundError) and, given `file_ids`, of those files."""

    @staticmethod
    @abstractmethod
    def _rank(rank: float) -> float:
        """The dialect's full-text rank as one where higher is better, on BM25's scale."""

    async def finish(
        self,
        vector_store_id: str,
        file_id: str,
        *,
        chunks: Sequence[str] | None,
        error: dict[str, str] | None = None,
        vectors: Sequence[bytes] | None = None,
    ) -> bool:
        texts = list(chunks or ())
        if vectors is not None and len(vectors) != len(texts):
            raise ValueError(f"{len(vectors)} vectors for {len(texts)} chunks")
        embedded: list[bytes | None] = list(vectors) if vectors is not None else [None] * len(texts)
        return await self._finish(vector_store_id, file_id, texts, error, embedded)

    async def nearest(
        self,
        vector_store_ids: Sequence[str],
        vector: bytes,
        *,
        tenant: str,
        file_ids: Sequence[str] | None = None,
        limit: int = 10,
    ) -> list[ChunkHit]:
        check_page_limit(limit, most=MAX_PAGE * CANDIDATES)
        if file_ids is not None and not file_ids:
            return []
        best = await self._nearest(list(vector_store_ids), vector, tenant, file_ids, limit)
        # Only the best chunks' text and attributes are read: scoring needs just the vectors.
        score_of_id = {chunk: score for score, chunk in best}
        hits = [
            ChunkHit(str(vs), str(fid), str(name), str(text), max(0.0, min(1.0, score_of_id[int(cid)])), json.loads(a))
            for cid, vs, fid, name, text, a in await self._hit_rows(list(score_of_id))
        ]
        return best_hits(hits, limit)

    async def _nearest(
        self, vector_store_ids: list[str], vector: bytes, tenant: str, file_ids: Sequence[str] | None, limit: int
    ) -> list[tuple[float, int]]:
        """The best `limit` (cosine similarity, chunk id) of the stores' embedded chunks, best first.

        The exact scan: every embedded chunk of the stores, compared on a worker thread. It always works and is
        right; a dialect with a vector index (pgvector) ranks in SQL instead."""
        rows = await self._embedded(vector_store_ids, tenant, file_ids)
        scores = await asyncio.to_thread(similarities, vector, [bytes(row[1]) for row in rows])
        return heapq.nlargest(limit, ((s, int(row[0])) for row, s in zip(rows, scores, strict=True) if s > -1.0))

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
        rows = await self._search(list(vector_store_ids), tenant, terms, file_ids, limit * CANDIDATES)
        return hits_of(rows, terms, limit, self._rank)
