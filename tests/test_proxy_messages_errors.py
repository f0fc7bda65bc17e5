"""Anthropic Messages requests the proxy refuses: every mistake names its exact path and how to fix it."""

from __future__ import annotations

from typing import Any

import pytest

from contextfold._errors import InvalidRequestError
from contextfold.server.proxy._messages_wire import parse_messages

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


# --- mistakes -----------------------------------------------------------------------------------------------------

TOOL = {"name": "weather", "input_schema": {"type": "object"}}
ERRORS: list[tuple[Any, str | None, str]] = [
    ([1], None, "JSON object"),
    (body(model=_DROP), "model", "missing"),
    (body(model=""), "model", "empty"),
    (body(model=4), "model", "a string"),
    (body(max_tokens=_DROP), "max_tokens", "requires it"),
    (body(max_tokens=0), "max_tokens", "positive"),
    (body(max_tokens="10"), "max_tokens", "a string"),
    (body(max_tokens=True), "max_tokens", "a boolean"),
    (body(max_tokens=10.5), "max_tokens", "a number"),
    (body(messages=_DROP), "messages", "missing"),
    (body(messages={}), "messages", "an object"),
    (body(messages=[]), "messages", "at least one"),
    (third("hi"), "messages[2]", "an object"),
    (third({"role": "system", "content": "x"}), "messages[2].role", "top-level system"),
    (third({"role": "tool", "content": "x"}), "messages[2].role", "user or assistant"),
    (third({"role": "user"}), "messages[2].content", "missing"),
    (third({"role": "user", "content": 5}), "messages[2].content", "a number"),
    (third({"role": "user", "content": ""}), "messages[2].content", "empty"),
    (third({"role": "user", "content": []}), "messages[2].content", "empty"),
    (third({"role": "user", "content": ["x"]}), "messages[2].content[0]", "an object"),
    (third({"role": "user", "content": [{"text": "x"}]}), "messages[2].content[0].type", "missing"),
    (third({"role": "user", "content": [{"type": "audio"}]}), "messages[2].content[0].type", "does not support"),
    (third({"role": "user", "content": [{"type": "tool_use"}]}), "messages[2].content[0].type", "assistant messages"),
    (
        third({"role": "assistant", "content": [{"type": "tool_result"}]}),
        "messages[2].content[0].type",
        "user messages",
    ),
    (third({"role": "assistant", "content": [{"type": "image"}]}), "messages[2].content[0].type", "user messages"),
    (
        third({"role": "assistant", "content": [{"type": "server_tool_use", "id": "s", "name": "web_search"}]}),
        "messages[2].content[0].type",
        "server tools",
    ),
    (
        third({"role": "user", "content": [{"type": "web_search_tool_result"}]}),
        "messages[2].content[0].type",
        "server tools",
    ),
    (third({"role": "user", "content": [{"type": "text"}]}), "messages[2].content[0].text", "missing"),
    (third({"role": "user", "content": [{"type": "text", "text": 1}]}), "messages[2].content[0].text", "a number"),
    (third({"role": "user", "content": [{"type": "image"}]}), "messages[2].content[0].source", "missing"),
    (
        third({"role": "user", "content": [{"type": "image", "source": {"type": "svg"}}]}),
        "messages[2].content[0].source.type",
        "base64, url or file",
    ),
    (
        third(
            {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png"}}]}
        ),
        "messages[2].content[0].source.data",
        "missing",
    ),
    (
        third({"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}),
        "messages[2].content[0].source.media_type",
        "missing",
    ),
    (
        third({"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": ""}}]}),
        "messages[2].content[0].source.url",
        "empty",
    ),
    (
        third({"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}]}),
        "messages[2].content[0].source.type",
        "not supported",
    ),
    (
        third({"role": "user", "content": [{"type": "document", "source": PNG, "title": 3}]}),
        "messages[2].content[0].title",
        "a string or null",
    ),
    (
        third({"role": "user", "content": [{"type": "tool_result", "content": "x"}]}),
        "messages[2].content[0].tool_use_id",
        "missing",
    ),
    (
        third({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}]}),
        "messages[2].content[0].is_error",
        "true or false",
    ),
    (
        third({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": 5}]}),
        "messages[2].content[0].content",
        "text and image",
    ),
    (
        third(
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "document"}]}],
            }
        ),
        "messages[2].content[0].content[0].type",
        "text and image",
    ),
    (
        third({"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}),
        "messages[2].content[0].id",
        "missing",
    ),
    (
        third({"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "", "input": {}}]}),
        "messages[2].content[0].name",
        "empty",
    ),
    (
        third(
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "ok"},
                    {"type": "tool_use", "id": "t", "name": "f", "input": "{}"},
                ],
            }
        ),
        "messages[2].content[1].input",
        "an object",
    ),
    (
        third({"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f"}]}),
        "messages[2].content[0].input",
        "missing",
    ),
    (
        third({"role": "assistant", "content": [{"type": "thinking", "thinking": "x"}]}),
        "messages[2].content[0].signature",
        "missing",
    ),
    (
        third({"role": "assistant", "content": [{"type": "redacted_thinking"}]}),
        "messages[2].content[0].data",
        "missing",
    ),
    (body(system=5), "system", "a string or an array"),
    (body(system=[{"type": "image"}]), "system[0].type", "text blocks"),
    (body(system=[{"type": "text"}]), "system[0].text", "missing"),
    (body(tools={}), "tools", "an array"),
    (body(tools=[5]), "tools[0]", "an object"),
    (body(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools[0].type", "server tool"),
    (body(tools=[{"input_schema": {}}]), "tools[0].name", "missing"),
    (body(tools=[TOOL, TOOL]), "tools[1].name", "unique"),
    (body(tools=[{"name": "f"}]), "tools[0].input_schema", "missing"),
    (body(tools=[{"name": "f", "input_schema": "object"}]), "tools[0].input_schema", "JSON schema"),
    (body(tools=[{**TOOL, "description": 5}]), "tools[0].description", "a string or null"),
    (body(tool_choice="auto"), "tool_choice", "an object"),
    (body(tool_choice={"type": "function"}), "tool_choice.type", "auto, any, tool or none"),
    (body(tools=[TOOL], tool_choice={"type": "tool"}), "tool_choice.name", "missing"),
    (body(tools=[TOOL], tool_choice={"type": "tool", "name": "time"}), "tool_choice.name", "not one of"),
    (
        body(tool_choice={"type": "auto", "disable_parallel_tool_use": "yes"}),
        "tool_choice.disable_parallel_tool_use",
        "true or false",
    ),
    (body(temperature=1.5), "temperature", "between 0 and 1"),
    (body(temperature="hot"), "temperature", "a string"),
    (body(temperature=True), "temperature", "a boolean"),
    (body(top_p=-0.1), "top_p", "between 0 and 1"),
    (body(top_p=float("nan")), "top_p", "between 0 and 1"),
    (body(stream="yes"), "stream", "true or false"),
]


@pytest.mark.parametrize(("request_body", "param", "fragment"), ERRORS)
def test_mistakes_name_their_path(request_body: Any, param: str | None, fragment: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_messages(request_body)
    assert caught.value.param == param
    message = str(caught.value)
    assert fragment in message
    if param is not None:
        assert param in message
