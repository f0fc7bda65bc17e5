"""The proxy's OpenAI Chat wire: requests parsed (every shape, every error path), canonical keys (hypothesis), and
a parsed message rendered back by `view._render` (the answers: test_proxy_chat_answer.py)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contextfold import InvalidRequestError
from contextfold.events import Event, FilePart, ImagePart, Item, Message, TextPart, ToolCall, ToolResult
from contextfold.server.proxy._chat_wire import canonical_chat, parse_chat
from contextfold.view import Window
from contextfold.view._render import render_openai_chat

USER = {"role": "user", "content": "hi"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": '{"a": 1}'}}


def body(*messages: object, **fields: object) -> dict[str, Any]:
    return {"model": "m", "messages": list(messages) or [USER], **fields}


# --- parsing ----------------------------------------------------------------------------------------------------


def test_leading_instructions_become_the_system_prompt_and_later_ones_stay_messages() -> None:
    request = parse_chat(
        body(
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}, {"type": "text", "text": ""}]},
            USER,
            {"role": "developer", "content": "Now be verbose."},
        )
    )
    assert request.wire == "openai-chat"
    assert request.model == "m"
    assert request.system_prompt == "Be brief.\n\nUse tools."
    assert [m.role for m in request.messages] == ["user", "developer"]
    later = request.messages[1].events
    assert isinstance(later[0], Message)
    assert later[0].role == "developer"
    assert later[0].content == [TextPart("Now be verbose.")]
    assert parse_chat(body(USER)).system_prompt is None


def test_user_parts() -> None:
    parts = [
        {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "original"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
        {"type": "file", "file": {"file_data": "SGVsbG8=", "filename": "notes.txt"}},
        {"type": "file", "file": {"file_id": "file-1"}},
    ]
    (message,) = parse_chat(body({"role": "user", "content": parts, "name": "ann"})).messages[0].events
    assert isinstance(message, Message)
    assert message.role == "user"
    assert message.content == [
        TextPart("look"),
        ImagePart("https://x.test/a.png", detail="high"),
        ImagePart("data:image/png;base64,AAAA"),
        FilePart(media_type="application/pdf", data="JVBE", filename="a.pdf"),
        FilePart(media_type="text/plain", data="SGVsbG8=", filename="notes.txt"),
        FilePart(media_type="application/octet-stream", file_id="file-1"),
    ]


def test_assistant_text_then_calls_of_one_new_batch() -> None:
    second = {**CALL, "id": "call_2", "function": {"name": "put", "arguments": "{}"}}
    turn = {"role": "assistant", "content": "Looking.", "tool_calls": [CALL, second], "reasoning_content": "hmm"}
    third = {**CALL, "id": "call_3"}  # its own id: a call reusing an unanswered call's id is refused (issue 14)
    request = parse_chat(body(USER, turn, {"role": "assistant", "content": None, "tool_calls": [third]}))
    text, first, other = request.messages[1].events
    assert isinstance(text, Message)
    assert text.role == "assistant"
    assert text.content == [TextPart("Looking.")]
    assert isinstance(first, ToolCall)
    assert isinstance(other, ToolCall)
    assert (first.call_id, first.name, first.arguments) == ("call_1", "get", '{"a": 1}')
    assert first.batch_id == other.batch_id
    assert other.name == "put"
    (alone,) = request.messages[2].events
    assert isinstance(alone, ToolCall)
    assert alone.batch_id != first.batch_id


def test_assistant_refusal_parts_are_text_and_empty_messages_become_no_events() -> None:
    refusal = {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}], "refusal": "No."}
    request = parse_chat(body(USER, refusal, {"role": "assistant", "content": ""}, {"role": "user", "content": []}))
    (message,) = request.messages[1].events
    assert isinstance(message, Message)
    assert message.content == [TextPart("No.")]
    assert request.messages[2].events == ()
    assert request.messages[3].events == ()
    assert [m.role for m in request.messages] == ["user", "assistant", "assistant", "user"]


def test_tool_results() -> None:
    parts = {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
    }
    request = parse_chat(body(USER, {"role": "tool", "tool_call_id": "call_1", "content": "done"}, parts))
    (result,) = request.messages[1].events
    assert isinstance(result, ToolResult)
    assert (result.call_id, result.output, result.is_error) == (
        "call_1",
        "done",
        False,
    )
    (joined,) = request.messages[2].events
    assert isinstance(joined, ToolResult)
    assert joined.output == "a\nb"


PASSED_THROUGH = {
    "stop": ["\n"],
    "seed": 7,
    "response_format": {"type": "json_object"},
    "logprobs": True,
    "top_logprobs": 2,
    "presence_penalty": 0.5,
    "frequency_penalty": 0.1,
    "logit_bias": {"50256": -100},
    "user": "u1",
    "metadata": {"k": "v"},
    "store": False,
    "reasoning_effort": "low",
    "service_tier": "auto",
    "prediction": {"type": "content", "content": "x"},
    "modalities": ["text"],
    "verbosity": "low",
    "web_search_options": {},
    "some_vendor_key": {"anything": [1]},
}


def test_parameters() -> None:
    tools = [
        {"type": "function", "function": {"name": "get", "description": "Get it.", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "put"}},
    ]
    request = parse_chat(
        body(
            tools=tools,
            tool_choice="required",
            temperature=0,
            top_p=1,
            parallel_tool_calls=False,
            max_tokens=10,
            max_completion_tokens=20,
            stream=True,
            stream_options={"include_usage": True},
            n=1,
            **PASSED_THROUGH,
        )
    )
    assert [(t.name, t.description, t.parameters) for t in request.tools or ()] == [
        ("get", "Get it.", {"type": "object"}),
        ("put", "", {}),
    ]
    assert request.settings.tool_choice == "required"
    assert request.settings.parallel_tool_calls is False
    assert (request.settings.temperature, request.settings.top_p) == (0.0, 1.0)
    assert request.max_output_tokens == 20
    assert request.stream
    assert request.include_usage
    assert request.extra == PASSED_THROUGH
    minimal = parse_chat(body(tools=[], stream_options=None))
    assert minimal.tools is None
    assert not minimal.stream
    assert not minimal.include_usage
    assert minimal.extra == {}
    assert minimal.settings.temperature is None
    assert minimal.max_output_tokens is None
    assert parse_chat(body(max_tokens=5)).max_output_tokens == 5


def test_a_named_tool_choice_is_passed_through_and_forces_a_call() -> None:
    choice = {"type": "function", "function": {"name": "get"}}
    request = parse_chat(body(tools=[{"type": "function", "function": {"name": "get"}}], tool_choice=choice))
    assert request.settings.tool_choice == "required"
    assert request.extra == {"tool_choice": choice}
    for value in ("auto", "none"):
        assert parse_chat(body(tool_choice=value)).settings.tool_choice == value


def _msg(message: object) -> dict[str, Any]:
    return body(USER, message)


BAD: list[tuple[object, str | None, str]] = [
    ([], None, "must be a JSON object"),
    ({"messages": [USER]}, "model", "model is missing"),
    ({"model": "", "messages": [USER]}, "model", "missing"),
    ({"model": 3, "messages": [USER]}, "model", "not a number"),
    ({"model": "m"}, "messages", "messages is missing"),
    ({"model": "m", "messages": []}, "messages", "empty array"),
    ({"model": "m", "messages": "hi"}, "messages", "not a string"),
    (body("hi"), "messages[0]", "must be an object"),
    (_msg({"content": "x"}), "messages[1].role", "missing; expected one of system"),
    (_msg({"role": "bot", "content": "x"}), "messages[1].role", "'bot'"),
    (_msg({"role": "function", "name": "f", "content": "x"}), "messages[1].role", "role 'tool'"),
    (_msg({"role": "user", "content": 5}), "messages[1].content", "a string or an array"),
    (_msg({"role": "user", "content": [5]}), "messages[1].content[0]", "must be an object"),
    (_msg({"role": "user", "content": [{"text": "x"}]}), "messages[1].content[0].type", "missing"),
    (_msg({"role": "user", "content": [{"type": "text"}]}), "messages[1].content[0].text", "missing"),
    (_msg({"role": "user", "content": [{"type": "input_audio"}]}), "messages[1].content[0].type", "transcript"),
    (
        _msg({"role": "user", "content": [{"type": "video"}]}),
        "messages[1].content[0].type",
        "'video'; the content parts of a user message may be of type text or image_url",
    ),
    (_msg({"role": "user", "content": [{"type": "image_url"}]}), "messages[1].content[0].image_url", "missing"),
    (
        _msg({"role": "user", "content": [{"type": "image_url", "image_url": "https://x.test/a.png"}]}),
        "messages[1].content[0].image_url",
        "not a string",
    ),
    (
        _msg({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}),
        "messages[1].content[0].image_url.url",
        "data URL",
    ),
    (
        _msg({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x", "detail": "max"}}]}),
        "messages[1].content[0].image_url.detail",
        "'max'",
    ),
    (
        _msg({"role": "user", "content": [{"type": "file", "file": {}}]}),
        "messages[1].content[0].file.file_data",
        "file_id",
    ),
    (_msg({"role": "user", "content": [{"type": "file"}]}), "messages[1].content[0].file", "missing"),
    (
        _msg({"role": "system", "content": [{"type": "image_url"}]}),
        "messages[1].content[0].type",
        "a system message may be of type text",
    ),
    (_msg({"role": "assistant", "content": [{"type": "image_url"}]}), "messages[1].content[0].type", "text or refusal"),
    (_msg({"role": "assistant", "content": [{"type": "refusal"}]}), "messages[1].content[0].refusal", "missing"),
    (_msg({"role": "assistant", "function_call": {"name": "f"}}), "messages[1].function_call", "tool_calls"),
    (_msg({"role": "assistant", "tool_calls": {}}), "messages[1].tool_calls", "an array"),
    (
        _msg({"role": "assistant", "tool_calls": [{**CALL, "type": "custom"}]}),
        "messages[1].tool_calls[0].type",
        "custom",
    ),
    (_msg({"role": "assistant", "tool_calls": [{**CALL, "id": ""}]}), "messages[1].tool_calls[0].id", "empty"),
    (_msg({"role": "assistant", "tool_calls": [{"id": "c"}]}), "messages[1].tool_calls[0].function", "missing"),
    (
        _msg({"role": "assistant", "tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}),
        "messages[1].tool_calls[0].function.name",
        "missing",
    ),
    (
        _msg({"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "get", "arguments": {"a": 1}}}]}),
        "messages[1].tool_calls[0].function.arguments",
        "JSON text",
    ),
    (
        _msg({"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "get"}}]}),
        "messages[1].tool_calls[0].function.arguments",
        "not missing",
    ),
    (_msg({"role": "tool", "content": "x"}), "messages[1].tool_call_id", "missing"),
    (_msg({"role": "tool", "tool_call_id": "c"}), "messages[1].content", "missing"),
    (
        _msg({"role": "tool", "tool_call_id": "c", "content": [{"type": "image_url"}]}),
        "messages[1].content[0].type",
        "text",
    ),
    (body(tools={}), "tools", "an array"),
    (body(tools=[{"type": "custom", "custom": {"name": "x"}}]), "tools[0].type", "only function tools"),
    (body(tools=[{"type": "function"}]), "tools[0].function", "missing"),
    (body(tools=[{"type": "function", "function": {"name": ""}}]), "tools[0].function.name", "empty"),
    (
        body(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]),
        "tools[0].function.parameters",
        "JSON schema object",
    ),
    (
        body(tools=[{"type": "function", "function": {"name": "f", "description": 1}}]),
        "tools[0].function.description",
        "string or null",
    ),
    (body(tool_choice="any"), "tool_choice", "'any'"),
    (body(tool_choice=3), "tool_choice", "must be an object"),
    (body(tool_choice={"type": "allowed_tools"}), "tool_choice.type", "named function"),
    (body(tool_choice={"type": "function"}), "tool_choice.function", "missing"),
    (body(tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice.function.name", "no tool"),
    (body(temperature=2.5), "temperature", "[0, 2]"),
    (body(temperature=-0.1), "temperature", "[0, 2]"),
    (body(temperature="1"), "temperature", "a number"),
    (body(top_p=0), "top_p", "(0, 1]"),
    (body(top_p=1.5), "top_p", "(0, 1]"),
    (body(top_p=True), "top_p", "a number"),
    (body(parallel_tool_calls="yes"), "parallel_tool_calls", "true or false"),
    (body(max_tokens=0), "max_tokens", "positive integer, not 0"),
    (body(max_completion_tokens=1.5), "max_completion_tokens", "positive integer"),
    (body(max_completion_tokens=True), "max_completion_tokens", "not a boolean"),
    (body(stream="yes"), "stream", "true or false"),
    (body(stream=True, stream_options=[]), "stream_options", "must be an object"),
    (body(stream=True, stream_options={"include_usage": 1}), "stream_options.include_usage", "true or false"),
    (body(n=2), "n", "only n=1"),
]


@pytest.mark.parametrize(("value", "param", "fragment"), BAD)
def test_every_mistake_names_its_path(value: object, param: str | None, fragment: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_chat(value)
    assert caught.value.param == param
    assert fragment in str(caught.value)


def test_canonical_chat_refuses_what_the_parser_refuses() -> None:
    with pytest.raises(InvalidRequestError):
        canonical_chat({"role": "function", "content": "x"})


# --- canonical keys ---------------------------------------------------------------------------------------------

texts = st.text(max_size=12)
ids = st.text(alphabet="abcdef0123456789_", min_size=1, max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
arguments = st.dictionaries(st.text(max_size=5), json_values, max_size=4)
calls = st.lists(st.tuples(ids, ids, arguments), max_size=3, unique_by=lambda call: call[0])


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    """A chat message in its plainest spelling."""
    role = draw(st.sampled_from(["system", "developer", "user", "assistant", "tool"]))
    content = draw(texts)
    if role == "tool":
        return {"role": "tool", "tool_call_id": draw(ids), "content": content}
    if role != "assistant":
        return {"role": role, "content": content}
    message: dict[str, Any] = {"role": "assistant", "content": content}
    drawn = draw(calls)
    if drawn:
        message["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}} for i, n, a in drawn
        ]
    return message


def respell(message: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """The same message as another client might write it."""
    out: dict[str, Any] = {}
    content = message["content"]
    if content == "":
        empty: list[object] = ["", [], [{"type": "text", "text": ""}]]
        content = data.draw(st.sampled_from(empty if message["role"] == "tool" else [*empty, None]))
    elif data.draw(st.booleans()):
        content = [{"type": "text", "text": content, "cache_control": {"type": "ephemeral"}}]
    noise: dict[str, object] = {
        "name": "bob",
        "refusal": None,
        "reasoning_content": "thinking",
        "annotations": [],
        "x_vendor": 1,
    }
    for key in data.draw(st.permutations([*message, *data.draw(st.lists(st.sampled_from(list(noise)), unique=True))])):
        if key == "content":
            out["content"] = content
        elif key == "tool_calls":
            out["tool_calls"] = [respell_call(call, data) for call in message["tool_calls"]]
        else:
            out[key] = message.get(key, noise.get(key))
    if message["role"] == "assistant" and content is None and "tool_calls" not in out:
        out["content"] = ""  # a null content needs tool calls beside it
    return out


def respell_call(call: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    decoded = json.loads(call["function"]["arguments"])
    shuffled = dict(data.draw(st.permutations(list(decoded.items()))))
    indent = data.draw(st.sampled_from([None, 2]))
    separators = data.draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    text = json.dumps(shuffled, indent=indent, separators=separators if indent is None else None)
    return {"function": {"arguments": text, "name": call["function"]["name"]}, "id": call["id"]}


@settings(max_examples=300)
@given(messages(), st.data())
def test_a_message_spelled_differently_has_the_same_key(message: dict[str, Any], data: st.DataObject) -> None:
    assert canonical_chat(respell(message, data)) == canonical_chat(message)


def changed(message: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """The message with one thing that matters changed."""
    options = ["content", "role"]
    if message["role"] == "tool":
        options.append("tool_call_id")
    if message.get("tool_calls"):
        options += ["call id", "call name", "call arguments"]
    what = data.draw(st.sampled_from(options))
    out = {**message}
    if what == "content":
        out["content"] = message["content"] + data.draw(st.text(min_size=1, max_size=3))
    elif what == "role":
        others = {"system", "developer", "user", "assistant"} - {message["role"]}
        role = data.draw(st.sampled_from(sorted(others)))
        out = {"role": role, "content": message["content"]} if message["role"] != "assistant" else {**out, "role": role}
        out.pop("tool_calls", None)
        if message.get("tool_calls") or message["role"] == "tool":
            out["content"] += "x"  # calls and the call id are gone: make sure something else still differs
    elif what == "tool_call_id":
        out["tool_call_id"] = message["tool_call_id"] + "x"
    else:
        first = message["tool_calls"][0]
        function = dict(first["function"])
        call = {**first, "function": function}
        if what == "call id":
            call["id"] += "x"
        elif what == "call name":
            function["name"] += "x"
        else:
            function["arguments"] = json.dumps({"changed": json.loads(function["arguments"])})
        out["tool_calls"] = [call, *message["tool_calls"][1:]]
    return out


@settings(max_examples=300)
@given(messages(), st.data())
def test_a_different_message_has_a_different_key(message: dict[str, Any], data: st.DataObject) -> None:
    assert canonical_chat(changed(message, data)) != canonical_chat(message)


def test_arguments_that_are_not_json_are_kept_verbatim() -> None:
    def spelled(arguments: str) -> bytes:
        call = {**CALL, "function": {"name": "get", "arguments": arguments}}
        return canonical_chat({"role": "assistant", "content": None, "tool_calls": [call]})

    assert spelled("{oops") != spelled("{oops ")
    assert spelled("{oops") == spelled("{oops")
    assert spelled('{"a": [1, 2]}') == spelled('{"a":[1,2]}') != spelled('{"a":[2,1]}')


def rendered(events: Iterable[Event]) -> list[dict[str, Any]]:
    items: list[Item] = [e for e in events if isinstance(e, (Message, ToolCall, ToolResult))]
    return render_openai_chat(Window(system_prompt=None, tools=None, max_output_tokens=None, items=items))


rich_parts = st.lists(
    st.sampled_from(
        [
            {"type": "text", "text": "a"},
            {"type": "text", "text": ""},
            {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
            {"type": "file", "file": {"file_data": "data:image/gif;base64,R0lG"}},
            {"type": "file", "file": {"file_data": "SGVsbG8=", "filename": "n.txt"}},
            {"type": "file", "file": {"file_id": "file-1", "filename": "a.pdf"}},
        ]
    ),
    max_size=4,
)


@settings(max_examples=300)
@given(messages() | st.builds(lambda parts: {"role": "user", "content": parts}, rich_parts), st.data())
def test_a_parsed_message_rendered_back_has_the_same_key(message: dict[str, Any], data: st.DataObject) -> None:
    spelled = respell(message, data) if isinstance(message["content"], str) else message
    (client,) = parse_chat(body(USER, spelled)).messages[1:]
    out = rendered(client.events)
    if not client.events:  # nothing to render: an empty message
        assert out == []
        return
    (back,) = out
    assert canonical_chat(back) == client.key


def test_a_whole_history_rendered_back_parses_to_the_same_keys() -> None:
    history = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": "https://x"}}],
        },
        {"role": "assistant", "content": "Checking.", "tool_calls": [CALL, {**CALL, "id": "call_2"}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "one"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "two"}]},
        {"role": "system", "content": "Mind the budget."},
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": "thanks"},
    ]
    request = parse_chat(body(*history))
    back = rendered(e for m in request.messages for e in m.events)
    assert [m.key for m in parse_chat(body(*back)).messages] == [m.key for m in request.messages]


RICH = body(
    {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
    {
        "role": "user",
        "content": [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": "https://x"}}],
    },
    {"role": "user", "content": [{"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}}]},
    {"role": "assistant", "content": "Checking.", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "one"}]},
    tools=[{"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}],
    tool_choice={"type": "function", "function": {"name": "get"}},
    temperature=1,
    stream=True,
    stream_options={"include_usage": True},
    max_tokens=9,
)


def paths(value: object, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every place in a JSON value (its own root included)."""
    out: list[tuple[str | int, ...]] = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            out += paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            out += paths(inner, (*prefix, index))
    return out


def replaced(value: Any, path: tuple[str | int, ...], new: object) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: replaced(value[head], rest, new)}
    return [replaced(inner, rest, new) if index == head else inner for index, inner in enumerate(value)]


@settings(max_examples=300)
@given(st.sampled_from(paths(RICH)), json_values)
def test_any_malformed_body_is_refused_with_our_error_or_parsed(path: tuple[str | int, ...], new: object) -> None:
    with contextlib.suppress(InvalidRequestError):  # any other exception fails the test
        parse_chat(replaced(RICH, path, new))
