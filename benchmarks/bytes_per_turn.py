"""`bytes`: what one conversation costs on disk per turn, at turn 10, 1,000 and 100,000.

The conversation is the `load` section's log with compactions (the `_workload` turns, compacting as the policy
says), written to SQLite and PostgreSQL at once: in bulk up to each point, then `WINDOWS` windows of `WINDOW` turns
appended one turn per transaction, as a live conversation would. The marginal bytes per turn is each window's growth
divided by its turns; the table gives their mean and range, which should not depend on how long the conversation
already is. SQLite's size is page_count x page_size after a WAL checkpoint; PostgreSQL's is pg_total_relation_size
of events and conversations.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from contextfold.events import AnyEvent, encode
from contextfold.store import PostgresStore, SQLiteStore, Store

from ._report import Table
from ._stores import BATCH, BYTES_BASE, RESULTS, Context, build, pg_size, progress, sqlite_size
from ._workload import Workload

WINDOWS = 10
WINDOW = 10
BULK_TURNS = 500


@dataclass
class _Backend:
    name: str
    store: Store
    size: Callable[[], int]


@dataclass
class _Log:
    """One conversation written to both stores at once."""

    conversation_id: str
    backends: list[_Backend]
    workload: Workload

    async def append(self, events: list[AnyEvent]) -> None:
        head = events[0].seq - 1
        await asyncio.gather(*(b.store.append(self.conversation_id, events, head) for b in self.backends))

    async def grow_to(self, turns: int) -> None:
        """Bulk-append whole turns until the conversation has `turns` of them."""
        while self.workload.turns < turns:
            await self.append(await self.workload.take_turns(min(BULK_TURNS, turns - self.workload.turns)))
            if self.workload.turns % 10_000 < BULK_TURNS:
                progress(f"bytes: {self.workload.turns:,} turns")

    async def close(self) -> None:
        for backend in self.backends:
            await backend.store.close()


async def _measure(table: Table, log: _Log, point: int, baseline: dict[str, float]) -> None:
    """Append WINDOWS x WINDOW turns, one per transaction, and add each store's growth per turn to `table`."""
    before = {b.name: b.size() for b in log.backends}
    totals = dict(before)
    growth: dict[str, list[float]] = {b.name: [] for b in log.backends}
    payload = events = 0
    compactions = log.workload.compaction_count
    for _ in range(WINDOWS):
        for _ in range(WINDOW):
            turn = await log.workload.take_turns(1)
            await log.append(turn)
            payload += sum(len(encode(event)) for event in turn)
            events += len(turn)
        for backend in log.backends:
            size = backend.size()
            growth[backend.name].append((size - before[backend.name]) / WINDOW)
            before[backend.name] = size
    turns = WINDOWS * WINDOW
    for backend in log.backends:
        marginal = statistics.mean(growth[backend.name])
        if point == 1_000:
            baseline[backend.name] = marginal
        reference = baseline.get(backend.name)
        flat = None
        if reference and point > 1_000:
            ratio = marginal / reference
            flat = f"{ratio:.2f}x {'✓' if 0.8 <= ratio <= 1.25 else '✗'}"
        table.add(
            backend.name,
            point,
            round(totals[backend.name] / point),
            round(marginal),
            round(min(growth[backend.name])),
            round(max(growth[backend.name])),
            round(payload / turns),
            round(events / turns, 1),
            log.workload.compaction_count - compactions,
            flat,
        )


def _scratch() -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "bytes-scratch.db"
    for leftover in RESULTS.glob(path.name + "*"):
        leftover.unlink()
    return path


async def _open(conversation_id: str, path: Path, url: str, workload: Workload) -> _Log:
    sqlite = await SQLiteStore.open(path)
    pg = await PostgresStore.open(url, max_size=2)
    backends = [_Backend("sqlite", sqlite, lambda: sqlite_size(path)), _Backend("postgresql", pg, lambda: pg_size(url))]
    return _Log(conversation_id, backends, workload)


async def _fresh(ctx: Context, table: Table, points: tuple[int, ...], baseline: dict[str, float]) -> None:
    """The log from its first event, on empty databases."""
    path, url = _scratch(), ctx.pg.database()
    log = await _open(BYTES_BASE.conversation_id, path, url, Workload(seed=BYTES_BASE.seed, compactions=True))
    try:
        for backend in log.backends:
            await backend.store.conversations.create(log.conversation_id)
        for point in points:
            await log.grow_to(point)
            await _measure(table, log, point, baseline)
    finally:
        await log.close()
        ctx.pg.drop(url)
        _scratch()


async def _continued(ctx: Context, table: Table, point: int, baseline: dict[str, float]) -> None:
    """The same log carried on from the end of the `load` section's 1M events (about turn 70,600)."""
    await build(BYTES_BASE)
    path = _scratch()
    shutil.copyfile(BYTES_BASE.path, path)
    url = ctx.kept.pop(BYTES_BASE, None)
    if url is None:
        url = ctx.pg.database()
        await build(BYTES_BASE, url)
    workload = Workload(seed=BYTES_BASE.seed, compactions=True, budget=BYTES_BASE.budget)
    async for _ in workload.batches(BYTES_BASE.events, BATCH):
        pass  # the same seed regenerates the stored events; the workload then carries on where they end
    log = await _open(BYTES_BASE.conversation_id, path, url, workload)
    try:
        await log.grow_to(point)
        await _measure(table, log, point, baseline)
    finally:
        await log.close()
        ctx.pg.drop(url)
        _scratch()


async def run(ctx: Context) -> list[Table]:
    table = Table(
        f"bytes: stored bytes per turn ({WINDOWS} windows of {WINDOW} turns after each point, one turn per append)",
        [
            "store",
            "at turn",
            "total bytes / turns so far",
            "marginal bytes/turn (mean)",
            "min",
            "max",
            "log payload bytes/turn",
            "events/turn",
            "compactions in windows",
            "marginal vs turn 1,000 (flat)",
        ],
    )
    baseline: dict[str, float] = {}
    await _fresh(ctx, table, (10, 1_000, 10_000) if ctx.quick else (10, 1_000), baseline)
    if not ctx.quick:
        await _continued(ctx, table, 100_000, baseline)
    table.notes.append(
        "'log payload' is the encoded events themselves; the rest is indexes (full-text search included) and page "
        "slack. The windows after turn 10 cover turns 11-110, where the first compactions happen."
    )
    if not ctx.quick:
        table.notes.append(
            "Turn 100,000 continues the `load` section's 1M-event log (the same conversation: same seed) on a copy "
            "of its databases; turns 10 and 1,000 are measured as that log grows from empty databases."
        )
    return [table]
