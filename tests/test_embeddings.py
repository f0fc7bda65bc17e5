"""Embeddings: with an embeddings upstream configured, chunks are embedded at ingestion and search fuses vector
similarity with the full-text score, so a query that shares no word with a chunk still finds it. Against a real
`contextfold serve` process and a loopback embeddings server (OpenAI's wire shape), on both stores; tenants,
deletion, a failing upstream, batching."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from contextfold.runtime._embeddings import Embedder
from contextfold.server import ServerConfig
from contextfold.store._knowledge_vectors import unpack

from .fake_embeddings import FakeEmbeddings, fake_embeddings
from .processes import Replica
from .server_fixtures import serving
from .store_fixtures import Backend

CARS = b"# Garage notes\n\nThe automobile needs new tyres before the winter trip.\n"
FRUIT = b"# Kitchen notes\n\nBananas ripen quickly in a warm kitchen.\n"
QUERY = "car wheels"  # no word of it is in CARS: only the embeddings relate them


def _poll(client: openai.OpenAI, store_id: str, file_id: str) -> openai.types.vector_stores.VectorStoreFile:
    for _ in range(600):
        found = client.vector_stores.files.retrieve(file_id, vector_store_id=store_id)
        if found.status != "in_progress":
            return found
        time.sleep(0.05)
    raise AssertionError("ingestion never finished")


def _embedded(backend: Backend) -> int:
    ((count,),) = backend.query("SELECT count(*) FROM chunks WHERE embedding IS NOT NULL")
    return int(count)


@pytest.fixture
def embeddings() -> Iterator[FakeEmbeddings]:
    with fake_embeddings() as fake:
        yield fake


def test_a_query_sharing_no_word_with_a_chunk_finds_it_only_with_embeddings(
    backend: Backend, embeddings: FakeEmbeddings, tmp_path: Path
) -> None:
    flags = ("--embeddings-url", embeddings.url, "--embeddings-model", "fake-embed")
    replica = Replica(backend.location, tmp_path / "on.log", *flags)
    try:
        replica.wait_ready()
        client = openai.OpenAI(base_url=replica.url + "/v1", api_key="unused", max_retries=0)
        store = client.vector_stores.create(name="kb")
        ids = {}
        for name, content in (("cars.md", CARS), ("fruit.md", FRUIT)):
            uploaded = client.files.create(file=(name, content), purpose="assistants")
            client.vector_stores.files.create(vector_store_id=store.id, file_id=uploaded.id)
            assert _poll(client, store.id, uploaded.id).status == "completed"
            ids[name] = uploaded.id
        assert _embedded(backend) == 2
        assert all(r["model"] == "fake-embed" for r in embeddings.requests)

        hits = client.vector_stores.search(store.id, query=QUERY).data
        assert hits[0].filename == "cars.md"
        assert "automobile" in hits[0].content[0].text
        assert 0 < hits[0].score <= 1
        assert all(h.score <= hits[0].score for h in hits)
        alone = client.vector_stores.search(store.id, query=QUERY, ranking_options={"ranker": "none"}).data
        assert alone[0].filename == "cars.md"
        assert alone[0].score > hits[0].score  # similarity alone; fused, the text score (0 here) halves it
        strict = client.vector_stores.search(
            store.id, query=QUERY, ranking_options={"score_threshold": min(1.0, hits[0].score + 0.01)}
        )
        assert strict.data == []

        client.files.delete(ids["cars.md"])  # erases the bytes, the chunks and their vectors
        assert _embedded(backend) == 1
        assert all(h.filename != "cars.md" for h in client.vector_stores.search(store.id, query=QUERY).data)
        client.files.delete(ids["fruit.md"])
        assert _embedded(backend) == 0
        kept = client.files.create(file=("cars.md", CARS), purpose="assistants")
        client.vector_stores.files.create(vector_store_id=store.id, file_id=kept.id)
        assert _poll(client, store.id, kept.id).status == "completed"
    finally:
        assert replica.stop() == 0, replica.output()

    plain = Replica(backend.location, tmp_path / "off.log")  # the same store, no embeddings upstream
    try:
        plain.wait_ready()
        client = openai.OpenAI(base_url=plain.url + "/v1", api_key="unused", max_retries=0)
        assert client.vector_stores.search(store.id, query=QUERY).data == []
        assert client.vector_stores.search(store.id, query="automobile").data[0].filename == "cars.md"
    finally:
        assert plain.stop() == 0, plain.output()


async def test_tenants_see_only_their_own_embedded_chunks(embeddings: FakeEmbeddings, tmp_path: Path) -> None:
    config = ServerConfig(db=str(tmp_path / "s.db"), embeddings_url=embeddings.url, embeddings_model="fake")
    async with serving(config) as served:
        acme_key, _ = await served.store.keys.create("acme")
        globex_key, _ = await served.store.keys.create("globex")
        acme, globex = await served.as_key(acme_key), await served.as_key(globex_key)
        stores = []
        for tenant, content in ((acme, CARS), (globex, b"The vehicle has worn tires.")):
            store = await tenant.client.vector_stores.create(name="kb")
            uploaded = await tenant.client.files.create(file=("notes.md", content), purpose="assistants")
            done = await tenant.client.vector_stores.files.create_and_poll(
                vector_store_id=store.id, file_id=uploaded.id, poll_interval_ms=20
            )
            assert done.status == "completed", done.last_error
            stores.append(store.id)
        mine = (await acme.client.vector_stores.search(stores[0], query=QUERY)).data
        assert [h.content[0].text for h in mine] == [CARS.decode().strip()]
        with pytest.raises(openai.NotFoundError):
            await globex.client.vector_stores.search(stores[0], query=QUERY)
        theirs = (await globex.client.vector_stores.search(stores[1], query=QUERY)).data
        assert ["vehicle" in h.content[0].text for h in theirs] == [True]


async def test_a_failing_embeddings_upstream_fails_the_file_saying_what_to_fix(
    embeddings: FakeEmbeddings, tmp_path: Path
) -> None:
    embeddings.failing = True
    config = ServerConfig(db=str(tmp_path / "s.db"), embeddings_url=embeddings.url, embeddings_model="fake")
    async with serving(config) as served:
        served.state.embedder.backoff = 0.01  # type: ignore[union-attr]  # the retries, without the waits
        store = await served.client.vector_stores.create(name="kb")
        uploaded = await served.client.files.create(file=("cars.md", CARS), purpose="assistants")
        done = await served.client.vector_stores.files.create_and_poll(
            vector_store_id=store.id, file_id=uploaded.id, poll_interval_ms=20
        )
        assert done.status == "failed"
        assert done.last_error is not None
        assert done.last_error.code == "server_error"
        assert embeddings.url in done.last_error.message
        assert "--embeddings-url" in done.last_error.message
        assert len(embeddings.requests) == 3  # tried, then tried again twice


async def test_chunks_are_embedded_in_batches_as_unit_vectors(embeddings: FakeEmbeddings) -> None:
    embedder = Embedder(embeddings.url, "fake", batch=64)
    try:
        vectors = await embedder.embed([f"text number {n}" for n in range(130)])
    finally:
        await embedder.close()
    assert [len(r["input"]) for r in embeddings.requests] == [64, 64, 2]
    assert len(vectors) == 130
    assert all(math.isclose(sum(x * x for x in unpack(v)), 1.0, rel_tol=1e-5) for v in vectors)
