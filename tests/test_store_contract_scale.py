"""The store contract, continued: migrations, bytes per turn, and writers racing (tasks and processes)."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import socket
from collections import defaultdict
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

import pytest

from contextfold._errors import ConflictError, StoreError
from contextfold.events import AnyEvent, Message, assistant, encode, text_of, user
from contextfold.store import PostgresStore, Store, open_store
from contextfold.store._migrations import POSTGRES, SQLITE

from .store_fixtures import Backend

# --- migrations ---------------------------------------------------------------------------------------------


def _versions(backend: Backend) -> list[int]:
    return [int(v) for (v,) in backend.query("SELECT version FROM schema_migrations ORDER BY version")]


def _latest(backend: Backend) -> int:
    return (SQLITE if backend.name == "sqlite" else POSTGRES)[-1].version


async def test_migrating_step_by_step_reaches_the_latest_version_and_indexes_older_rows(
    backend: Backend,
) -> None:
    assert await backend.migrate(target=1) == 1
    assert _versions(backend) == [1]
    old = user("an archived note about kangaroos", conversation_id="conv_old", seq=1)
    backend.query(
        "INSERT INTO conversations (id, created_at, metadata, head) VALUES (?, ?, ?, ?)",
        ("conv_old", 1.0, "{}", 1),
    )
    backend.query(
        "INSERT INTO events (conversation_id, seq, id, type, body, search_text) VALUES (?, ?, ?, ?, ?, ?)",
        ("conv_old", 1, old.id, "message", encode(old), text_of(old)),
    )

    assert await backend.migrate() == _latest(backend)
    assert _versions(backend) == [m.version for m in (SQLITE if backend.name == "sqlite" else POSTGRES)]
    store = await backend.open()
    try:
        assert [hit.seq for hit in await store.search("conv_old", "kangaroo")] == [1]
        assert await store.read("conv_old") == [old]
        await store.append("conv_old", [assistant("noted")], 1)
    finally:
        await store.close()

    # opening an up-to-date database again changes nothing
    assert await backend.migrate() == _latest(backend)
    again = await backend.open()
    try:
        assert [e.seq for e in await again.read("conv_old")] == [1, 2]
    finally:
        await again.close()
    assert _versions(backend) == [m.version for m in (SQLITE if backend.name == "sqlite" else POSTGRES)]


async def test_a_database_newer_than_the_build_is_refused(backend: Backend) -> None:
    await (await backend.open()).close()
    backend.query("INSERT INTO schema_migrations VALUES (?, ?, ?)", (999, "from the future", 0.0))
    with pytest.raises(StoreError, match="schema is version 999, newer than this build's"):
        await backend.open()
    with pytest.raises(StoreError, match="newer than this build"):
        await backend.migrate()


async def test_an_unreachable_postgres_server_is_a_store_error() -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreError, match=rf"cannot connect to postgresql://127.0.0.1:{port}/db") as caught:
        await PostgresStore.open(f"postgresql://user:hunter2@127.0.0.1:{port}/db", connect_timeout=0.5)
    assert "hunter2" not in str(caught.value)


async def test_stores_opening_at_once_migrate_exactly_once(backend: Backend) -> None:
    stores = await asyncio.gather(*(backend.open() for _ in range(4)))
    for store in stores:
        await store.close()
    assert _versions(backend) == [m.version for m in (SQLITE if backend.name == "sqlite" else POSTGRES)]


# --- bytes per turn -----------------------------------------------------------------------------------------


async def test_storage_grows_linearly_with_turns(store: Store, backend: Backend) -> None:
    """A turn late in a long conversation costs about as many bytes as an early one (no rewritten blobs)."""
    rng = random.Random(1)
    vocabulary = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9))) for _ in range(3000)]

    def words(n: int) -> str:
        return " ".join(rng.choices(vocabulary, k=n))

    conv = await store.conversations.create()
    marks = {100: 0, 200: 0, 1100: 0, 1200: 0}
    payload = 0
    for turn in range(1, 1201):
        events = await store.append(conv.id, [user(words(40)), assistant(words(60))], 2 * (turn - 1))
        if turn > 1100:
            payload += sum(len(encode(e)) for e in events)
        if turn in marks:
            marks[turn] = backend.size()
    early = marks[200] - marks[100]
    late = marks[1200] - marks[1100]
    assert early > 0
    assert 0.6 * early <= late <= 1.6 * early, marks
    assert late <= 10 * payload, (late, payload)


# --- racing writers -----------------------------------------------------------------------------------------


async def _append_batches(store: Store, conversation_id: str, writer: int, batches: int, size: int) -> int:
    """Append `batches` batches of `size` messages, retrying on conflict; return the conflicts met."""
    conflicts = 0
    for batch in range(batches):
        events = [user(f"writer{writer} batch{batch} part{part}") for part in range(size)]
        while True:
            head = (await store.conversations.get(conversation_id)).head
            try:
                await store.append(conversation_id, events, head)
                break
            except ConflictError:
                conflicts += 1
                await asyncio.sleep(random.random() / 1000)
    return conflicts


def _check_race(log: list[AnyEvent], writers: int, batches: int, size: int) -> None:
    """The log is dense, has every writer's every event exactly once, and each batch landed contiguously."""
    assert [e.seq for e in log] == list(range(1, writers * batches * size + 1))
    seen: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    for event in log:
        assert isinstance(event, Message)
        writer, batch, part = text_of(event).split()
        seen[writer, batch].append((event.seq, part))
    assert len(seen) == writers * batches
    for placed in seen.values():
        seqs = [seq for seq, _ in placed]
        assert seqs == list(range(seqs[0], seqs[0] + size))
        assert [part for _, part in placed] == [f"part{p}" for p in range(size)]
    assert sorted(seen) == sorted((f"writer{w}", f"batch{b}") for w in range(writers) for b in range(batches))


