"""The proxy's Chat Completions hot path (`_chat_decode.decode_chat`, typed msgspec structs from the request bytes)
against the reference parser (`parse_chat` over a generic decode): the same request or the same error for any body,
keys equal byte for byte, and events built lazily equal to the reference's."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contextfold import InvalidRequestError
from contextfold.events import Event
from contextfold.server.proxy._chat_decode import decode_chat, reference_body
from contextfold.server.proxy._chat_parse import parse_chat
from contextfold.server.proxy._proxy_types import ProxyRequest
from contextfold.server.responses._schemas import MAX_JSON_DEPTH

texts = st.text(max_size=8)
ids = st.text(alphabet="abc_12", max_size=4)
anything = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | texts,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from(["type", "text", "x"]), inner),
    max_leaves=4,
)
cache = st.sampled_from([None, {"type": "ephemeral"}, {"type": "ephemeral", "ttl": "5m"}, {"ttl": 1}])


def maybe(draw: st.DrawFn, part: dict[str, Any], key: str, value: st.SearchStrategy[Any]) -> dict[str, Any]:
    if draw(st.booleans()):
        part[key] = draw(value)
    return part


@st.composite
def parts(draw: st.DrawFn) -> object:
    kind = draw(st.sampled_from(["text", "refusal", "image_url", "file", "input_audio", None, "odd"]))
    if kind == "odd":
        return draw(anything)
    part: dict[str, Any] = {} if kind is None else {"type": kind}
    if kind == "text":
        part["text"] = draw(texts | st.integers())
    elif kind == "refusal":
        part["refusal"] = draw(texts)
    elif kind == "image_url":
        url = draw(st.sampled_from(["https://x.test/a.png", "data:image/png;base64,AAAA", "ftp://x", ""]))
        image = maybe(draw, {"url": url}, "detail", st.sampled_from(["low", "high", "original", "auto", "big", None]))
        part["image_url"] = image
    elif kind == "file":
        file: dict[str, Any] = {}
        maybe(draw, file, "file_id", st.sampled_from(["file-1", "", None]))
        maybe(draw, file, "file_data", st.sampled_from(["data:application/pdf;base64,JVBE", "SGVsbG8=", ""]))
        maybe(draw, file, "filename", st.sampled_from(["a.pdf", "n.txt", None]))
        part["file"] = file
    return maybe(draw, part, "cache_control", cache)


content = st.none() | texts | st.lists(parts(), max_size=3) | st.integers()


@st.composite
def calls(draw: st.DrawFn) -> object:
    arguments = draw(st.sampled_from(['{"a": 1}', '{"b":[1, 2],"a":1}', "{oops", "", "[" * 70 + "]" * 70]))
    function: Any = {"name": draw(st.sampled_from(["get", "put", ""])), "arguments": arguments}
    if draw(st.integers(0, 9)) == 0:
        function = draw(anything)
    call: dict[str, Any] = {"id": draw(ids), "function": function}
    return maybe(draw, call, "type", st.sampled_from(["function", "custom", None]))


@st.composite
def messages(draw: st.DrawFn) -> object:
    if draw(st.integers(0, 19)) == 0:
        return draw(anything)
    role = draw(st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", None]))
    message: dict[str, Any] = {} if role is None else {"role": role}
    maybe(draw, message, "content", content)
    if role == "assistant":
        maybe(draw, message, "tool_calls", st.none() | st.lists(calls(), max_size=2))
        maybe(draw, message, "refusal", st.none() | texts)
        maybe(draw, message, "function_call", st.none() | st.just({"name": "f"}))
        maybe(draw, message, "annotations", st.just([]) | st.lists(anything, max_size=1))
    if role == "tool":
        maybe(draw, message, "tool_call_id", ids)
    maybe(draw, message, "name", st.sampled_from(["bob", 3]))
    maybe(draw, message, "x_vendor", anything)
    return message


@st.composite
def bodies(draw: st.DrawFn) -> object:
    body: dict[str, Any] = {"model": draw(st.sampled_from(["m", "", 3]))}
    body["messages"] = draw(st.lists(messages(), max_size=5) | anything)
    tool = {"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}
    maybe(draw, body, "tools", st.sampled_from([[tool], [], None, {}]))
    maybe(
        draw, body, "tool_choice", st.sampled_from(["auto", "any", {"type": "function", "function": {"name": "get"}}])
    )
    maybe(draw, body, "temperature", st.sampled_from([0.5, 3, "1"]))
    maybe(draw, body, "stream", st.booleans() | st.just("yes"))
    maybe(draw, body, "stream_options", st.sampled_from([{"include_usage": True}, []]))
    maybe(draw, body, "max_tokens", st.sampled_from([5, 0, True]))
    maybe(draw, body, "seed", anything)
    if draw(st.integers(0, 9)) == 0:
        return draw(anything)
    return body


def comparable(events: tuple[Event, ...]) -> list[dict[str, Any]]:
    """Events as data, without what is new on each build (ids, times, batch ids)."""
    out = []
    for event in events:
        data = msgspec.to_builtins(event)
        for key in ("id", "created_at", "batch_id"):
            data.pop(key, None)
        out.append(data)
    return out


def same(fast: ProxyRequest, reference: ProxyRequest) -> None:
    assert [m.key for m in fast.messages] == [m.key for m in reference.messages]
    assert [m.role for m in fast.messages] == [m.role for m in reference.messages]
    assert [comparable(m.events) for m in fast.messages] == [comparable(m.events) for m in reference.messages]
    for field in ("wire", "model", "system_prompt", "tools", "settings", "max_output_tokens", "stream", "extra"):
        assert getattr(fast, field) == getattr(reference, field), field
    assert fast.include_usage == reference.include_usage


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
    fast = outcome(decode_chat, data)
    reference = outcome(lambda raw: parse_chat(reference_body(raw)), data)
    if isinstance(reference, tuple) or isinstance(fast, tuple):
        assert fast == reference
    else:
        same(fast, reference)


@settings(max_examples=100, deadline=None)
@given(st.lists(messages(), min_size=1, max_size=6))
def test_lazy_events_equal_the_reference_ones_and_build_anew(history: list[object]) -> None:
    data = json.dumps({"model": "m", "messages": history}).encode()
    try:
        reference = parse_chat(reference_body(data))
    except InvalidRequestError:
        return
    fast = decode_chat(data)
    for lazy, eager in zip(fast.messages, reference.messages, strict=True):
        first, again = lazy.events, lazy.events
        assert comparable(first) == comparable(again) == comparable(eager.events)
        assert all(a.id != b.id for a, b in zip(first, again, strict=True))  # a build is new events, as today


@pytest.mark.parametrize(
    ("data", "param"),
    [
        (b"[" * 100_000 + b"]" * 100_000, None),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": ' + b"[" * 70 + b"]" * 70 + b"}",
            "seed",
        ),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "hi", "x": ' + b"[" * 70 + b"]" * 70 + b"}]}",
            "messages",
        ),
        (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]', None),
    ],
)
def test_a_body_too_deep_or_not_json_is_the_reference_error(data: bytes, param: str | None) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        decode_chat(data)
    assert caught.value.param == param
    if data.startswith(b"["):
        assert f"more than {MAX_JSON_DEPTH} levels deep" in str(caught.value)


def test_what_clients_send_is_decoded_without_the_reference_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(body: object) -> ProxyRequest:
        raise AssertionError("the fast path fell back to the reference parser")

    call = {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": '{"a": 1}'}}
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "see", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None, "annotations": []},
        {"role": "tool", "tool_call_id": "call_1", "content": "one"},
        {"role": "assistant", "content": "Done.", "audio": None, "function_call": None},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]},
    ]
    tool = {"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}
    data = json.dumps({"model": "m", "messages": history, "tools": [tool], "stream": True, "seed": 1}).encode()
    reference = parse_chat(reference_body(data))
    monkeypatch.setattr("contextfold.server.proxy._chat_decode.parse_chat", refuse)
    same(decode_chat(data), reference)
