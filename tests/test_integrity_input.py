"""Issue 14, items 3 and 5: input that would corrupt a conversation is refused whole, with a 400 naming the field.

- Two tool calls with one id (and one result) on Chat Completions, Messages and Responses input, and a Responses
  `function_call` with no output: refused before anything is appended (they were 200s whose upstream request
  silently lost the calls, while `/events` showed them in view). A reuse of an id already in the view is refused
  by the conversation's own append check.
- A lone UTF-16 surrogate anywhere in a JSON body, on every route: a 400 naming the field, nothing created (it was
  a 500 leaving an empty conversation behind per request).

Against a real `contextfold serve` process, as the findings were made.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contextfold._conversation import Conversation
from contextfold._errors import InvalidEventError, InvalidRequestError
from contextfold.events import Message, TextPart, ToolCall, ToolResult
from contextfold.server.edge._text import check_text
from contextfold.store import Store

from .processes import Replica
from .server_fixtures import Served


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    where = tmp_path_factory.mktemp("integrity")
    replica = Replica(str(where / "server.db"), where / "server.log")
    try:
        replica.wait_ready()
        with httpx.Client(base_url=replica.url, timeout=30) as client:
            yield client
    finally:
        replica.stop()


def _conversations(api: httpx.Client) -> list[str]:
    reply = api.get("/v1/conversations", params={"limit": 100})
    assert reply.status_code == 200, reply.text
    return [c["id"] for c in reply.json()["data"]]


def _refused(api: httpx.Client, path: str, body: Any, *, param: str, names: str) -> None:
    """The request is a 400 whose param is `param` and whose message names `names`, and nothing was created."""
    before = _conversations(api)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = api.post(path, content=raw, headers={"content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert names in error["message"]
    if path != "/v1/messages":  # Anthropic's error shape has no param
        assert error["param"] == param
    assert _conversations(api) == before


CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
TOOL_USE = {"type": "tool_use", "id": "t1", "name": "f", "input": {}}


def test_duplicate_call_ids_are_refused_on_every_wire(api: httpx.Client) -> None:
    chat = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": None, "tool_calls": [CALL, CALL]},
        {"role": "tool", "tool_call_id": "c1", "content": "r"},
        {"role": "user", "content": "second"},
    ]
    _refused(
        api,
        "/v1/chat/completions",
        {"model": "test", "messages": chat},
        param="messages[1].tool_calls[1].id",
        names="'c1'",
    )
    # the same id in a later message, while the first call is still unanswered
    later = [chat[0], {"role": "assistant", "content": None, "tool_calls": [CALL]}, chat[1], *chat[2:]]
    _refused(
        api,
        "/v1/chat/completions",
        {"model": "test", "messages": later},
        param="messages[2].tool_calls[0].id",
        names="'c1'",
    )
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": [TOOL_USE, TOOL_USE]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r"}]},
    ]
    _refused(
        api,
        "/v1/messages",
        {"model": "test", "max_tokens": 10, "messages": messages},
        param="messages[1].content[1].id",
        names="'t1'",
    )
    function_call = {"type": "function_call", "call_id": "x1", "name": "f", "arguments": "{}"}
    given = [
        {"role": "user", "content": "first"},
        function_call,
        function_call,
        {"type": "function_call_output", "call_id": "x1", "output": "r"},
        {"role": "user", "content": "second"},
    ]
    _refused(api, "/v1/responses", {"model": "test", "input": given}, param="input[2].call_id", names="'x1'")


def test_a_responses_function_call_with_no_output_is_refused(api: httpx.Client) -> None:
    call = {"type": "function_call", "call_id": "x2", "name": "f", "arguments": "{}"}
    for items in (
        [{"role": "user", "content": "first"}, call, {"role": "user", "content": "second"}],
        [{"role": "user", "content": "first"}, call],  # last, too: the model is not asked past an open call
    ):
        _refused(api, "/v1/responses", {"model": "test", "input": items}, param="input[1]", names="'x2'")


def test_answered_ids_in_a_new_history_still_work(api: httpx.Client) -> None:
    """Only an id reused while its call waits is ambiguous; distinct ids go through as before."""
    other = {**CALL, "id": "c2"}
    chat = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": None, "tool_calls": [CALL, other]},
        {"role": "tool", "tool_call_id": "c1", "content": "r1"},
        {"role": "tool", "tool_call_id": "c2", "content": "r2"},
        {"role": "user", "content": "second"},
    ]
    reply = api.post("/v1/chat/completions", json={"model": "test", "messages": chat})
    assert reply.status_code == 200, reply.text
    assert "I saw 6 items" in reply.json()["choices"][0]["message"]["content"]  # nothing dropped


async def test_the_conversation_refuses_a_call_id_already_in_its_view(served: Served) -> None:
    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}}
    first = await served.respond(input='/tool f {"a": 1}', tools=[tool])
    (call,) = [item for item in first["output"] if item["type"] == "function_call"]
    again = {"type": "function_call", "call_id": call["call_id"], "name": "f", "arguments": "{}"}
    body = {
        "model": "test",
        "previous_response_id": first["id"],
        "tools": [tool],
        "input": [
            {"type": "function_call_output", "call_id": call["call_id"], "output": "1"},
            again,
            {"type": "function_call_output", "call_id": call["call_id"], "output": "2"},
        ],
    }
    reply = await served.http.post("/v1/responses", json=body)
    assert reply.status_code == 400, reply.text
    assert repr(call["call_id"]) in reply.json()["error"]["message"]
    assert reply.json()["error"]["param"] == "input"
    # nothing was appended: the call can still be answered, once
    answered = {**body, "input": body["input"][:1]}
    assert (await served.http.post("/v1/responses", json=answered)).status_code == 200


async def test_conversation_check_refuses_reused_call_ids(sqlite_store: Store) -> None:
    conversation = await Conversation.create(sqlite_store)
    call = ToolCall(call_id="k", name="f", arguments="{}", batch_id="b1")
    await conversation.append(Message(role="user", content=[TextPart("hi")]), call, ToolResult(call_id="k", output="1"))
    head = conversation.head
    with pytest.raises(InvalidEventError, match="'k'"):
        await conversation.append(ToolCall(call_id="k", name="f", arguments="{}", batch_id="b2"))
    twice = [ToolCall(call_id="z", name="f", arguments="{}", batch_id="b3") for _ in range(2)]
    with pytest.raises(InvalidEventError, match="'z'"):
        await conversation.append(*twice)
    assert conversation.head == head


# --- lone surrogates --------------------------------------------------------------------------------------------

SURROGATE = '"hi \\ud800"'
"""A JSON string holding a lone high surrogate, as a client's JSON encoder writes it."""
PART = f'{{"type": "input_text", "text": {SURROGATE}}}'


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/responses", f'{{"model": "test", "input": {SURROGATE}}}', "input"),
        ("/v1/responses", f'{{"model": "test", "input": "hi", "instructions": {SURROGATE}}}', "instructions"),
        ("/v1/responses", f'{{"model": "test", "input": "hi", "metadata": {{"k": {SURROGATE}}}}}', "metadata.k"),
        (
            "/v1/responses",
            f'{{"model": "test", "input": [{{"role": "user", "content": [{PART}]}}]}}',
            "input[0].content[0].text",
        ),
        ("/v1/responses/compact", f'{{"model": "test", "input": {SURROGATE}}}', "input"),
        ("/v1/conversations", f'{{"items": [{{"role": "user", "content": {SURROGATE}}}]}}', "items[0].content"),
        ("/v1/conversations", '{"metadata": {"k\\udc00": "v"}}', "metadata"),
        (
            "/v1/chat/completions",
            f'{{"model": "test", "messages": [{{"role": "user", "content": {SURROGATE}}}]}}',
            "messages[0].content",
        ),
        (
            "/v1/messages",
            f'{{"model": "test", "max_tokens": 5, "messages": [{{"role": "user", "content": {SURROGATE}}}]}}',
            "messages[0].content",
        ),
    ],
)
def test_a_lone_surrogate_is_a_400_naming_the_field_and_creates_nothing(
    api: httpx.Client, path: str, body: str, param: str
) -> None:
    _refused(api, path, body.encode(), param=param, names="lone UTF-16 surrogate")