async def test_racing_tasks_append_every_batch_once_and_contiguously(store: Store) -> None:
    conv = await store.conversations.create()
    writers, batches, size = 20, 3, 3
    conflicts = await asyncio.gather(*(_append_batches(store, conv.id, w, batches, size) for w in range(writers)))
    _check_race(await store.read(conv.id), writers, batches, size)
    assert sum(conflicts) > 0  # the race was real


def _process_writer(
    location: str, conversation_id: str, writer: int, batches: int, size: int, start: Barrier, out: Queue[int]
) -> None:
    async def run() -> int:
        store = await open_store(location)
        try:
            await asyncio.to_thread(start.wait)  # every writer is ready: now they race
            return await _append_batches(store, conversation_id, writer, batches, size)
        finally:
            await store.close()

    try:
        out.put(asyncio.run(run()))
    except BaseException:
        start.abort()  # release the other writers and the test at once
        out.put(-1)
        raise


@pytest.mark.slow
async def test_racing_processes_append_every_batch_once_and_contiguously(store: Store, backend: Backend) -> None:
    conv = await store.conversations.create()
    writers, batches, size = 4, 8, 3
    context = multiprocessing.get_context("spawn")
    start, out = context.Barrier(writers, timeout=120), context.Queue()
    processes = [
        context.Process(target=_process_writer, args=(backend.location, conv.id, w, batches, size, start, out))
        for w in range(writers)
    ]
    for process in processes:
        process.start()
    exitcodes = []
    conflicts = [await asyncio.to_thread(out.get, True, 120) for _ in processes]
    for process in processes:
        await asyncio.to_thread(process.join, 120)
        exitcodes.append(process.exitcode)
        if process.exitcode is None:  # hung: stop it so the suite ends, and fail
            process.kill()
            process.join()
        process.close()
    assert exitcodes == [0] * writers
    out.close()
    out.join_thread()
    _check_race(await store.read(conv.id), writers, batches, size)
    assert sum(conflicts) > 0  # the race was real
