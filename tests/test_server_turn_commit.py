"""A server turn's writes in one commit (issue 19): the answer, the response record and the lease release land in
one `commit_turn`, built from the events in memory; a failed commit is the client's 503 and writes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from contextfold._errors import StoreError
from contextfold.events import Message, TurnMarker

from .server_fixtures import Served, check_error, check_response


def _record_commits(served: Served, monkeypatch: pytest.MonkeyPatch, *, fail: bool = False) -> list[dict[str, Any]]:
    """The `commit_turn` calls the server makes (each call's records); with `fail`, the one carrying the turn's
    end (a lease release) fails as an outage would."""
    store = served.store
    original = store.commit_turn
    calls: list[dict[str, Any]] = []

    async def commit_turn(conversation_id: str, events: Any, expected_head: int, **records: Any) -> Any:
        calls.append({"events": list(events), **records})
        if fail and records.get("release") is not None:
            raise StoreError("the database is unavailable (injected)")
        return await original(conversation_id, events, expected_head, **records)

    monkeypatch.setattr(store, "commit_turn", commit_turn)
    return calls


async def test_a_turns_answer_record_and_lease_release_are_one_commit(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversation = (await served.post("/v1/conversations", json={}))["id"]
    calls = _record_commits(served, monkeypatch)
    puts: list[object] = []
    releases: list[object] = []
    put, release = served.store.responses.put, served.store.leases.release

    async def counted_put(record: Any) -> None:
        puts.append(record)
        await put(record)

    async def counted_release(*args: Any) -> Any:
        releases.append(args)
        return await release(*args)

    monkeypatch.setattr(served.store.responses, "put", counted_put)
    monkeypatch.setattr(served.store.leases, "release", counted_release)
    out = await served.respond(input="hello there", conversation=conversation)
    assert out["status"] == "completed"
    assert puts == []
    assert releases == []
    *steps, last = calls
    assert last["response"].id == out["id"]
    assert last["response"].status == "completed"
    assert last["release"] is not None
    assert any(isinstance(e, Message) and e.role == "assistant" for e in last["events"])
    assert all(step["response"] is None and step["release"] is None for step in steps)
    # the record built from memory is the one the store gives back, and the conversation is free again
    stored = await served.get(f"/v1/responses/{out['id']}")
    check_response(stored)
    assert stored["output"] == out["output"]
    again = await served.respond(input="and again", conversation=conversation)
    assert again["status"] == "completed"


async def test_a_failed_turn_commit_is_a_503_and_writes_none_of_the_answer(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversation = (await served.post("/v1/conversations", json={}))["id"]
    _record_commits(served, monkeypatch, fail=True)
    reply = await served.http.post(
        "/v1/responses", json={"model": "test", "input": "lost answer", "conversation": conversation}
    )
    assert "database is unavailable" in check_error(reply, 503)
    events = await served.store.read(conversation)
    assert not any(isinstance(e, Message) and e.role == "assistant" for e in events)
    assert (await served.store.responses.for_conversation(conversation)) == []
    monkeypatch.undo()
    after = await served.respond(input="after the outage", conversation=conversation)
    assert after["status"] == "completed"
    markers = [e for e in await served.store.read(conversation) if isinstance(e, TurnMarker)]
    assert [m.status for m in markers].count("interrupted") == 1  # the input was stored, the turn marked


async def test_a_proxy_requests_anchors_and_lease_release_are_in_its_commit(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _record_commits(served, monkeypatch)
    put = served.store.anchors.put
    puts: list[object] = []

    async def counted_put(*args: Any) -> None:
        puts.append(args)
        await put(*args)

    monkeypatch.setattr(served.store.anchors, "put", counted_put)
    messages = [{"role": "user", "content": "hello"}]
    first = await served.post("/v1/chat/completions", json={"model": "test", "messages": messages})
    last = calls[-1]
    assert puts == []
    assert last["release"] is not None
    assert last["anchors"] is not None
    answer = first["choices"][0]["message"]["content"]
    messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": "more"}]
    calls.clear()
    await served.post("/v1/chat/completions", json={"model": "test", "messages": messages})
    # the anchors committed with the first turn matched the history: only the new message was appended
    appended = [e for call in calls for e in call["events"] if isinstance(e, Message) and e.role == "user"]
    assert [m.content[0].text for m in appended] == ["more"]  # type: ignore[union-attr]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_proxy_request_whose_commit_fails_is_the_clients_error_and_not_completed(
    served: Served, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    first = await served.http.post(
        "/v1/chat/completions", json={"model": "test", "messages": [{"role": "user", "content": "hello"}]}
    )
    conversation = first.headers["x-contextfold-conversation"]
    answer = first.json()["choices"][0]["message"]["content"]
    _record_commits(served, monkeypatch, fail=True)
    messages = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "lost answer"},
    ]
    reply = await served.http.post(
        "/v1/chat/completions", json={"model": "test", "messages": messages, "stream": stream}
    )
    if stream and reply.status_code == 200:  # the answer's first chunk went out before the commit failed
        chunks = [line[6:] for line in reply.text.split("\n") if line.startswith("data: {")]
        assert "database is unavailable" in chunks[-1]
        assert "[DONE]" not in reply.text
    else:
        assert "database is unavailable" in check_error(reply, 503)
    events = await served.store.read(conversation)
    markers = [e for e in events if isinstance(e, TurnMarker)]
    assert [m.status for m in markers].count("completed") == 1  # the first exchange's only
    monkeypatch.undo()
    after = await served.http.post("/v1/chat/completions", json={"model": "test", "messages": messages})
    assert after.status_code == 200, after.text
    assert after.headers["x-contextfold-conversation"] == conversation
    events = await served.store.read(conversation)
    statuses = [e.status for e in events if isinstance(e, TurnMarker) and e.status != "started"]
    assert statuses == ["completed", "interrupted", "completed"]
