"""`/v1/vector_stores`: OpenAI's Vector Stores API over the store's knowledge seam, per tenant.

    POST/GET /v1/vector_stores, GET/POST/DELETE /v1/vector_stores/{id}
    POST/GET …/{id}/files, GET/POST/DELETE …/{id}/files/{file_id}     status in_progress -> completed | failed
    GET …/{id}/files/{file_id}/content                                its chunks
    POST …/{id}/file_batches, GET …/file_batches/{batch}, POST …/cancel, GET …/file_batches/{batch}/files
    POST …/{id}/search                                                query, filters, max_num_results, ranking

A file added to a store is queued in the store (`in_progress`) and ingested by the server's background
`Ingestor`, off the request path; clients poll the file (the SDK's `create_and_poll` does). Creation fields that
other servers' clients send and OpenAI has not (`provider_id`, `embedding_model`, ...) are recorded as given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import ConfigDict

from ..._errors import InvalidRequestError, NotFoundError
from ...events import new_id
from ...runtime import chunking_of, search_chunks, search_options
from ...runtime import file_search_result as result_of
from ...store import FileCounts, VectorFile, VectorStoreRecord
from ...store._knowledge import check_expires_after, expires_at
from .._state import ServerState, state_of, tenant_of
from ._files import list_page
from ._schemas import _Body

router = APIRouter(prefix="/v1/vector_stores", tags=["vector stores"])
Tenant = Annotated[str, Depends(tenant_of)]
State = Annotated[ServerState, Depends(state_of)]
Order = Literal["asc", "desc"]
FileFilter = Literal["in_progress", "completed", "failed", "cancelled"]
"""The `filter` of a listing of a vector store's files: one status."""


@dataclass(frozen=True, slots=True)
class _PageQuery:
    after: str | None
    limit: int
    order: Order
    filter: FileFilter | None


def _page_query(
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Order = "desc",
    filter: FileFilter | None = None,
) -> _PageQuery:
    """The query of both listings of a vector store's files (all of them, a batch's), declared once."""
    return _PageQuery(after, limit, order, filter)


FilesPage = Annotated[_PageQuery, Depends(_page_query)]

_KNOWN = frozenset({"name", "file_ids", "metadata", "expires_after", "chunking_strategy", "description"})


class StoreCreate(_Body):
    model_config = ConfigDict(extra="allow")  # other servers' creation fields, recorded as given

    name: str | None = None
    file_ids: list[str] | None = None
    metadata: dict[str, str] | None = None
    expires_after: dict[str, Any] | None = None
    chunking_strategy: dict[str, Any] | None = None
    description: str | None = None


class StoreUpdate(_Body):
    name: str | None = None
    metadata: dict[str, str] | None = None
    expires_after: dict[str, Any] | None = None


class FileAdd(_Body):
    file_id: str
    attributes: dict[str, str | float | bool] | None = None
    chunking_strategy: dict[str, Any] | None = None


class BatchFile(_Body):
    file_id: str
    attributes: dict[str, str | float | bool] | None = None
    chunking_strategy: dict[str, Any] | None = None


class BatchCreate(_Body):
    file_ids: list[str] | None = None
    files: list[BatchFile] | None = None
    attributes: dict[str, str | float | bool] | None = None
    chunking_strategy: dict[str, Any] | None = None


class FileUpdate(_Body):
    attributes: dict[str, str | float | bool] | None


class NoBody(_Body):
    """A POST that takes nothing still reads what is sent, so an oversized body is refused like any other."""


class SearchRequest(_Body):
    query: str | list[str]
    filters: dict[str, Any] | None = None
    max_num_results: int | None = None
    ranking_options: dict[str, Any] | None = None
    rewrite_query: bool | None = None


def _counts(counts: FileCounts) -> dict[str, int]:
    return {
        "in_progress": counts.in_progress,
        "completed": counts.completed,
        "failed": counts.failed,
        "cancelled": counts.cancelled,
        "total": counts.total,
    }


def store_object(record: VectorStoreRecord) -> dict[str, Any]:
    expires_after = record.data.get("expires_after")
    expiry = check_expires_after(expires_after) if isinstance(expires_after, dict) else None
    falls = expires_at(expiry, record.created_at, record.last_active_at)
    expires_after = {"anchor": expiry[0], "days": expiry[1]} if expiry else None
    return {
        "id": record.id,
        "object": "vector_store",
        "created_at": int(record.created_at),
        "name": record.name or "",
        "usage_bytes": record.usage_bytes,
        "file_counts": _counts(record.counts),
        "status": "in_progress" if record.counts.in_progress else "completed",
        "expires_after": expires_after,
        "expires_at": None if falls is None else int(falls),
        "last_active_at": int(record.last_active_at),
        "metadata": record.metadata,
        "description": record.data.get("description"),
    }


