"""Lone surrogates on the proxy routes: their body reader leaves the check to the decoders (`_chat_decode`,
`_messages_decode`), which check each new message and every other field, and the whole body when it falls back.
Whatever the table already holds, a lone surrogate anywhere in a body is the error the edge's whole-body check
(`check_text`) names, and a message holding one is never kept."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contextfold import InvalidRequestError
from contextfold.server.edge._text import check_text
from contextfold.server.proxy import _chat_decode, _messages_decode
from contextfold.server.proxy._chat_decode import decode_chat
from contextfold.server.proxy._messages_decode import decode_messages
from contextfold.server.proxy._proxy_types import ProxyRequest

TEXT = st.text(st.characters(codec="utf-8"), max_size=8)  # valid Unicode: no surrogate of its own


def _history(wire: str, texts: list[str], parts: bool) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for n, text in enumerate(texts):
        content: Any = [{"type": "text", "text": f"{text}!"}] if parts and n % 2 else f"{text}."
        messages.append({"role": ("user", "assistant")[n % 2], "content": content})
    if wire == "chat":
        return {"model": "m", "metadata": {"tag": "x"}, "messages": messages}
    return {"model": "claude", "max_tokens": 8, "metadata": {"user_id": "u"}, "messages": messages}


def _strings(node: object, trail: list[object]) -> list[list[object]]:
    """The trail to every string and every object key of `node` (a key's trail ends with ("key", name))."""
    if isinstance(node, str):
        return [trail]
    if isinstance(node, dict):
        out = [[*trail, ("key", key)] for key in node]
        for key, child in node.items():
            out += _strings(child, [*trail, key])
        return out
    if isinstance(node, list):
        return [found for index, child in enumerate(node) for found in _strings(child, [*trail, index])]
    return []


def _broken(body: dict[str, Any], trail: list[object]) -> dict[str, Any]:
    """`body` with a lone surrogate appended to the string (or key) at `trail`."""
    copy: dict[str, Any] = json.loads(json.dumps(body))
    holder: Any = copy
    for step in trail[:-1]:
        holder = holder[step]
    last = trail[-1]
    if isinstance(last, tuple):
        holder[last[1] + "\udfff"] = holder.pop(last[1])
    else:
        holder[last] += "\ud800"
    return copy


def _error(run: Callable[[], object]) -> tuple[str | None, str]:
    with pytest.raises(InvalidRequestError) as caught:
        run()
    return caught.value.param, str(caught.value)


DECODE: dict[str, Callable[[bytes], ProxyRequest]] = {"chat": decode_chat, "anthropic": decode_messages}


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["chat", "anthropic"]), st.lists(TEXT, min_size=2, max_size=6), st.booleans(), st.data())
def test_a_lone_surrogate_anywhere_is_the_edges_error_whatever_was_seen_before(
    wire: str, texts: list[str], parts: bool, data: st.DataObject
) -> None:
    tag = str(uuid.uuid4())  # a history of its own: what earlier examples left in the table is not this one's
    body = _history(wire, [f"{tag} {text}" for text in texts], parts)
    decode = DECODE[wire]
    decode(json.dumps(body).encode())  # seen: its messages are kept
    body["messages"].append({"role": "user" if len(texts) % 2 == 0 else "assistant", "content": "new"})
    trail = data.draw(st.sampled_from(_strings(body, [])))
    broken = json.dumps(_broken(body, trail)).encode()  # ASCII: the surrogate as its escape
    expected = _error(lambda: check_text(broken))
    assert "lone UTF-16 surrogate" in expected[1]
    assert _error(lambda: decode(broken)) == expected
    assert _error(lambda: decode(broken)) == expected  # and again: nothing of it was kept as good


def test_a_message_holding_a_lone_surrogate_is_never_kept() -> None:
    message = {"role": "user", "content": f"{uuid.uuid4()} \ud800"}
    raw = json.dumps(message).encode()
    for wire, table in (("chat", _chat_decode._SEEN), ("anthropic", _messages_decode._SEEN)):
        body = _history(wire, [], False)
        body["messages"] = [message]
        before = len(table)
        with pytest.raises(InvalidRequestError, match="lone UTF-16 surrogate"):
            DECODE[wire](json.dumps(body).encode())
        assert table.get(raw) is None
        assert len(table) == before


def test_escaped_text_that_is_no_surrogate_stays_on_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """An ASCII-only encoder writes Korean as `\\ud55c`: an escape the quick scan looks at twice, but no
    surrogate, so the message is parsed and kept as any other."""
    history = [{"role": "user", "content": f"{uuid.uuid4()} 한국어"}, {"role": "assistant", "content": "네"}]
    history.append({"role": "user", "content": "\U0001f600 그리고"})  # a pair too
    data = json.dumps({"model": "m", "messages": history}).encode()
    assert b"\\ud55c" in data

    def refuse(body: object) -> object:
        raise AssertionError("the fast path fell back to the reference parser")

    monkeypatch.setattr(_chat_decode, "parse_chat", refuse)
    request = decode_chat(data)
    assert [m.role for m in request.messages] == ["user", "assistant", "user"]
    assert _chat_decode._SEEN.get(json.dumps(history[0]).encode()) is not None
