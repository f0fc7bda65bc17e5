"""Session controls and compaction inside turns: configuration events, status, busy sessions, built-in tools,
reactive compaction, clear, and where the context window comes from."""

from __future__ import annotations

import asyncio

import pytest

from contextfold import BusyError, ConfigurationError, ContextLengthError, InvalidRequestError, Store
from contextfold.events import ConfigChange, ToolResult
from contextfold.models import ModelProfile, ModelResponse, ScriptedModel, Step
from contextfold.runtime import Agent, AgentOptions, StepCompleted, StepStarted, ToolExecutionResult, TurnEvent
from contextfold.view import Window

from .test_runtime_turns import calls, make_agent


def fetch(page: int) -> str:
    """Fetch one page of the incident log.

    Args:
        page: Page number.
    """
    marker = "the rollback token is PLUM-0042\\n" if page == 2 else ""
    return f"page {page}\n{marker}" + f"log line {page}\n" * 400


async def test_runtime_controls_are_recorded_as_events_and_used(sqlite_store: Store) -> None:
    agent = make_agent(sqlite_store, ["one", "two", "three"], [fetch])
    session = await agent.create_session()
    await session.turn("first")
    await session.set_system_prompt("Answer in French.")
    await session.set_max_output_tokens(321)
    await session.set_tools(None)
    await session.turn("second")
    model = agent.model
    assert isinstance(model, ScriptedModel)
    first, second = model.calls[0], model.calls[1]
    assert first[0].system_prompt == "Be brief."
    assert [t.name for t in first[0].tools or []] == ["fetch"]
    assert second[0].system_prompt == "Answer in French."
    assert second[0].tools is None
    assert (first[1].max_output_tokens, second[1].max_output_tokens) == (1_000, 321)
    changes = [e for e in await sqlite_store.read(session.id) if isinstance(e, ConfigChange)]
    assert len(changes) == 4
    await session.set_system_prompt(None)
    await session.set_max_output_tokens(None)
    await session.set_tools([fetch])
    await session.turn("third")
    third = model.calls[2]
    assert third[0].system_prompt is None
    assert third[1].max_output_tokens == 1_000
    assert [t.name for t in third[0].tools or []] == ["fetch"]
    with pytest.raises(InvalidRequestError, match="between 1 and the context window"):
        await session.set_max_output_tokens(0)


async def test_a_busy_session_refuses_a_second_turn_and_controls(sqlite_store: Store) -> None:
    release, entered = asyncio.Event(), asyncio.Event()

    async def hold() -> str:
        """Waits."""
        entered.set()
        await release.wait()
        return "released"

    agent = make_agent(sqlite_store, [calls(("hold", "{}")), "done"], [hold])
    session = await agent.create_session()
    running = asyncio.create_task(session.turn("hold on"))
    await entered.wait()
    assert session.running
    with pytest.raises(BusyError, match="is running a turn"):
        await session.turn("me too")
    for control in (session.compact(), session.clear(), session.set_system_prompt("x")):
        with pytest.raises(BusyError):
            await control
    release.set()
    assert (await running).final_text == "done"
    assert not session.running


async def test_status_reports_the_session_and_survives_a_reload(sqlite_store: Store) -> None:
    answers = [ModelResponse(text=f"answer {n}", input_tokens=500 + n, output_tokens=20) for n in range(8)]
    agent = make_agent(sqlite_store, answers, context_window=4_000, max_output_tokens=500)
    session = await agent.create_session()
    for n in range(8):
        await session.turn(f"question {n}: " + "words " * 400)
    status = await session.status()
    assert (status.requests, status.input_tokens, status.output_tokens) == (8, sum(500 + n for n in range(8)), 160)
    assert status.compactions >= 1
    assert status.context_limit == 3_500
    assert status.utilisation == round(100 * status.context_used / 3_500, 2)
    assert status.conversation_length == session.conversation.head
    assert status.model == "scripted"
    resumed = await agent.session(session.id)
    assert await resumed.status() == status


async def test_builtin_recall_and_expand_are_offered_after_compaction_and_run_server_side(sqlite_store: Store) -> None:
    def answer_from_recall(window: Window) -> str:
        result = window.items[-1]
        assert isinstance(result, ToolResult)
        assert "PLUM-0042" in result.output
        return "The rollback token is PLUM-0042."

    script: list[Step] = []
    for page in range(12):
        script += [calls(("fetch", f'{{"page": {page}}}')), f"read page {page}"]
    agent = make_agent(sqlite_store, script, [fetch], context_window=8_000, max_output_tokens=500)
    model = agent.model
    assert isinstance(model, ScriptedModel)
    session = await agent.create_session()
    await session.turn("read page 0")
    assert [t.name for t in model.calls[0][0].tools or []] == ["fetch"]  # nothing folded yet: no built-ins
    for page in range(1, 12):
        await session.turn(f"read page {page}")
    assert session.conversation.view.totals.compactions >= 1
    model.add(calls(("recall", '{"query": "rollback token"}')), answer_from_recall)
    events: list[TurnEvent] = [e async for e in session.stream("what was the rollback token?")]
    assert [t.name for t in model.calls[-1][0].tools or []] == ["fetch", "recall", "expand"]
    started = [e for e in events if isinstance(e, StepStarted) and e.step_type == "tool_execution"]
    assert [e.metadata["server_side"] for e in started] == [True]
    (done,) = [e.result for e in events if isinstance(e, StepCompleted) and e.step_type == "tool_execution"]
    assert isinstance(done, ToolExecutionResult)
    hit_id = done.results[0].output.split(",")[0].lstrip("[")
    model.add(calls(("expand", f'{{"id": "{hit_id}"}}')), "expanded")
    expanded = await session.turn("show it in full")
    (step,) = [s.result for s in expanded.steps if isinstance(s.result, ToolExecutionResult)]
    assert "PLUM-0042" in step.results[0].output
    assert not step.results[0].is_error


