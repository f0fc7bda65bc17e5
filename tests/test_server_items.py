"""OpenAI items <-> events: output items the SDK's own models accept, input parsing, round trips, exact errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.conversations import ConversationItem
from openai.types.responses import ResponseOutputItem
from pydantic import TypeAdapter, ValidationError

from contextfold.events import (
    AnyEvent,
    Compaction,
    ConfigChange,
    Deletion,
    FilePart,
    ImagePart,
    Message,
    Pin,
    Reasoning,
    Role,
    TextPart,
    ToolCall,
    ToolResult,
    TurnMarker,
    Usage,
    assistant,
    user,
)
from contextfold.server.responses._items import (
    ApprovalInput,
    CompactionInput,
    InputEntry,
    ItemReference,
    conversation_item,
    output_items,
    parse_input,
)

RESPONSE_ITEM: TypeAdapter[Any] = TypeAdapter(ResponseOutputItem)
CONVERSATION_ITEM: TypeAdapter[Any] = TypeAdapter(ConversationItem)


def _call(call_id: str, name: str = "lookup", batch: str = "batch_1", arguments: str = '{"q": 1}') -> ToolCall:
    return ToolCall(call_id=call_id, name=name, arguments=arguments, batch_id=batch)


def _item(event: AnyEvent, **options: Any) -> dict[str, Any]:
    """The event's item, which must exist."""
    item = conversation_item(event, **options)
    assert item is not None
    return item


def _every_kind() -> list[AnyEvent]:
    return [
        TurnMarker(status="started"),
        ConfigChange(system_prompt="be brief"),
        Message(role="system", content=[TextPart("rules")]),
        Message(role="developer", content=[TextPart("dev")]),
        Message(
            role="user",
            content=[
                TextPart("look"),
                ImagePart("https://example.com/a.png", detail="low"),
                FilePart(media_type="image/png", file_id="file-img"),
                FilePart(media_type="application/pdf", data="JVBERi0=", filename="a.pdf"),
                FilePart(media_type="text/plain", file_id="file-txt"),
            ],
        ),
        Reasoning(provider="openai", data={"id": "rs_1", "encrypted_content": "gAAA"}, text="thinking"),
        Reasoning(provider="anthropic", data={"signature": "sig"}, text=None),
        assistant("hello"),
        _call("c1"),
        _call("c2", name="recall", arguments='{"query": "x"}'),
        _call("c3", name="expand", arguments='{"id": "ev_1"}'),
        ToolResult(call_id="c2", output="found"),
        ToolResult(call_id="c3", output="no such event", is_error=True),
        Usage(model="m", input_tokens=1, output_tokens=1),
        ToolResult(call_id="c1", output="42"),
        Pin(target=3),
        Deletion(targets=[2]),
        Compaction(strategy="summary", trigger="auto", kept=[], summary="the story so far"),
        Compaction(strategy="mask", trigger="auto", kept=[], masked=[4, 5]),
        TurnMarker(status="completed"),
    ]


# --- output ---------------------------------------------------------------------------------------------------


def test_every_output_item_validates_with_the_sdk_models() -> None:
    items = output_items(_every_kind())
    assert [i["type"] for i in items] == [
        "message",
        "message",
        "message",
        "reasoning",
        "reasoning",
        "message",
        "function_call",
        "mcp_call",
        "mcp_call",
        "function_call_output",
        "compaction",
        "compaction",
    ]
    for item in items:
        CONVERSATION_ITEM.validate_python(item)
        if item["type"] == "message" and item["role"] != "assistant":
            # Responses output holds only assistant messages; the other roles are conversation items only.
            with pytest.raises(ValidationError):
                RESPONSE_ITEM.validate_python(item)
        else:
            RESPONSE_ITEM.validate_python(item)


