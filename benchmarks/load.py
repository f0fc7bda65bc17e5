"""`load`: rebuilding a view from 10k, 100k and 1M events, with and without compactions, on SQLite and PostgreSQL.

For every log and store, each figure is the median of `RUNS` runs:
- rebuild in memory: `View.replay` over the events already decoded;
- rebuild from the store: `store.read` of the whole log, then `View.replay`;
- cold load: `Conversation.load` on a store opened just before (not timed), which reads only the newest
  compaction, what it kept and what followed (a checkpoint). SQLite's file stays in the OS page cache between runs:
  dropping it needs root and a quiet machine, so "cold" means a new store and new connections, not a cold disk.
The events a cold load read are counted to show it is O(view), and its view is compared with the full replay.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from functools import partial

from contextfold import Conversation, View
from contextfold.events import Compaction
from contextfold.store import PostgresStore, SQLiteStore, Store

from ._report import Table, median, ms, target
from ._stores import BYTES_BASE, Context, LogSpec, build, progress

RUNS = 3
COLD_TARGETS_MS = {(100_000, True): 50.0, (1_000_000, True): 100.0, (100_000, False): 1_000.0}
REFERENCE = (
    "Reference (OpenHands SDK 1.58, this machine): a 100k-event conversation rebuilds from disk in 9.3 s "
    "with condensations and 31 s without."
)


async def _measure(table: Table, spec: LogSpec, backend: str, open_store: Callable[[], Awaitable[Store]]) -> None:
    cid = spec.conversation_id
    reads, replays, cold = [], [], []
    reference: dict[str, object] = {}
    compactions = items = 0
    for _ in range(RUNS):
        store = await open_store()
        started = time.perf_counter()
        events = await store.read(cid)
        read = time.perf_counter()
        view = View.replay(events)
        reads.append(read - started)
        replays.append(time.perf_counter() - read)
        reference = view.state()
        compactions, items = sum(isinstance(e, Compaction) for e in events), len(view.items)
        del events, view
        await store.close()
        gc.collect()
    same = True
    for _ in range(RUNS):
        store = await open_store()
        started = time.perf_counter()
        conversation = await Conversation.load(store, cid)
        cold.append(time.perf_counter() - started)
        same = same and conversation.view.state() == reference
        await store.close()
        del conversation
        gc.collect()
    store = await open_store()
    checkpoint = await store.checkpoint(cid)  # what a cold load reads
    read_by_load = (checkpoint.compaction is not None) + len(checkpoint.kept) + len(checkpoint.after)
    await store.close()
    del checkpoint
    limit = COLD_TARGETS_MS.get((spec.events, spec.compactions)) if backend == "sqlite" else None
    cold_ms = ms(median(cold))
    table.add(
        backend,
        spec.name,
        spec.events,
        compactions,
        items,
        read_by_load,
        ms(median(replays)),
        ms(median([r + p for r, p in zip(reads, replays, strict=True)])),
        cold_ms,
        target(cold_ms, limit, "ms") if limit else None,
        "✓" if same else "✗ differs",
    )
    progress(f"load {backend} {spec.name} {spec.events:,}: cold load {cold_ms:.1f} ms")


async def run(ctx: Context) -> list[Table]:
    pg = ctx.pg
    sizes = (10_000, 100_000) if ctx.quick else (10_000, 100_000, 1_000_000)
    table = Table(
        f"load: rebuild and cold load (median of {RUNS} runs)",
        [
            "store",
            "log",
            "events",
            "compactions",
            "view items",
            "events read by cold load",
            "rebuild in memory (ms)",
            "rebuild from store (ms)",
            "cold load (ms)",
            "target (cold load)",
            "load = replay",
        ],
    )
    builds = Table("load: building the logs (this run)", ["log", "events", "seconds", "what was built"])
    for size in sizes:
        specs = [LogSpec(size, True), LogSpec(size, False)]
        urls = [pg.database() for _ in specs]
        cached = [spec.path.exists() for spec in specs]
        took = await asyncio.gather(*(build(spec, url) for spec, url in zip(specs, urls, strict=True)))
        for spec, seconds, was_cached in zip(specs, took, cached, strict=True):
            builds.add(spec.name, spec.events, seconds, "PostgreSQL (SQLite cached)" if was_cached else "both")
        for spec, url in zip(specs, urls, strict=True):
            await _measure(table, spec, "sqlite", partial(SQLiteStore.open, spec.path))
            await _measure(table, spec, "postgresql", partial(PostgresStore.open, url, max_size=2))
            if spec == BYTES_BASE:
                ctx.kept[spec] = url  # the `bytes` section continues this log
            else:
                pg.drop(url)
    table.notes.append(REFERENCE)
    table.notes.append(
        "Targets (SQLite cold load): with compactions 100k ≤ 50 ms, 1M ≤ 100 ms; without compactions 100k ≤ 1 s. "
        "'events read by cold load' = the newest compaction + the events it kept + the events after it."
    )
    return [table, builds]
