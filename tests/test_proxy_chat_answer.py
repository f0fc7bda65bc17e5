"""The proxy's OpenAI Chat answers: runtime events mapped to `chat.completion.chunk`s and a `chat.completion` that
the openai SDK's own models accept, showing the client only its own calls and every step's text; the message the
client rebuilds from the stream is the answer's, with the answer's key."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from contextfold import RateLimitError
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
from contextfold.server.proxy._chat_wire import SSE_DONE, ChatAnswer, canonical_chat, sse
from contextfold.server.proxy._proxy_types import AnswerMapper

# --- helpers ----------------------------------------------------------------------------------------------------

STEP = "step_1"


def mapper(include_usage: bool = False) -> ChatAnswer:
    return ChatAnswer("chatcmpl-1", "m", 1_700_000_000, frozenset({"recall", "expand"}), include_usage)


def inference(
    step: str,
    *deltas: Delta,
    text: str = "",
    calls: Sequence[tuple[str, str, str]] = (),
    usage: tuple[int, int] = (10, 5),
) -> list[TurnEvent]:
    """One inference step: its deltas as progress, then its result."""
    requests = [ToolCallRequest(i, n, a) for i, n, a in calls]
    issued = [StepProgress(step, ToolCallIssuedDelta(r.call_id, r.name, r.arguments)) for r in requests]
    result = InferenceResult(text, requests, "tool_calls" if calls else "stop", TokenUsage(*usage), "m")
    return [
        StepStarted(step, "inference", "t1"),
        *(StepProgress(step, d) for d in deltas),
        *issued,
        StepCompleted(step, "inference", result),
    ]


def hidden_recall(step: str) -> list[TurnEvent]:
    call = ToolCallRequest("call_r", "recall", '{"query": "x"}')
    return [
        StepStarted(step, "tool_execution", "t1", {"server_side": True}),
        StepProgress(step, ToolCallCompletedDelta("call_r", "recall", "found")),
        StepCompleted(step, "tool_execution", ToolExecutionResult([call], [ToolOutcome("call_r", "recall", "found")])),
    ]


def completed(awaiting: Sequence[tuple[str, str, str]] = (), reason: str | None = None) -> TurnCompleted:
    return TurnCompleted("t1", "", 1, TokenUsage(), reason, [ToolCallRequest(*c) for c in awaiting])


def run(answer: ChatAnswer, events: Sequence[TurnEvent], outcome: TurnEvent | None) -> list[dict[str, Any]]:
    """Drive the mapper; check every chunk with the SDK, the body with the SDK, and that the message the client
    rebuilds from the stream is the answer's message with the answer's key."""
    chunks = [*answer.start(), *(c for e in events for c in answer.map(e)), *answer.finish(outcome)]
    for chunk in chunks:
        frame = sse(chunk)
        assert frame.startswith(b"data: {")
        assert frame.endswith(b"}\n\n")
        assert json.loads(frame[6:]) == chunk
        if "error" not in chunk:
            ChatCompletionChunk.model_validate(chunk)
    body = answer.answer()
    ChatCompletion.model_validate(body)
    message = body["choices"][0]["message"]
    assert answer.answer_key() == canonical_chat(message)
    if not any("error" in c for c in chunks):
        assert canonical_chat(rebuilt(chunks)) == answer.answer_key()
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    return chunks


def rebuilt(chunks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The assistant message as a client accumulates it from the chunks."""
    content = ""
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            for piece in delta.get("tool_calls", []):
                call = calls.setdefault(piece["index"], {"type": "function", "function": {"name": "", "arguments": ""}})
                if "id" in piece:
                    call["id"] = piece["id"]
                call["function"]["name"] += piece["function"].get("name", "")
                call["function"]["arguments"] += piece["function"].get("arguments", "")
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message


def deltas(chunks: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c.get("choices")]


