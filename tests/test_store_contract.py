"""The store contract: every test runs on SQLite and on PostgreSQL (the `store` fixture is parametrised)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contextfold._errors import (
    ConflictError,
    InvalidEventError,
    InvalidRequestError,
    NotFoundError,
    SchemaVersionError,
)
from contextfold.events import (
    Compaction,
    Deletion,
    Event,
    Message,
    ToolCall,
    ToolResult,
    assistant,
    decode,
    encode,
    system,
    user,
)
from contextfold.store import Store

from .store_fixtures import Backend

# --- conversations ------------------------------------------------------------------------------------------


async def test_create_get_and_delete_a_conversation(store: Store) -> None:
    info = await store.conversations.create("conv_one", {"owner": "ada"})
    assert (info.id, info.head, info.checkpoint, info.metadata) == ("conv_one", 0, 0, {"owner": "ada"})
    assert await store.conversations.get("conv_one") == info
    generated = await store.conversations.create()
    assert generated.id.startswith("conv_")
    assert generated.id != info.id

    with pytest.raises(InvalidRequestError, match="already exists"):
        await store.conversations.create("conv_one")

    await store.append("conv_one", [user("hello")], 0)
    await store.conversations.delete("conv_one")
    with pytest.raises(NotFoundError, match="conv_one"):
        await store.conversations.get("conv_one")
    with pytest.raises(NotFoundError):
        await store.conversations.delete("conv_one")
    with pytest.raises(NotFoundError):
        await store.read("conv_one")
    assert [c.id for c in await store.conversations.list()] == [generated.id]
    # the id is free again, and the new conversation starts empty
    again = await store.conversations.create("conv_one")
    assert again.head == 0
    assert await store.read("conv_one") == []


async def test_list_pages_through_every_conversation_once(store: Store) -> None:
    created = [(await store.conversations.create()).id for _ in range(7)]
    everything = [c.id for c in await store.conversations.list()]
    assert sorted(everything) == sorted(created)

    pages: list[list[str]] = []
    after: str | None = None
    while page := [c.id for c in await store.conversations.list(limit=3, after=after)]:
        pages.append(page)
        after = page[-1]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [cid for page in pages for cid in page] == everything

    with pytest.raises(NotFoundError):
        await store.conversations.list(after="conv_missing")
    with pytest.raises(InvalidRequestError, match="limit"):
        await store.conversations.list(limit=-1)


# --- append and read ----------------------------------------------------------------------------------------


async def test_append_numbers_events_densely_and_stamps_the_conversation(store: Store) -> None:
    conv = await store.conversations.create()
    first = await store.append(conv.id, [system("be brief"), user("hi")], 0)
    assert [(e.seq, e.conversation_id) for e in first] == [(1, conv.id), (2, conv.id)]
    second = await store.append(conv.id, [assistant("hello"), user("bye"), assistant("ciao")], 2)
    assert [e.seq for e in second] == [3, 4, 5]

    assert await store.read(conv.id) == first + second
    info = await store.conversations.get(conv.id)
    assert (info.head, info.checkpoint) == (5, 0)


async def test_read_filters_by_after_seqs_ids_and_limit(store: Store) -> None:
    conv = await store.conversations.create()
    events = await store.append(conv.id, [user(f"message {i}") for i in range(1, 9)], 0)
    by_seq = {e.seq: e for e in events}

    assert await store.read(conv.id, after=5) == [by_seq[6], by_seq[7], by_seq[8]]
    assert await store.read(conv.id, seqs=[7, 2, 99]) == [by_seq[2], by_seq[7]]
    assert await store.read(conv.id, ids=[by_seq[4].id, "ev_missing"]) == [by_seq[4]]
    assert await store.read(conv.id, limit=2) == [by_seq[1], by_seq[2]]
    assert await store.read(conv.id, after=2, seqs=[1, 3, 4, 5], limit=2) == [by_seq[3], by_seq[4]]
    assert await store.read(conv.id, limit=0) == []
    assert await store.read(conv.id, seqs=[]) == []
    with pytest.raises(InvalidRequestError, match="limit"):
        await store.read(conv.id, limit=-1)
    with pytest.raises(NotFoundError):
        await store.read("conv_missing")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    after=st.integers(-1, 10),
    seqs=st.none() | st.lists(st.integers(-1, 11), max_size=6),
    id_seqs=st.none() | st.lists(st.integers(1, 8), max_size=4),
    limit=st.none() | st.integers(0, 9),
)
async def test_read_agrees_with_a_list_model(
    store: Store, after: int, seqs: list[int] | None, id_seqs: list[int] | None, limit: int | None
) -> None:
    conv = await store.conversations.create()
    events = await store.append(conv.id, [user(f"message {i}") for i in range(8)], 0)
    ids = None if id_seqs is None else [events[s - 1].id for s in id_seqs]
    expected = [
        e for e in events if e.seq > after and (seqs is None or e.seq in seqs) and (ids is None or e.id in ids)
    ][:limit]
    assert await store.read(conv.id, after=after, seqs=seqs, ids=ids, limit=limit) == expected


async def test_a_stale_head_conflicts_and_writes_nothing(store: Store) -> None:
    conv = await store.conversations.create()
    before = await store.append(conv.id, [user("one"), assistant("two")], 0)
    for stale in (0, 1, 3):
        with pytest.raises(ConflictError, match="moved on") as caught:
            await store.append(conv.id, [user("lost")], stale)
        assert (caught.value.expected_head, caught.value.actual_head) == (stale, 2)
    assert await store.read(conv.id) == before
    assert (await store.conversations.get(conv.id)).head == 2


# --- bad input ----------------------------------------------------------------------------------------------


async def _rejected(store: Store, conversation_id: str, events: list[Event], head: int) -> None:
    """The append fails and leaves the conversation exactly as it was."""
    before = await store.read(conversation_id)
    with pytest.raises(InvalidEventError) as caught:
        await store.append(conversation_id, events, head)
    assert await store.read(conversation_id) == before
    assert (await store.conversations.get(conversation_id)).head == head
    assert str(caught.value)  # a message that says what is wrong


async def test_bad_appends_raise_typed_errors_and_write_nothing(store: Store) -> None:
    conv = await store.conversations.create()
    other = await store.conversations.create()
    await store.append(conv.id, [user("one"), assistant("two")], 0)
    stored = (await store.read(conv.id))[0]

    with pytest.raises(NotFoundError, match="conv_missing"):
        await store.append("conv_missing", [user("hi")], 0)
    with pytest.raises(InvalidEventError, match="at least one event"):
        await store.append(conv.id, [], 2)

    twice = user("twice")
    await _rejected(store, conv.id, [twice, user("x"), twice], 2)
    await _rejected(store, conv.id, [user("new"), user("reused", id=stored.id)], 2)
    # ids are unique across conversations too
    await _rejected(store, other.id, [user("reused elsewhere", id=stored.id)], 0)
    await _rejected(store, conv.id, [user("foreign", conversation_id=other.id)], 2)
    await _rejected(store, conv.id, [Message(role="robot", content=[])], 2)  # type: ignore[arg-type]
    # a deletion can only erase events before it: not itself, not later ones, not seq 0
    await _rejected(store, conv.id, [Deletion(targets=[3])], 2)
    await _rejected(store, conv.id, [Deletion(targets=[4]), user("later")], 2)
    await _rejected(store, conv.id, [Deletion(targets=[1, 9])], 2)
    await _rejected(store, conv.id, [Deletion(targets=[0])], 2)
    await _rejected(store, conv.id, [Deletion(targets=[], erased_summaries=[5])], 2)


async def test_deletion_error_names_the_bad_targets(store: Store) -> None:
    conv = await store.conversations.create()
    await store.append(conv.id, [user("one")], 0)
    with pytest.raises(InvalidEventError, match=r"deletion .* at seq 2 can only erase earlier events.*\[2, 7\]"):
        await store.append(conv.id, [Deletion(targets=[1, 2, 7])], 1)


def test_decoding_rejects_unknown_types_and_other_schema_versions() -> None:
    good = encode(user("hi"))
    assert decode(good) == decode(good.decode())
    with pytest.raises(InvalidEventError, match=r"unknown event type 'telepathy'; known types are: .*message"):
        decode(b'{"type": "telepathy", "id": "ev_1"}')
    with pytest.raises(SchemaVersionError, match="schema version 99, this build reads version 1"):
        decode(good.replace(b'"type":"message"', b'"type":"message","schema_version":99'))
    with pytest.raises(InvalidEventError, match="malformed 'message' event"):
        decode(b'{"type": "message", "role": "robot", "content": []}')
    with pytest.raises(InvalidEventError, match="not a JSON object"):
        decode(b"[1, 2")


# --- deletion -----------------------------------------------------------------------------------------------

SECRET = "swordfish"


def _raw_rows(backend: Backend, conversation_id: str) -> list[tuple[bytes, str | None]]:
    rows = backend.query(
        "SELECT body, search_text FROM events WHERE conversation_id = ? ORDER BY seq", (conversation_id,)
    )
    return [(bytes(body), text) for body, text in rows]


async def test_deletion_erases_content_from_storage_and_keeps_a_tombstone(store: Store, backend: Backend) -> None:
    conv = await store.conversations.create()
    await store.append(
        conv.id,
        [
            user(f"my password is {SECRET}"),
            ToolCall(call_id="c1", name="login", arguments=f'{{"password": "{SECRET}"}}', batch_id="b1"),
            ToolResult(call_id="c1", output=f"logged in with {SECRET}", summary=f"ok {SECRET}"),
            assistant("done"),
        ],
        0,
    )
    assert any(SECRET.encode() in body for body, _ in _raw_rows(backend, conv.id))
    assert [hit.seq for hit in await store.search(conv.id, SECRET)]

    deleted = await store.append(conv.id, [Deletion(targets=[1, 2, 3])], 4)
    for body, text in _raw_rows(backend, conv.id):
        assert SECRET.encode() not in body
        assert text is None or SECRET not in text
    assert await store.search(conv.id, SECRET) == []

    events = await store.read(conv.id)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    message, call, result, kept, tombstone = events
    assert isinstance(message, Message)
    assert (message.redacted, message.content) == (True, [])
    assert isinstance(call, ToolCall)
    assert (call.redacted, call.call_id, call.batch_id, call.arguments) == (True, "c1", "b1", "{}")
    assert isinstance(result, ToolResult)
    assert (result.redacted, result.output, result.summary) == (True, "", None)
    assert kept == assistant("done", id=kept.id, conversation_id=conv.id, seq=4, created_at=kept.created_at)
    assert tombstone == deleted[0]


async def test_erased_summaries_erase_compaction_summaries(store: Store, backend: Backend) -> None:
    conv = await store.conversations.create()
    await store.append(conv.id, [user("a"), assistant("b")], 0)
    summary = Compaction(strategy="summary", trigger="auto", kept=[], covers=[(1, 2)], summary=f"it was {SECRET}")
    await store.append(conv.id, [summary, user("c")], 2)
    assert any(SECRET.encode() in body for body, _ in _raw_rows(backend, conv.id))

    await store.append(conv.id, [Deletion(targets=[], erased_summaries=[3])], 4)
    assert all(SECRET.encode() not in body for body, _ in _raw_rows(backend, conv.id))
    (erased,) = await store.read(conv.id, seqs=[3])
    assert isinstance(erased, Compaction)
    assert (erased.redacted, erased.summary) == (True, None)
    assert erased.covers == [(1, 2)]
    checkpoint = await store.checkpoint(conv.id)
    assert checkpoint.compaction == erased


# --- checkpoint ---------------------------------------------------------------------------------------------


async def test_checkpoint_without_compaction_is_the_whole_log(store: Store) -> None:
    conv = await store.conversations.create()
    empty = await store.checkpoint(conv.id)
    assert (empty.head, empty.compaction, empty.kept, empty.summary_holder, empty.after) == (
        0,
        None,
        {},
        None,
        [],
    )
    events = await store.append(conv.id, [system("s"), user("u")], 0)
    checkpoint = await store.checkpoint(conv.id)
    assert (checkpoint.head, checkpoint.compaction, checkpoint.after) == (2, None, events)
    with pytest.raises(NotFoundError):
        await store.checkpoint("conv_missing")


async def test_checkpoint_returns_newest_compaction_kept_events_holder_and_what_followed(
    store: Store,
) -> None:
    conv = await store.conversations.create()
    log = await store.append(conv.id, [system("rules"), user("q1"), assistant("a1"), user("q2"), assistant("a2")], 0)
    first = Compaction(strategy="summary", trigger="auto", kept=[1, 4, 5], covers=[(2, 3)], summary="S1")
    log += await store.append(conv.id, [first, user("q3"), assistant("a3")], 5)
    mask = Compaction(strategy="mask", trigger="auto", kept=[1, 5, 7, 8], covers=[(2, 3)], summary_seq=6, masked=[5])
    log += await store.append(conv.id, [mask], 8)
    log += await store.append(conv.id, [user("q4"), assistant("a4")], 9)

    checkpoint = await store.checkpoint(conv.id)
    assert checkpoint.head == 11
    assert checkpoint.compaction == log[8]
    assert sorted(checkpoint.kept) == [1, 5, 6, 7, 8]
    assert all(checkpoint.kept[seq] == log[seq - 1] for seq in checkpoint.kept)
    assert checkpoint.summary_holder == log[5]
    assert checkpoint.after == log[9:]
    assert (await store.conversations.get(conv.id)).checkpoint == 9


# --- search -------------------------------------------------------------------------------------------------


async def test_search_ranks_the_best_match_first_within_one_conversation(store: Store) -> None:
    conv = await store.conversations.create()
    other = await store.conversations.create()
    await store.append(other.id, [user("database migration database migration database migration")], 0)
    events = await store.append(
        conv.id,
        [
            user("what should we have for lunch today"),
            user("we added an index to the database"),
            assistant("the deployment failed because the database migration timed out"),
            ToolCall(call_id="c1", name="query", arguments='{"database": "prod"}', batch_id="b"),
        ],
        0,
    )
    hits = await store.search(conv.id, "Database migration!")
    assert hits[0].seq == 3
    assert {hit.seq for hit in hits} == {2, 3, 4}
    assert {hit.event_id for hit in hits} <= {e.id for e in events}
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert hits[0].type == "message"
    assert "migration" in hits[0].snippet
    assert "<" not in hits[0].snippet

    second = await store.search(conv.id, "Database migration!", limit=1, offset=1)
    assert [hit.seq for hit in second] == [hits[1].seq]
    assert await store.search(conv.id, "pizza") == []
    # operator syntax is just words, never SQL or a query language
    assert await store.search(conv.id, "x' OR 1=1; DROP TABLE events; --") == []
    assert await store.search(conv.id, 'lunch" OR "NEAR(') != []


async def test_search_rejects_bad_arguments(store: Store) -> None:
    conv = await store.conversations.create()
    with pytest.raises(InvalidRequestError, match="no words"):
        await store.search(conv.id, " ?! ")
    with pytest.raises(InvalidRequestError, match="limit"):
        await store.search(conv.id, "word", limit=0)
    with pytest.raises(InvalidRequestError, match="offset"):
        await store.search(conv.id, "word", offset=-1)
    with pytest.raises(NotFoundError):
        await store.search("conv_missing", "word")
