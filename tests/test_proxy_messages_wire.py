"""The Anthropic answer side of the proxy: runtime events in, Messages stream events and bodies out.

Every event is validated by the anthropic SDK's own types (no unknown fields anywhere), the sequence is checked
against Anthropic's block grammar, the SDK's real stream accumulator (`AsyncAnthropic.messages.stream`, over an
in-memory transport) assembles the same message as the non-streamed body, and the answer's key is the key of the
message as the client echoes it back. Runtime events are built directly: no server, no model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx2
import pydantic
import pytest
from anthropic import Anthropic, APIStatusError, AsyncAnthropic
from anthropic.types import ErrorResponse, Message, RawMessageStreamEvent, TextBlock, ToolUseBlock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from contextfold._errors import (
    InvalidRequestError,
    ModelUnavailableError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    StoreError,
)
from contextfold.compaction import CompactionResult
from contextfold.events import TokenUsage
from contextfold.models import ToolCallRequest
from contextfold.runtime import (
    Delta,
    InferenceResult,
    StepCompleted,
    StepProgress,
    StepStarted,
    TextDelta,
    ToolCallCompletedDelta,
    ToolCallDelta,
    ToolCallIssuedDelta,
    ToolCallStartedDelta,
    ToolExecutionResult,
    ToolOutcome,
    TurnCompleted,
    TurnError,
    TurnEvent,
    TurnFailed,
    TurnStarted,
)
from contextfold.server.edge._errors import ApiError, api_error
from contextfold.server.proxy._messages_wire import (
    MessagesAnswer,
    anthropic_error,
    canonical_anthropic,
    parse_messages,
    sse,
)

TURN = "turn_1"
HIDDEN = frozenset({"recall", "expand"})
STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
Event = dict[str, Any]


# --- runtime events -----------------------------------------------------------------------------------------------


def inference(step: str, *deltas: Delta, usage: tuple[int, int] = (10, 5)) -> list[TurnEvent]:
    """An inference step streaming `deltas`; each call is issued (complete) after everything was streamed."""
    calls = [d for d in deltas if isinstance(d, ToolCallStartedDelta)]
    arguments = {
        c.call_id: "".join(d.arguments_delta for d in deltas if isinstance(d, ToolCallDelta) and d.call_id == c.call_id)
        for c in calls
    }
    requests = [ToolCallRequest(c.call_id, c.tool_name, arguments[c.call_id] or "{}") for c in calls]
    issued = [ToolCallIssuedDelta(r.call_id, r.name, r.arguments) for r in requests]
    text = "".join(d.text for d in deltas if isinstance(d, TextDelta))
    result = InferenceResult(text, requests, "tool_calls" if calls else "stop", TokenUsage(*usage), "upstream-model")
    return [
        StepStarted(step, "inference", TURN),
        *[StepProgress(step, delta) for delta in [*deltas, *issued]],
        StepCompleted(step, "inference", result),
    ]


def call(call_id: str, name: str, *pieces: str) -> list[Delta]:
    return [ToolCallStartedDelta(call_id, name), *[ToolCallDelta(call_id, piece) for piece in pieces]]


def server_tools(step: str, *outcomes: tuple[str, str, str]) -> list[TurnEvent]:
    """A tool execution step of built-in tools: (call id, name, output) each."""
    done = [ToolCallCompletedDelta(call_id, name, output) for call_id, name, output in outcomes]
    result = ToolExecutionResult([], [ToolOutcome(c, n, o) for c, n, o in outcomes])
    return [
        StepStarted(step, "tool_execution", TURN, {"server_side": True}),
        *[StepProgress(step, delta) for delta in done],
        StepCompleted(step, "tool_execution", result),
    ]


def compaction(step: str) -> list[TurnEvent]:
    result = CompactionResult(True, "auto", 40, 8, 10, 2, 9000, 3000, strategy="summary")
    return [StepStarted(step, "compaction", TURN, {"compaction_id": "ev_c"}), StepCompleted(step, "compaction", result)]


def completed(*awaiting: ToolCallRequest, incomplete: str | None = None) -> TurnCompleted:
    return TurnCompleted(TURN, "", 1, TokenUsage(), incomplete, list(awaiting))


def drive(events: Sequence[TurnEvent], hidden: frozenset[str] = HIDDEN) -> tuple[MessagesAnswer, list[Event]]:
    """Run the events through a mapper as the proxy does: start, map every event, finish with the outcome."""
    mapper = MessagesAnswer("msg_1", "claude-sonnet-4-6", hidden)
    out = mapper.start()
    outcome: TurnEvent | None = None
    for event in [TurnStarted(TURN, "conv"), *events]:
        if isinstance(event, (TurnCompleted, TurnFailed)):
            outcome = event
        out.extend(mapper.map(event))
    out.extend(mapper.finish(outcome))
    return mapper, out


# --- checks -------------------------------------------------------------------------------------------------------


def _no_extra_fields(model: object, path: str = "") -> None:
    """Everything we send is a field the SDK knows (its models accept unknown fields silently)."""
    if isinstance(model, pydantic.BaseModel):
        assert not model.model_extra, f"{path}: unknown fields {model.model_extra}"
        for name in type(model).model_fields:
            _no_extra_fields(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, list):
        for index, item in enumerate(model):
            _no_extra_fields(item, f"{path}[{index}]")


def check_stream(events: list[Event]) -> None:
    """Each event is a valid SDK stream event, in Anthropic's grammar: message_start; blocks numbered from 0, one
    open at a time, deltas only for the open block and of its kind; then message_delta and message_stop (or an
    error, which ends the stream)."""
    assert events[0]["type"] == "message_start"
    open_block: tuple[int, str] | None = None
    count = 0
    for position, event in enumerate(events):
        if event["type"] == "error":
            _no_extra_fields(ErrorResponse.model_validate(event))
            assert position == len(events) - 1
            return
        _no_extra_fields(STREAM_EVENT.validate_python(event))
        kind = event["type"]
        if kind == "content_block_start":
            assert open_block is None
            assert event["index"] == count
            open_block = (count, event["content_block"]["type"])
            count += 1
        elif kind == "content_block_delta":
            assert open_block is not None
            assert event["index"] == open_block[0]
            expected = {"text": "text_delta", "tool_use": "input_json_delta"}[open_block[1]]
            assert event["delta"]["type"] == expected
        elif kind == "content_block_stop":
            assert open_block is not None
            assert event["index"] == open_block[0]
            open_block = None
        elif kind == "message_delta":
            assert open_block is None
            assert events[position + 1 :] == [{"type": "message_stop"}]
            STREAM_EVENT.validate_python(events[-1])
            return
        else:
            assert kind == "message_start"
            assert position == 0
    pytest.fail("the stream ended without message_stop or an error")


def check_answer(mapper: MessagesAnswer) -> Message:
    """The non-streamed body is a valid `Message`, and the answer's key is its content's key."""
    body = mapper.answer()
    message = Message.model_validate(body)
    _no_extra_fields(message)
    assert mapper.answer_key() == canonical_anthropic({"role": "assistant", "content": body["content"]})
    return message


async def sdk_message(events: list[Event]) -> Message:
    """The message the anthropic SDK's own stream accumulator assembles from our bytes."""
    frames = b"".join(sse(event) for event in events)

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=frames)

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    client = AsyncAnthropic(api_key="sk-test", base_url="http://proxy.test", http_client=http, max_retries=0)
    try:
        async with client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=1024, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            return await stream.get_final_message()
    finally:
        await client.close()