def test_plain_text() -> None:
    answer = mapper()
    events = [TurnStarted("t1", "s1"), *inference(STEP, TextDelta("Hel"), TextDelta("lo"), text="Hello")]
    assert [c for e in events[:2] for c in answer.map(e)] == []  # nothing before the first visible output
    chunks = run(answer, events, completed())
    assert deltas(chunks) == [{"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo"}, {}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in chunks[-1]
    assert {c["id"] for c in chunks} == {"chatcmpl-1"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    choice = answer.answer()["choices"][0]
    assert choice["message"]["content"] == "Hello"
    assert "tool_calls" not in choice["message"]
    assert choice["finish_reason"] == "stop"
    assert answer.answer()["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def test_text_and_visible_tool_calls() -> None:
    answer = mapper()
    call = ("call_1", "get", '{"city": "Oslo"}')
    events = inference(
        STEP,
        TextDelta("Checking."),
        ToolCallStartedDelta("call_1", "get"),
        ToolCallDelta("call_1", '{"city": '),
        ToolCallDelta("call_1", '"Oslo"}'),
        text="Checking.",
        calls=[call],
    )
    chunks = run(answer, events, completed(awaiting=[call]))
    assert deltas(chunks)[2:] == [
        {
            "tool_calls": [
                {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get", "arguments": ""}}
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]},
        {},
    ]
    choice = answer.answer()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": '{"city": "Oslo"}'}}
    ]


def test_a_hidden_recall_between_two_text_steps_shows_only_the_text() -> None:
    answer = mapper()
    events = [
        StepStarted("step_c", "compaction", "t1", {"trigger": "auto"}),
        *inference(
            STEP,
            TextDelta("Let me look."),
            ToolCallStartedDelta("call_r", "recall"),
            ToolCallDelta("call_r", '{"query": "x"}'),
            text="Let me look.",
            calls=[("call_r", "recall", '{"query": "x"}')],
        ),
        *hidden_recall("step_2"),
        *inference("step_3", TextDelta("Found it."), text="Found it."),
    ]
    chunks = run(answer, events, completed())
    assert not any("tool_calls" in d for d in deltas(chunks))
    assert "".join(d.get("content") or "" for d in deltas(chunks)) == "Let me look.\n\nFound it."
    assert answer.answer()["choices"][0]["message"]["content"] == "Let me look.\n\nFound it."
    assert answer.answer()["usage"]["total_tokens"] == 30


def test_parallel_visible_calls_are_numbered_across_the_turn_skipping_hidden_ones() -> None:
    answer = mapper()
    first, second = ("call_a", "get", '{"n": 1}'), ("call_b", "put", "{}")
    events = [
        *inference(
            STEP,
            ToolCallStartedDelta("call_r", "recall"),
            ToolCallStartedDelta("call_a", "get"),
            ToolCallDelta("call_a", '{"n": 1}'),
            text="",
            calls=[("call_r", "recall", "{}"), first],
        ),
        *hidden_recall("step_2"),
        *inference("step_3", ToolCallStartedDelta("call_b", "put"), ToolCallDelta("call_b", "{}"), calls=[second]),
    ]
    chunks = run(answer, events, completed(awaiting=[first, second]))
    starts = [d["tool_calls"][0] for d in deltas(chunks) if "tool_calls" in d and "id" in d["tool_calls"][0]]
    assert [(s["index"], s["id"]) for s in starts] == [(0, "call_a"), (1, "call_b")]
    message = answer.answer()["choices"][0]["message"]
    assert message["content"] is None
    assert [c["id"] for c in message["tool_calls"]] == ["call_a", "call_b"]


def test_usage_chunk() -> None:
    answer = mapper(include_usage=True)
    events = [*inference(STEP, TextDelta("A"), text="A", usage=(7, 2)), *inference("step_2", text="", usage=(9, 1))]
    chunks = run(answer, events, completed())
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 16,
        "completion_tokens": 3,
        "total_tokens": 19,
    }
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_an_answer_the_adapter_did_not_stream_is_sent_when_it_completes() -> None:
    answer = mapper()
    call = ("call_1", "get", '{"a": 1}')
    events = inference(STEP, TextDelta("Hel"), ToolCallStartedDelta("call_1", "get"), text="Hello", calls=[call])
    chunks = run(answer, events, completed(awaiting=[call]))
    assert rebuilt(chunks)["content"] == "Hello"
    assert rebuilt(chunks)["tool_calls"][0]["function"]["arguments"] == '{"a": 1}'
    unstarted = mapper()
    run(unstarted, inference(STEP, calls=[call]), completed(awaiting=[call]))
    assert unstarted.answer()["choices"][0]["message"]["tool_calls"][0]["function"] == {
        "name": "get",
        "arguments": '{"a": 1}',
    }


def test_an_empty_answer_still_opens_and_closes_the_message() -> None:
    answer = mapper()
    chunks = run(answer, inference(STEP), completed())
    assert deltas(chunks) == [{"role": "assistant", "content": ""}, {}]
    assert answer.answer()["choices"][0]["message"]["content"] == ""


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("max_output_tokens", "length"), ("max_steps", "length"), ("content_filter", "content_filter"), ("other", "stop")],
)
def test_finish_reasons(reason: str, finish: str) -> None:
    answer = mapper()
    chunks = run(answer, inference(STEP, TextDelta("A"), text="A"), completed(reason=reason))
    assert chunks[-1]["choices"][0]["finish_reason"] == finish == answer.answer()["choices"][0]["finish_reason"]