def vector_file_object(row: VectorFile) -> dict[str, Any]:
    return {
        "id": row.file_id,
        "object": "vector_store.file",
        "created_at": int(row.created_at),
        "vector_store_id": row.vector_store_id,
        "status": row.status,
        "last_error": row.last_error,
        "usage_bytes": row.usage_bytes,
        "attributes": row.attributes,
        "chunking_strategy": {"type": "static", "static": row.chunking},
    }


def _wake(state: ServerState) -> None:
    if state.ingestor is not None:
        state.ingestor.wake()


@router.post("")
async def create_store(body: StoreCreate, tenant: Tenant, state: State) -> dict[str, Any]:
    knowledge = state.store.knowledge
    chunking = chunking_of(body.chunking_strategy)
    extra = {k: v for k, v in (body.model_extra or {}).items() if k not in _KNOWN}
    data: dict[str, Any] = {"expires_after": body.expires_after, "description": body.description, **extra}
    record = await knowledge.vector_stores.create(tenant, name=body.name, metadata=body.metadata or {}, data=data)
    if body.file_ids:
        try:
            await knowledge.vector_files.add(record.id, body.file_ids, tenant=tenant, attributes={}, chunking=chunking)
        except BaseException:
            await knowledge.vector_stores.delete(record.id, tenant=tenant)  # nothing half-made is left behind
            raise
        _wake(state)
    return store_object(await knowledge.vector_stores.get(record.id, tenant=tenant))


@router.get("")
async def list_stores(
    tenant: Tenant,
    state: State,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Order = "desc",
) -> dict[str, Any]:
    found = await state.store.knowledge.vector_stores.list(tenant=tenant, after=after, limit=limit + 1, order=order)
    return list_page([store_object(r) for r in found[:limit]], len(found) > limit)


@router.get("/{vector_store_id}")
async def retrieve_store(vector_store_id: str, tenant: Tenant, state: State) -> dict[str, Any]:
    return store_object(await state.store.knowledge.vector_stores.get(vector_store_id, tenant=tenant))


@router.post("/{vector_store_id}")
async def update_store(vector_store_id: str, body: StoreUpdate, tenant: Tenant, state: State) -> dict[str, Any]:
    stores = state.store.knowledge.vector_stores
    if "expires_after" in body.model_fields_set:  # named, even as null (never expire), it replaces the store's
        record = await stores.update(
            vector_store_id, tenant=tenant, name=body.name, metadata=body.metadata, expires_after=body.expires_after
        )
    else:
        record = await stores.update(vector_store_id, tenant=tenant, name=body.name, metadata=body.metadata)
    return store_object(record)


@router.delete("/{vector_store_id}")
async def delete_store(vector_store_id: str, tenant: Tenant, state: State) -> dict[str, Any]:
    await state.store.knowledge.vector_stores.delete(vector_store_id, tenant=tenant)
    return {"id": vector_store_id, "object": "vector_store.deleted", "deleted": True}


# --- files in a store ---------------------------------------------------------------------------------------------


@router.post("/{vector_store_id}/files")
async def add_file(vector_store_id: str, body: FileAdd, tenant: Tenant, state: State) -> dict[str, Any]:
    (added,) = await state.store.knowledge.vector_files.add(
        vector_store_id,
        [body.file_id],
        tenant=tenant,
        attributes=body.attributes or {},
        chunking=chunking_of(body.chunking_strategy),
    )
    _wake(state)
    return vector_file_object(added)


@router.get("/{vector_store_id}/files")
async def list_files(
    vector_store_id: str,
    tenant: Tenant,
    state: State,
    page: FilesPage,
) -> dict[str, Any]:
    return await _files_page(state, vector_store_id, tenant, None, page)


@router.get("/{vector_store_id}/files/{file_id}")
async def retrieve_file(vector_store_id: str, file_id: str, tenant: Tenant, state: State) -> dict[str, Any]:
    return vector_file_object(await state.store.knowledge.vector_files.get(vector_store_id, file_id, tenant=tenant))


@router.get("/{vector_store_id}/files/{file_id}/content")
async def file_content(vector_store_id: str, file_id: str, tenant: Tenant, state: State) -> dict[str, Any]:
    """The file's chunks, as the store searches them (OpenAI's parsed content)."""
    chunks = await state.store.knowledge.index.chunks(vector_store_id, file_id, tenant=tenant)
    data = [{"type": "text", "text": text} for text in chunks]
    return {"object": "vector_store.file_content.page", "data": data, "has_more": False, "next_page": None}


@router.post("/{vector_store_id}/files/{file_id}")
async def update_file(
    vector_store_id: str, file_id: str, body: FileUpdate, tenant: Tenant, state: State
) -> dict[str, Any]:
    updated = await state.store.knowledge.vector_files.update(
        vector_store_id, file_id, tenant=tenant, attributes=body.attributes or {}
    )
    return vector_file_object(updated)


@router.delete("/{vector_store_id}/files/{file_id}")
async def remove_file(vector_store_id: str, file_id: str, tenant: Tenant, state: State) -> dict[str, Any]:
    await state.store.knowledge.vector_files.remove(vector_store_id, file_id, tenant=tenant)
    return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}


# --- batches ------------------------------------------------------------------------------------------------------


