"""Files, vector stores and their chunks: the seam (four small protocols) and every rule both stores share.

    store.knowledge.files            uploaded bytes, per tenant
    store.knowledge.vector_stores    named sets of files to search
    store.knowledge.vector_files     a file in a vector store: its attributes, chunking and ingestion status
    store.knowledge.index            ingestion's queue (rows `in_progress`) and its result (chunks), and search

Ingestion is a queued state in the store, not a task in memory: a file added to a vector store is `in_progress`
until `index.finish` writes its chunks (status `completed`) or its error (`failed`) in one transaction, so a
restarted server finds what it must still ingest with `index.pending`. Deleting a file erases its bytes and, by
cascade, every chunk made from them; removing it from one vector store erases that store's chunks of it.

As in `_common` and `_serving`, the rules live here; each call's checks run once in `_knowledge_base` and the SQL
both dialects share is spelled once in `_knowledge_sql`, so the SQLite and PostgreSQL stores differ only in what
their SQL truly spells differently (full-text search, bulk chunk writes, row locks) and their connections.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .._errors import InvalidRequestError, NotFoundError

FILE_STATUSES = ("in_progress", "completed", "failed", "cancelled")
MAX_FILENAME = 512
MAX_PURPOSE = 64
MAX_NAME = 256
MAX_ATTRIBUTES = 16
MAX_ATTRIBUTE_KEY = 64
MAX_ATTRIBUTE_VALUE = 512
MAX_FILES_PER_ADD = 500
MAX_PAGE = 100
_PURPOSE = re.compile(r"[a-z][a-z0-9_-]{0,63}")

EXPIRY_ANCHORS = ("last_active_at",)
"""OpenAI's vector stores anchor expiry at `last_active_at` only (the SDK's models refuse another anchor)."""
MAX_EXPIRY_DAYS = 365
DAY = 86_400.0

Order = Literal["asc", "desc"]
Attributes = dict[str, str | float | bool]


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: str
    tenant: str
    filename: str
    purpose: str
    bytes: int
    created_at: float
    expires_at: float | None = None
    """From `expires_after` (seconds after created_at); past it the file is missing, then swept."""


@dataclass(frozen=True, slots=True)
class FileCounts:
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return self.in_progress + self.completed + self.failed + self.cancelled


@dataclass(frozen=True, slots=True)
class VectorStoreRecord:
    id: str
    tenant: str
    created_at: float
    name: str | None
    metadata: dict[str, str]
    data: dict[str, Any]
    """Everything else the client set: expires_after, a default chunking strategy, and the extra fields other
    servers' clients send (provider_id, embedding_model, ...), recorded as given."""
    last_active_at: float
    counts: FileCounts = field(default_factory=FileCounts)
    usage_bytes: int = 0


@dataclass(frozen=True, slots=True)
class VectorFile:
    vector_store_id: str
    file_id: str
    tenant: str
    created_at: float
    status: str
    """One of FILE_STATUSES."""
    attributes: Attributes
    chunking: dict[str, int]
    """{"max_chunk_size_tokens": ..., "chunk_overlap_tokens": ...}"""
    last_error: dict[str, str] | None = None
    usage_bytes: int = 0
    batch_id: str | None = None


@dataclass(frozen=True, slots=True)
class ChunkHit:
    vector_store_id: str
    file_id: str
    filename: str
    text: str
    score: float
    """In (0, 1]; higher is a better match."""
    attributes: Attributes


class Files(Protocol):
    async def put(
        self, tenant: str, filename: str, purpose: str, content: bytes, *, lifetime: int | None = None
    ) -> FileRecord:
        """Keep the file; given `lifetime` (seconds, from `check_file_expiry`), it expires that long after."""
        ...

    async def get(self, file_id: str, *, tenant: str) -> FileRecord: ...

    async def content(self, file_id: str, *, tenant: str) -> bytes: ...

    async def list(
        self,
        *,
        tenant: str,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = 20,
        order: Order = "desc",
    ) -> list[FileRecord]: ...

    async def delete(self, file_id: str, *, tenant: str) -> None:
        """Erase the bytes, the file's place in every vector store and every chunk made from it."""
        ...