def test_failure_mid_stream() -> None:
    answer = mapper()
    error = RateLimitError("slow down", retry_after=3)
    events = inference(STEP, TextDelta("Par"))[:-1]
    failed = TurnFailed("t1", TurnError("RateLimitError", "slow down"), exception=error)
    chunks = run(answer, events, failed)
    assert deltas(chunks) == [{"role": "assistant", "content": ""}, {"content": "Par"}]
    assert chunks[-1] == {
        "error": {
            "message": "upstream rate limit: slow down",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    plain = mapper().finish(TurnFailed("t1", TurnError("interrupted", "the turn was interrupted")))
    assert plain == [
        {"error": {"message": "the turn was interrupted", "type": "server_error", "param": None, "code": None}}
    ]
    assert mapper().finish(None)[0]["error"]["type"] == "server_error"


def test_sse_frames() -> None:
    assert sse({"a": "é", "b": [1]}) == 'data: {"a":"é","b":[1]}\n\n'.encode()
    assert SSE_DONE == b"data: [DONE]\n\n"


@st.composite
def turns(draw: st.DrawFn) -> list[TurnEvent]:
    """Inference steps of text pieces and calls, visible or hidden, streamed whole or in pieces, or not at all."""
    events: list[TurnEvent] = []
    for step in range(draw(st.integers(1, 4))):
        step_id = f"step_{step}"
        pieces = draw(st.lists(st.text(min_size=1, max_size=5), max_size=3))
        out: list[Delta] = [TextDelta(p) for p in pieces]
        made: list[tuple[str, str, str]] = []
        for n in range(draw(st.integers(0, 2))):
            call = (f"call_{step}_{n}", draw(st.sampled_from(["get", "recall", "expand"])), json.dumps({"n": n}))
            made.append(call)
            if draw(st.booleans()):
                out += [
                    ToolCallStartedDelta(call[0], call[1]),
                    ToolCallDelta(call[0], call[2][:3]),
                    ToolCallDelta(call[0], call[2][3:]),
                ]
        extra = draw(st.text(max_size=3))
        events += inference(step_id, *out, text="".join(pieces) + extra, calls=made)
        if any(name != "get" for _, name, _ in made):
            events += hidden_recall(f"{step_id}_tools")
    return events


@settings(max_examples=60)
@given(turns(), st.booleans())
def test_any_turn_streams_the_message_its_answer_holds(events: list[TurnEvent], include_usage: bool) -> None:
    answer = mapper(include_usage)
    chunks = run(answer, events, completed())
    shown = rebuilt(chunks)
    message = answer.answer()["choices"][0]["message"]
    assert (shown["content"] or "") == (message["content"] or "")
    assert [c["function"]["name"] for c in shown.get("tool_calls", [])] == [
        c["function"]["name"] for c in message.get("tool_calls", [])
    ]
    assert all(c["function"]["name"] == "get" for c in message.get("tool_calls", []))


def test_chat_answer_is_an_answer_mapper() -> None:
    answer: AnswerMapper = mapper()  # checked by mypy
    assert answer.start() == []
    assert answer.map(TurnStarted("t1", "s1")) == []
