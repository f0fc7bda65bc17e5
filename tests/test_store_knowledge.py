"""The knowledge seam's contract, on both stores: files, vector stores, their files' ingestion states, chunks and
search, tenant scoping, and a deletion that leaves no chunk (and no index entry) behind."""

from __future__ import annotations

import pytest

from contextfold._errors import InvalidRequestError, NotFoundError
from contextfold.runtime._ingest import Ingestor
from contextfold.store import ServerStore

from .store_fixtures import Backend

CHUNKING = {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 20}


async def test_files_are_put_listed_read_and_deleted_per_tenant(store: ServerStore) -> None:
    files = store.knowledge.files
    first = await files.put("acme", "notes.md", "assistants", b"# Notes\nthe launch code is 7741")
    second = await files.put("acme", "data.json", "user_data", b'{"a": 1}')
    await files.put("other", "theirs.txt", "assistants", b"not yours")
    assert (await files.get(first.id, tenant="acme")).bytes == len(b"# Notes\nthe launch code is 7741")
    assert await files.content(second.id, tenant="acme") == b'{"a": 1}'
    listed = await files.list(tenant="acme")
    assert [f.id for f in listed] == [second.id, first.id]  # newest first by default
    assert [f.id for f in await files.list(tenant="acme", order="asc", limit=1)] == [first.id]
    assert [f.id for f in await files.list(tenant="acme", after=second.id)] == [first.id]
    assert [f.id for f in await files.list(tenant="acme", purpose="user_data")] == [second.id]
    with pytest.raises(NotFoundError):
        await files.get(first.id, tenant="other")
    with pytest.raises(NotFoundError):
        await files.content(first.id, tenant="other")
    with pytest.raises(NotFoundError):
        await files.delete(first.id, tenant="other")
    await files.delete(first.id, tenant="acme")
    with pytest.raises(NotFoundError):
        await files.get(first.id, tenant="acme")
    with pytest.raises(InvalidRequestError):
        await files.put("acme", "x.txt", "Not A Purpose!", b"")


async def test_ingestion_completes_search_ranks_and_deletion_erases_chunks(
    store: ServerStore, backend: Backend
) -> None:
    knowledge = store.knowledge
    text = " ".join(f"filler{n}" for n in range(300)) + " the launch code for project heron is 7741"
    doc = await knowledge.files.put("acme", "heron.txt", "assistants", text.encode())
    other = await knowledge.files.put("acme", "misc.txt", "assistants", b"nothing about birds here, only launch")
    vs = await knowledge.vector_stores.create("acme", name="kb", metadata={"team": "a"}, data={"provider_id": "x"})
    added = await knowledge.vector_files.add(
        vs.id, [doc.id, other.id], tenant="acme", attributes={"kind": "doc"}, chunking=CHUNKING
    )
    assert {f.status for f in added} == {"in_progress"}
    assert (await knowledge.vector_stores.get(vs.id, tenant="acme")).counts.in_progress == 2
    assert await Ingestor(knowledge).drain() == 2
    got = await knowledge.vector_files.get(vs.id, doc.id, tenant="acme")
    assert got.status == "completed"
    assert got.usage_bytes > 0
    record = await knowledge.vector_stores.get(vs.id, tenant="acme")
    assert record.counts.completed == 2
    assert record.data == {"provider_id": "x"}
    chunks = await knowledge.index.chunks(vs.id, doc.id, tenant="acme")
    assert len(chunks) == 4  # 308 tokens in windows of 100 starting at 0, 80, 160, 240 (the last ends the text)
    assert chunks[-1].endswith("7741")
    with pytest.raises(NotFoundError):
        await knowledge.index.chunks(vs.id, doc.id, tenant="other")
    hits = await knowledge.index.search([vs.id], "heron launch code", tenant="acme", limit=5)
    assert hits[0].file_id == doc.id
    assert "7741" in hits[0].text
    assert 0 < hits[-1].score <= hits[0].score < 1
    assert hits[0].attributes == {"kind": "doc"}
    only = await knowledge.index.search([vs.id], "launch", tenant="acme", file_ids=[other.id])
    assert {h.file_id for h in only} == {other.id}
    with pytest.raises(NotFoundError):
        await knowledge.index.search([vs.id], "heron", tenant="other")

    await knowledge.files.delete(doc.id, tenant="acme")
    assert await knowledge.index.search([vs.id], "heron", tenant="acme") == []
    assert backend.query("SELECT count(*) FROM chunks WHERE file_id = ?", (doc.id,)) == [(0,)]
    if backend.name == "sqlite":  # the full-text index holds nothing of the erased text either
        assert backend.query("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'heron'") == [(0,)]
    with pytest.raises(NotFoundError):
        await knowledge.vector_files.get(vs.id, doc.id, tenant="acme")


