"""The proxy's table of messages already parsed (`_seen.Seen`): a resent history parses only its new messages, the
result is the reference parser's whatever the table holds, and the table stays within its byte bound."""

from __future__ import annotations

import json
import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contextfold import InvalidRequestError
from contextfold.server.proxy import _chat_decode, _messages_decode
from contextfold.server.proxy._chat_decode import decode_chat, reference_body
from contextfold.server.proxy._chat_parse import parse_chat
from contextfold.server.proxy._messages_decode import decode_messages
from contextfold.server.proxy._messages_parse import parse_messages
from contextfold.server.proxy._seen import Seen


def _chat(history: list[dict[str, Any]]) -> bytes:
    return json.dumps({"model": "m", "messages": history}).encode()


def _history(turns: int, tag: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": f"{tag}: be brief."}]
    for n in range(turns):
        out.append({"role": "user", "content": f"{tag} question {n}"})
        out.append({"role": "assistant", "content": f"{tag} answer {n}"})
    return out


def test_a_resent_history_parses_only_its_new_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[object] = []
    real = _chat_decode._parsed

    def counting(message: Any) -> Any:
        parsed.append(message)
        return real(message)

    monkeypatch.setattr(_chat_decode, "_parsed", counting)
    history = _history(20, f"resent {uuid.uuid4()}")
    first = decode_chat(_chat(history))
    assert len(parsed) == len(history)
    history.append({"role": "user", "content": "one more"})
    again = decode_chat(_chat(history))
    assert len(parsed) == len(history)  # the new message only was parsed ...
    # ... and the earlier ones are the very ones the first request made, and what the reference parser makes
    assert all(a is b for a, b in zip(first.messages, again.messages, strict=False))
    reference = parse_chat(reference_body(_chat(history)))
    assert [(m.key, m.role) for m in again.messages] == [(m.key, m.role) for m in reference.messages]
    assert again.system_prompt == reference.system_prompt


def test_kept_messages_build_new_events_each_time() -> None:
    data = _chat(_history(3, f"events {uuid.uuid4()}"))
    one, two = decode_chat(data), decode_chat(data)
    for a, b in zip(one.messages, two.messages, strict=True):
        first, second = a.events, b.events
        assert [type(e) for e in first] == [type(e) for e in second]
        assert all(x.id != y.id for x, y in zip(first, second, strict=True))


def test_a_final_empty_prefill_is_not_kept_for_another_place() -> None:
    """An empty assistant message is accepted only as the last one (a prefill): the same bytes earlier in a later
    history must get the reference parser's error, not the earlier acceptance."""
    prefill = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]
    body = {"model": "claude", "max_tokens": 8}
    assert decode_messages(json.dumps({**body, "messages": prefill}).encode())
    later = json.dumps({**body, "messages": [*prefill, {"role": "user", "content": "go on"}]}).encode()
    with pytest.raises(InvalidRequestError) as caught:
        decode_messages(later)
    with pytest.raises(InvalidRequestError) as reference:
        parse_messages(reference_body(later))
    assert (caught.value.param, str(caught.value)) == (reference.value.param, str(reference.value))


def test_anthropic_histories_are_parsed_once_too(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []
    real = _messages_decode._client

    def counting(message: Any, last: bool) -> Any:
        made.append(message)
        return real(message, last)

    monkeypatch.setattr(_messages_decode, "_client", counting)
    tag = uuid.uuid4()
    history = [{"role": r, "content": f"{tag} {n} {r}"} for n in range(10) for r in ("user", "assistant")]
    history.append({"role": "user", "content": "anthropic last"})
    body = {"model": "claude", "max_tokens": 8, "messages": history}
    decode_messages(json.dumps(body).encode())
    history.append({"role": "assistant", "content": "anthropic reply"})
    history.append({"role": "user", "content": "anthropic next"})
    decode_messages(json.dumps(body).encode())
    assert len(made) == 21 + 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 40)), max_size=60), st.integers(1, 120))
