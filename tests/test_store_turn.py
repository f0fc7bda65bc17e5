"""`ServerStore.commit_turn` on both stores: a turn's writes in one transaction, all of them or none."""

from __future__ import annotations

import time

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contextfold._errors import ConflictError, InvalidEventError, InvalidRequestError, NotFoundError
from contextfold.events import AnyEvent, Deletion, Event, assistant, user
from contextfold.store import ResponseRecord, ServerStore, TurnAnchors

from .store_fixtures import Backend


def _record(conversation_id: str, status: str = "completed", last_seq: int = 0) -> ResponseRecord:
    return ResponseRecord(
        f"resp_{conversation_id}", "", conversation_id, time.time(), status, 1, last_seq, None, {"model": "m"}
    )


def _shape(events: list[AnyEvent]) -> list[bytes]:
    """Events as stored, bar what differs between two conversations given the same appends (ids, timestamps)."""
    return [msgspec.json.encode(msgspec.structs.replace(e, id="", conversation_id="", created_at=0.0)) for e in events]


async def test_a_turn_commits_events_response_anchors_and_release_together(store: ServerStore) -> None:
    conv = await store.conversations.create()
    assert await store.leases.take(conv.id, "me", 60) == 0
    stored = await store.commit_turn(
        conv.id,
        [user("hi"), assistant("hello")],
        0,
        response=_record(conv.id, last_seq=2),
        anchors=TurnAnchors(2, ["k1", "k2"]),
        release="me",
    )
    assert [e.seq for e in stored] == [1, 2]
    assert await store.read(conv.id) == stored
    assert (await store.responses.get(f"resp_{conv.id}")).last_seq == 2
    assert {(a.key, a.seq) for a in await store.anchors.find(["k1", "k2"], tenant="")} == {("k1", 2), ("k2", 2)}
    assert await store.leases.take(conv.id, "next", 60) == 2  # released with the commit

    # no events: the head is checked and the records still land in one transaction
    assert await store.commit_turn(conv.id, [], 2, response=_record(conv.id, "failed", 2), release="next") == []
    assert (await store.responses.get(f"resp_{conv.id}")).status == "failed"
    assert await store.leases.take(conv.id, "third", 60) == 2


_FAILURES = ["stale head", "bad event", "bad response", "bad anchors", "foreign response", "erases itself"]


async def _fails(
    store: ServerStore, conversation_id: str, head: int, failure: str, events: list[Event], taken_id: str
) -> None:
    """Commit a turn that fails in one way (`taken_id`: the id of an event stored elsewhere)."""
    response = _record(conversation_id, last_seq=head + len(events))
    anchors = TurnAnchors(head + len(events), ["key"])
    expected: type[Exception] = InvalidEventError
    if failure == "stale head":
        expected, head = ConflictError, head + 1
    elif failure == "bad event":
        events = [*events, user("mine", id=taken_id)]  # found only inside the transaction, by the unique index
    elif failure == "bad response":
        expected, response = InvalidRequestError, _replace_dataclass(response, status="done")
    elif failure == "bad anchors":
        expected, anchors = InvalidRequestError, TurnAnchors(1, [""])
    elif failure == "foreign response":
        expected, response = InvalidRequestError, _record("conv_other")
    else:
        events = [*events, Deletion(targets=[head + len(events) + 1])]  # itself: refused before anything is sent
    with pytest.raises(expected):
        await store.commit_turn(conversation_id, events, head, response=response, anchors=anchors, release="me")


def _replace_dataclass(record: ResponseRecord, **changes: object) -> ResponseRecord:
    import dataclasses

    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(st.lists(st.sampled_from(["user", "assistant"]), min_size=1, max_size=3), max_size=4),
    failure=st.sampled_from(_FAILURES),
)
async def test_staged_appends_committed_at_once_equal_the_same_appends_one_by_one(
    store: ServerStore, batches: list[list[str]], failure: str
) -> None:
    one_by_one = await store.conversations.create()
    at_once = await store.conversations.create()
    elsewhere = await store.conversations.create()
    (taken,) = await store.append(elsewhere.id, [user("elsewhere")], 0)
    staged: list[Event] = []
    for i, batch in enumerate(batches):
        events = [(user if role == "user" else assistant)(f"{role} {i}.{j}") for j, role in enumerate(batch)]
        await store.append(one_by_one.id, events, len(staged))
        staged += [msgspec.structs.replace(e, id=f"{e.id}_b") for e in events]

    # a commit that fails writes nothing: no event, no record, no anchor, and the lease stays taken
    assert await store.leases.take(at_once.id, "me", 60) == 0
    await _fails(store, at_once.id, 0, failure, staged, taken.id)
    assert await store.read(at_once.id) == []
    assert (await store.conversations.get(at_once.id)).head == 0
    assert await store.responses.for_conversation(at_once.id) == []
    assert await store.anchors.find(["key"], tenant="") == []
    assert await store.leases.take(at_once.id, "other", 60) is None

    stored = await store.commit_turn(at_once.id, staged, 0, release="me")
    assert _shape(stored) == _shape(await store.read(one_by_one.id)) == _shape(await store.read(at_once.id))
    assert (await store.conversations.get(at_once.id)).head == len(staged)
    await store.conversations.delete(one_by_one.id)
    await store.conversations.delete(at_once.id)
    await store.conversations.delete(elsewhere.id)


async def test_a_turn_on_a_missing_conversation_is_not_found(store: ServerStore, backend: Backend) -> None:
    with pytest.raises(NotFoundError, match="conv_missing"):
        await store.commit_turn("conv_missing", [user("hi")], 0, release="me")
    with pytest.raises(NotFoundError, match="conv_missing"):
        await store.commit_turn("conv_missing", [], 0, response=_record("conv_missing"))
    assert backend.query("SELECT count(*) FROM responses") == [(0,)]


async def test_a_turn_behind_the_head_is_a_conflict_and_writes_nothing(store: ServerStore) -> None:
    """A writer that fell behind (another appended since it read the head) collides with what is stored; one ahead
    of it (its view outran the log) matches nothing: either way a conflict, with or without events, and no part
    of the turn is written."""
    conv = await store.conversations.create()
    await store.append(conv.id, [user("one"), assistant("two")], 0)
    assert await store.leases.take(conv.id, "me", 60) == 2
    for expected_head, events in ((1, [user("late")]), (3, [user("early")]), (1, []), (3, [])):
        with pytest.raises(ConflictError):
            await store.commit_turn(conv.id, events, expected_head, response=_record(conv.id, last_seq=2), release="me")
    assert [e.seq for e in await store.read(conv.id)] == [1, 2]
    assert await store.responses.for_conversation(conv.id) == []
    assert await store.leases.take(conv.id, "other", 60) is None  # still mine: the release was not written