async def test_unreadable_files_fail_with_last_error_and_batches_cancel(store: ServerStore) -> None:
    knowledge = store.knowledge
    binary = await knowledge.files.put("acme", "blob.bin", "assistants", b"\x00\x01\x02")
    broken = await knowledge.files.put("acme", "bad.json", "assistants", b"{nope")
    vs = await knowledge.vector_stores.create("acme", name=None, metadata={}, data={})
    await knowledge.vector_files.add(vs.id, [binary.id, broken.id], tenant="acme", attributes={}, chunking=CHUNKING)
    await Ingestor(knowledge).drain()
    failed = await knowledge.vector_files.list(vs.id, tenant="acme", status="failed")
    codes = {f.file_id: (f.last_error or {}).get("code") for f in failed}
    assert codes == {binary.id: "unsupported_file", broken.id: "invalid_file"}

    again = await knowledge.files.put("acme", "later.txt", "assistants", b"later")
    await knowledge.vector_files.add(
        vs.id, [again.id], tenant="acme", attributes={}, chunking=CHUNKING, batch_id="vsfb_1"
    )
    assert await knowledge.index.cancel(vs.id, "vsfb_1", tenant="acme") == 1
    assert (await knowledge.vector_files.get(vs.id, again.id, tenant="acme")).status == "cancelled"
    assert await knowledge.index.pending() == []
    # a cancelled file is not ingested afterwards
    assert not await knowledge.index.finish(vs.id, again.id, chunks=["x"])


async def test_another_tenant_cannot_add_read_or_remove(store: ServerStore) -> None:
    knowledge = store.knowledge
    mine = await knowledge.files.put("acme", "a.txt", "assistants", b"secret words")
    vs = await knowledge.vector_stores.create("acme", name="kb", metadata={}, data={})
    theirs = await knowledge.vector_stores.create("other", name="kb", metadata={}, data={})
    with pytest.raises(NotFoundError):  # their store cannot take my file
        await knowledge.vector_files.add(theirs.id, [mine.id], tenant="other", attributes={}, chunking=CHUNKING)
    await knowledge.vector_files.add(vs.id, [mine.id], tenant="acme", attributes={}, chunking=CHUNKING)
    for call in (
        knowledge.vector_stores.get(vs.id, tenant="other"),
        knowledge.vector_files.get(vs.id, mine.id, tenant="other"),
        knowledge.vector_files.list(vs.id, tenant="other"),
        knowledge.vector_files.remove(vs.id, mine.id, tenant="other"),
        knowledge.vector_stores.delete(vs.id, tenant="other"),
    ):
        with pytest.raises(NotFoundError):
            await call
    assert [v.id for v in await knowledge.vector_stores.list(tenant="other")] == [theirs.id]
    updated = await knowledge.vector_stores.update(vs.id, tenant="acme", name="renamed", metadata=None)
    assert updated.name == "renamed"
    await knowledge.vector_stores.delete(vs.id, tenant="acme")
    assert (await knowledge.files.get(mine.id, tenant="acme")).id == mine.id  # the file outlives the store