class VectorStores(Protocol):
    async def create(
        self, tenant: str, *, name: str | None, metadata: dict[str, str], data: dict[str, Any]
    ) -> VectorStoreRecord: ...

    async def get(self, vector_store_id: str, *, tenant: str) -> VectorStoreRecord: ...

    async def list(
        self, *, tenant: str, after: str | None = None, limit: int = 20, order: Order = "desc"
    ) -> list[VectorStoreRecord]: ...

    async def update(
        self,
        vector_store_id: str,
        *,
        tenant: str,
        name: str | None,
        metadata: dict[str, str] | None,
        expires_after: Any = ...,
    ) -> VectorStoreRecord:
        """Set the name (None keeps it) and replace the metadata (None keeps it); given `expires_after` (None:
        never expire), replace the expiry too, anchored at this update."""
        ...

    async def delete(self, vector_store_id: str, *, tenant: str) -> None:
        """Delete the store with its files' places in it and their chunks (the files themselves stay)."""
        ...


class VectorFiles(Protocol):
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
        """Queue the files for ingestion (`in_progress`); a file already in the store is queued again."""
        ...

    async def get(self, vector_store_id: str, file_id: str, *, tenant: str) -> VectorFile: ...

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
    ) -> list[VectorFile]: ...

    async def update(
        self, vector_store_id: str, file_id: str, *, tenant: str, attributes: Attributes
    ) -> VectorFile: ...

    async def remove(self, vector_store_id: str, file_id: str, *, tenant: str) -> None:
        """Take the file out of the store and erase its chunks there (the file stays)."""
        ...


class Index(Protocol):
    async def pending(self, *, limit: int = 100) -> list[VectorFile]:
        """Files still `in_progress`, oldest first, across every tenant: what ingestion must still do."""
        ...

    async def sweep(self) -> int:
        """Erase every vector store and file whose `expires_after` has passed (across tenants); returns how
        many."""
        ...

    async def finish(
        self,
        vector_store_id: str,
        file_id: str,
        *,
        chunks: Sequence[str] | None,
        error: dict[str, str] | None = None,
        vectors: Sequence[bytes] | None = None,
    ) -> bool:
        """Write the chunks (status `completed`) with their `vectors` (one per chunk, float32 bytes, when they
        were embedded) or the error (`failed`), replacing any earlier chunks, in one transaction; False, writing
        nothing, if the file is no longer `in_progress` there (removed, cancelled)."""
        ...

    async def cancel(self, vector_store_id: str, batch_id: str, *, tenant: str) -> int:
        """Mark the batch's files still `in_progress` `cancelled`; returns how many."""
        ...

    async def chunks(self, vector_store_id: str, file_id: str, *, tenant: str) -> list[str]:
        """The file's chunks in that store, in order (none until it is `completed`)."""
        ...

    async def search(
        self,
        vector_store_ids: Sequence[str],
        query: str,
        *,
        tenant: str,
        file_ids: Sequence[str] | None = None,
        limit: int = 10,
    ) -> list[ChunkHit]:
        """The best chunks for `query` (full-text rank, any of its words) in the tenant's stores, best first;
        `file_ids` (when given) keeps only chunks of those files."""
        ...

    async def nearest(
        self,
        vector_store_ids: Sequence[str],
        vector: bytes,
        *,
        tenant: str,
        file_ids: Sequence[str] | None = None,
        limit: int = 10,
    ) -> list[ChunkHit]:
        """The embedded chunks nearest `vector` (a unit float32 vector) by cosine similarity, best first, their
        score the similarity (below 0 counted 0); chunks of another vector size are left out."""
        ...


class Knowledge(Protocol):
    @property
    def files(self) -> Files: ...

    @property
    def vector_stores(self) -> VectorStores: ...

    @property
    def vector_files(self) -> VectorFiles: ...

    @property
    def index(self) -> Index: ...


class Clock:
    """The time the knowledge stores read (expiry, created_at, last_active_at); `offset` moves it, for tests."""

    offset: float = 0.0

    def now(self) -> float:
        return time.time() + self.offset


CLOCK = Clock()


def check_expires_after(value: Any, param: str = "expires_after") -> tuple[str, int] | None:
    """OpenAI's `{"anchor": "last_active_at", "days": N}` as (anchor, days)."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) - {"anchor", "days"}:
        raise InvalidRequestError('expires_after must be {"anchor": "last_active_at", "days": 1 to 365}', param=param)
    anchor, days = value.get("anchor", "last_active_at"), value.get("days")
    if anchor not in EXPIRY_ANCHORS:
        raise InvalidRequestError(
            f"expires_after.anchor must be 'last_active_at' (a vector store expires that many days after it was "
            f"last used), got {anchor!r}",
            param=param + ".anchor",
        )
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_EXPIRY_DAYS:
        raise InvalidRequestError(
            f"expires_after.days must be an integer from 1 to {MAX_EXPIRY_DAYS}, got {days!r}", param=param + ".days"
        )
    return anchor, days


FILE_EXPIRY_SECONDS = (3600, 30 * 86400)  # OpenAI's range: an hour to 30 days


def check_file_expiry(anchor: str | None, seconds: int | None) -> int | None:
    """A file's `expires_after[anchor]` and `expires_after[seconds]` (multipart fields) as the seconds it lives."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidRequestError(
            f"expires_after[anchor] must be 'created_at' (a file expires that many seconds after upload), "
            f"got {anchor!r}",
            param="expires_after[anchor]",
        )
    low, high = FILE_EXPIRY_SECONDS
    if seconds is None or not low <= seconds <= high:
        raise InvalidRequestError(
            f"expires_after[seconds] must be an integer from {low} (an hour) to {high} (30 days), got {seconds!r}",
            param="expires_after[seconds]",
        )
    return seconds


