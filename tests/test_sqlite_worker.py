"""The SQLite worker runs a turn's small calls on the event loop when it is idle (`Worker.now`): calls keep the
order they were made in, a database locked by another process never holds the loop, and the WAL is still copied
back, on the writer's thread, though no commit checkpoints it itself."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from contextfold.events import Message, TextPart
from contextfold.store import SQLiteStore
from contextfold.store import _sqlite as sqlite_store

from .test_reliability_db import write_lock


async def test_a_call_made_while_others_are_queued_runs_after_them(tmp_path: Path) -> None:
    worker = sqlite_store.Worker(str(tmp_path / "w.db"), "test")
    order: list[str] = []
    release = threading.Event()

    def slow(conn: sqlite3.Connection) -> None:
        release.wait(10)
        order.append("queued first")

    def quick(conn: sqlite3.Connection, name: str) -> str:
        order.append(name)
        return name

    try:
        first = asyncio.create_task(worker.run(slow))
        await asyncio.sleep(0)  # submitted: the worker's thread holds it
        second = asyncio.create_task(worker.now(quick, "made second"))
        await asyncio.sleep(0.05)
        assert order == []  # the second waits for the first, though it could have run on the loop
        release.set()
        assert await second == "made second"
        await first
        assert order == ["queued first", "made second"]
        assert await worker.now(quick, "made when idle") == "made when idle"
    finally:
        worker.close()


async def test_a_database_locked_by_another_process_does_not_hold_the_loop(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = await SQLiteStore.open(db)
    try:
        conversation = (await store.conversations.create()).id
        ticked = asyncio.Event()

        async def ticking() -> None:
            for _ in range(10):
                await asyncio.sleep(0.01)
            ticked.set()

        with write_lock(db):
            take = asyncio.create_task(store.leases.take(conversation, "owner", 30.0))
            await asyncio.create_task(ticking())
            await ticked.wait()  # the loop went on while the take waits for the lock on the worker's thread
            assert not take.done()
        assert await take == 0
        events = await store.commit_turn(conversation, [_message("after the lock")], 0, release="owner")
        assert [event.seq for event in events] == [1]
        assert await store.leases.take(conversation, "someone else", 30.0) == 1  # the commit released it
    finally:
        await store.close()


async def _wal_after_commits(path: Path, commits: int) -> int:
    store = await SQLiteStore.open(path)
    try:
        conversation = (await store.conversations.create()).id
        for seq in range(commits):
            await store.commit_turn(conversation, [_message(f"message {seq} " + "words " * 40)], seq)
        # behind every checkpoint queued, and before closing: the last connection to close removes the WAL
        size: int = await store._writer.run(lambda conn: Path(f"{path}-wal").stat().st_size)
        return size
    finally:
        await store.close()


async def test_the_wal_is_copied_back_on_the_writers_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpointed = await _wal_after_commits(tmp_path / "checkpointed.db", 400)
    monkeypatch.setattr(sqlite_store, "_CHECKPOINT_EVERY", 10**9)
    unchecked = await _wal_after_commits(tmp_path / "unchecked.db", 400)
    # SQLite reuses a WAL copied back in full from its start: it stops growing. Never copied back, it holds
    # every page the 400 commits wrote.
    assert checkpointed * 3 < unchecked, (checkpointed, unchecked)
    with sqlite3.connect(tmp_path / "checkpointed.db") as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (400,)


def _message(text: str) -> Message:
    return Message(role="user", content=[TextPart(text=text)])
