"""Staging a turn: appends checked and folded at once, written together by `flush` (one `commit_turn`)."""

from __future__ import annotations

import re

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contextfold import Conversation, InvalidEventError
from contextfold._errors import ConflictError
from contextfold.events import AnyEvent, user
from contextfold.store import ServerStore, TurnAnchors

from .scenario import turn


def _state(conversation: Conversation) -> str:
    """The view's state, bar event ids (the two conversations' events differ only in them)."""
    return re.sub(r"[a-z]+_[0-9a-f]{24}(_s)?", "id", repr(conversation.view.state()))


def _shape(events: list[AnyEvent]) -> list[bytes]:
    return [msgspec.json.encode(msgspec.structs.replace(e, conversation_id="", created_at=0.0)) for e in events]


_TURNS = st.lists(
    st.tuples(st.lists(st.integers(1, 3), max_size=2), st.sampled_from(["completed", "failed", "interrupted"])),
    min_size=1,
    max_size=4,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(turns=_TURNS, fail=st.booleans())
async def test_staged_appends_then_a_commit_equal_the_same_appends_one_by_one(
    store: ServerStore, turns: list[tuple[list[int], str]], fail: bool
) -> None:
    plain = await Conversation.create(store)
    staged = await Conversation.create(store)
    await staged.append(user("before the turn"))
    await plain.append(user("before the turn"))
    before = _state(staged)
    staged.stage()
    for i, (batches, status) in enumerate(turns):
        events = turn(f"turn {i}", batches=batches, status=status)  # type: ignore[arg-type]
        mine = [msgspec.structs.replace(e, id=f"{e.id}_s") for e in events]
        await plain.append(*events)
        await staged.append(*mine)
    assert (await store.conversations.get(staged.id)).head == 1  # nothing written yet
    if fail:  # someone wrote behind the lease's back: the commit conflicts, writes nothing, the view goes back
        await store.append(staged.id, [user("behind its back")], 1)
        with pytest.raises(ConflictError):
            await staged.flush(anchors=TurnAnchors(2, ["k"]))
        assert len(await store.read(staged.id)) == 2
        assert staged.view.head == 2
        assert not staged.staging
        assert not staged.stale
        assert await store.anchors.find(["k"], tenant="") == []
        return
    stored = await staged.flush()
    assert _state(staged) == _state(plain) != before
    assert [e.seq for e in stored] == list(range(2, plain.head + 1))
    reloaded = await Conversation.load(store, staged.id)
    assert _state(reloaded) == _state(staged)
    assert [re.sub(rb"[a-z]+_[0-9a-f]{24}(_s)?", b"id", _shape([e])[0]) for e in await store.read(staged.id)] == [
        re.sub(rb"[a-z]+_[0-9a-f]{24}(_s)?", b"id", _shape([e])[0]) for e in await store.read(plain.id)
    ]


async def test_a_staged_append_is_checked_at_once_and_discard_goes_back_to_the_log(store: ServerStore) -> None:
    conversation = await Conversation.create(store)
    await conversation.append(user("kept"))
    conversation.stage()
    with pytest.raises(InvalidEventError, match="staging already"):
        conversation.stage()
    await conversation.append(user("staged"))
    with pytest.raises(InvalidEventError, match="unanswered"):
        await conversation.append(*turn("bad", batches=[1])[3:4])  # a result with no call before it
    assert conversation.head == 2
    await conversation.discard()
    assert conversation.head == 1
    assert not conversation.staging
    assert [e.seq for e in await store.read(conversation.id)] == [1]
