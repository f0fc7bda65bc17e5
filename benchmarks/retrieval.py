"""`retrieval`: vector store ingestion (chunks per second) and search latency (p50/p95) on both stores.

For 10k and 100k chunks (10k only with --quick) on SQLite (FTS5, BM25) and PostgreSQL (tsvector, ts_rank): files
of generated text (words drawn from a 20,000-word vocabulary with a Zipf-like skew, as natural text is) are
uploaded and queued in one vector store, then `Ingestor.drain` runs what the server's background ingestion runs:
extract the text, chunk it (static, 100 tokens, no overlap, so 100 chunks per file), write each file's chunks in
one transaction. Then 50 three-word queries of mid-frequency words are searched as `POST …/search` does
(`search_chunks`, 10 results), one at a time, and on PostgreSQL once more after `VACUUM ANALYZE` (what autovacuum
does soon after a bulk load: right after one, the planner has no statistics for the new rows).

The `embedded` rows do the same with embeddings on: each file's chunks embedded (64 dimensions, in batches) and
stored with them, each query embedded and ranked by the exact cosine scan fused with the full-text score. The
vectors come from a local hashed bag of words in place of the HTTP upstream, so the rows measure what contextfold
does (vectors written, scanned, fused), not a model's speed.
"""

from __future__ import annotations

import random
import time
import zlib
from pathlib import Path

import psycopg

from contextfold.runtime._embeddings import Embedder
from contextfold.runtime._file_search import FileSearchOptions, search_chunks
from contextfold.runtime._ingest import Ingestor
from contextfold.store import PostgresStore, ServerStore, SQLiteStore
from contextfold.store._knowledge_vectors import pack

from ._report import Table, ms, percentile
from ._stores import RESULTS, Context, progress

CHUNK_TOKENS = 100
CHUNKS_PER_FILE = 100
VOCABULARY = 20_000
QUERIES = 50
TENANT = "bench"
DIMENSIONS = 64


class LocalEmbedder(Embedder):
    """Vectors from a hashed bag of words, made here instead of by an upstream (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9/v1", "local")

    async def _batch(self, texts: list[str]) -> list[bytes]:
        out = []
        for text in texts:
            vector = [0.0] * DIMENSIONS
            for word in text.split():
                vector[zlib.crc32(word.encode()) % DIMENSIONS] += 1.0
            out.append(pack(vector))
        return out


def _words(seed: int) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < VOCABULARY:
        word = "".join(rng.choice(letters) for _ in range(rng.randint(3, 10)))
        if word not in seen:
            seen.add(word)
            out.append(word)
    return out


def _document(rng: random.Random, vocabulary: list[str], weights: list[float]) -> bytes:
    words = rng.choices(vocabulary, weights=weights, k=CHUNK_TOKENS * CHUNKS_PER_FILE)
    return " ".join(words).encode()


async def _searches(
    store: ServerStore, vs_id: str, middle: list[str], rng: random.Random, embedder: Embedder | None
) -> tuple[list[float], int]:
    latencies = []
    hits = 0
    options = FileSearchOptions(max_num_results=10)
    for _ in range(QUERIES):
        query = " ".join(rng.sample(middle, 3))
        began = time.perf_counter()
        found = await search_chunks(store.knowledge, TENANT, [vs_id], [query], options, embedder)
        latencies.append(time.perf_counter() - began)
        hits += len(found)
    return latencies, hits


def _settle(url: str) -> None:
    """What autovacuum does within a minute of a bulk load: merge the GIN pending list, refresh the statistics."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE chunks")


async def _measure(
    store: ServerStore, chunks: int, name: str, table: Table, url: str | None = None, embedder: Embedder | None = None
) -> None:
    vocabulary = _words(7)
    weights = [1.0 / (rank + 10) for rank in range(VOCABULARY)]
    rng = random.Random(chunks)
    knowledge = store.knowledge
    vs = await knowledge.vector_stores.create(TENANT, name="bench", metadata={}, data={})
    chunking = {"max_chunk_size_tokens": CHUNK_TOKENS, "chunk_overlap_tokens": 0}
    files = chunks // CHUNKS_PER_FILE
    ids = []
    for n in range(files):
        record = await knowledge.files.put(TENANT, f"doc{n}.txt", "assistants", _document(rng, vocabulary, weights))
        ids.append(record.id)
    for start in range(0, len(ids), 500):
        await knowledge.vector_files.add(
            vs.id, ids[start : start + 500], tenant=TENANT, attributes={}, chunking=chunking
        )
    progress(f"retrieval: {name}, {chunks} chunks queued in {files} files; ingesting")
    started = time.perf_counter()
    done = await Ingestor(knowledge, embedder=embedder).drain()
    ingest = time.perf_counter() - started
    assert done == files, f"{done} of {files} files ingested"
    middle = vocabulary[200:4000]  # neither stop words nor words that occur once
    latencies, hits = await _searches(store, vs.id, middle, rng, embedder)
    settled: list[float] | None = None
    if url is not None:
        _settle(url)
        settled, _ = await _searches(store, vs.id, middle, rng, embedder)
    table.add(
        name,
        "embedded" if embedder else "text",
        chunks,
        files,
        round(chunks / ingest),
        round(ingest, 1),
        round(ms(percentile(latencies, 0.5)), 1),
        round(ms(percentile(latencies, 0.95)), 1),
        round(ms(percentile(settled, 0.5)), 1) if settled else None,
        round(ms(percentile(settled, 0.95)), 1) if settled else None,
        round(hits / QUERIES, 1),
    )


async def run(ctx: Context) -> list[Table]:
    sizes = (10_000,) if ctx.quick else (10_000, 100_000)
    table = Table(
        "retrieval: vector store ingestion and search (full-text rank; embedded: fused with vector similarity)",
        [
            "store",
            "ranking",
            "chunks",
            "files",
            "ingestion (chunks/s)",
            "ingestion (s)",
            "search p50 (ms)",
            "search p95 (ms)",
            "settled p50 (ms)",
            "settled p95 (ms)",
            "results per query",
        ],
    )
    for chunks in sizes:
        for embedder in (None, LocalEmbedder()):
            path = RESULTS / f"retrieval-{chunks}.db"
            RESULTS.mkdir(exist_ok=True)
            for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                leftover.unlink(missing_ok=True)
            sqlite = await SQLiteStore.open(path)
            try:
                await _measure(sqlite, chunks, "SQLite", table, embedder=embedder)
            finally:
                await sqlite.close()
                path.unlink(missing_ok=True)
            url = ctx.pg.database()
            postgres = await PostgresStore.open(url, max_size=4)
            try:
                await _measure(postgres, chunks, "PostgreSQL", table, url, embedder=embedder)
            finally:
                await postgres.close()
                ctx.pg.drop(url)
            if embedder is not None:
                await embedder.close()
    table.notes.append(
        f"{CHUNK_TOKENS}-token chunks, {CHUNKS_PER_FILE} per file; ingestion is extraction, chunking and one "
        f"transaction per file, one file at a time; search is {QUERIES} three-word queries, 10 results each, "
        "right after ingestion and (PostgreSQL) 'settled': after VACUUM ANALYZE, as autovacuum leaves the table "
        f"within a minute of a bulk load (SQLite needs no such step). Embedded: {DIMENSIONS}-dimension vectors, the "
        "exact cosine scan (numpy) over every embedded chunk of the store, fused with the full-text score."
    )
    return [table]
