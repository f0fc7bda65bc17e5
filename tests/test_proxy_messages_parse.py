"""Anthropic Messages requests parsed for the proxy: every block shape, every parameter, every mistake with its exact
path (in test_proxy_messages_errors.py), the canonical key's invariances (hypothesis), and a round trip through
the Anthropic renderer."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from anthropic.types import (
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contextfold.events import FilePart, ImagePart, Item, Message, Reasoning, TextPart, ToolCall, ToolResult, ToolSpec
from contextfold.models._anthropic import _StreamState
from contextfold.server.proxy._messages_blocks import TOOL_RESULT_IMAGE
from contextfold.server.proxy._messages_wire import canonical_anthropic, parse_messages
from contextfold.view import Window
from contextfold.view._render import render_anthropic

Body = dict[str, Any]
_DROP = object()
PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}


def body(**fields: Any) -> Body:
    """A valid request, with `fields` replaced (`_DROP` removes one)."""
    out: Body = {"model": "claude-sonnet-4-6", "max_tokens": 1024, "messages": [{"role": "user", "content": "hi"}]}
    out.update(fields)
    return {key: value for key, value in out.items() if value is not _DROP}


def third(message: Any) -> Body:
    """A request whose third message is `message` (so paths read `messages[2]...`)."""
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, message]
    return body(messages=history)


# --- the request --------------------------------------------------------------------------------------------------


def test_a_minimal_request() -> None:
    parsed = parse_messages(body())
    assert (parsed.wire, parsed.model, parsed.max_output_tokens, parsed.stream) == (
        "anthropic",
        "claude-sonnet-4-6",
        1024,
        False,
    )
    assert (parsed.system_prompt, parsed.tools, dict(parsed.extra)) == (None, None, {})
    (message,) = parsed.messages
    assert message.role == "user"
    (event,) = message.events
    assert isinstance(event, Message)
    assert (event.role, event.content) == ("user", [TextPart("hi")])


def test_system_blocks_are_joined_and_cache_markers_dropped() -> None:
    system = [
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Be kind."},
    ]
    assert parse_messages(body(system=system)).system_prompt == "Be brief.\n\nBe kind."
    assert parse_messages(body(system="Verbatim  text\n")).system_prompt == "Verbatim  text\n"
    assert parse_messages(body(system="")).system_prompt is None
    assert parse_messages(body(system=[])).system_prompt is None


def test_settings_tools_and_extra() -> None:
    tools = [
        {"name": "weather", "description": "Weather of a city", "input_schema": {"type": "object"}},
        {"type": "custom", "name": "time", "input_schema": {"type": "object", "properties": {}}, "cache_control": {}},
    ]
    parsed = parse_messages(
        body(
            tools=tools,
            tool_choice={"type": "any", "disable_parallel_tool_use": True},
            temperature=0.5,
            top_p=1,
            stream=True,
            stop_sequences=["END"],
            top_k=5,
            metadata={"user_id": "u1"},
            thinking={"type": "enabled", "budget_tokens": 2048},
            service_tier="auto",
            something_new={"x": 1},
        )
    )
    assert parsed.tools == (
        ToolSpec("weather", "Weather of a city", {"type": "object"}),
        ToolSpec("time", "", {"type": "object", "properties": {}}),
    )
    s = parsed.settings
    assert (s.temperature, s.top_p, s.tool_choice, s.parallel_tool_calls) == (0.5, 1.0, "required", False)
    assert parsed.stream is True
    assert dict(parsed.extra) == {
        "stop_sequences": ["END"],
        "top_k": 5,
        "metadata": {"user_id": "u1"},
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "service_tier": "auto",
        "something_new": {"x": 1},
    }
    assert parse_messages(body(tools=[])).tools is None


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
        ({"type": "any", "disable_parallel_tool_use": False}, "required", None),
        ({"type": "none"}, "none", None),
    ],
)
def test_tool_choice(choice: Body, expected: str, parallel: bool | None) -> None:
    tools = [{"name": "weather", "input_schema": {"type": "object"}}]
    parsed = parse_messages(body(tools=tools, tool_choice=choice))
    assert (parsed.settings.tool_choice, parsed.settings.parallel_tool_calls) == (expected, parallel)
    assert "tool_choice" not in parsed.extra


def test_a_named_tool_choice_is_required_and_passed_on() -> None:
    tools = [{"name": "weather", "input_schema": {"type": "object"}}]
    choice = {"type": "tool", "name": "weather", "disable_parallel_tool_use": True}
    parsed = parse_messages(body(tools=tools, tool_choice=choice))
    assert (parsed.settings.tool_choice, parsed.settings.parallel_tool_calls) == ("required", False)
    assert parsed.extra["tool_choice"] == choice


# --- content blocks -----------------------------------------------------------------------------------------------


def test_user_blocks() -> None:
    text_doc = {"type": "text", "media_type": "text/plain", "data": "Plain text, é"}
    content = [
        {"type": "text", "text": "Look:", "cache_control": {"type": "ephemeral"}, "citations": None},
        {"type": "image", "source": PNG},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        {"type": "image", "source": {"type": "file", "file_id": "file_img"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
        {"type": "document", "source": text_doc, "title": "notes.txt", "context": "ignored"},
        {"type": "document", "source": {"type": "file", "file_id": "file_doc"}},
    ]
    (message,) = parse_messages(body(messages=[{"role": "user", "content": content}])).messages
    (event,) = message.events
    assert isinstance(event, Message)
    encoded = base64.b64encode("Plain text, é".encode()).decode()
    assert event.content == [
        TextPart("Look:"),
        ImagePart("data:image/png;base64,iVBORw0KGgo="),
        ImagePart("https://example.com/a.jpg"),
        FilePart(media_type="image/*", file_id="file_img"),
        FilePart(media_type="application/pdf", data="JVBERi0="),
        FilePart(media_type="text/plain", data=encoded, filename="notes.txt"),
        FilePart(media_type="application/octet-stream", file_id="file_doc"),
    ]


def test_tool_results_come_first_then_the_user_message() -> None:
    content = [
        {"type": "text", "text": "Here you go"},
        {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
        {
            "type": "tool_result",
            "tool_use_id": "t2",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        },
        {"type": "tool_result", "tool_use_id": "t3", "is_error": True},
        {
            "type": "tool_result",
            "tool_use_id": "t4",
            "content": [{"type": "text", "text": "shot"}, {"type": "image", "source": PNG}],
        },
    ]
    (message,) = parse_messages(body(messages=[{"role": "user", "content": content}])).messages
    results, last = message.events[:4], message.events[4]
    assert [(r.call_id, r.output, r.is_error) for r in results if isinstance(r, ToolResult)] == [
        ("t1", "sunny", False),
        ("t2", "a\nb", False),
        ("t3", "", True),
        ("t4", f"shot\n{TOOL_RESULT_IMAGE}", False),
    ]
    assert isinstance(last, Message)
    assert last.content == [ImagePart("data:image/png;base64,iVBORw0KGgo="), TextPart("Here you go")]


def test_only_tool_results_make_no_message() -> None:
    content = [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]
    (message,) = parse_messages(body(messages=[{"role": "user", "content": content}])).messages
    assert [type(e) for e in message.events] == [ToolResult]


def test_assistant_blocks_in_the_order_the_runtime_logs_them() -> None:
    content = [
        {"type": "thinking", "thinking": "Let me think", "signature": "sig=="},
        {"type": "text", "text": "Checking both."},
        {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Paris", "units": {"t": "C"}}},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "And"},
        {"type": "tool_use", "id": "t2", "name": "time", "input": {}},
    ]
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": content}]
    message = parse_messages(body(messages=history)).messages[1]
    assert message.role == "assistant"
    kinds = [type(e) for e in message.events]
    assert kinds == [Reasoning, Reasoning, Message, ToolCall, ToolCall]
    text = message.events[2]
    assert isinstance(text, Message)
    assert text.content == [TextPart("Checking both."), TextPart("And")]
    calls = [e for e in message.events if isinstance(e, ToolCall)]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        ("t1", "weather", '{"city":"Paris","units":{"t":"C"}}'),
        ("t2", "time", "{}"),
    ]
    assert calls[0].batch_id == calls[1].batch_id
    other = parse_messages(body(messages=history)).messages[1].events[3]
    assert isinstance(other, ToolCall)
    assert other.batch_id != calls[0].batch_id  # a new batch per parse


def test_thinking_is_stored_as_the_anthropic_adapter_stores_it() -> None:
    """The adapter's own stream state, fed the same blocks as the model streams them, gives the same reasoning."""
    state = _StreamState()
    raw: list[Any] = [
        RawContentBlockStartEvent.model_validate(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            }
        ),
        RawContentBlockDeltaEvent.model_validate(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm."}}
        ),
        RawContentBlockDeltaEvent.model_validate(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig=="}}
        ),
        RawContentBlockStopEvent.model_validate({"type": "content_block_stop", "index": 0}),
        RawContentBlockStartEvent.model_validate(
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "redacted_thinking", "data": "opaque"},
            }
        ),
        RawContentBlockStopEvent.model_validate({"type": "content_block_stop", "index": 1}),
    ]
    for event in raw:
        state.handle(event)
    content = [
        {"type": "thinking", "thinking": "Hmm.", "signature": "sig=="},
        {"type": "redacted_thinking", "data": "opaque"},
    ]
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": content}]
    parsed = [e for e in parse_messages(body(messages=history)).messages[1].events if isinstance(e, Reasoning)]
    assert [(r.provider, r.data, r.text) for r in parsed] == [(b.provider, b.data, b.text) for b in state.reasoning]