def expires_at(expiry: tuple[str, int] | None, created_at: float, last_active_at: float) -> float | None:
    if expiry is None:
        return None
    anchor, days = expiry
    return (created_at if anchor == "created_at" else last_active_at) + days * DAY


# --- rules both stores share --------------------------------------------------------------------------------------


def check_filename(filename: str) -> str:
    if not isinstance(filename, str) or not 0 < len(filename) <= MAX_FILENAME or not filename.isprintable():
        raise InvalidRequestError(
            f"the file's name must be 1 to {MAX_FILENAME} printable characters, got {filename!r}", param="file"
        )
    return filename


def check_purpose(purpose: str) -> str:
    if not isinstance(purpose, str) or not _PURPOSE.fullmatch(purpose):
        raise InvalidRequestError(
            f"purpose {purpose!r} is not valid; use a lowercase word such as 'assistants', 'user_data' or 'batch'",
            param="purpose",
        )
    return purpose


def check_page_limit(limit: int, *, most: int = MAX_PAGE) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= most:
        raise InvalidRequestError(f"limit must be an integer from 1 to {most}, got {limit!r}", param="limit")
    return limit


def check_name(name: str | None) -> str | None:
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME):
        raise InvalidRequestError(f"name must be a string of at most {MAX_NAME} characters", param="name")
    return name


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """OpenAI's metadata rule: at most 16 pairs, keys up to 64 characters, string values up to 512."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or len(metadata) > MAX_ATTRIBUTES:
        raise InvalidRequestError(f"metadata must be an object of at most {MAX_ATTRIBUTES} pairs", param="metadata")
    for key, value in metadata.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_ATTRIBUTE_KEY:
            raise InvalidRequestError(f"metadata key {key!r} must be 1 to 64 characters", param="metadata")
        if not isinstance(value, str) or len(value) > MAX_ATTRIBUTE_VALUE:
            raise InvalidRequestError(
                f"metadata[{key!r}] must be a string of at most {MAX_ATTRIBUTE_VALUE} characters", param="metadata"
            )
    return dict(metadata)


def check_attributes(attributes: Mapping[str, Any] | None) -> Attributes:
    """A file's attributes (what search filters read): at most 16, values strings, numbers or booleans."""
    if attributes is None:
        return {}
    if not isinstance(attributes, Mapping) or len(attributes) > MAX_ATTRIBUTES:
        raise InvalidRequestError(f"attributes must be an object of at most {MAX_ATTRIBUTES} pairs", param="attributes")
    out: Attributes = {}
    for key, value in attributes.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_ATTRIBUTE_KEY:
            raise InvalidRequestError(f"attribute key {key!r} must be 1 to 64 characters", param="attributes")
        if isinstance(value, str) and len(value) > MAX_ATTRIBUTE_VALUE:
            raise InvalidRequestError(
                f"attributes[{key!r}] is over {MAX_ATTRIBUTE_VALUE} characters", param="attributes"
            )
        if not isinstance(value, (str, int, float, bool)):
            raise InvalidRequestError(
                f"attributes[{key!r}] must be a string, a number or a boolean", param="attributes"
            )
        out[key] = value
    return out


def check_file_ids(file_ids: Sequence[str]) -> list[str]:
    if isinstance(file_ids, (str, bytes)) or not isinstance(file_ids, Sequence) or not file_ids:
        raise InvalidRequestError("file_ids must be a non-empty list of file ids", param="file_ids")
    if len(file_ids) > MAX_FILES_PER_ADD:
        raise InvalidRequestError(f"at most {MAX_FILES_PER_ADD} files per call", param="file_ids")
    if not all(isinstance(f, str) and f for f in file_ids):
        raise InvalidRequestError("every file id must be a non-empty string", param="file_ids")
    return list(dict.fromkeys(file_ids))