def test_output_items_carry_event_ids_and_content() -> None:
    events = _every_kind()
    items = output_items(events)
    user_message = items[2]
    assert user_message["id"] == events[4].id
    assert user_message["content"] == [
        {"type": "input_text", "text": "look"},
        {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"},
        {"type": "input_image", "file_id": "file-img", "detail": "auto"},
        {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
        {"type": "input_file", "file_id": "file-txt"},
    ]
    assert items[5]["content"] == [{"type": "output_text", "text": "hello", "annotations": []}]
    assert items[3] == {
        "type": "reasoning",
        "id": events[5].id,
        "summary": [{"type": "summary_text", "text": "thinking"}],
        "encrypted_content": "gAAA",
    }
    assert items[4]["summary"] == []
    assert "encrypted_content" not in items[4]


def test_builtin_call_and_result_become_one_mcp_call() -> None:
    events = _every_kind()
    recall, expand = output_items(events)[7:9]
    assert recall == {
        "type": "mcp_call",
        "id": events[9].id,
        "server_label": "contextfold",
        "name": "recall",
        "arguments": '{"query": "x"}',
        "output": "found",
        "status": "completed",
    }
    assert expand["output"] == "no such event"
    assert expand["error"] == {
        "type": "mcp_tool_execution_error",
        "content": [{"type": "text", "text": "no such event"}],
    }


def test_builtin_call_without_its_result_is_still_calling() -> None:
    call = _call("c9", name="expand")
    (item,) = output_items([call])
    assert item["status"] == "calling"
    assert item["output"] is None
    RESPONSE_ITEM.validate_python(item)
    assert conversation_item(call) == item


def test_conversation_item_takes_the_builtin_result() -> None:
    call, result = _call("c1", name="recall"), ToolResult(call_id="c1", output="hit")
    item = conversation_item(call, result=result)
    assert item is not None
    assert (item["type"], item["output"], item["status"]) == ("mcp_call", "hit", "completed")
    assert _item(call, result=result, builtin_tools=())["type"] == "function_call"
    assert conversation_item(Usage(model="m", input_tokens=1, output_tokens=1)) is None


def test_reused_call_ids_pair_each_builtin_call_with_the_result_after_it() -> None:
    events: list[AnyEvent] = [
        _call("call_0", name="recall", batch="b1"),
        ToolResult(call_id="call_0", output="first"),
        _call("call_0", name="recall", batch="b2"),
        ToolResult(call_id="call_0", output="second"),
    ]
    assert [(i["type"], i["output"]) for i in output_items(events)] == [("mcp_call", "first"), ("mcp_call", "second")]


def test_redacted_and_non_item_events_give_nothing() -> None:
    events: list[AnyEvent] = [
        Message(role="user", content=[], redacted=True),
        ToolCall(call_id="c", name="f", arguments="{}", batch_id="b", redacted=True),
        ToolResult(call_id="c", output="", redacted=True),
        Reasoning(provider="openai", redacted=True),
        Compaction(strategy="summary", trigger="auto", kept=[], redacted=True),
        TurnMarker(status="failed"),
        Pin(target=1),
    ]
    assert output_items(events) == []


def test_compaction_items_are_readable() -> None:
    summary = Compaction(strategy="fallback", trigger="manual", kept=[], summary="digest")
    mask = Compaction(strategy="mask", trigger="auto", kept=[], masked=[7])
    clear = Compaction(strategy="clear", trigger="manual", kept=[])
    texts = [_item(c)["encrypted_content"] for c in (summary, mask, clear)]
    assert texts[0] == "digest"
    assert texts[1] == f"[contextfold mask compaction: 1 tool output masked; recall or expand {mask.id} to read them]"
    assert "cleared" in texts[2]
    assert clear.id in texts[2]
    assert _item(mask)["created_by"] == "contextfold"


# --- round trip -----------------------------------------------------------------------------------------------

texts = st.text(max_size=20)
ROLES: list[Role] = ["system", "developer", "user", "assistant"]


@st.composite
def logs(draw: st.DrawFn) -> list[AnyEvent]:
    """Messages of every role, reasoning, and tool batches (client and built-in calls mixed) with their results
    appended as the runtime does: the built-in results first, then the client's, each in call order."""
    out: list[AnyEvent] = []
    for index in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["message", "reasoning", "batch"]))
        if kind == "message":
            role = draw(st.sampled_from(ROLES))
            content: list[TextPart | ImagePart | FilePart] = draw(st.lists(st.builds(TextPart, texts), min_size=1))
            out.append(Message(role=role, content=content))
        elif kind == "reasoning":
            out.append(Reasoning(provider="openai", text=draw(st.none() | st.text(min_size=1, max_size=20))))
        else:
            builtin = draw(st.lists(st.booleans(), min_size=1, max_size=4))
            calls = [
                ToolCall(
                    call_id=f"call_{index}_{n}",
                    name=draw(st.sampled_from(["recall", "expand"])) if is_builtin else draw(st.sampled_from("fg")),
                    arguments=draw(texts),
                    batch_id=f"batch_{index}",
                )
                for n, is_builtin in enumerate(builtin)
            ]
            out += calls
            server = [c for c, b in zip(calls, builtin, strict=True) if b]
            client = [c for c, b in zip(calls, builtin, strict=True) if not b]
            # The wire has no error flag for a client's function output: only built-in errors survive.
            out += [ToolResult(call_id=c.call_id, output=draw(texts), is_error=draw(st.booleans())) for c in server]
            out += [ToolResult(call_id=c.call_id, output=draw(texts)) for c in client]
    return out