async def test_a_context_length_refusal_compacts_and_retries_once(sqlite_store: Store) -> None:
    script: list[Step] = [f"answer {n}" for n in range(6)]
    script += [ContextLengthError("prompt is too long"), "after compaction"]
    agent = make_agent(sqlite_store, script, context_window=6_000, max_output_tokens=500)
    session = await agent.create_session()
    for n in range(6):
        await session.turn(f"q{n} " + "text " * 200)
    result = await session.turn("one more")
    assert result.final_text == "after compaction"
    kinds = [(s.step_type, getattr(s.result, "error", None) is not None) for s in result.steps]
    assert kinds == [("inference", True), ("compaction", False), ("inference", False)]
    model = agent.model
    assert isinstance(model, ScriptedModel)
    model.add(ContextLengthError("still too long"), ContextLengthError("refused again"))
    with pytest.raises(ContextLengthError, match=r"still too long|refused again"):
        await session.turn("and again")
    assert not session.conversation.view.open_turns


async def test_clear_starts_a_fresh_view_and_keeps_the_log_recallable(sqlite_store: Store) -> None:
    agent = make_agent(sqlite_store, ["noted", "fresh start"])
    session = await agent.create_session()
    await session.turn("the deploy key is KIWI-9")
    result = await session.clear()
    assert result.compacted
    assert result.strategy == "clear"
    assert result.messages_after == 0
    assert session.conversation.window().system_prompt == "Be brief."
    assert (await session.turn("hello again")).final_text == "fresh start"
    hits = await session.conversation.recall("deploy key")
    assert any("KIWI-9" in hit.snippet for hit in hits)
    reloaded = await agent.session(session.id)
    assert reloaded.conversation.view.state() == session.conversation.view.state()


async def test_manual_compact_with_instructions_returns_its_result(sqlite_store: Store) -> None:
    summariser = ScriptedModel(["## Goal\nfocus on billing"])
    agent = make_agent(sqlite_store, [f"answer {n}" for n in range(8)], summariser=summariser)
    session = await agent.create_session()
    for n in range(8):
        await session.turn(f"billing question {n}")
    result = await session.compact("focus on billing")
    assert result.compacted
    assert result.strategy == "summary"
    assert result.trigger == "manual"
    prompt = summariser.calls[-1][0]
    assert any("focus on billing" in str(item) for item in prompt.items)


class Upstream(ScriptedModel):
    async def upstream_context_window(self) -> int | None:
        return 9_000


async def test_the_context_window_comes_from_options_then_upstream_then_profile(sqlite_store: Store) -> None:
    unknown = Agent(ScriptedModel(), store=sqlite_store)
    with pytest.raises(ConfigurationError, match="context window of model 'scripted' is unknown"):
        await unknown.create_session()
    profiled = Agent(ScriptedModel(profile=ModelProfile(context_window=5_000)), store=sqlite_store)
    assert await profiled.context_window() == 5_000
    upstream = Agent(Upstream(profile=ModelProfile(context_window=5_000)), store=sqlite_store)
    assert await upstream.context_window() == 9_000
    configured = Agent(Upstream(), store=sqlite_store, options=AgentOptions(context_window=7_000))
    assert await configured.context_window() == 7_000


async def test_bad_input_and_options_get_clear_errors(sqlite_store: Store) -> None:
    agent = make_agent(sqlite_store, [])
    session = await agent.create_session()
    with pytest.raises(InvalidRequestError, match="text is empty"):
        await session.turn("  ")
    with pytest.raises(InvalidRequestError, match="max_steps must be at least 1"):
        AgentOptions(max_steps=0)
    with pytest.raises(InvalidRequestError, match="tool name '<lambda>' is not valid"):
        await session.set_tools([lambda: "x"])
    assert session.conversation.head == 1  # nothing was written


def recall(query: str) -> str:
    """A user tool that would shadow the built-in."""
    return query


async def test_a_user_tool_cannot_take_a_builtin_name(sqlite_store: Store) -> None:
    with pytest.raises(InvalidRequestError, match="reserved for the built-in tool"):
        make_agent(sqlite_store, [], [recall])
