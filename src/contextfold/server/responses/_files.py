"""`/v1/files`: OpenAI's Files API, the bytes kept in the same store as the logs, per tenant.

    POST   /v1/files                 multipart: `file`, `purpose`, `expires_after[anchor]=created_at` and
                                     `expires_after[seconds]` (3600-2592000); over `limits.max_file_bytes` is a 413
    GET    /v1/files                 `after`, `limit` (1-10,000), `order` (default desc), `purpose`
    GET    /v1/files/{id}            the file object
    GET    /v1/files/{id}/content    the bytes as uploaded
    DELETE /v1/files/{id}            erases the bytes, the file's place in every vector store and its chunks

Another tenant's file answers 404, exactly like one that never existed, and so does an expired one (the ingestion
loop's sweep then erases it with its chunks).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Query, UploadFile
from fastapi.responses import Response

from ..._errors import InvalidRequestError, PayloadTooLargeError
from ...store import FileRecord
from ...store._knowledge import check_file_expiry
from .._state import ServerState, state_of, tenant_of

router = APIRouter(prefix="/v1/files", tags=["files"])
Tenant = Annotated[str, Depends(tenant_of)]
State = Annotated[ServerState, Depends(state_of)]
_READ = 1024 * 1024
Purpose = Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]
"""OpenAI's purposes; only `assistants` and `user_data` files are meant for vector stores, but any is stored."""


def file_object(record: FileRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": int(record.created_at),
        "filename": record.filename,
        "purpose": record.purpose,
        "status": "processed",
        "expires_at": None if record.expires_at is None else int(record.expires_at),
        "status_details": None,
    }


def list_page(data: list[dict[str, Any]], more: bool, id_key: str = "id") -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0][id_key] if data else None,
        "last_id": data[-1][id_key] if data else None,
        "has_more": more,
    }


@router.post("")
async def upload_file(
    file: UploadFile,
    tenant: Tenant,
    state: State,
    purpose: Annotated[Purpose, Form()] = "assistants",
    anchor: Annotated[str | None, Form(alias="expires_after[anchor]")] = None,
    seconds: Annotated[int | None, Form(alias="expires_after[seconds]")] = None,
) -> dict[str, Any]:
    lifetime = check_file_expiry(anchor, seconds)  # checked before the bytes are read: nothing half-kept
    limit = state.config.limits.max_file_bytes
    parts: list[bytes] = []
    size = 0
    while chunk := await file.read(_READ):  # read in pieces, so an oversized file is refused without holding it
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(
                f"the file is over the {limit}-byte limit (limits.max_file_bytes); split it or raise the limit",
                param="file",
            )
        parts.append(chunk)
    if not file.filename:
        raise InvalidRequestError("the file part needs a filename (multipart filename=...)", param="file")
    record = await state.store.knowledge.files.put(tenant, file.filename, purpose, b"".join(parts), lifetime=lifetime)
    return file_object(record)


@router.get("")
async def list_files(
    tenant: Tenant,
    state: State,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    purpose: str | None = None,
) -> dict[str, Any]:
    found = await state.store.knowledge.files.list(
        tenant=tenant, purpose=purpose, after=after, limit=limit + 1, order=order
    )
    return list_page([file_object(f) for f in found[:limit]], len(found) > limit)


@router.get("/{file_id}")
async def retrieve_file(file_id: str, tenant: Tenant, state: State) -> dict[str, Any]:
    return file_object(await state.store.knowledge.files.get(file_id, tenant=tenant))


@router.get("/{file_id}/content")
async def file_content(file_id: str, tenant: Tenant, state: State) -> Response:
    content = await state.store.knowledge.files.content(file_id, tenant=tenant)
    return Response(content, media_type="application/octet-stream")


@router.delete("/{file_id}")
async def delete_file(file_id: str, tenant: Tenant, state: State) -> dict[str, Any]:
    await state.store.knowledge.files.delete(file_id, tenant=tenant)
    return {"id": file_id, "object": "file", "deleted": True}