def sdk_message_sync(events: list[Event]) -> Message:
    """The same with the synchronous client (for property tests)."""
    frames = b"".join(sse(event) for event in events)

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=frames)

    with (
        Anthropic(
            api_key="sk-test",
            base_url="http://proxy.test",
            http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
            max_retries=0,
        ) as client,
        client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=1024, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        return stream.get_final_message()


async def check_all(mapper: MessagesAnswer, events: list[Event]) -> Message:
    """Stream, body and the SDK's assembly agree, and a client echoing the answer back is matched by its key."""
    check_stream(events)
    message = check_answer(mapper)
    assembled = await sdk_message(events)
    assert assembled.to_dict(exclude_none=True) == message.to_dict(exclude_none=True)
    echoed = assembled.to_dict()
    assert canonical_anthropic(echoed) == mapper.answer_key()
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": echoed["content"]}]
    if echoed["content"]:
        request = {"model": "m", "max_tokens": 10, "messages": history}
        assert parse_messages(request).messages[1].key == mapper.answer_key()
    return message


# --- answers ------------------------------------------------------------------------------------------------------


async def test_text() -> None:
    mapper, events = drive([*inference("s1", TextDelta("Hel"), TextDelta("lo")), completed()])
    message = await check_all(mapper, events)
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert message.to_dict()["content"] == [{"type": "text", "text": "Hello"}]
    assert (message.stop_reason, message.usage.input_tokens, message.usage.output_tokens) == ("end_turn", 10, 5)
    assert message.id == "msg_1"
    assert message.model == "claude-sonnet-4-6"
    assert events[0]["message"]["content"] == []
    assert events[0]["message"]["stop_reason"] is None


async def test_text_then_tool_use() -> None:
    awaiting = ToolCallRequest("toolu_1", "weather", '{"city":"Paris"}')
    steps = inference("s1", TextDelta("Let me check."), *call("toolu_1", "weather", '{"city":', '"Paris"}'))
    mapper, events = drive([*steps, completed(awaiting)])
    message = await check_all(mapper, events)
    assert message.to_dict()["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
    ]
    assert message.stop_reason == "tool_use"
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert starts[1]["content_block"] == {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}
    json_deltas = [e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta" and e["index"] == 1]
    assert json_deltas == ['{"city":', '"Paris"}']


async def test_a_hidden_recall_between_two_text_steps() -> None:
    recall = call("c_r", "recall", '{"query":', '"budget"}')
    steps = [
        *compaction("s0"),
        *inference("s1", TextDelta("Looking back"), *recall, usage=(100, 7)),
        *server_tools("s2", ("c_r", "recall", "the budget was 5k")),
        *inference("s3", TextDelta("It was "), TextDelta("5k."), usage=(140, 9)),
        completed(),
    ]
    mapper, events = drive(steps)
    message = await check_all(mapper, events)
    assert message.to_dict()["content"] == [{"type": "text", "text": "Looking back\n\nIt was 5k."}]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (240, 16)
    assert message.stop_reason == "end_turn"
    assert "recall" not in str(events)
    assert "budget" not in str(events)


async def test_parallel_tool_use_with_a_hidden_call_among_them() -> None:
    steps = inference(
        "s1",
        *call("toolu_a", "weather", '{"city": "Paris"}'),
        *call("c_x", "expand", '{"compaction_id": "ev_c"}'),
        *call("toolu_b", "time", "", "{}"),
    )
    awaiting = [ToolCallRequest("toolu_a", "weather", '{"city": "Paris"}'), ToolCallRequest("toolu_b", "time", "{}")]
    mapper, events = drive([*steps, *server_tools("s2", ("c_x", "expand", "...")), completed(*awaiting)])
    message = await check_all(mapper, events)
    assert message.to_dict()["content"] == [
        {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_b", "name": "time", "input": {}},
    ]
    assert message.stop_reason == "tool_use"
    assert "expand" not in str(events)


async def test_text_after_a_visible_call_opens_a_new_block() -> None:
    steps = inference("s1", TextDelta("A"), *call("toolu_1", "weather", "{}"), TextDelta("B"))
    mapper, events = drive([*steps, completed(ToolCallRequest("toolu_1", "weather", "{}"))])
    message = await check_all(mapper, events)
    assert [block.type for block in message.content] == ["text", "tool_use", "text"]


async def test_what_was_not_streamed_is_sent_when_the_answer_completes() -> None:
    """An adapter that streams neither text nor arguments: the complete answer fills in what the client lacks."""
    result = InferenceResult(
        "Whole text", [ToolCallRequest("toolu_1", "f", '{"a":1}')], "tool_calls", TokenUsage(3, 4), "m"
    )
    steps: list[TurnEvent] = [
        StepStarted("s1", "inference", TURN),
        StepProgress("s1", ToolCallStartedDelta("toolu_1", "f")),
        StepProgress("s1", ToolCallIssuedDelta("toolu_1", "f", '{"a":1}')),
        StepCompleted("s1", "inference", result),
        completed(ToolCallRequest("toolu_1", "f", '{"a":1}')),
    ]
    mapper, events = drive(steps)
    message = await check_all(mapper, events)
    assert message.to_dict()["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
        {"type": "text", "text": "Whole text"},
    ]


words = st.text(alphabet="ab c.é", min_size=1, max_size=6)
Action = tuple[str, str, list[str]]  # ("text", text, []) or ("call", tool name, argument pieces)
actions = st.lists(
    st.one_of(
        st.tuples(st.just("text"), words, st.just([])),
        st.tuples(
            st.just("call"),
            st.sampled_from(["weather", "time", "recall", "expand"]),
            st.sampled_from([[], ["{}"], ['{"a":', " 1}"], ['{"q": "x"', ', "n": [1, 2]}']]),
        ),
    ),
    max_size=5,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(actions, min_size=1, max_size=4))
def test_any_turn_streams_what_the_body_says(steps: list[list[Action]]) -> None:
    """Steps of text and calls, visible and hidden, in any order: the stream is valid, the SDK assembles the body,
    every visible text and call is shown in order and nothing of the hidden ones is."""
    events: list[TurnEvent] = []
    visible: list[tuple[str, str, str]] = []
    shown_text: list[str] = []
    for number, step in enumerate(steps):
        deltas: list[Delta] = []
        for position, (kind, value, pieces) in enumerate(step):
            if kind == "text":
                deltas.append(TextDelta(value))
                shown_text.append(value)
                continue
            call_id = f"toolu_{number}_{position}"
            deltas.extend(call(call_id, value, *pieces))
            if value not in HIDDEN:
                visible.append((call_id, value, "".join(pieces) or "{}"))
        events.extend(inference(f"s{number}", *deltas))
        if any(isinstance(d, ToolCallStartedDelta) and d.tool_name not in HIDDEN for d in deltas):
            break  # the client's own calls end the turn
        hidden = [(d.call_id, d.tool_name, "result") for d in deltas if isinstance(d, ToolCallStartedDelta)]
        events.extend(server_tools(f"t{number}", *hidden))
    awaiting = [ToolCallRequest(c, n, a) for c, n, a in visible]
    mapper, out = drive([*events, completed(*awaiting)])
    check_stream(out)
    message = check_answer(mapper)
    assert sdk_message_sync(out).to_dict(exclude_none=True) == message.to_dict(exclude_none=True)
    calls = [(b.id, b.name, b.input) for b in message.content if isinstance(b, ToolUseBlock)]
    assert calls == [(c, n, json.loads(a)) for c, n, a in visible]
    text = "".join(b.text for b in message.content if isinstance(b, TextBlock))
    assert text.replace("\n\n", "") == "".join(shown_text)
    assert "recall" not in str(out)
    assert "expand" not in str(out)
    assert message.stop_reason == ("tool_use" if visible else "end_turn")


@pytest.mark.parametrize(
    ("incomplete", "expected"),
    [
        ("max_output_tokens", "max_tokens"),
        ("max_steps", "max_tokens"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
async def test_stop_reasons(incomplete: str | None, expected: str) -> None:
    mapper, events = drive([*inference("s1", TextDelta("Partial")), completed(incomplete=incomplete)])
    assert (await check_all(mapper, events)).stop_reason == expected


async def test_an_answer_with_nothing_visible() -> None:
    recall = inference("s1", *call("c_r", "recall", "{}"))
    mapper, events = drive([*recall, *server_tools("s2", ("c_r", "recall", "x")), *inference("s3"), completed()])
    message = await check_all(mapper, events)
    assert message.content == []
    assert mapper.answer_key() == canonical_anthropic({"role": "assistant", "content": ""})


async def test_a_failure_mid_stream_is_an_error_event() -> None:
    error = RateLimitError("slow down", retry_after=3, provider="anthropic")
    steps = [
        *inference("s1", TextDelta("Half")),
        TurnFailed(TURN, TurnError("RateLimitError", "slow down"), exception=error),
    ]
    _mapper, events = drive(steps)
    check_stream(events)
    assert events[-1] == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "upstream rate limit: slow down"},
    }
    with pytest.raises(APIStatusError) as caught:
        await sdk_message(events)
    assert (caught.value.type, caught.value.api_message) == ("rate_limit_error", "upstream rate limit: slow down")


@pytest.mark.parametrize(
    "outcome",
    [None, TurnFailed(TURN, TurnError("interrupted", "the client went away"))],
)
def test_a_failure_without_an_exception(outcome: TurnEvent | None) -> None:
    _mapper, events = drive([*inference("s1", TextDelta("Half")), *([outcome] if outcome else [])])
    check_stream(events)
    assert events[-1]["error"]["type"] == "api_error"
    if outcome is not None:
        assert "the client went away" in events[-1]["error"]["message"]


def test_sse_frames() -> None:
    frame = sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "é\n"}})
    assert frame == (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"\\u00e9\\n"}}\n\n'
    )


