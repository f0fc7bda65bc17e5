"""pgvector: on a PostgreSQL server with the `vector` extension, chunks keep a `vec` column filled at ingestion and
the nearest chunks are ranked in SQL with `<=>` under a per-dimension HNSW index; the answers are the exact scan's.

The server is PyPI's `pgserver` (PostgreSQL 16 with pgvector's vector.so bundled), started like the other test
servers (initdb into a temporary folder, loopback port); the tests skip, saying so, when it is not installed.
Its binaries are copied beside the data folder first: run as root, the server runs as another user, who cannot
read a site-packages under /root.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from contextfold.store import PostgresStore
from contextfold.store._knowledge_pgvector import nearest_sql
from contextfold.store._knowledge_vectors import pack, similarities

from . import pgserver, test_embeddings
from .fake_embeddings import DIM, FakeEmbeddings, fake_embeddings
from .store_fixtures import Backend


def _pgserver_install() -> Path:
    """The pgserver wheel's files (its `pgserver/pginstall` and the `pgserver.libs` its binaries link to)."""
    try:
        dist = importlib.metadata.distribution("pgserver")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("pgvector tests need PyPI's pgserver (PostgreSQL with pgvector bundled): pip install -e '.[dev]'")
    root = Path(str(dist.locate_file("pgserver")))
    if not (root / "pginstall" / "bin" / "initdb").exists():
        pytest.skip(f"the pgserver package has no PostgreSQL binaries under {root / 'pginstall'}")
    return root.parent


@pytest.fixture(scope="session")
def pgvector_server() -> Iterator[pgserver.Server]:
    site = _pgserver_install()
    copy = Path(tempfile.mkdtemp(prefix="contextfold-pgvector-"))
    try:
        os.chmod(copy, 0o755)
        shutil.copytree(site / "pgserver" / "pginstall", copy / "pgserver" / "pginstall", symlinks=True)
        if (site / "pgserver.libs").exists():
            shutil.copytree(site / "pgserver.libs", copy / "pgserver.libs", symlinks=True)
        server = pgserver.Server(bindir=copy / "pgserver" / "pginstall" / "bin")
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(copy, ignore_errors=True)


@pytest.fixture
def pgvector_url(pgvector_server: pgserver.Server) -> Iterator[str]:
    url = pgvector_server.create_database()
    yield url
    pgvector_server.drop_database(url)


@pytest.fixture
def embeddings() -> Iterator[FakeEmbeddings]:
    with fake_embeddings() as fake:
        yield fake


def test_embeddings_search_on_pgvector(pgvector_url: str, embeddings: FakeEmbeddings, tmp_path: Path) -> None:
    backend = Backend("postgres", pgvector_url)
    test_embeddings.test_a_query_sharing_no_word_with_a_chunk_finds_it_only_with_embeddings(
        backend, embeddings, tmp_path
    )
    ((extension,),) = backend.query("SELECT count(*) FROM pg_extension WHERE extname = 'vector'")
    assert extension == 1
    # What the test left: one embedded chunk, its vector in both columns, and the HNSW index for its size.
    assert backend.query("SELECT count(*) FROM chunks WHERE embedding IS NOT NULL AND vec IS NOT NULL") == [(1,)]
    assert backend.query("SELECT count(*) FROM chunks WHERE (embedding IS NULL) <> (vec IS NULL)") == [(0,)]
    indexes = backend.query("SELECT indexdef FROM pg_indexes WHERE indexname = ?", (f"chunks_vec_hnsw_{DIM}",))
    assert len(indexes) == 1
    assert "hnsw" in indexes[0][0]


def _unit(rng: random.Random, size: int) -> list[float]:
    return [rng.gauss(0, 1) for _ in range(size)]


async def test_pgvector_ranks_as_the_exact_scan_and_leaves_out_other_sizes(pgvector_url: str) -> None:
    rng = random.Random(7)
    store = await PostgresStore.open(pgvector_url, max_size=4)
    try:
        knowledge = store.knowledge
        vs = await knowledge.vector_stores.create("t", name=None, metadata={}, data={})
        other = await knowledge.vector_stores.create("t", name=None, metadata={}, data={})
        vectors: dict[str, list[bytes]] = {}
        for n, (target, size) in enumerate(((vs.id, 16), (vs.id, 16), (vs.id, 8), (other.id, 16))):
            uploaded = await knowledge.files.put("t", f"f{n}.txt", "assistants", b"words")
            await knowledge.vector_files.add(target, [uploaded.id], tenant="t", attributes={}, chunking={})
            blobs = [pack(_unit(rng, size)) for _ in range(30)]
            chunks = [f"chunk {n}.{k}" for k in range(len(blobs))]
            assert await knowledge.index.finish(target, uploaded.id, chunks=chunks, vectors=blobs)
            vectors[uploaded.id] = blobs
        file_ids = list(vectors)
        for _ in range(5):
            query = pack(_unit(rng, 16))
            hits = await knowledge.index.nearest([vs.id], query, tenant="t", limit=10)
            mine = [b for fid in file_ids[:2] for b in vectors[fid]]  # the 8-dimension file and the other store: out
            exact = sorted(similarities(query, mine), reverse=True)[:10]
            assert len(hits) == 10
            for hit, score in zip(hits, exact, strict=True):
                assert math.isclose(hit.score, max(0.0, score), abs_tol=1e-5)
            assert {h.file_id for h in hits} <= set(file_ids[:2])
            only = await knowledge.index.nearest([vs.id], query, tenant="t", file_ids=[file_ids[1]], limit=5)
            assert {h.file_id for h in only} == {file_ids[1]}
        short = await knowledge.index.nearest([vs.id], pack(_unit(rng, 8)), tenant="t", limit=50)
        assert {h.file_id for h in short} == {file_ids[2]}
        assert len(short) == 30
        sizes = {r[0] for r in store_rows(pgvector_url, "SELECT indexname FROM pg_indexes WHERE tablename = 'chunks'")}
        assert {"chunks_vec_hnsw_16", "chunks_vec_hnsw_8"} <= sizes
    finally:
        await store.close()