def _content(entries: list[InputEntry] | list[AnyEvent], renamed: dict[str, str]) -> list[object]:
    """What must survive a round trip; each run of tool events as (calls in order, results in order), since
    consecutive built-in calls come back as one batch."""
    out: list[object] = []
    run: tuple[list[object], list[object]] | None = None
    for entry in entries:
        if isinstance(entry, (ToolCall, ToolResult)):
            if run is None:
                run = ([], [])
                out.append(run)
            call_id = renamed.get(entry.call_id, entry.call_id)
            if isinstance(entry, ToolCall):
                run[0].append((call_id, entry.name, entry.arguments))
            else:
                run[1].append((call_id, entry.output, entry.is_error))
            continue
        run = None
        if isinstance(entry, Message):
            out.append((entry.role, [p.text for p in entry.content if isinstance(p, TextPart)]))
        elif isinstance(entry, Reasoning):
            out.append(("reasoning", entry.text))
        else:
            out.append(entry)
    return out


@settings(max_examples=300, deadline=None)
@given(logs())
def test_events_round_trip_through_items(events: list[AnyEvent]) -> None:
    items = output_items(events)
    parsed = parse_input(items)
    # A built-in call goes out as an mcp_call whose id is its event id, which comes back as its call id.
    renamed = {e.call_id: e.id for e in events if isinstance(e, ToolCall) and e.name in ("recall", "expand")}
    assert _content(parsed, {}) == _content(events, renamed)
    given = {e.batch_id for e in events if isinstance(e, ToolCall)}
    assert not any(isinstance(e, ToolCall) and e.batch_id in given for e in parsed)  # batch ids are new


# --- input forms ----------------------------------------------------------------------------------------------


def test_a_string_is_one_user_message() -> None:
    (message,) = parse_input("hi")
    assert isinstance(message, Message)
    assert (message.role, message.content) == ("user", [TextPart("hi")])
    assert message.turn_id is None
    assert message.seq == 0


def test_easy_and_typed_messages() -> None:
    entries = parse_input(
        [
            {"role": "developer", "content": "be brief"},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "a"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAA", "detail": "original"},
                    {"type": "input_image", "file_id": "file-1", "detail": "auto"},
                    {"type": "input_file", "file_data": "data:application/pdf;base64,JVB", "filename": "x.pdf"},
                    {"type": "input_file", "file_id": "file-2", "filename": "notes.txt"},
                    {"type": "input_file", "file_data": "UEsDBA=="},
                ],
            },
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "b", "annotations": []},
                    {"type": "refusal", "refusal": "no"},
                ],
            },
        ]
    )
    messages = [e for e in entries if isinstance(e, Message)]
    assert len(messages) == len(entries)
    assert [(m.role, m.content) for m in messages] == [
        ("developer", [TextPart("be brief")]),
        (
            "user",
            [
                TextPart("a"),
                ImagePart("data:image/png;base64,AAA", detail="high"),
                FilePart(media_type="image/*", file_id="file-1"),
                FilePart(media_type="application/pdf", data="JVB", filename="x.pdf"),
                FilePart(media_type="text/plain", file_id="file-2", filename="notes.txt"),
                FilePart(media_type="application/octet-stream", data="UEsDBA=="),
            ],
        ),
        ("assistant", [TextPart("b"), TextPart("no")]),
    ]