async def _batch(state: ServerState, tenant: str, vector_store_id: str, batch_id: str) -> dict[str, Any]:
    rows = await state.store.knowledge.vector_files.list(
        vector_store_id, tenant=tenant, batch_id=batch_id, limit=10_000, order="asc"
    )
    if not rows:
        raise NotFoundError(f"no file batch {batch_id!r} in vector store {vector_store_id!r}", param="batch_id")
    statuses = [r.status for r in rows]
    counts = FileCounts(*(statuses.count(s) for s in ("in_progress", "completed", "failed", "cancelled")))
    if counts.in_progress:
        status = "in_progress"
    elif counts.cancelled:
        status = "cancelled"
    elif counts.failed == counts.total:
        status = "failed"
    else:
        status = "completed"
    return {
        "id": batch_id,
        "object": "vector_store.files_batch",
        "created_at": int(min(r.created_at for r in rows)),
        "vector_store_id": vector_store_id,
        "status": status,
        "file_counts": _counts(counts),
    }


@router.post("/{vector_store_id}/file_batches")
async def create_batch(vector_store_id: str, body: BatchCreate, tenant: Tenant, state: State) -> dict[str, Any]:
    if bool(body.file_ids) == bool(body.files):
        raise InvalidRequestError("send either file_ids or files (a non-empty list), not both", param="file_ids")
    batch_id = new_id("vsfb")
    files = state.store.knowledge.vector_files
    if body.file_ids:
        await files.add(
            vector_store_id,
            body.file_ids,
            tenant=tenant,
            attributes=body.attributes or {},
            chunking=chunking_of(body.chunking_strategy),
            batch_id=batch_id,
        )
    for n, item in enumerate(body.files or ()):
        try:
            chunking = chunking_of(item.chunking_strategy or body.chunking_strategy)
        except InvalidRequestError as exc:
            raise InvalidRequestError(str(exc), param=f"files[{n}].{exc.param}") from None
        attributes = item.attributes if item.attributes is not None else body.attributes or {}
        await files.add(
            vector_store_id, [item.file_id], tenant=tenant, attributes=attributes, chunking=chunking, batch_id=batch_id
        )
    _wake(state)
    return await _batch(state, tenant, vector_store_id, batch_id)


@router.get("/{vector_store_id}/file_batches/{batch_id}")
async def retrieve_batch(vector_store_id: str, batch_id: str, tenant: Tenant, state: State) -> dict[str, Any]:
    return await _batch(state, tenant, vector_store_id, batch_id)


@router.post("/{vector_store_id}/file_batches/{batch_id}/cancel")
async def cancel_batch(
    vector_store_id: str, batch_id: str, tenant: Tenant, state: State, body: NoBody | None = None
) -> dict[str, Any]:
    await _batch(state, tenant, vector_store_id, batch_id)
    await state.store.knowledge.index.cancel(vector_store_id, batch_id, tenant=tenant)
    return await _batch(state, tenant, vector_store_id, batch_id)


@router.get("/{vector_store_id}/file_batches/{batch_id}/files")
async def list_batch_files(
    vector_store_id: str,
    batch_id: str,
    tenant: Tenant,
    state: State,
    page: FilesPage,
) -> dict[str, Any]:
    await _batch(state, tenant, vector_store_id, batch_id)
    return await _files_page(state, vector_store_id, tenant, batch_id, page)


async def _files_page(
    state: ServerState, vector_store_id: str, tenant: str, batch_id: str | None, page: _PageQuery
) -> dict[str, Any]:
    """A page of the store's files (of one batch, given `batch_id`); one row more than the page says if more follow."""
    found = await state.store.knowledge.vector_files.list(
        vector_store_id,
        tenant=tenant,
        status=page.filter,
        batch_id=batch_id,
        after=page.after,
        limit=page.limit + 1,
        order=page.order,
    )
    return list_page([vector_file_object(f) for f in found[: page.limit]], len(found) > page.limit)


# --- search -------------------------------------------------------------------------------------------------------


@router.post("/{vector_store_id}/search")
async def search(vector_store_id: str, body: SearchRequest, tenant: Tenant, state: State) -> dict[str, Any]:
    queries = [body.query] if isinstance(body.query, str) else list(body.query)
    if not queries or not all(q.strip() for q in queries) or len(queries) > 10:
        raise InvalidRequestError("query must be a non-empty string or a list of 1 to 10 of them", param="query")
    options = search_options(body.max_num_results, body.filters, body.ranking_options)
    hits = await search_chunks(state.store.knowledge, tenant, [vector_store_id], queries, options, state.embedder)
    data = [
        {
            "file_id": r["file_id"],
            "filename": r["filename"],
            "score": r["score"],
            "attributes": r["attributes"],
            "content": [{"type": "text", "text": r["text"]}],
        }
        for r in map(result_of, hits)
    ]
    return {
        "object": "vector_store.search_results.page",
        "search_query": queries,
        "data": data,
        "has_more": False,
        "next_page": None,
    }
