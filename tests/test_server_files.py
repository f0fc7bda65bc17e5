"""`/v1/files` and `/v1/vector_stores` through the official SDK: upload, list, content, delete; stores, their
files' ingestion to `completed` or `failed`, batches, search with filters and ranking options; the size limit,
tenants, and ingestion that resumes after a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from contextfold.server import ServerConfig
from contextfold.server._config import Limits
from contextfold.store import SQLiteStore

from .server_fixtures import Served, check_error, serving

HERON = b"# Project Heron\n\nThe launch code for project heron is 7741. Keep it secret.\n"
POLL = 20


async def kb(client: openai.AsyncOpenAI, *files: tuple[str, bytes], **attributes: str | float | bool) -> str:
    """A vector store holding these files, ingested."""
    store = await client.vector_stores.create(name="kb")
    for name, content in files:
        uploaded = await client.files.create(file=(name, content), purpose="assistants")
        done = await client.vector_stores.files.create_and_poll(
            vector_store_id=store.id, file_id=uploaded.id, attributes=attributes or None, poll_interval_ms=POLL
        )
        assert done.status == "completed", done.last_error
    return store.id


async def test_files_upload_list_retrieve_content_and_delete(served: Served) -> None:
    client = served.client
    first = await client.files.create(file=("notes.md", HERON), purpose="assistants")
    second = await client.files.create(file=("data.json", b'{"a": 1}'), purpose="user_data")
    assert (first.filename, first.bytes, first.purpose) == ("notes.md", len(HERON), "assistants")
    assert (await client.files.retrieve(first.id)).id == first.id
    assert (await client.files.content(first.id)).content == HERON
    assert [f.id for f in (await client.files.list()).data] == [second.id, first.id]
    assert [f.id for f in (await client.files.list(purpose="user_data")).data] == [second.id]
    page = await client.files.list(limit=1, order="asc")
    assert [f.id for f in page.data] == [first.id]
    assert page.has_more
    assert [f.id async for f in client.files.list(limit=1, order="asc")] == [first.id, second.id]  # auto-paging
    deleted = await client.files.delete(first.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        await client.files.content(first.id)


async def test_an_upload_over_the_file_limit_is_a_413_naming_it(tmp_path: Path) -> None:
    config = ServerConfig(db=str(tmp_path / "s.db"), limits=Limits(max_file_bytes=1000))
    async with serving(config) as served:
        await served.client.files.create(file=("ok.txt", b"x" * 1000), purpose="assistants")
        reply = await served.http.post(
            "/v1/files", files={"file": ("big.txt", b"x" * 1001)}, data={"purpose": "assistants"}
        )
        assert "max_file_bytes" in check_error(reply, 413)
        far = await served.http.post("/v1/files", files={"file": ("huge.txt", b"x" * 200_000)})
        assert "max_file_bytes" in check_error(far, 413)
        assert [f.filename for f in (await served.client.files.list()).data] == ["ok.txt"]


async def test_a_vector_store_ingests_searches_filters_and_forgets_deleted_files(served: Served) -> None:
    client = served.client
    store = await client.vector_stores.create(
        name="kb", metadata={"team": "a"}, extra_body={"provider_id": "faiss", "embedding_model": "all-MiniLM"}
    )
    record = await served.store.knowledge.vector_stores.get(store.id, tenant="default")
    assert record.data["provider_id"] == "faiss"  # other servers' creation fields are recorded, not refused
    assert record.data["embedding_model"] == "all-MiniLM"
    heron = await client.files.create(file=("heron.md", HERON), purpose="assistants")
    page = (
        "<html><head><style>p {color: red}</style></head><body><p>Project <b>Osprey</b> launches"
        " from pad 39A.</p><script>var launch = 1;</script></body></html>"
    )
    osprey = await client.files.create(file=("osprey.html", page.encode()), purpose="assistants")
    for uploaded, team in ((heron, "heron"), (osprey, "osprey")):
        done = await client.vector_stores.files.create_and_poll(
            vector_store_id=store.id,
            file_id=uploaded.id,
            attributes={"team": team, "year": 2025},
            poll_interval_ms=POLL,
        )
        assert done.status == "completed"
        assert done.chunking_strategy is not None
        assert done.chunking_strategy.type == "static"
    assert (await client.vector_stores.retrieve(store.id)).file_counts.completed == 2

    found = await client.vector_stores.search(store.id, query="what is the launch code?")
    assert found.data[0].file_id == heron.id
    assert "7741" in found.data[0].content[0].text
    assert 0 < found.data[0].score <= 1
    osprey_only = await client.vector_stores.search(
        store.id, query="launch", filters={"type": "eq", "key": "team", "value": "osprey"}
    )
    assert [r.filename for r in osprey_only.data] == ["osprey.html"]
    assert "var launch" not in osprey_only.data[0].content[0].text  # scripts and styles are not text
    none = await client.vector_stores.search(
        store.id,
        query="launch",
        filters={"type": "and", "filters": [{"type": "gte", "key": "year", "value": 2026}]},
    )
    assert none.data == []
    strict = await client.vector_stores.search(
        store.id, query="launch code heron", ranking_options={"score_threshold": 0.99}, max_num_results=1
    )
    assert len(strict.data) <= 1

    await client.files.delete(heron.id)
    after = await client.vector_stores.search(store.id, query="launch code heron 7741")
    assert heron.id not in {r.file_id for r in after.data}
    assert (await client.vector_stores.retrieve(store.id)).file_counts.total == 1


async def test_unreadable_files_fail_with_last_error(served: Served) -> None:
    client = served.client
    store = await client.vector_stores.create(name="kb")
    blob = await client.files.create(file=("blob.bin", b"\x00\xff\x00"), purpose="assistants")
    done = await client.vector_stores.files.create_and_poll(
        vector_store_id=store.id, file_id=blob.id, poll_interval_ms=POLL
    )
    assert done.status == "failed"
    assert done.last_error is not None
    assert done.last_error.code == "unsupported_file"
    failed = await client.vector_stores.files.list(store.id, filter="failed")
    assert [f.id for f in failed.data] == [blob.id]


async def test_batches_chunking_and_file_removal(served: Served) -> None:
    client = served.client
    store = await client.vector_stores.create(name="kb")
    words = " ".join(f"word{n}" for n in range(500)).encode()
    ids = [(await client.files.create(file=(f"f{n}.txt", words), purpose="assistants")).id for n in range(3)]
    batch = await client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id,
        file_ids=ids,
        chunking_strategy={"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 50}},
        poll_interval_ms=POLL,
    )
    assert (batch.status, batch.file_counts.completed) == ("completed", 3)
    listed = await client.vector_stores.file_batches.list_files(batch_id=batch.id, vector_store_id=store.id)
    assert sorted(f.id for f in listed.data) == sorted(ids)
    parts = [p.text or "" async for p in client.vector_stores.files.content(file_id=ids[1], vector_store_id=store.id)]
    assert len(parts) == 9  # 500 words in windows of 100 tokens starting at 0, 50, ..., 400
    assert parts[0].startswith("word0 word1")
    assert parts[-1].endswith("word499")
    one = await client.vector_stores.files.retrieve(file_id=ids[0], vector_store_id=store.id)
    assert one.chunking_strategy is not None
    assert one.chunking_strategy.model_dump()["static"] == {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 50}
    removed = await client.vector_stores.files.delete(file_id=ids[0], vector_store_id=store.id)
    assert removed.deleted
    assert (await client.files.retrieve(ids[0])).id == ids[0]  # the file itself stays
    with pytest.raises(openai.BadRequestError) as refused:
        await client.vector_stores.files.create(
            vector_store_id=store.id,
            file_id=ids[0],
            chunking_strategy={"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 80}},
        )
    assert "chunk_overlap_tokens" in str(refused.value)
    assert (await client.vector_stores.delete(store.id)).deleted
    with pytest.raises(openai.NotFoundError):
        await client.vector_stores.retrieve(store.id)


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[tuple[Served, Served]]:
    async with serving(ServerConfig(db=str(tmp_path / "s.db"))) as served:
        acme, _ = await served.store.keys.create("acme")
        globex, _ = await served.store.keys.create("globex")
        yield await served.as_key(acme), await served.as_key(globex)


async def test_another_tenant_sees_none_of_the_files_stores_or_chunks(two: tuple[Served, Served]) -> None:
    acme, globex = two
    store_id = await kb(acme.client, ("heron.md", HERON))
    (file_id,) = [f.id for f in (await acme.client.files.list()).data]
    assert (await globex.client.files.list()).data == []
    assert (await globex.client.vector_stores.list()).data == []
    for attempt in (
        globex.client.files.retrieve(file_id),
        globex.client.files.content(file_id),
        globex.client.files.delete(file_id),
        globex.client.vector_stores.retrieve(store_id),
        globex.client.vector_stores.search(store_id, query="launch code"),
        globex.client.vector_stores.files.list(store_id),
        globex.client.vector_stores.delete(store_id),
    ):
        with pytest.raises(openai.NotFoundError):
            await attempt
    theirs = await globex.client.vector_stores.create(name="theirs")
    with pytest.raises(openai.NotFoundError):  # acme's file cannot be put in globex's store
        await globex.client.vector_stores.files.create(vector_store_id=theirs.id, file_id=file_id)
    assert (await acme.client.vector_stores.search(store_id, query="launch code")).data


async def test_ingestion_queued_before_a_restart_completes_after_it(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    store = await SQLiteStore.open(db)
    try:  # queued, as a server that stopped before ingesting leaves it
        record = await store.knowledge.files.put("default", "heron.md", "assistants", HERON)
        vs = await store.knowledge.vector_stores.create("default", name="kb", metadata={}, data={})
        chunking = {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}
        await store.knowledge.vector_files.add(vs.id, [record.id], tenant="default", attributes={}, chunking=chunking)
    finally:
        await store.close()
    async with serving(ServerConfig(db=db)) as served:
        done = await served.client.vector_stores.files.poll(
            file_id=record.id, vector_store_id=vs.id, poll_interval_ms=POLL
        )
        assert done.status == "completed"
        hits = await served.client.vector_stores.search(vs.id, query="heron launch code")
        assert "7741" in hits.data[0].content[0].text


async def test_bad_search_requests_are_400s_naming_the_field(served: Served) -> None:
    store = await served.client.vector_stores.create(name="kb")
    for body, param in (
        ({"query": "x", "max_num_results": 51}, "max_num_results"),
        ({"query": "x", "filters": {"type": "near", "key": "a", "value": 1}}, "filters.type"),
        ({"query": "x", "ranking_options": {"score_threshold": 2}}, "ranking_options.score_threshold"),
        ({"query": ""}, "query"),
    ):
        reply = await served.http.post(f"/v1/vector_stores/{store.id}/search", json=body)
        check_error(reply, 400, param=param)