def test_the_table_stays_within_its_bound_and_keeps_the_latest(ops: list[tuple[int, int]], bound: int) -> None:
    table: Seen[int] = Seen(max_bytes=bound)
    kept: dict[bytes, int] = {}
    for n, (key, size) in enumerate(ops):
        digest = str(key).encode()  # the key is the raw message's bytes
        if table.get(digest) is None and size <= bound:
            kept[digest] = n  # a put of a key the table does not hold takes this value
        table.put(digest, size, n)
        assert table.size <= bound
        assert table._runs._bytes <= bound
        found = table.get(digest)
        assert found is None or found == kept[digest]  # a key is never given another key's value
    assert table.size == sum(size for _, size in table._table.values())


def test_an_anthropic_history_with_tools_is_decoded_without_the_reference_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a coding agent sends (tool_use, tool_result, thinking, images): each message parsed once, by the
    reference parser's own message parse, and the request the reference parser makes of the whole body."""
    tag = str(uuid.uuid4())
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    history: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": f"{tag} read a.py"}, image]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "look first", "signature": "sig"},
                {"type": "text", "text": "Reading."},
                {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a.py"}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "print(1)"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "It prints 1."}]},
        {"role": "user", "content": "thanks"},
    ]
    data = json.dumps({"model": "claude", "max_tokens": 64, "messages": history}).encode()
    reference = parse_messages(reference_body(data))

    def refuse(body: object) -> object:
        raise AssertionError("the fast path fell back to the reference parser")

    monkeypatch.setattr(_messages_decode, "parse_messages", refuse)
    for _ in range(2):  # parsed, then kept
        fast = decode_messages(data)
        assert [(m.key, m.role) for m in fast.messages] == [(m.key, m.role) for m in reference.messages]
        for mine, theirs in zip(fast.messages, reference.messages, strict=True):
            first, again = mine.events, mine.events
            assert [type(e) for e in first] == [type(e) for e in theirs.events]
            assert all(a.id != b.id for a, b in zip(first, again, strict=True))  # built anew each time


def test_a_reused_waiting_tool_use_id_is_the_reference_error() -> None:
    use = {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_9", "name": "f", "input": {}}]}
    data = json.dumps({"model": "claude", "max_tokens": 8, "messages": [use, use]}).encode()
    with pytest.raises(InvalidRequestError) as caught:
        decode_messages(data)
    with pytest.raises(InvalidRequestError) as reference:
        parse_messages(reference_body(data))
    assert (caught.value.param, str(caught.value)) == (reference.value.param, str(reference.value))


MESSAGES = st.lists(st.sampled_from([b'"a"', b'"b"', b'"ab"', b'"e"', b'"e2"', b"[1]", b"{}"]), max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(MESSAGES, st.integers(0, 12)), min_size=1, max_size=10), st.integers(1, 60))
def test_each_gives_every_message_its_own_parse_whatever_earlier_requests_left(
    requests: list[tuple[list[bytes], int]], bound: int
) -> None:
    """Requests that resend, extend, cut or edit earlier ones (taking their runs or not, a table too small to keep
    them): every message gets the value its bytes parse to, and a value parse said not to keep (`"e..."` here, as
    a final prefill's) is the one parsed at its place in this request, never one taken from an earlier request."""
    table: Seen[tuple[bytes, int]] = Seen(max_bytes=bound)
    history: list[bytes] = []
    decoder = msgspec.json.Decoder(list[msgspec.Raw])
    parsed: list[int] = []  # the positions parsed in the request at hand

    def parse(raw: bytes, index: int) -> tuple[tuple[bytes, int], bool]:
        parsed.append(index)
        return (raw, index), not raw.startswith(b'"e')

    for added, cut in requests:
        history = history[:cut] + added  # cut short (an edit, a branch) or not (a resend, a next turn)
        raws = decoder.decode(b"[" + b",".join(history) + b"]")
        parsed.clear()
        values = table.each(raws, parse)
        assert [raw for raw, _ in values] == history
        for index, (raw, at) in enumerate(values):
            if raw.startswith(b'"e'):
                assert at == index
                assert index in parsed
        assert table.size <= bound
        assert table._runs._bytes <= bound