def test_an_empty_final_assistant_message_is_a_prefill_with_no_events() -> None:
    empties: list[str | list[Body]] = ["", []]
    for empty in empties:
        history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": empty}]
        assert parse_messages(body(messages=history)).messages[1].events == ()


# --- the canonical key --------------------------------------------------------------------------------------------

texts = st.text(min_size=1, max_size=12).filter(str.strip)
ids = st.text(alphabet="abcdefghij0123456789_", min_size=1, max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
inputs = st.dictionaries(st.text(max_size=5), json_values, max_size=4)
sources = st.sampled_from(
    [PNG, {"type": "url", "url": "https://example.com/a.png"}, {"type": "file", "file_id": "file_1"}]
)


@st.composite
def tool_result_blocks(draw: st.DrawFn, call_id: str) -> Body:
    block: Body = {"type": "tool_result", "tool_use_id": call_id}
    parts = draw(st.lists(texts, max_size=3))
    if parts:
        block["content"] = [{"type": "text", "text": t} for t in parts]
    if draw(st.booleans()):
        block["is_error"] = True
    return block


@st.composite
def user_blocks(draw: st.DrawFn) -> list[Body]:
    kinds = draw(st.lists(st.sampled_from(["text", "image", "tool_result"]), min_size=1, max_size=4))
    out: list[Body] = []
    for kind in kinds:
        if kind == "text":
            out.append({"type": "text", "text": draw(texts)})
        elif kind == "image":
            out.append({"type": "image", "source": draw(sources)})
        else:
            out.append(draw(tool_result_blocks(draw(ids))))
    return out


@st.composite
def assistant_blocks(draw: st.DrawFn) -> list[Body]:
    kinds = draw(st.lists(st.sampled_from(["text", "tool_use"]), min_size=1, max_size=4))
    return [
        {"type": "text", "text": draw(texts)}
        if kind == "text"
        else {"type": "tool_use", "id": draw(ids), "name": draw(ids), "input": draw(inputs)}
        for kind in kinds
    ]


messages = st.one_of(
    st.builds(lambda c: {"role": "user", "content": c}, user_blocks()),
    st.builds(lambda c: {"role": "assistant", "content": c}, assistant_blocks()),
)


def _reordered(value: Any) -> Any:
    """The same JSON with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {key: _reordered(value[key]) for key in reversed(value)}
    if isinstance(value, list):
        return [_reordered(item) for item in value]
    return value


@st.composite
def noisy(draw: st.DrawFn, message: Body) -> Body:
    """The message as another client might spell it: cache markers, citations, unknown keys, thinking blocks,
    blank text blocks, tool results as strings, is_error false, keys in another order."""
    blocks: list[Body] = []
    for block in message["content"]:
        block = dict(block)
        if draw(st.booleans()):
            block["cache_control"] = {"type": "ephemeral"}
        if block["type"] == "text" and draw(st.booleans()):
            block["citations"] = None
        if block["type"] == "tool_result":
            content = block.get("content", [])
            if draw(st.booleans()):  # the same text as one string
                block["content"] = "\n".join(part["text"] for part in content)
            if "is_error" not in block and draw(st.booleans()):
                block["is_error"] = False
        if draw(st.booleans()):
            block["x_unknown"] = draw(st.integers())
        if message["role"] == "assistant" and draw(st.booleans()):
            blocks.append({"type": "thinking", "thinking": draw(st.text(max_size=5)), "signature": draw(ids)})
        if draw(st.booleans()):
            blocks.append({"type": "text", "text": draw(st.sampled_from(["", " ", "\n"]))})
        blocks.append(block)
    out: Body = {**message, "content": blocks, "x_meta": 1} if draw(st.booleans()) else {**message, "content": blocks}
    return _reordered(out) if draw(st.booleans()) else out


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), messages)
def test_the_key_ignores_presentation(data: st.DataObject, message: Body) -> None:
    assert canonical_anthropic(data.draw(noisy(message))) == canonical_anthropic(message)


@given(st.text(min_size=1).filter(str.strip), st.sampled_from(["user", "assistant"]))
def test_a_string_is_one_text_block(text: str, role: str) -> None:
    as_blocks = {"role": role, "content": [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]}
    assert canonical_anthropic({"role": role, "content": text}) == canonical_anthropic(as_blocks)


@given(texts, texts)
def test_the_key_tells_different_messages_apart(first: str, second: str) -> None:
    joined = {"role": "user", "content": first + second}
    split = {"role": "user", "content": [{"type": "text", "text": first}, {"type": "text", "text": second}]}
    assert canonical_anthropic(joined) != canonical_anthropic(split)  # adjacent blocks are not merged
    assert canonical_anthropic({"role": "user", "content": first}) != canonical_anthropic(
        {"role": "assistant", "content": first}
    )
    if first != second:
        assert canonical_anthropic({"role": "user", "content": first}) != canonical_anthropic(
            {"role": "user", "content": second}
        )


def test_the_key_tells_tool_calls_apart() -> None:
    def use(**fields: Any) -> bytes:
        block = {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}, **fields}
        return canonical_anthropic({"role": "assistant", "content": [block]})

    assert use() == use(input={"a": 1})
    assert len({use(), use(id="t2"), use(name="g"), use(input={"a": 2}), use(input={"a": "1"})}) == 5

    def result(**fields: Any) -> bytes:
        return canonical_anthropic(
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", **fields}]}
        )

    assert result() == result(content="") == result(content=[]) == result(is_error=False)
    assert result(content="a\nb") == result(content=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
    assert len({result(), result(is_error=True), result(content="x"), result(tool_use_id="t2")}) == 4


# --- round trip through the Anthropic renderer --------------------------------------------------------------------


@st.composite
def conversations(draw: st.DrawFn) -> list[Body]:
    """Alternating messages from the user's; an assistant's tool calls are answered, in order, by the next one."""
    out: list[Body] = [{"role": "user", "content": draw(st.one_of(texts, user_blocks().map(_no_results)))}]
    for _ in range(draw(st.integers(0, 4))):
        blocks = draw(assistant_blocks())
        if draw(st.booleans()):
            blocks.insert(0, {"type": "thinking", "thinking": draw(texts), "signature": draw(ids)})
        calls = [b for b in blocks if b["type"] == "tool_use"]
        for index, call in enumerate(calls):
            call["id"] = f"toolu_{len(out)}_{index}"
        # The renderer writes text before calls, as models answer; a client echoes the answer in that order.
        blocks.sort(key=lambda b: b["type"] == "tool_use")
        out.append({"role": "assistant", "content": blocks})
        answer: list[Body] = [draw(tool_result_blocks(call["id"])) for call in calls]
        answer.extend(draw(user_blocks().map(_no_results)) if not calls or draw(st.booleans()) else [])
        out.append({"role": "user", "content": answer})
    return out


def _no_results(blocks: list[Body]) -> list[Body]:
    return [b for b in blocks if b["type"] != "tool_result"] or [{"type": "text", "text": "ok"}]


def _rendered_keys(request: Body) -> tuple[list[bytes], list[bytes]]:
    parsed = parse_messages(request)
    items: list[Item] = [
        event
        for message in parsed.messages
        for event in message.events
        if isinstance(event, (Message, ToolCall, ToolResult, Reasoning))
    ]
    assert len(items) == sum(len(message.events) for message in parsed.messages)
    window = Window(parsed.system_prompt, list(parsed.tools or ()), None, items)
    system, rendered = render_anthropic(window)
    assert system == parsed.system_prompt
    return [m.key for m in parsed.messages], [canonical_anthropic(m) for m in rendered]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(conversations())
def test_a_parsed_conversation_renders_back_to_the_same_keys(history: list[Body]) -> None:
    parsed, rendered = _rendered_keys(body(messages=history, system="Be brief."))
    assert rendered == parsed


def test_documents_and_images_render_back_to_the_same_keys() -> None:
    content = [
        {"type": "text", "text": "Read these"},
        {"type": "image", "source": PNG},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        {"type": "image", "source": {"type": "file", "file_id": "file_img"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Plain, é"}},
        {"type": "document", "source": {"type": "file", "file_id": "file_doc"}},
    ]
    parsed, rendered = _rendered_keys(body(messages=[{"role": "user", "content": content}]))
    assert rendered == parsed


def test_keys_are_compact_json() -> None:
    message = {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"b": [1, 2], "a": "é"}}],
    }
    assert json.loads(canonical_anthropic(message)) == ["assistant", [["u", "t", "f", {"a": "é", "b": [1, 2]}]]]
    assert b" " not in canonical_anthropic(message)
