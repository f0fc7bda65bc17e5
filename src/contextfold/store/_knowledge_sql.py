"""What both knowledge stores send and read: the SQL they share (placeholders spelled by each dialect), new
records, the rows' parameters, paging, the vector files' filters, a finished file's bookkeeping and search rows
mapped to hits.

`_sqlite_knowledge` and `_postgres_knowledge` keep only their connection handling and the SQL they really spell
differently: full-text search, bulk chunk writes and row locks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..events import new_id
from ._knowledge import (
    CLOCK,
    FILE_COLUMNS,
    STORE_COLUMNS,
    VECTOR_FILE_COLUMNS,
    ChunkHit,
    FileRecord,
    Order,
    VectorStoreRecord,
    after_missing,
    best_hits,
    check_expires_after,
    check_filename,
    check_metadata,
    check_name,
    check_purpose,
    expires_at,
    page_clause,
    score_of,
)
from ._serving import check_tenant


def new_file(tenant: str, filename: str, purpose: str, content: bytes, lifetime: int | None) -> FileRecord:
    now = CLOCK.now()
    return FileRecord(
        new_id("file"),
        check_tenant(tenant),
        check_filename(filename),
        check_purpose(purpose),
        len(content),
        now,
        None if lifetime is None else now + lifetime,
    )


def new_store(tenant: str, name: str | None, metadata: dict[str, str], data: dict[str, Any]) -> VectorStoreRecord:
    check_expires_after(data.get("expires_after"))
    now = CLOCK.now()
    return VectorStoreRecord(
        new_id("vs"), check_tenant(tenant), now, check_name(name), check_metadata(metadata), dict(data), now
    )


def store_changes(name: str | None, metadata: dict[str, str] | None) -> tuple[str | None, str | None]:
    """The checked name and metadata (as stored) of a vector store's update; None keeps what is there."""
    return check_name(name), None if metadata is None else json.dumps(check_metadata(metadata))


KEEP: Any = object()
"""An update's `expires_after` when the request did not name it: the store keeps its own."""


@dataclass(frozen=True, slots=True)
class Expiry:
    """A vector store's new expires_after: as given (recorded in its data) and checked (None: never expires)."""

    given: Any
    checked: tuple[str, int] | None

    def params(self, data: dict[str, Any], now: float, vector_store_id: str) -> tuple[Any, ...]:
        """The parameters of `KnowledgeSQL.set_expiry`, the store's `data` updated; the update is `now`."""
        anchor, days = self.checked or (None, None)
        return (
            json.dumps({**data, "expires_after": self.given}),
            anchor,
            days,
            expires_at(self.checked, now, now),
            vector_store_id,
        )


def file_params(record: FileRecord, content: bytes) -> tuple[Any, ...]:
    return (
        record.id,
        record.tenant,
        record.filename,
        record.purpose,
        record.bytes,
        record.created_at,
        record.expires_at,
        content,
    )


def store_params(record: VectorStoreRecord) -> tuple[Any, ...]:
    expiry = check_expires_after(record.data.get("expires_after"))
    return (
        record.id,
        record.tenant,
        record.created_at,
        record.name,
        json.dumps(record.metadata),
        json.dumps(record.data),
        record.last_active_at,
        *(expiry or (None, None)),
        expires_at(expiry, record.created_at, record.last_active_at),
    )


@dataclass(frozen=True, slots=True)
class FilesQuery:
    """A checked listing of a vector store's files: which of them (a status, a batch) and which page."""

    status: str | None
    batch_id: str | None
    after: str | None
    limit: int
    order: Order


def page_cursor(row: Sequence[Any] | None, after: str) -> tuple[float, str]:
    """The (created_at, id) a page starts after, from the row `after` names (none: it is no id of that list)."""
    if row is None:
        raise after_missing(after)
    return float(row[0]), str(row[1])