def store_rows(url: str, sql: str) -> list[tuple[object, ...]]:
    return Backend("postgres", url).query(sql)


async def test_chunks_embedded_before_pgvector_get_their_vec_when_the_store_opens(pgvector_url: str) -> None:
    store = await PostgresStore.open(pgvector_url, max_size=4)
    try:
        knowledge = store.knowledge
        vs = await knowledge.vector_stores.create("t", name=None, metadata={}, data={})
        uploaded = await knowledge.files.put("t", "f.txt", "assistants", b"words")
        await knowledge.vector_files.add(vs.id, [uploaded.id], tenant="t", attributes={}, chunking={})
        blobs = [pack([1.0, float(k), 0.5]) for k in range(3)]
        assert await knowledge.index.finish(vs.id, uploaded.id, chunks=["a", "b", "c"], vectors=blobs)
    finally:
        await store.close()
    # As if the chunks were stored by a server without pgvector: only their bytes.
    store_rows(pgvector_url, "UPDATE chunks SET vec = NULL RETURNING id")
    reopened = await PostgresStore.open(pgvector_url, max_size=4)
    try:
        hits = await reopened.knowledge.index.nearest([vs.id], blobs[2], tenant="t", limit=3)
        assert hits[0].text == "c"
        assert math.isclose(hits[0].score, 1.0, abs_tol=1e-6)
        assert store_rows(pgvector_url, "SELECT count(*) FROM chunks WHERE vec IS NULL") == [(0,)]
    finally:
        await reopened.close()


async def test_without_pgvector_the_exact_scan_answers_and_says_so_once(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="contextfold.store")
    store = await PostgresStore.open(pg_url, max_size=4)  # the Debian server: no vector extension
    try:
        knowledge = store.knowledge
        vs = await knowledge.vector_stores.create("t", name=None, metadata={}, data={})
        uploaded = await knowledge.files.put("t", "f.txt", "assistants", b"words")
        await knowledge.vector_files.add(vs.id, [uploaded.id], tenant="t", attributes={}, chunking={})
        blobs = [pack([1.0, 0.0]), pack([0.0, 1.0])]
        assert await knowledge.index.finish(vs.id, uploaded.id, chunks=["x", "y"], vectors=blobs)
        for query, best in ((blobs[0], "x"), (blobs[1], "y")):
            hits = await knowledge.index.nearest([vs.id], query, tenant="t", limit=2)
            assert hits[0].text == best
    finally:
        await store.close()
    said = [r for r in caplog.records if "pgvector is not available" in r.getMessage()]
    if store_rows(pg_url, "SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'") == [(0,)]:
        assert len(said) == 1


async def test_the_nearest_query_can_use_the_hnsw_index(pgvector_url: str) -> None:
    store = await PostgresStore.open(pgvector_url, max_size=4)
    try:
        knowledge = store.knowledge
        vs = await knowledge.vector_stores.create("t", name=None, metadata={}, data={})
        uploaded = await knowledge.files.put("t", "f.txt", "assistants", b"words")
        await knowledge.vector_files.add(vs.id, [uploaded.id], tenant="t", attributes={}, chunking={})
        blobs = [pack([1.0, float(k), 0.5, -float(k)]) for k in range(20)]
        assert await knowledge.index.finish(vs.id, uploaded.id, chunks=[str(k) for k in range(20)], vectors=blobs)
    finally:
        await store.close()
    # The query as the store sends it, planned with a sort priced out (on 20 rows the planner would rather read
    # the store's chunks and sort them, as it should): the partial index matches it and gives the order.
    query = "[1,2,0.5,-2]"
    with psycopg.connect(pgvector_url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_sort = off")
        plan = conn.execute("EXPLAIN " + nearest_sql(4, by_file=False), (query, [vs.id], 5)).fetchall()
    assert "chunks_vec_hnsw_4" in "\n".join(str(row[0]) for row in plan)
