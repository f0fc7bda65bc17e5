"""Verified keys come from a cache, and a revocation anywhere (this store, another process's, raw SQL) empties it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from contextfold.store import ServerStore

from .processes import Replica
from .store_fixtures import Backend


class _Counting:
    """Counts the lookups that reach the database, by wrapping the connection or worker the keys use."""

    def __init__(self, store: ServerStore) -> None:
        self.calls = 0
        keys: Any = store.keys
        if hasattr(keys, "_reader"):
            inner = keys._reader.run

            async def run(fn: Any, *args: Any) -> Any:
                self.calls += fn.__name__ in ("_verify_key", "_count_active_keys")  # (in memory, one worker)
                return await inner(fn, *args)

            keys._reader.run = run
        else:
            connect = keys._connect

            def counted() -> Any:
                self.calls += 1
                return connect()

            keys._connect = counted


async def _listening(store: ServerStore, backend: Backend) -> None:
    """On PostgreSQL the cache serves only once its listener listens: wait for that (polling, never timing)."""
    if backend.name != "postgres":
        return
    await store.keys.active()  # starts the listener
    for _ in range(2_000):
        if store.keys._listener() is not None:  # type: ignore[attr-defined]
            return
        await asyncio.sleep(0.01)
    pytest.fail("the key listener never started listening")


async def _refused(store: ServerStore, secret: str, backend: Backend) -> None:
    """SQLite sees a change on the very next lookup; PostgreSQL as its NOTIFY arrives (polled for, not timed)."""
    for _ in range(1 if backend.name == "sqlite" else 2_000):
        if await store.keys.verify(secret) is None:
            return
        await asyncio.sleep(0.01)
    pytest.fail("the revoked key was still accepted")


async def test_a_key_is_verified_from_the_cache_until_revoked_here(store: ServerStore, backend: Backend) -> None:
    secret, key = await store.keys.create("acme")
    await _listening(store, backend)
    counting = _Counting(store)
    for _ in range(5):
        assert (await store.keys.verify(secret)) == key
    assert counting.calls == 1
    assert await store.keys.active() == 1
    assert await store.keys.active() == 1
    assert counting.calls == 2
    await store.keys.revoke(key.id)
    assert await store.keys.verify(secret) is None  # at once: the revoke dropped the cache
    assert await store.keys.active() == 0
    assert await store.keys.verify("cf-unknown") is None
    assert await store.keys.verify("cf-unknown") is None
    revoke = 1 if backend.name == "postgres" else 0  # there the revoke borrows the same connections
    assert counting.calls == 6 + revoke  # unknown secrets are never kept


async def test_a_key_revoked_by_another_process_or_by_hand_is_refused_at_once(
    store: ServerStore, backend: Backend
) -> None:
    second = await backend.open()  # another process's store on the same database
    try:
        secret, key = await second.keys.create("acme")
        by_hand, other = await second.keys.create("acme")
        await _listening(store, backend)
        assert await store.keys.verify(secret) == key
        assert await store.keys.verify(by_hand) == other
        await second.keys.revoke(key.id)
        await _refused(store, secret, backend)
        assert await store.keys.verify(by_hand) == other
        backend.query("UPDATE api_keys SET revoked_at = 1 WHERE id = ?", (other.id,))
        await _refused(store, by_hand, backend)
        third, _ = await second.keys.create("acme")  # a key created elsewhere counts at once too
        await _listening(store, backend)
        assert await store.keys.verify(third) is not None
    finally:
        await second.close()


async def test_without_its_listener_postgres_checks_every_key_in_the_store(
    store: ServerStore, backend: Backend
) -> None:
    if backend.name != "postgres":
        pytest.skip("the listener is PostgreSQL's")
    secret, key = await store.keys.create("acme")
    await _listening(store, backend)
    assert await store.keys.verify(secret) == key
    backend.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
        " AND datname = current_database() AND query IN ('LISTEN contextfold_keys', 'SELECT 1')"
    )
    for _ in range(2_000):
        if store.keys._listener() is None:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.005)
    counting = _Counting(store)
    backend.query("UPDATE api_keys SET revoked_at = 1 WHERE id = ?", (key.id,))
    if store.keys._listener() is None:  # type: ignore[attr-defined]  # still down: every lookup asks the store
        assert await store.keys.verify(secret) is None
        assert counting.calls == 1
    await _refused(store, secret, backend)
    await _listening(store, backend)  # it reconnects and caches again
    fresh, _ = await store.keys.create("acme")
    assert await store.keys.verify(fresh) is not None
    for _ in range(2_000):  # the create's own NOTIFY empties the cache once more when it arrives: poll past it
        calls = counting.calls
        assert await store.keys.verify(fresh) is not None
        if counting.calls == calls:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the cache never served the key again after the listener came back")


_LISTENERS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND query IN ('LISTEN contextfold_keys', 'SELECT 1') AND pid <> pg_backend_pid()"
)


def _cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "contextfold", *args], capture_output=True, text=True, check=True)
    return done.stdout


def test_a_key_revoked_through_the_cli_is_refused_by_a_running_server_at_once(backend: Backend, tmp_path: Path) -> None:
    if backend.name == "sqlite":
        backend = Backend("sqlite", str(tmp_path / "served.db"))
        _cli("keys", "list", "--db", backend.location)  # creates and migrates the file before the server opens it
    fields = dict(
        line.split(None, 1)
        for line in _cli("keys", "create", "--tenant", "acme", "--db", backend.location).splitlines()
    )
    headers = {"Authorization": f"Bearer {fields['secret']}"}
    replica = Replica(backend.location, tmp_path / "served.log")
    try:
        replica.wait_ready()
        for _ in range(2_000):  # on PostgreSQL, until the server's key listener listens (polled, not timed)
            answer = httpx.get(f"{replica.url}/v1/conversations/conv_none", headers=headers)
            assert answer.status_code == 404  # authenticated: only the conversation is missing
            if backend.name == "sqlite" or backend.query(_LISTENERS) != [(0,)]:
                break
            time.sleep(0.01)
        for _ in range(2):  # the first fills the cache, the second is served from it
            assert httpx.get(f"{replica.url}/v1/conversations/conv_none", headers=headers).status_code == 404
        _cli("keys", "revoke", fields["id"], "--db", backend.location)
        answer = httpx.get(f"{replica.url}/v1/conversations/conv_none", headers=headers)
        assert answer.status_code == 401, answer.text
    finally:
        replica.stop()
