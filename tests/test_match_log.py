"""`_match_log`: lining a client's history up with a stored log, for every history (hypothesis)."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from contextfold.events import Event, Message, Role, TextPart, ToolCall, ToolResult
from contextfold.server.proxy._match_log import client_signatures, is_tail_of, overlap, signatures

WORDS = st.sampled_from(["hello", "thanks", "ok", "run it", "done", "again"])


def _stored(texts: list[str]) -> list[Message]:
    """A log of alternating user and assistant messages, numbered from seq 1."""
    roles: tuple[Role, Role] = ("user", "assistant")
    return [
        msgspec.structs.replace(Message(role=roles[n % 2], content=[TextPart(t)]), seq=n + 1)
        for n, t in enumerate(texts)
    ]


@given(st.lists(WORDS, min_size=2, max_size=12), st.data())
def test_a_history_that_extends_the_log_matches_all_of_it(texts: list[str], data: st.DataObject) -> None:
    stored = _stored(texts)
    new = data.draw(WORDS)
    client = [[m] for m in stored] + [[Message(role="user", content=[TextPart(new)])]]
    found = overlap(signatures(stored), client_signatures(client), len(client))
    assert (found.matched, found.cut) == (len(stored), None)


@given(st.lists(WORDS, min_size=3, max_size=12), st.data())
def test_a_history_that_diverges_forks_after_the_last_common_message(texts: list[str], data: st.DataObject) -> None:
    stored = _stored(texts)
    keep = data.draw(st.integers(0, len(stored) - 1))
    changed = Message(role=stored[keep].role, content=[TextPart(texts[keep] + " (edited)")])
    client = [[m] for m in stored[:keep]] + [[changed], [Message(role="user", content=[TextPart("next")])]]
    found = overlap(signatures(stored), client_signatures(client), len(client))
    assert found.matched == keep
    assert found.cut == (stored[keep - 1].seq if keep else 0)  # everything after it is left out of the copy


@given(st.lists(WORDS, min_size=2, max_size=12), st.integers(1, 12))
def test_only_the_end_of_the_log_is_a_tail(texts: list[str], length: int) -> None:
    stored = signatures(_stored(texts))
    length = min(length, len(stored))
    assert is_tail_of(stored, stored[-length:])
    assert not is_tail_of(stored, [*stored[-length:], (("user", "something else"), 0)])


def test_hidden_calls_are_not_shown_and_a_multi_step_answer_is_one_message() -> None:
    log: list[Event] = [
        Message(role="user", content=[TextPart("what was it?")]),
        Message(role="assistant", content=[TextPart("Let me look.")]),
        ToolCall(call_id="c1", name="recall", arguments='{"query": "it"}', batch_id="b"),
        ToolResult(call_id="c1", output="it was 42"),
        Message(role="assistant", content=[TextPart("It was 42.")]),
    ]
    stored = [msgspec.structs.replace(e, seq=n + 1) for n, e in enumerate(log)]
    shown: list[list[Event]] = [[log[0]], [Message(role="assistant", content=[TextPart("Let me look.\n\nIt was 42.")])]]
    assert [s for s, _ in signatures(stored, hidden={"recall"})] == [s for s, _ in client_signatures(shown)]
