"""OpenAI items -> events: every bad input is refused with our error, naming the exact field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.conversations import ConversationItem
from openai.types.responses import ResponseOutputItem
from pydantic import TypeAdapter

from contextfold import InvalidRequestError, PayloadTooLargeError
from contextfold.events import (
    Message,
    Reasoning,
    ToolCall,
    ToolResult,
)
from contextfold.server.responses._items import (
    ApprovalInput,
    CompactionInput,
    InputEntry,
    ItemReference,
    parse_input,
)

RESPONSE_ITEM: TypeAdapter[Any] = TypeAdapter(ResponseOutputItem)
CONVERSATION_ITEM: TypeAdapter[Any] = TypeAdapter(ConversationItem)


# --- errors ---------------------------------------------------------------------------------------------------

USER = {"role": "user", "content": "ok"}
CALL = {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"}
MCP = {"type": "mcp_call", "id": "ev_1", "server_label": "contextfold", "name": "recall", "arguments": "{}"}


def _with(base: Mapping[str, object], **fields: object) -> list[object]:
    return [{**base, **fields}]


def _part(part: object) -> list[object]:
    return [{"role": "user", "content": [part]}]


BAD: list[tuple[object, str, str]] = [
    (42, "input", "must be a string or a list of items, not a number"),
    ({"role": "user"}, "input", "not an object"),
    ("", "input", "empty string"),
    ([1], "input[0]", "must be an object, not a number"),
    ([{}], "input[0].type", "missing"),
    ([{"type": 3}], "input[0].type", "must be a string"),
    ([{"type": "web_search_call"}], "input[0].type", "'web_search_call' is not supported; expected one of message"),
    (
        [USER, USER, USER, {"role": "user", "content": [{"type": "input_audio"}]}],
        "input[3].content[0].type",
        "'input_audio'",
    ),
    (_with(USER, role="tool"), "input[0].role", "'tool'; expected one of user, assistant, system or developer"),
    (_with(USER, role=None, type="message"), "input[0].role", "missing"),
    (_with(USER, content=None), "input[0].content", "is missing; it must be a string or an array"),
    (_with(USER, content=7), "input[0].content", "not a number"),
    (_with(USER, content=[]), "input[0].content", "empty array"),
    (_with(USER, content=""), "input[0].content", "is empty"),
    (_part("text"), "input[0].content[0]", "must be an object, not a string"),
    (_part({"text": "x"}), "input[0].content[0].type", "missing"),
    (_part({"type": "input_text"}), "input[0].content[0].text", "missing"),
    (_part({"type": "input_text", "text": 5}), "input[0].content[0].text", "must be a string, not a number"),
    (_part({"type": "refusal"}), "input[0].content[0].refusal", "missing"),
    (
        _part({"type": "input_image", "detail": "auto"}),
        "input[0].content[0].image_url",
        "needs an image_url or a file_id",
    ),
    (_part({"type": "input_image", "image_url": "ftp://x"}), "input[0].content[0].image_url", "http(s) URL"),
    (_part({"type": "input_image", "image_url": 3}), "input[0].content[0].image_url", "string or null"),
    (_part({"type": "input_image", "image_url": "https://x", "detail": "max"}), "input[0].content[0].detail", "'max'"),
    (_part({"type": "input_file", "file_url": "https://x"}), "input[0].content[0].file_url", "not supported"),
    (_part({"type": "input_file"}), "input[0].content[0].file_data", "needs a file_id or file_data"),
    (_with(CALL, call_id=None), "input[0].call_id", "missing"),
    (_with(CALL, name=""), "input[0].name", "empty"),
    (_with(CALL, arguments={}), "input[0].arguments", "must be a string, not an object"),
    ([{"type": "function_call_output", "output": "x"}], "input[0].call_id", "missing"),
    ([{"type": "function_call_output", "call_id": "a"}], "input[0].output", "is missing"),
    (
        [
            {
                "type": "function_call_output",
                "call_id": "a",
                "output": [{"type": "input_image", "image_url": "https://x"}],
            }
        ],
        "input[0].output[0].type",
        "may only hold text",
    ),
    ([{"type": "reasoning", "summary": "x"}], "input[0].summary", "must be an array"),
    ([{"type": "reasoning", "summary": [{"type": "text", "text": "x"}]}], "input[0].summary[0].type", "summary_text"),
    ([{"type": "reasoning", "summary": [], "encrypted_content": 1}], "input[0].encrypted_content", "string or null"),
    (
        [{"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text"}]}],
        "input[0].content[0].text",
        "missing",
    ),
    ([{"type": "compaction"}], "input[0].encrypted_content", "missing"),
    ([{"type": "item_reference", "id": ""}], "input[0].id", "empty"),
    ([{"type": "item_reference"}], "input[0].id", "missing"),
    (_with(MCP, server_label=None), "input[0].server_label", "is missing"),
    (_with(MCP, server_label=""), "input[0].server_label", "empty"),
    ([{"type": "file_search_call", "id": "fs_1", "queries": "q"}], "input[0].queries", "must be an array"),
    ([{"type": "file_search_call", "id": "fs_1", "queries": [1]}], "input[0].queries[0]", "must be a string"),
    ([{"type": "file_search_call", "id": "fs_1", "queries": [], "results": [1]}], "input[0].results[0]", "object"),
    ([{"type": "mcp_list_tools", "server_label": "kb", "tools": None}], "input[0].tools", "missing"),
    (
        [{"type": "mcp_approval_response", "approval_request_id": "ev_1", "approve": "yes"}],
        "input[0].approve",
        "must be a boolean",
    ),
    ([{"type": "mcp_approval_response", "approve": True}], "input[0].approval_request_id", "missing"),
    (_with(MCP), "input[0].output", "is missing and so is its error"),
    (_with(MCP, error="boom"), "input[0].error", "must be an object"),
    (_with(MCP, output=1), "input[0].output", "string or null"),
]


@pytest.mark.parametrize(("value", "param", "words"), BAD)
def test_bad_input_names_the_exact_field(value: object, param: str, words: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_input(value)
    assert caught.value.param == param
    assert words in str(caught.value)
    assert str(caught.value).startswith(param)


def test_the_param_prefix_is_the_caller_s() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_input([{"type": "nope"}], param="items")
    assert caught.value.param == "items[0].type"


def test_too_many_items() -> None:
    with pytest.raises(PayloadTooLargeError) as caught:
        parse_input([USER] * 3, max_items=2, param="items")
    assert caught.value.param == "items"
    assert "at most 2" in str(caught.value)
    assert len(parse_input([USER] * 2, max_items=2)) == 2


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
# fmt: off
ITEM_TYPES = ["message", "function_call", "function_call_output", "reasoning", "compaction", "item_reference",
              "mcp_call", "file_search_call", "mcp_list_tools", "mcp_approval_request", "mcp_approval_response",
              "web_search_call"]
ITEM_KEYS = ["role", "content", "id", "call_id", "name", "arguments", "output", "summary", "error", "server_label",
             "encrypted_content", "queries", "results", "status", "tools", "approve", "approval_request_id"]
PART_TYPES = ["input_text", "output_text", "text", "refusal", "input_image", "input_file", "summary_text",
              "reasoning_text", "mcp_tool_execution_error", "http_error", "input_audio"]
PART_KEYS = ["text", "refusal", "image_url", "file_id", "file_data", "file_url", "detail", "filename", "message",
             "content"]
WORDS = ["user", "assistant", "developer", "tool", "contextfold", "github", "auto", "original", "https://x",
         "ftp://x", "data:image/png;base64,AA", "a.pdf", ""]
# fmt: on


def _shaped(types: list[str], keys: list[str], values: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Objects that look like items or parts: a known (or no) type, and some of the fields such things have."""
    kinds = st.sampled_from(types) | st.sampled_from([*types, None, 3])
    return st.fixed_dictionaries({"type": kinds}, optional=dict.fromkeys(keys, values))


