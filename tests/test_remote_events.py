"""The remote side reads back what the server streams: for any turn, the runtime's events mapped onto OpenAI's stream
events by the server (`StreamMapper`) and read by the client (`ResponseTranslator`) give the same steps, in the
same order, with the same text, calls and results."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from contextfold.events import TokenUsage
from contextfold.models import ToolCallRequest
from contextfold.runtime import (
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
    TurnEvent,
)
from contextfold.runtime._remote_events import ResponseTranslator
from contextfold.server.responses._stream import StreamMapper

_pieces = st.lists(st.text(min_size=1, max_size=8), max_size=4)
_args = st.dictionaries(st.sampled_from(["city", "q", "n"]), st.integers(0, 9), max_size=2)


@st.composite
def turns(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Inference steps: text pieces, and calls (built-in ones before the last step, the client's in the last)."""
    count = draw(st.integers(1, 3))
    steps = []
    for n in range(count):
        last = n == count - 1
        names = st.sampled_from(["lookup", "weather"]) if last else st.sampled_from(["recall", "expand"])
        calls = draw(st.lists(st.tuples(names, _args), min_size=0 if last else 1, max_size=2))
        steps.append({"text": draw(_pieces), "calls": calls, "server": not last})
    return steps


def _runtime_events(turn: list[dict[str, Any]]) -> tuple[list[TurnEvent], list[ToolCallRequest]]:
    """The events a turn of this shape yields in the runtime, and every call it made."""
    out: list[TurnEvent] = []
    made: list[ToolCallRequest] = []
    for n, step in enumerate(turn):
        step_id, item = f"step_{n}", f"msg_{n}"
        out.append(StepStarted(step_id, "inference", "turn_1"))
        out += [StepProgress(step_id, TextDelta(piece, item)) for piece in step["text"]]
        calls = []
        for k, (name, arguments) in enumerate(step["calls"]):
            call = ToolCallRequest(f"call_{n}_{k}", name, str(arguments).replace("'", '"'))
            calls.append(call)
            out.append(StepProgress(step_id, ToolCallStartedDelta(call.call_id, name, f"fc_{n}_{k}")))
            out.append(StepProgress(step_id, ToolCallDelta(call.call_id, call.arguments)))
        out += [StepProgress(step_id, ToolCallIssuedDelta(c.call_id, c.name, c.arguments)) for c in calls]
        text = "".join(step["text"])
        result = InferenceResult(text, calls, "tool_calls" if calls else "stop", TokenUsage(), "m")
        out.append(StepCompleted(step_id, "inference", result))
        made += calls
        if step["server"]:
            tools = f"tools_{n}"
            out.append(StepStarted(tools, "tool_execution", "turn_1", {"server_side": True}))
            outcomes = [ToolOutcome(c.call_id, c.name, f"found {c.call_id}") for c in calls]
            for o in outcomes:
                out.append(StepProgress(tools, ToolCallCompletedDelta(o.call_id, o.tool_name, o.output)))
            out.append(StepCompleted(tools, "tool_execution", ToolExecutionResult(calls, outcomes)))
    return out, made


def _shape(events: list[Any]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for event in events:
        if isinstance(event, StepStarted):
            out.append(("started", event.step_type, str(event.metadata.get("server_side", False))))
        elif isinstance(event, StepCompleted):
            out.append(("completed", event.step_type))
        elif isinstance(event, StepProgress) and isinstance(event.delta, TextDelta):
            out.append(("text", event.delta.text))
        elif isinstance(event, StepProgress) and isinstance(event.delta, ToolCallIssuedDelta):
            out.append(("issued", event.delta.tool_name, event.delta.arguments))
        elif isinstance(event, StepProgress) and isinstance(event.delta, ToolCallCompletedDelta):
            out.append(("result", event.delta.tool_name, event.delta.result.split()[0]))
    return out


@settings(max_examples=150, deadline=None)
@given(turns())
def test_the_stream_reads_back_as_the_turn_that_made_it(turn: list[dict[str, Any]]) -> None:
    events, made = _runtime_events(turn)
    mapper = StreamMapper()
    wire = mapper.start({"status": "in_progress"})
    for event in events:
        wire += mapper.map(event)
    usage = {"input_tokens": 11, "output_tokens": 7}
    wire += mapper.finish({"status": "completed", "usage": usage, "incomplete_details": None, "error": None})
    read = ResponseTranslator("turn_1", "m")
    back = [out for event in wire for out in read.feed(event)]
    assert _shape(back) == _shape(events)
    assert read.status == "completed"
    assert read.texts == ["".join(step["text"]) for step in turn]
    client = [c for c in made if c.name in ("lookup", "weather")]
    assert [(c.call_id, c.name, c.arguments) for c in read.function_calls] == [
        (c.call_id, c.name, c.arguments) for c in client
    ]
    last = [e for e in back if isinstance(e, StepCompleted) and e.step_type == "inference"][-1]
    assert isinstance(last.result, InferenceResult)
    assert last.result.usage == TokenUsage(11, 7)  # the response's usage, on its last inference
    assert read.steps == sum(2 if step["server"] else 1 for step in turn)
