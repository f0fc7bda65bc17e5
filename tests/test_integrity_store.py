"""Issue 14, item 6: store errors say whose fault they are. A NUL byte in an id on PostgreSQL was a 503
`store_unavailable` (every psycopg error was an outage), so clients retried forever and alerts fired. Errors are
classified by SQLSTATE class: a client's data is a 400 (or a 404 when it names something that cannot exist, as on
SQLite), and only a database that cannot serve is a 503.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from contextfold._errors import InvalidEventError, InvalidRequestError, NotFoundError, StoreError
from contextfold.store import ServerStore
from contextfold.store._postgres import classify

from . import pgserver
from .processes import Replica
from .store_fixtures import Backend


@pytest.fixture(params=["sqlite", "postgres"])
def replica(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Replica]:
    db = str(tmp_path / "server.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    running = Replica(db, tmp_path / "server.log")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


NUL_LOOKUPS = [
    ("GET", "/v1/conversations/conv_%00x", None, None),
    ("GET", "/v1/responses/resp_%00x", None, None),
    ("DELETE", "/v1/conversations/conv_%00x", None, None),
    ("GET", "/v1/conversations/conv_%00x/items", None, None),
    (
        "POST",
        "/v1/responses",
        {"model": "test", "input": "hi", "previous_response_id": "resp_\x00"},
        "previous_response_id",
    ),
    ("POST", "/v1/responses", {"model": "test", "input": "hi", "conversation": "conv_\x00"}, "conversation"),
]


def test_a_nul_byte_in_an_id_is_not_found_on_both_stores(replica: Replica) -> None:
    with httpx.Client(base_url=replica.url, timeout=30) as http:
        for method, path, body, param in NUL_LOOKUPS:
            reply = http.request(method, path, json=body)
            assert reply.status_code == 404, f"{method} {path}: {reply.text}"
            error = reply.json()["error"]
            assert error["code"] == "not_found"
            assert error["param"] == param
        listed = http.get("/v1/conversations", params={"after": "conv_\x00"})
        assert listed.status_code == 404, listed.text
        assert http.get("/readyz").status_code == 200  # and nothing claims the database is down
    assert "store failure" not in replica.output()


async def test_a_conversation_id_holding_a_nul_is_refused_by_both_stores(backend: Backend) -> None:
    store: ServerStore = await backend.open()
    try:
        with pytest.raises(InvalidRequestError, match="NUL"):
            await store.conversations.create("conv_\x00")
        with pytest.raises(NotFoundError):
            await store.conversations.get("conv_\x00")
    finally:
        await store.close()


def _error(url: str, sql: str) -> psycopg.Error:
    with psycopg.connect(url) as conn:
        try:
            conn.execute(sql)
        except psycopg.Error as error:
            return error
    raise AssertionError(f"{sql!r} did not fail")


def test_errors_are_classified_by_sqlstate_class(pg_url: str) -> None:
    # class 22, data exception: what the request carried
    for sql in ("SELECT 1 / 0", "SELECT 'x'::int"):
        assert isinstance(classify(_error(pg_url, sql), "db"), InvalidRequestError), sql
    # the driver's own refusal of a NUL byte in a parameter: nothing can be stored under it
    with psycopg.connect(pg_url) as conn, pytest.raises(psycopg.DataError) as caught:
        conn.execute("SELECT %s::text", ("a\x00b",))
    assert isinstance(classify(caught.value, "db"), NotFoundError)
    # class 23, a constraint
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TEMP TABLE t (id text PRIMARY KEY)")
        conn.execute("INSERT INTO t VALUES ('a')")
        with pytest.raises(psycopg.errors.UniqueViolation) as unique:
            conn.execute("INSERT INTO t VALUES ('a')")
    assert isinstance(classify(unique.value, "db"), InvalidEventError)
    # an outage: the server is gone
    with pytest.raises(psycopg.OperationalError) as gone:
        psycopg.connect(f"postgresql://x@127.0.0.1:{pgserver._free_port()}/x", connect_timeout=2)
    assert isinstance(classify(gone.value, "db"), StoreError)
    # a shut-down server answering (class 57) is an outage too
    with psycopg.connect(pg_url, autocommit=True) as conn, psycopg.connect(pg_url, autocommit=True) as victim:
        pid = victim.info.backend_pid
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.Error) as terminated:
            victim.execute("SELECT 1")
    assert isinstance(classify(terminated.value, "db"), StoreError)