def test_consecutive_calls_share_a_batch_and_separate_runs_do_not() -> None:
    entries = parse_input(
        [
            {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}", "id": "fc_1"},
            {"type": "function_call", "call_id": "b", "name": "g", "arguments": ""},
            {"type": "function_call_output", "call_id": "a", "output": "1"},
            {
                "type": "function_call_output",
                "call_id": "b",
                "output": [{"type": "input_text", "text": "x"}, {"type": "input_text", "text": "y"}],
            },
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        ]
    )
    a, b, ra, rb, c = entries
    assert isinstance(a, ToolCall)
    assert isinstance(b, ToolCall)
    assert isinstance(c, ToolCall)
    assert a.batch_id == b.batch_id != c.batch_id
    assert a.batch_id.startswith("batch_")
    assert isinstance(ra, ToolResult)
    assert (ra.call_id, ra.output, ra.is_error) == ("a", "1", False)
    assert isinstance(rb, ToolResult)
    assert rb.output == "x\ny"


def test_mcp_calls_join_the_run_and_their_results_follow_its_calls() -> None:
    entries = parse_input(
        [
            {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
            {
                "type": "mcp_call",
                "id": "ev_1",
                "server_label": "contextfold",
                "name": "recall",
                "arguments": "{}",
                "output": "hit",
            },
            {
                "type": "mcp_call",
                "id": "ev_2",
                "server_label": "contextfold",
                "name": "expand",
                "arguments": "{}",
                "error": {"type": "mcp_protocol_error", "code": 1, "message": "bad id"},
            },
            {"type": "function_call_output", "call_id": "a", "output": "done"},
        ]
    )
    assert [type(e).__name__ for e in entries] == [
        "ToolCall",
        "ToolCall",
        "ToolCall",
        "ToolResult",
        "ToolResult",
        "ToolResult",
    ]
    calls = [e for e in entries if isinstance(e, ToolCall)]
    assert len({c.batch_id for c in calls}) == 1
    assert [(c.call_id, c.name) for c in calls] == [("a", "f"), ("ev_1", "recall"), ("ev_2", "expand")]
    results = [(e.call_id, e.output, e.is_error) for e in entries if isinstance(e, ToolResult)]
    assert results == [("ev_1", "hit", False), ("ev_2", "bad id", True), ("a", "done", False)]


@pytest.mark.parametrize(
    ("error", "text"),
    [
        ({"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": "boom"}]}, "boom"),
        ({"type": "mcp_tool_execution_error", "content": "plain"}, "plain"),
        ({"type": "mcp_tool_execution_error", "content": {"code": 3}}, '{"code": 3}'),
        ({"type": "http_error", "code": 500, "message": "down"}, "down"),
        ({"type": "other"}, "the tool call failed"),
    ],
)
def test_mcp_call_errors_become_error_results(error: dict[str, object], text: str) -> None:
    item = {"type": "mcp_call", "id": "ev_1", "server_label": "contextfold", "name": "recall", "arguments": "{}"}
    _, result = parse_input([{**item, "error": error}])
    assert isinstance(result, ToolResult)
    assert (result.output, result.is_error) == (text, True)


def test_reasoning_compaction_and_references() -> None:
    entries = parse_input(
        [
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "a"}, {"type": "summary_text", "text": "b"}],
                "encrypted_content": "gAAA",
            },
            {"type": "reasoning", "summary": []},
            {"type": "compaction", "id": "ev_c", "encrypted_content": "the story"},
            {"type": "compaction", "encrypted_content": "opaque"},
            {"type": "item_reference", "id": "ev_1"},
            {"id": "ev_2"},
            {"type": None, "id": "ev_3"},
        ]
    )
    first, second, *rest = entries
    assert isinstance(first, Reasoning)
    assert (first.provider, first.text) == ("openai", "a\n\nb")
    assert first.data["id"] == "rs_1"
    assert first.data["encrypted_content"] == "gAAA"
    assert isinstance(second, Reasoning)
    assert (second.text, "id" in second.data) == (None, False)
    assert rest == [
        CompactionInput("ev_c", "the story"),
        CompactionInput(None, "opaque"),
        ItemReference("ev_1"),
        ItemReference("ev_2"),
        ItemReference("ev_3"),
    ]


def test_reasoning_given_back_keeps_its_summary_parts() -> None:
    (reasoning,) = parse_input(
        [{"type": "reasoning", "id": "rs", "summary": [{"type": "summary_text", "text": "x"}] * 2}]
    )
    assert isinstance(reasoning, Reasoning)
    (item,) = output_items([reasoning])
    assert item["summary"] == [{"type": "summary_text", "text": "x"}] * 2


