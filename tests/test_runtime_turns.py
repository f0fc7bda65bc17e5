"""Turns: the loop of inference and tool steps, what lands in the log, and how failures and interruptions end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import pytest

from contextfold import ModelUnavailableError, Store
from contextfold.events import Message, ToolCall, ToolResult, TurnMarker, Usage
from contextfold.models import ModelProfile, ModelResponse, ScriptedModel, Step, Stream, TextChunk, ToolCallRequest
from contextfold.runtime import (
    Agent,
    AgentOptions,
    StepCompleted,
    StepProgress,
    StepStarted,
    ToolCallCompletedDelta,
    ToolExecutionResult,
    ToolLike,
    ToolOutput,
    TurnCompleted,
    TurnEvent,
    TurnFailed,
    TurnStarted,
)

PROFILE = ModelProfile(context_window=16_000, max_output_tokens=1_000)


def calls(*specs: tuple[str, str]) -> ModelResponse:
    return ModelResponse(
        tool_calls=[ToolCallRequest(f"call_{n}", name, args) for n, (name, args) in enumerate(specs)],
        output_tokens=10,
    )


def ping() -> str:
    """Answers pong."""
    return "pong"


def make_agent(store: Store, steps: Sequence[Step], tools: Sequence[ToolLike] = (), **options: Any) -> Agent:
    model = ScriptedModel(steps, profile=PROFILE)
    options.setdefault("summariser", ScriptedModel(["## Goal\nkeep going"] * 100, name="summariser"))
    return Agent(model, store=store, instructions="Be brief.", tools=tools, options=AgentOptions(**options))


async def collect(agent: Agent, text: str, session_id: str | None = None) -> list[TurnEvent]:
    session = await (agent.session(session_id) if session_id else agent.create_session())
    return [event async for event in session.stream(text)]


async def test_a_text_turn_is_persisted_and_returns_the_answer(sqlite_store: Store) -> None:
    agent = make_agent(sqlite_store, [ModelResponse(text="Hello there.", input_tokens=40, output_tokens=3)])
    session = await agent.create_session()
    result = await session.turn("hi")
    assert (result.final_text, result.num_steps, result.incomplete_reason) == ("Hello there.", 1, None)
    assert (result.usage.input_tokens, result.usage.output_tokens) == (40, 3)
    log = await sqlite_store.read(session.id)
    kinds = [(type(e).__name__, getattr(e, "status", getattr(e, "role", ""))) for e in log]
    assert kinds == [
        ("ConfigChange", ""),
        ("TurnMarker", "started"),
        ("Message", "user"),
        ("Message", "assistant"),
        ("Usage", ""),
        ("TurnMarker", "completed"),
    ]
    assert all(e.turn_id == result.turn_id for e in log[1:])
    window = session.conversation.window()
    assert window.system_prompt == "Be brief."
    assert [m.role for m in window.items if isinstance(m, Message)] == ["user", "assistant"]


async def test_tool_calls_of_a_batch_run_in_parallel_and_results_follow_in_call_order(sqlite_store: Store) -> None:
    arrived: list[str] = []
    both = asyncio.Event()

    async def wait_for_the_other(name: str) -> str:
        """Finishes only once both calls have started: sequential execution would never get there."""
        arrived.append(name)
        if len(arrived) == 2:
            both.set()
        await both.wait()
        return f"{name} done"

    agent = make_agent(
        sqlite_store,
        [calls(("wait_for_the_other", '{"name": "a"}'), ("wait_for_the_other", '{"name": "b"}')), "both done"],
        [wait_for_the_other],
    )
    events = await collect(agent, "go")
    assert isinstance(events[-1], TurnCompleted)
    (tool_step,) = [e for e in events if isinstance(e, StepCompleted) and e.step_type == "tool_execution"]
    assert isinstance(tool_step.result, ToolExecutionResult)
    assert [r.output for r in tool_step.result.results] == ["a done", "b done"]
    completed = [e.delta for e in events if isinstance(e, StepProgress) and isinstance(e.delta, ToolCallCompletedDelta)]
    assert sorted(d.result for d in completed) == ["a done", "b done"]
    assert isinstance(events[0], TurnStarted)
    log = await sqlite_store.read(events[0].session_id)
    tool_events = [e for e in log if isinstance(e, (ToolCall, ToolResult))]
    assert [type(e).__name__ for e in tool_events] == ["ToolCall", "ToolCall", "ToolResult", "ToolResult"]
    assert len({e.batch_id for e in tool_events if isinstance(e, ToolCall)}) == 1


async def test_tool_failures_become_error_results_the_model_reads(sqlite_store: Store) -> None:
    def broken() -> str:
        raise RuntimeError("disk on fire")

    async def slow() -> str:
        await asyncio.Event().wait()
        return "never"

    def summarised() -> ToolOutput:
        return ToolOutput("x" * 5000, summary="5000 x's")

    model_steps: list[Step] = [
        calls(("broken", "{}"), ("slow", "{}"), ("nope", "{}"), ("summarised", '{"bad": 1}'), ("summarised", "{")),
        calls(("summarised", "{}")),
        "noted",
    ]
    agent = make_agent(sqlite_store, model_steps, [broken, slow, summarised], tool_timeout=0.05)
    events = await collect(agent, "try everything")
    assert isinstance(events[-1], TurnCompleted)
    first, second = [e.result for e in events if isinstance(e, StepCompleted) and e.step_type == "tool_execution"]
    assert isinstance(first, ToolExecutionResult)
    assert isinstance(second, ToolExecutionResult)
    outputs = [(r.is_error, r.output) for r in first.results]
    assert outputs[0] == (True, "broken failed: RuntimeError: disk on fire")
    assert outputs[1] == (True, "slow timed out after 0.05s")
    assert outputs[2][0]
    assert "unknown tool 'nope'; available: broken, slow, summarised" in outputs[2][1]
    assert outputs[3][0]
    assert "invalid arguments for summarised" in outputs[3][1]
    assert "bad" in outputs[3][1]
    assert outputs[4][0]
    assert "not valid JSON" in outputs[4][1]
    assert second.results[0].summary == "5000 x's"
    model = agent.model
    assert isinstance(model, ScriptedModel)
    seen = [i for i in model.calls[1][0].items if isinstance(i, ToolResult)]
    assert [r.is_error for r in seen] == [True] * 5


async def test_the_step_limit_completes_the_turn_as_incomplete(sqlite_store: Store) -> None:
    agent = make_agent(sqlite_store, [calls(("ping", "{}"))] * 3, [ping], max_steps=3)
    session = await agent.create_session()
    result = await session.turn("loop forever")
    assert (result.incomplete_reason, result.num_steps) == ("max_steps", 6)
    markers = [e for e in await sqlite_store.read(session.id) if isinstance(e, TurnMarker)]
    assert (markers[-1].status, markers[-1].reason) == ("completed", "max_steps")


async def test_a_length_stop_completes_as_incomplete(sqlite_store: Store) -> None:
    agent = make_agent(sqlite_store, [ModelResponse(text="Once upon a", stop_reason="length")])
    result = await (await agent.create_session()).turn("tell a story")
    assert (result.final_text, result.incomplete_reason) == ("Once upon a", "max_output_tokens")


async def test_a_failed_turn_keeps_its_completed_steps_in_the_log_but_not_in_the_view(sqlite_store: Store) -> None:
    agent = make_agent(
        sqlite_store,
        [calls(("ping", "{}")), ModelUnavailableError("upstream 503", status=503), "fine now"],
        [ping],
    )
    session = await agent.create_session()
    with pytest.raises(ModelUnavailableError, match="upstream 503"):
        await session.turn("first")
    log = await sqlite_store.read(session.id)
    assert any(isinstance(e, ToolResult) and e.output == "pong" for e in log)
    failed = [e for e in log if isinstance(e, TurnMarker) and e.status == "failed"]
    assert len(failed) == 1
    assert "ModelUnavailableError" in (failed[0].reason or "")
    assert not session.conversation.view.items  # the whole failed turn left the view
    result = await session.turn("second")
    assert result.final_text == "fine now"
    assert [m.role for m in session.conversation.window().items if isinstance(m, Message)] == ["user", "assistant"]


async def test_a_stream_cut_off_mid_answer_fails_the_turn_after_the_text_it_got(sqlite_store: Store) -> None:
    from contextfold import ModelResponseError

    cut = Stream([TextChunk("partial "), ModelResponseError("stream ended before the response was complete")])
    agent = make_agent(sqlite_store, [cut])
    events = await collect(agent, "hello")
    kinds = [e.type for e in events]
    assert kinds == ["turn_started", "step_started", "step_progress", "turn_failed"]
    assert isinstance(events[-1], TurnFailed)
    assert events[-1].error.kind == "ModelResponseError"


async def test_interrupt_cancels_the_running_tool_and_marks_the_turn(sqlite_store: Store) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    agent = make_agent(sqlite_store, [calls(("forever", "{}"))], [forever])
    session = await agent.create_session()
    events: list[TurnEvent] = []

    async def consume() -> None:
        async for event in session.stream("run it"):
            events.append(event)

    consumer = asyncio.create_task(consume())
    await started.wait()
    assert (await session.status()).running
    assert await session.interrupt()
    await consumer
    assert cancelled.is_set()
    assert isinstance(events[-1], TurnFailed)
    assert events[-1].error.kind == "interrupted"
    markers = [e for e in await sqlite_store.read(session.id) if isinstance(e, TurnMarker)]
    assert [m.status for m in markers] == ["started", "interrupted"]
    assert not session.conversation.view.items
    assert not session.conversation.view.open_turns
    assert not await session.interrupt()  # nothing running any more


async def test_closing_the_stream_early_interrupts_the_turn(sqlite_store: Store) -> None:
    async def wait_forever() -> str:
        """A tool that never returns."""
        await asyncio.Event().wait()
        return "never"

    agent = make_agent(sqlite_store, [calls(("wait_forever", "{}"))], tools=[wait_forever])
    session = await agent.create_session()
    async with contextlib.aclosing(session.stream("talk")) as events:
        async for event in events:
            if isinstance(event, StepStarted) and event.step_type == "tool_execution":
                break  # the turn is certainly still running: its tool never returns
    markers = [e for e in await sqlite_store.read(session.id) if isinstance(e, TurnMarker)]
    assert [m.status for m in markers] == ["started", "interrupted"]
    assert not (await session.status()).running


async def test_a_turn_left_open_by_a_crash_is_marked_interrupted_on_resume(sqlite_store: Store) -> None:
    agent = make_agent(sqlite_store, ["resumed fine"])
    session = await agent.create_session()
    # What a process that died after its first inference step leaves behind.
    await session.conversation.append(
        TurnMarker(status="started", turn_id="turn_dead"),
        Message(role="user", content=[], turn_id="turn_dead"),
        ToolCall(call_id="c1", name="ping", arguments="{}", batch_id="b1", turn_id="turn_dead"),
        Usage(model="scripted", input_tokens=10, output_tokens=2, turn_id="turn_dead"),
    )
    resumed = await agent.session(session.id)
    assert not resumed.conversation.view.items
    markers = [e for e in await sqlite_store.read(session.id) if isinstance(e, TurnMarker)]
    assert (markers[-1].turn_id, markers[-1].status) == ("turn_dead", "interrupted")
    assert (await resumed.turn("again")).final_text == "resumed fine"