leaf = st.sampled_from(WORDS) | st.text(max_size=5) | json_values
parts_like = _shaped(PART_TYPES, PART_KEYS, leaf)
items_like = _shaped(ITEM_TYPES, ITEM_KEYS, leaf | st.lists(parts_like, max_size=3) | parts_like)
part_lists = st.lists(parts_like, max_size=3)
# Valid envelopes around generated parts, so that the parsers of parts are reached too.
enveloped = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": part_lists}),
    st.fixed_dictionaries({"type": st.just("function_call_output"), "call_id": st.just("c"), "output": part_lists}),
    st.fixed_dictionaries({"type": st.just("reasoning"), "summary": part_lists, "content": part_lists | st.none()}),
    st.fixed_dictionaries({**{k: st.just(v) for k, v in MCP.items()}, "error": parts_like, "output": leaf}),
)


@settings(max_examples=300, deadline=None)
@given(json_values | st.lists(items_like | enveloped, max_size=3))
def test_any_json_either_parses_or_is_refused_with_our_errors(value: object) -> None:
    refused: InvalidRequestError | PayloadTooLargeError | None = None
    entries: list[InputEntry] = []
    try:
        entries = parse_input(value, max_items=3)
    except (InvalidRequestError, PayloadTooLargeError) as error:
        refused = error
    if refused is not None:
        assert refused.param is not None
        assert refused.param.startswith("input")
    kinds = (Message, ToolCall, ToolResult, Reasoning, CompactionInput, ItemReference, ApprovalInput)
    assert all(isinstance(e, kinds) for e in entries)
