"""The proxy's Anthropic Messages hot path (`_messages_decode.decode_messages`) against the reference parser
(`parse_messages` over a generic decode): the same request or the same error for any body, keys equal byte for
byte, lazy events equal to the reference's."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contextfold import InvalidRequestError
from contextfold.server.proxy._chat_decode import reference_body
from contextfold.server.proxy._messages_decode import decode_messages
from contextfold.server.proxy._messages_parse import parse_messages
from contextfold.server.proxy._proxy_types import ProxyRequest

from .test_chat_decode import anything, comparable, maybe

texts = st.sampled_from(["", " ", "hi", "hello there", "\n"]) | st.text(max_size=6)
cache = st.sampled_from([None, {"type": "ephemeral"}, {"type": "ephemeral", "ttl": "1h"}, {"ttl": 1}])


@st.composite
def blocks(draw: st.DrawFn) -> object:
    kind = draw(st.sampled_from(["text", "text", "text", "tool_use", "image", None, "odd"]))
    if kind == "odd":
        return draw(anything)
    block: dict[str, Any] = {} if kind is None else {"type": kind}
    if kind == "text":
        block["text"] = draw(texts | st.integers())
    elif kind == "tool_use":
        block.update(id="toolu_1", name="get", input={"a": 1})
    return maybe(draw, block, "cache_control", cache)


@st.composite
def messages(draw: st.DrawFn) -> object:
    if draw(st.integers(0, 19)) == 0:
        return draw(anything)
    message: dict[str, Any] = {"role": draw(st.sampled_from(["user", "assistant", "user", "system", None]))}
    maybe(draw, message, "content", texts | st.lists(blocks(), max_size=3) | st.none())
    maybe(draw, message, "x_vendor", anything)
    return message


@st.composite
def bodies(draw: st.DrawFn) -> object:
    body: dict[str, Any] = {"model": draw(st.sampled_from(["claude", "", 3]))}
    maybe(draw, body, "max_tokens", st.sampled_from([1024, 0, "9"]))
    body["messages"] = draw(st.lists(messages(), max_size=5) | anything)
    maybe(draw, body, "system", st.sampled_from(["Be brief.", "", [{"type": "text", "text": "x"}], 3]))
    tool = {"name": "get", "input_schema": {"type": "object"}}
    maybe(draw, body, "tools", st.sampled_from([[tool], [], {}]))
    maybe(draw, body, "tool_choice", st.sampled_from([{"type": "auto"}, {"type": "tool", "name": "get"}, "any"]))
    maybe(draw, body, "temperature", st.sampled_from([0.5, 3]))
    maybe(draw, body, "stream", st.booleans() | st.just("yes"))
    maybe(draw, body, "metadata", anything)
    if draw(st.integers(0, 9)) == 0:
        return draw(anything)
    return body


def same(fast: ProxyRequest, reference: ProxyRequest) -> None:
    assert [m.key for m in fast.messages] == [m.key for m in reference.messages]
    assert [m.role for m in fast.messages] == [m.role for m in reference.messages]
    assert [comparable(m.events) for m in fast.messages] == [comparable(m.events) for m in reference.messages]
    for field in ("wire", "model", "system_prompt", "tools", "settings", "max_output_tokens", "stream", "extra"):
        assert getattr(fast, field) == getattr(reference, field), field


def outcome(parse: Any, data: bytes) -> ProxyRequest | tuple[str, str | None]:
    try:
        result: ProxyRequest = parse(data)
    except InvalidRequestError as error:
        return str(error), error.param
    return result


@settings(max_examples=400, deadline=None)
@given(bodies())
def test_any_body_decodes_as_the_reference_parser_decodes_it(body: object) -> None:
    data = json.dumps(body).encode()
    fast = outcome(decode_messages, data)
    reference = outcome(lambda raw: parse_messages(reference_body(raw)), data)
    if isinstance(reference, tuple) or isinstance(fast, tuple):
        assert fast == reference
    else:
        same(fast, reference)
        for message in fast.messages:  # lazy: a build makes new events, equal to the last one
            first, again = message.events, message.events
            assert comparable(first) == comparable(again)
            assert all(a.id != b.id for a, b in zip(first, again, strict=True))


def test_a_conversation_without_tools_is_decoded_without_the_reference_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(body: object) -> ProxyRequest:
        raise AssertionError("the fast path fell back to the reference parser")

    history = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
        {"role": "user", "content": [{"type": "text", "text": "more", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": ""},
    ]
    data = json.dumps({"model": "claude", "max_tokens": 64, "messages": history, "system": "Be brief."}).encode()
    reference = parse_messages(reference_body(data))
    monkeypatch.setattr("contextfold.server.proxy._messages_decode.parse_messages", refuse)
    same(decode_messages(data), reference)
