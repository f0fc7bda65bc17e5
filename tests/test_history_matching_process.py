"""Issue 14 items 1 and 2 against real `contextfold serve` processes on SQLite and PostgreSQL (where they were
found): another client's history that ends the same way is never spliced on, and the conversation header gets the
same matching and fork rules, including for a conversation made through `/v1/responses`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .processes import Replica

HEADER = "x-contextfold-conversation"


@pytest.fixture(params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Replica]:
    db = str(tmp_path / "server.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    replica = Replica(db, tmp_path / "server.log")
    try:
        replica.wait_ready()
        yield replica
    finally:
        replica.stop()


def _chat(http: httpx.Client, messages: list[dict[str, Any]], conversation: str | None = None) -> tuple[str, str]:
    headers = {HEADER: conversation} if conversation else {}
    reply = http.post("/v1/chat/completions", json={"model": "test", "messages": messages}, headers=headers)
    assert reply.status_code == 200, reply.text
    return reply.headers[HEADER], reply.json()["choices"][0]["message"]["content"]


def _users(http: httpx.Client, conversation: str) -> list[str]:
    items = http.get(f"/v1/conversations/{conversation}/items", params={"order": "asc", "limit": 100}).json()
    return [i["content"][0]["text"] for i in items["data"] if i["type"] == "message" and i["role"] == "user"]


def test_histories_are_spliced_only_where_the_log_agrees(server: Replica) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        first = [{"role": "user", "content": "client one's secret is X-1"}]
        stored, answer = _chat(http, first)
        first += [{"role": "assistant", "content": answer}, {"role": "user", "content": "thanks"}]
        _, generic = _chat(http, first)
        other = [
            {"role": "user", "content": "client two's own question"},
            {"role": "user", "content": "thanks"},
            {"role": "assistant", "content": generic},
            {"role": "user", "content": "and now?"},
        ]
        conversation, _ = _chat(http, other)
        assert conversation != stored
        assert _users(http, conversation) == ["client two's own question", "thanks", "and now?"]
        assert _users(http, stored) == ["client one's secret is X-1", "thanks"]

        made = http.post("/v1/conversations", json={}).json()["id"]
        said = http.post("/v1/responses", json={"model": "test", "input": "u1", "conversation": made}).json()
        a1 = said["output"][0]["content"][0]["text"]
        history = [{"role": "user", "content": "u1"}, {"role": "assistant", "content": a1}]
        named, _ = _chat(http, [*history, {"role": "user", "content": "u2"}], made)
        assert named == made
        assert _users(http, made) == ["u1", "u2"]
        branch, _ = _chat(http, [*history, {"role": "user", "content": "u2, edited"}], made)
        assert branch != made
        assert _users(http, branch) == ["u1", "u2, edited"]
        assert _users(http, made) == ["u1", "u2"]