def test_a_surrogate_pair_is_a_character(api: httpx.Client) -> None:
    reply = api.post(
        "/v1/responses",
        content=b'{"model": "test", "input": "ok \\ud83d\\ude00"}',
        headers={"content-type": "application/json"},
    )
    assert reply.status_code == 200, reply.text
    assert "\N{GRINNING FACE}" in reply.json()["output"][0]["content"][0]["text"]


def test_a_surrogate_escape_split_across_body_chunks_is_found(api: httpx.Client) -> None:
    body = f'{{"model": "test", "input": "{"x" * 70_000}\\ud800"}}'.encode()

    def pieces() -> Iterator[bytes]:  # chunked, the escape cut in two
        cut = body.index(b"\\ud800") + 2
        yield body[:cut]
        yield body[cut:]

    reply = api.post("/v1/responses", content=pieces(), headers={"content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == "input"


KEYS = st.text("abcxyz_", min_size=1, max_size=5)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(JSON_VALUES, st.data())
def test_check_text_names_the_path_of_any_lone_surrogate(value: object, data: st.DataObject) -> None:
    """Valid Unicode always passes; a lone surrogate put into any string is found at its path."""
    check_text(json.dumps(value).encode())
    paths: list[tuple[str, list[object]]] = []

    def walk(node: object, path: str, trail: list[object]) -> None:
        if isinstance(node, str):
            paths.append((path, trail))
        elif isinstance(node, dict):
            for key, child in node.items():
                walk(child, f"{path}.{key}" if path else key, [*trail, key])
        elif isinstance(node, list):
            for index, child in enumerate(node):
                walk(child, f"{path}[{index}]", [*trail, index])

    walk(value, "", [])
    if not paths:
        return
    path, trail = data.draw(st.sampled_from(paths))
    broken = json.loads(json.dumps(value))
    if not trail:
        broken = broken + "\udfff"
    else:
        holder = broken
        for step in trail[:-1]:
            holder = holder[step]
        holder[trail[-1]] += "\udfff"
    with pytest.raises(InvalidRequestError, match="lone UTF-16 surrogate") as caught:
        check_text(json.dumps(broken).encode())
    assert caught.value.param == (path or None)


def test_check_text_refuses_a_key_and_passes_what_is_not_json() -> None:
    with pytest.raises(InvalidRequestError, match="the key") as caught:
        check_text(b'{"metadata": {"\\ud800": "v"}}')
    assert caught.value.param == "metadata"
    check_text(b'{"broken": "\\ud800')  # not JSON: the route says what is wrong with it
    check_text(b"\\ud800")


TRICKY = st.text(
    st.characters(min_codepoint=0xD7FE, max_codepoint=0xE001) | st.sampled_from(["\\", "u", "d", "8", "a", '"']),
    max_size=12,
)
"""Strings near and across the surrogate range, with backslashes and the letters of an escape."""


def _lone(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


@settings(max_examples=500, deadline=None)
@given(TRICKY, st.booleans())
def test_the_quick_scan_never_misses_a_lone_surrogate(text: str, ascii_only: bool) -> None:
    """The byte scan that spares most bodies a second decode lets no lone surrogate through, however the text
    mixes backslashes, pairs and halves, and whether the encoder escapes every non-ASCII character or only these."""
    from contextfold.server.edge._text import _maybe_lone

    # a lone surrogate can only be sent escaped: as UTF-8 bytes it is invalid, which every decoder refuses
    body = json.dumps({"text": text}, ensure_ascii=ascii_only or _lone(text)).encode()
    if _lone(json.loads(body)["text"]):  # two halves side by side are one character once decoded
        assert _maybe_lone(body)
        with pytest.raises(InvalidRequestError):
            check_text(body)
    else:
        check_text(body)


# --- the parsers against a reference model of "reused while waiting" --------------------------------------------

Step = tuple[str, tuple[str, ...]]
"""("calls", ids) for an assistant message with these calls, ("results", ids) for the results of these ids."""

STEPS = st.lists(
    st.tuples(st.sampled_from(["calls", "results"]), st.lists(st.sampled_from("abc"), min_size=1, max_size=3)),
    min_size=1,
    max_size=6,
).map(lambda steps: [(kind, tuple(ids)) for kind, ids in steps])


def _reused_while_waiting(steps: list[Step]) -> str | None:
    """The first call id reused while an earlier call with it has no result yet: what every wire must refuse."""
    waiting: set[str] = set()
    for kind, ids in steps:
        for call_id in ids:
            if kind == "results":
                waiting.discard(call_id)
            elif call_id in waiting:
                return call_id
            else:
                waiting.add(call_id)
    return None


def _chat(steps: list[Step]) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    for kind, ids in steps:
        if kind == "calls":
            calls = [{**CALL, "id": i} for i in ids]
            messages.append({"role": "assistant", "content": None, "tool_calls": calls})
        else:
            messages.extend({"role": "tool", "tool_call_id": i, "content": "r"} for i in ids)
    return {"model": "test", "messages": messages}


def _anthropic(steps: list[Step]) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    for kind, ids in steps:
        if kind == "calls":
            messages.append({"role": "assistant", "content": [{**TOOL_USE, "id": i} for i in ids]})
        else:
            blocks = [{"type": "tool_result", "tool_use_id": i, "content": "r"} for i in ids]
            messages.append({"role": "user", "content": blocks})
    return {"model": "test", "max_tokens": 5, "messages": messages}


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_the_proxy_parsers_refuse_exactly_the_ids_reused_while_waiting(steps: list[Step]) -> None:
    from contextfold.server.proxy._chat_parse import parse_chat
    from contextfold.server.proxy._messages_parse import parse_messages

    reused = _reused_while_waiting(steps)
    for parse, body in ((parse_chat, _chat(steps)), (parse_messages, _anthropic(steps))):
        if reused is None:
            parse(body)  # whatever else is wrong with the history is the conversation's to say
        else:
            with pytest.raises(InvalidRequestError, match=repr(reused)):
                parse(body)


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_responses_input_refuses_any_reused_id_and_any_call_left_unanswered(steps: list[Step]) -> None:
    from contextfold.server.responses._items_input import parse_input

    items: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    for kind, ids in steps:
        for i in ids:
            if kind == "calls":
                items.append({"type": "function_call", "call_id": i, "name": "f", "arguments": "{}"})
            else:
                items.append({"type": "function_call_output", "call_id": i, "output": "r"})
    calls = [i for kind, ids in steps if kind == "calls" for i in ids]
    answered = {i for kind, ids in steps if kind == "results" for i in ids}
    if len(set(calls)) < len(calls) or not set(calls) <= answered or _answered_late(items):
        with pytest.raises(InvalidRequestError):
            parse_input(items, answered=True)
    else:
        parse_input(items, answered=True)


def _answered_late(items: list[dict[str, Any]]) -> bool:
    """Whether a call's output comes only after some other item than outputs and calls, or before the call."""
    waiting: set[str] = set()
    for item in items:
        if item.get("type") == "function_call":
            waiting.add(str(item["call_id"]))
        elif item.get("type") == "function_call_output":
            waiting.discard(str(item["call_id"]))
    return bool(waiting)