def finished_params(
    vector_store_id: str, file_id: str, chunks: Sequence[str], error: dict[str, str] | None
) -> tuple[Any, ...]:
    """The parameters of `KnowledgeSQL.finish`: a file's status, its error and the bytes its chunks hold."""
    usage = sum(len(text.encode()) for text in chunks) if error is None else 0
    return ("failed" if error else "completed", json.dumps(error) if error else None, usage, vector_store_id, file_id)


def hits_of(
    rows: Iterable[Sequence[Any]], terms: Sequence[str], limit: int, rank: Callable[[float], float]
) -> list[ChunkHit]:
    """Search rows (vector store, file, filename, text, the dialect's rank, attributes) as the best `limit` hits;
    `rank` turns the dialect's rank into one where higher is better, on BM25's scale."""
    hits = [
        ChunkHit(str(vs), str(fid), str(name), str(text), score_of(terms, text, rank(float(r))), json.loads(attrs))
        for vs, fid, name, text, r, attrs in rows
    ]
    return best_hits(hits, limit)


class KnowledgeSQL:
    """The statements both stores send, their placeholders spelled `mark` ('?' for SQLite, '%s' for psycopg)."""

    def __init__(self, mark: str) -> None:
        m = self.mark = mark
        self.insert_file = f"INSERT INTO files ({FILE_COLUMNS}, content) VALUES ({', '.join([m] * 8)})"
        # An expired file answers as missing too (the sweep erases it with its chunks): the time is the last one.
        self.file_live = f"(expires_at IS NULL OR expires_at > {m})"
        self.file = f"SELECT {FILE_COLUMNS} FROM files WHERE id = {m} AND tenant = {m} AND {self.file_live}"
        self.content = f"SELECT content FROM files WHERE id = {m} AND tenant = {m} AND {self.file_live}"
        self.delete_file = f"DELETE FROM files WHERE id = {m} AND tenant = {m} AND {self.file_live}"
        self.sweep_files = f"DELETE FROM files WHERE expires_at <= {m}"
        self.insert_store = (
            f"INSERT INTO vector_stores ({STORE_COLUMNS}, expires_anchor, expires_days, expires_at)"
            f" VALUES ({', '.join([m] * 10)})"
        )
        # An expired store answers as missing (the sweep erases it soon after): the time is the last parameter.
        self.live = f"(expires_at IS NULL OR expires_at > {m})"
        self.store = f"SELECT {STORE_COLUMNS} FROM vector_stores WHERE id = {m} AND tenant = {m} AND {self.live}"
        # Using a store moves its last_active_at, and with it the expiry anchored there.
        moved = (
            f"expires_at = CASE WHEN expires_anchor = 'last_active_at' THEN {m} + expires_days * 86400.0"
            " ELSE expires_at END"
        )
        self.store_counts = (
            f"SELECT status, count(*) FROM vector_store_files WHERE vector_store_id = {m} GROUP BY status"
        )
        self.store_usage = f"SELECT coalesce(sum(usage_bytes), 0) FROM vector_store_files WHERE vector_store_id = {m}"
        self.update_store = (
            f"UPDATE vector_stores SET name = coalesce({m}, name), metadata = coalesce({m}, metadata),"
            f" last_active_at = {m}, {moved} WHERE id = {m} AND tenant = {m} AND {self.live}"
        )
        self.set_expiry = (
            f"UPDATE vector_stores SET data = {m}, expires_anchor = {m}, expires_days = {m}, expires_at = {m}"
            f" WHERE id = {m}"
        )
        self.delete_store = f"DELETE FROM vector_stores WHERE id = {m} AND tenant = {m}"
        self.touch_store = f"UPDATE vector_stores SET last_active_at = {m}, {moved} WHERE id = {m}"
        self.sweep = f"DELETE FROM vector_stores WHERE expires_at <= {m}"
        # Adding a file again queues it again: its old chunks go when the new ones are written.
        self.add_file = f"""INSERT INTO vector_store_files ({VECTOR_FILE_COLUMNS})
            VALUES ({m}, {m}, {m}, {m}, 'in_progress', {m}, {m}, NULL, 0, {m})
            ON CONFLICT (vector_store_id, file_id) DO UPDATE SET status = 'in_progress',
                attributes = excluded.attributes, chunking = excluded.chunking, last_error = NULL,
                batch_id = excluded.batch_id, created_at = excluded.created_at"""
        self.vector_file = (
            f"SELECT {VECTOR_FILE_COLUMNS} FROM vector_store_files WHERE vector_store_id = {m} AND file_id = {m}"
            f" AND tenant = {m}"
        )
        self.vector_file_cursor = (
            f"SELECT created_at, file_id FROM vector_store_files WHERE vector_store_id = {m} AND file_id = {m}"
        )
        self.update_vector_file = (
            f"UPDATE vector_store_files SET attributes = {m}"
            f" WHERE vector_store_id = {m} AND file_id = {m} AND tenant = {m}"
        )
        self.remove_vector_file = (
            f"DELETE FROM vector_store_files WHERE vector_store_id = {m} AND file_id = {m} AND tenant = {m}"
        )
        self.pending = (
            f"SELECT {VECTOR_FILE_COLUMNS} FROM vector_store_files WHERE status = 'in_progress'"
            f" ORDER BY created_at, vector_store_id, file_id LIMIT {m}"
        )
        self.file_status = f"SELECT status FROM vector_store_files WHERE vector_store_id = {m} AND file_id = {m}"
        self.delete_chunks = f"DELETE FROM chunks WHERE vector_store_id = {m} AND file_id = {m}"
        self.finish = (
            f"UPDATE vector_store_files SET status = {m}, last_error = {m}, usage_bytes = {m}"
            f" WHERE vector_store_id = {m} AND file_id = {m}"
        )
        self.cancel = (
            f"UPDATE vector_store_files SET status = 'cancelled' WHERE vector_store_id = {m} AND batch_id = {m}"
            " AND status = 'in_progress'"
        )
        self.chunks = f"SELECT text FROM chunks WHERE vector_store_id = {m} AND file_id = {m} ORDER BY position"

    def cursor(self, table: str) -> str:
        """The (created_at, id) of the row a page of `table` starts after."""
        return f"SELECT created_at, id FROM {table} WHERE id = {self.mark} AND tenant = {self.mark}"

    def list_files(
        self, tenant: str, purpose: str | None, cursor: tuple[float, str] | None, limit: int, order: Order
    ) -> tuple[str, tuple[Any, ...]]:
        m = self.mark
        clause, params = page_clause(m, order, cursor)
        where = f" AND purpose = {m}" if purpose else ""
        sql = f"SELECT {FILE_COLUMNS} FROM files WHERE tenant = {m} AND {self.file_live}{where}{clause} LIMIT {m}"
        return sql, (tenant, CLOCK.now(), *([purpose] if purpose else []), *params, limit)

    def list_stores(
        self, tenant: str, cursor: tuple[float, str] | None, limit: int, order: Order
    ) -> tuple[str, tuple[Any, ...]]:
        m = self.mark
        clause, params = page_clause(m, order, cursor)
        return f"SELECT {STORE_COLUMNS} FROM vector_stores WHERE tenant = {m} AND {self.live}{clause} LIMIT {m}", (
            tenant,
            CLOCK.now(),
            *params,
            limit,
        )

    def list_vector_files(
        self, vector_store_id: str, query: FilesQuery, cursor: tuple[float, str] | None
    ) -> tuple[str, tuple[Any, ...]]:
        m = self.mark
        clause, params = page_clause(m, query.order, cursor, "file_id")
        where, extra = "", []
        if query.status is not None:
            where, extra = f" AND status = {m}", [query.status]
        if query.batch_id is not None:
            where, extra = where + f" AND batch_id = {m}", [*extra, query.batch_id]
        sql = (
            f"SELECT {VECTOR_FILE_COLUMNS} FROM vector_store_files WHERE vector_store_id = {m}{where}{clause} LIMIT {m}"
        )
        return sql, (vector_store_id, *extra, *params, query.limit)