# --- errors -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (ApiError(400, "invalid_request_error", "bad"), 400, "invalid_request_error"),
        (ApiError(401, "invalid_request_error", "no key", "invalid_api_key"), 401, "authentication_error"),
        (ApiError(403, "invalid_request_error", "forbidden"), 403, "permission_error"),
        (ApiError(404, "invalid_request_error", "gone"), 404, "not_found_error"),
        (ApiError(409, "invalid_request_error", "busy", "conversation_busy"), 409, "conflict_error"),
        (ApiError(413, "invalid_request_error", "too big"), 413, "request_too_large"),
        (ApiError(422, "invalid_request_error", "odd"), 422, "invalid_request_error"),
        (ApiError(429, "rate_limit_error", "slow"), 429, "rate_limit_error"),
        (ApiError(500, "server_error", "oops"), 500, "api_error"),
        (ApiError(502, "upstream_error", "upstream failed"), 502, "api_error"),
        (ApiError(503, "server_error", "db down"), 529, "overloaded_error"),
        (ApiError(504, "upstream_error", "upstream timed out"), 504, "timeout_error"),
    ],
)
async def test_anthropic_errors(error: ApiError, status: int, kind: str) -> None:
    got_status, body = anthropic_error(error)
    assert (got_status, body) == (status, {"type": "error", "error": {"type": kind, "message": error.message}})
    if kind not in ("conflict_error", "request_too_large"):  # real Anthropic types the SDK's union leaves out
        _no_extra_fields(ErrorResponse.model_validate(body))

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(got_status, json=body)

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    client = AsyncAnthropic(api_key="sk-test", base_url="http://proxy.test", http_client=http, max_retries=0)
    try:
        with pytest.raises(APIStatusError) as caught:
            await client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    finally:
        await client.close()
    assert (caught.value.status_code, caught.value.type, caught.value.api_message) == (status, kind, error.message)


@pytest.mark.parametrize(
    ("exc", "status", "message"),
    [
        (
            InvalidRequestError("messages[2].content is empty", "messages[2].content"),
            400,
            "messages[2].content is empty",
        ),
        (InvalidRequestError("must be an object", "messages[0]"), 400, "messages[0]: must be an object"),
        (NotFoundError("no such conversation", "x-contextfold-conversation"), 404, "x-contextfold-conversation: no"),
        (PayloadTooLargeError("the body is over 10 MB"), 413, "the body is over 10 MB"),
        (ModelUnavailableError("503 from upstream", status=503, provider="anthropic"), 502, "upstream anthropic"),
        (StoreError("connection refused"), 529, "the database is unavailable"),
    ],
)
def test_our_errors_keep_their_param_in_the_message(exc: Exception, status: int, message: str) -> None:
    got_status, body = anthropic_error(api_error(exc))
    assert got_status == status
    assert body["error"]["message"].startswith(message)