def check_status(status: str | None) -> str | None:
    if status is not None and status not in FILE_STATUSES:
        raise InvalidRequestError(f"filter must be one of {', '.join(FILE_STATUSES)}; got {status!r}", param="filter")
    return status


def fts_match(query: str) -> list[str] | None:
    """The query's words (any of them may match), or None when it has no words: then nothing matches."""
    from ._common import query_terms  # here: `_common` imports the protocols, which import this module

    return query_terms(query) or None


CANDIDATES = 4
"""Chunks a search reads per result it returns, to re-rank by score."""
_WORDS = re.compile(r"\w+", re.UNICODE)


def score_of(terms: Sequence[str], text: str, rank: float) -> float:
    """A chunk's score in [0, 1], as OpenAI reports them: mostly the share of the query's words it holds (by a
    stem-length prefix, as the stemmed index matched them), the rest its full-text rank (BM25 negated, or
    ts_rank; higher is better). The rank alone is no score: BM25 over a handful of chunks is near zero."""
    words = {w.lower() for w in _WORDS.findall(text)}
    held = sum(1 for term in terms if any(w.startswith(term[: max(3, len(term) - 2)]) for w in words))
    positive = max(rank, 0.0)
    return 0.75 * held / max(1, len(terms)) + 0.25 * (positive / (1.0 + positive))


def best_hits(hits: list[ChunkHit], limit: int) -> list[ChunkHit]:
    return sorted(hits, key=lambda h: -h.score)[:limit]


def file_missing(file_id: str) -> NotFoundError:
    return NotFoundError(f"no file {file_id!r}; upload it with POST /v1/files first", param="file_id")


def store_missing(vector_store_id: str) -> NotFoundError:
    return NotFoundError(
        f"no vector store {vector_store_id!r}; create one with POST /v1/vector_stores", param="vector_store_id"
    )


def vector_file_missing(vector_store_id: str, file_id: str) -> NotFoundError:
    return NotFoundError(
        f"file {file_id!r} is not in vector store {vector_store_id!r}; add it with POST "
        f"/v1/vector_stores/{vector_store_id}/files",
        param="file_id",
    )


def after_missing(after: str) -> NotFoundError:
    return NotFoundError(f"cannot list after {after!r}: no such object; pass an id from the previous page", "after")


FILE_COLUMNS = "id, tenant, filename, purpose, bytes, created_at, expires_at"
STORE_COLUMNS = "id, tenant, created_at, name, metadata, data, last_active_at"
VECTOR_FILE_COLUMNS = (
    "vector_store_id, file_id, tenant, created_at, status, attributes, chunking, last_error, usage_bytes, batch_id"
)


def file_of(row: Sequence[Any]) -> FileRecord:
    expires = None if row[6] is None else float(row[6])
    return FileRecord(str(row[0]), str(row[1]), str(row[2]), str(row[3]), int(row[4]), float(row[5]), expires)


def store_of(row: Sequence[Any], counts: Sequence[Any] | None = None, usage: int = 0) -> VectorStoreRecord:
    tally = {str(status): int(n) for status, n in counts or ()}
    return VectorStoreRecord(
        id=str(row[0]),
        tenant=str(row[1]),
        created_at=float(row[2]),
        name=row[3],
        metadata=json.loads(row[4]),
        data=json.loads(row[5]),
        last_active_at=float(row[6]),
        counts=FileCounts(**{s: tally.get(s, 0) for s in FILE_STATUSES}),
        usage_bytes=usage,
    )


def vector_file_of(row: Sequence[Any]) -> VectorFile:
    return VectorFile(
        vector_store_id=str(row[0]),
        file_id=str(row[1]),
        tenant=str(row[2]),
        created_at=float(row[3]),
        status=str(row[4]),
        attributes=json.loads(row[5]),
        chunking=json.loads(row[6]),
        last_error=json.loads(row[7]) if row[7] else None,
        usage_bytes=int(row[8]),
        batch_id=row[9],
    )


def page_clause(
    mark: str, order: Order, cursor: tuple[float, str] | None, id_column: str = "id"
) -> tuple[str, list[Any]]:
    """The WHERE fragment and parameters of a (created_at, id) page after `cursor`, and its ORDER BY."""
    if order not in ("asc", "desc"):
        raise InvalidRequestError(f"order must be 'asc' or 'desc', got {order!r}", param="order")
    direction = "ASC" if order == "asc" else "DESC"
    where = ""
    params: list[Any] = []
    if cursor is not None:
        where = f" AND (created_at, {id_column}) {'>' if direction == 'ASC' else '<'} ({mark}, {mark})"
        params = [cursor[0], cursor[1]]
    return where + f" ORDER BY created_at {direction}, {id_column} {direction}", params
