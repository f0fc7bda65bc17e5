"""Files and vector store bodies checked with the `openai` SDK's own models (`check_reply` calls this)."""

from __future__ import annotations

from typing import Any

from openai.types import FileDeleted, FileObject, VectorStore, VectorStoreDeleted, VectorStoreSearchResponse
from openai.types.vector_stores import (
    FileContentResponse,
    VectorStoreFile,
    VectorStoreFileBatch,
    VectorStoreFileDeleted,
)

_MODELS: dict[str, Any] = {
    "file": FileObject,
    "vector_store": VectorStore,
    "vector_store.deleted": VectorStoreDeleted,
    "vector_store.file": VectorStoreFile,
    "vector_store.file.deleted": VectorStoreFileDeleted,
    "vector_store.files_batch": VectorStoreFileBatch,
}


def check_knowledge(body: Any, path: str) -> bool:
    """Validate a files or vector stores body; False when the body is not one of theirs."""
    if not path.startswith(("/v1/files", "/v1/vector_stores")) or not isinstance(body, dict):
        return False
    kind = body.get("object")
    if kind == "file" and body.get("deleted"):
        FileDeleted.model_validate(body)
    elif kind in _MODELS:
        _MODELS[kind].model_validate(body)
    elif kind == "list":
        for entry in body["data"]:
            check_knowledge(entry, path)
    elif kind == "vector_store.file_content.page":
        for part in body["data"]:
            FileContentResponse.model_validate(part)
    elif kind == "vector_store.search_results.page":
        for result in body["data"]:
            VectorStoreSearchResponse.model_validate(result)
    else:
        raise AssertionError(f"unexpected body from {path}: {body}")
    return True