def test_user_helper_round_trips() -> None:
    (item,) = output_items([user("hi")])
    (back,) = parse_input([item])
    assert isinstance(back, Message)
    assert (back.role, back.content) == ("user", [TextPart("hi")])


def test_parts_round_trip_as_far_as_the_wire_carries_them() -> None:
    parts: list[TextPart | ImagePart | FilePart] = [
        ImagePart("https://example.com/a.png", detail="low"),
        FilePart(media_type="application/pdf", data="JVBERi0=", filename="a.pdf"),
        FilePart(media_type="image/png", file_id="file-img"),
        FilePart(media_type="text/plain", file_id="file-txt"),
    ]
    (item,) = output_items([Message(role="user", content=parts)])
    (back,) = parse_input([item])
    assert isinstance(back, Message)
    # An image or file sent by id loses its exact media type: the wire names only the id.
    assert back.content == [
        *parts[:2],
        FilePart(media_type="image/*", file_id="file-img"),
        FilePart(media_type="application/octet-stream", file_id="file-txt"),
    ]


# --- the items of hosted tools ----------------------------------------------------------------------------------

search_results = st.lists(
    st.fixed_dictionaries(
        {
            "file_id": texts,
            "filename": texts,
            "score": st.floats(0, 1),
            "text": texts,
            "attributes": st.dictionaries(texts, texts | st.integers(), max_size=2),
        }
    ),
    max_size=3,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(texts, max_size=3), search_results, texts, texts, st.booleans())
def test_hosted_calls_round_trip_through_items(
    queries: list[str], results: list[dict[str, Any]], arguments: str, output: str, failed: bool
) -> None:
    """A file_search and a remote MCP call as the runtime logs them come back, from their items, as the same
    calls and results: so the model reads the same whether the server or the client kept the history."""
    search = ToolCall(
        call_id="call_1",
        name="file_search",
        arguments=json.dumps({"queries": queries}, ensure_ascii=False),
        batch_id="batch_1",
    )
    mcp = ToolCall(call_id="call_2", name="mcp__kb__lookup", arguments=arguments, batch_id=search.batch_id)
    written = [{key: r[key] for key in ("file_id", "filename", "score", "text", "attributes")} for r in results]
    found = json.dumps({"queries": queries, "results": written}, ensure_ascii=False)  # as the tool writes it
    events: list[AnyEvent] = [
        search,
        mcp,
        ToolResult(call_id="call_1", output=found),
        ToolResult(call_id="call_2", output=output, is_error=failed),
    ]
    items = output_items(events)
    assert [i["type"] for i in items] == ["file_search_call", "mcp_call"]
    for item in items:
        RESPONSE_ITEM.validate_python(item)
    renamed = {search.call_id: search.id, mcp.call_id: mcp.id}  # hosted items are named by their event ids
    assert _content(parse_input(items, answered=True), {}) == _content(events, renamed)


def test_a_file_search_call_without_its_results_says_so() -> None:
    item = {"type": "file_search_call", "id": "fs_1", "queries": ["launch code"], "status": "completed"}
    call, result = parse_input([item])
    assert isinstance(call, ToolCall)
    assert isinstance(result, ToolResult)
    assert (call.call_id, call.name, json.loads(call.arguments)) == (
        "fs_1",
        "file_search",
        {"queries": ["launch code"]},
    )
    assert "not included" in result.output
    assert '["launch code"]' in result.output
    assert not result.is_error
    failed = parse_input([{**item, "status": "failed"}])[1]
    assert isinstance(failed, ToolResult)
    assert failed.is_error


def test_mcp_listings_and_approvals_as_input() -> None:
    listing = {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "kb", "tools": [{"name": "add"}]}
    asked = {"type": "mcp_approval_request", "id": "ev_9", "server_label": "kb", "name": "add", "arguments": "{}"}
    answer = {"type": "mcp_approval_response", "approval_request_id": "ev_9", "approve": False, "reason": "no"}
    # a listing is nothing the model reads; a request is the call, waiting (even in an answered Responses input)
    (call,) = parse_input([listing, asked], answered=True)
    assert isinstance(call, ToolCall)
    assert (call.call_id, call.name) == ("ev_9", "mcp__kb__add")
    assert output_items([call]) == [{**asked, "id": call.id}]
    *_, approval = parse_input([asked, answer])
    assert approval == ApprovalInput(request_id="ev_9", approve=False, reason="no", path="input[1]")
