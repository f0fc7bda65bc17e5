"""The one turn lifecycle (`runtime/_lifecycle.py`): the budget and its error, the setup, the task with its
shielded wind-up, the lease released before the stream ends, and the after_turn hook."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contextfold import CompactionPolicy, Conversation, InvalidRequestError, ModelResponse, ScriptedModel, Store
from contextfold.events import TextPart, TurnMarker
from contextfold.models import ToolCallRequest
from contextfold.runtime import (
    Emit,
    StepStarted,
    Tool,
    TurnCompleted,
    TurnEvent,
    TurnFailed,
    TurnRun,
    TurnSetup,
    tool,
    turn_budget,
    turn_setup,
)
from contextfold.server._config import load_config


@given(st.integers(1, 1_000_000), st.integers(1, 1_000_000), st.sampled_from(["max_output_tokens", "max_tokens"]))
def test_the_budget_is_the_window_less_the_reserved_output_or_an_error_naming_the_parameter(
    window: int, reserved: int, param: str
) -> None:
    if reserved < window:
        assert turn_budget(window, reserved, param=param) == window - reserved
        return
    with pytest.raises(InvalidRequestError) as caught:
        turn_budget(window, reserved, param=param)
    assert caught.value.param == param
    assert f"lower {param}" in str(caught.value)


class _Recorder:
    """A caller that keeps the turn's events and the order of what happened."""

    def __init__(self, order: list[str]) -> None:
        self.order = order

    async def begin(self, emit: Emit[TurnEvent]) -> None:
        self.order.append("begin")

    async def event(self, event: TurnEvent, emit: Emit[TurnEvent]) -> None:
        emit(event)

    async def end(self, outcome: TurnCompleted | TurnFailed | None, emit: Emit[TurnEvent]) -> None:
        self.order.append(f"end {type(outcome).__name__}")

    def abandon(self, turn_id: str, error: Exception, emit: Emit[TurnEvent]) -> None:
        self.order.append("abandon")

    async def interrupted(self, turn_id: str, emit: Emit[TurnEvent]) -> None:
        self.order.append("interrupted")


@contextlib.asynccontextmanager
async def _lease(order: list[str]) -> AsyncIterator[None]:
    order.append("held")
    yield
    order.append("released")


async def _setup(store: Store, model: ScriptedModel, tools: Mapping[str, Tool] | None = None) -> TurnSetup:
    conversation = await Conversation.create(store)
    return turn_setup(
        conversation,
        model,
        budget=turn_budget(8_000, 500, param="max_output_tokens"),
        reserved=500,
        policy=CompactionPolicy(),
        summariser=None,
        max_steps=4,
        tool_timeout=5.0,
        context_window=8_000,
        tools=tools,
    )


async def test_a_turn_ends_then_its_lease_is_released_then_after_turn_runs(sqlite_store: Store) -> None:
    order: list[str] = []
    setup = await _setup(sqlite_store, ScriptedModel(["hello"]))
    lease = _lease(order)
    await lease.__aenter__()
    seen: list[TurnSetup] = []

    def after(done: TurnSetup) -> None:
        order.append("after_turn")
        seen.append(done)

    run = TurnRun(setup, [TextPart("hi")], _Recorder(order), interrupted="gone", lease=lease, after_turn=after)
    events = [event async for event in run.events()]
    assert isinstance(events[-1], TurnCompleted)
    assert order == ["held", "begin", "end TurnCompleted", "released", "after_turn"]
    assert seen == [setup]


async def test_a_cancelled_turn_is_marked_interrupted_before_the_lease_goes(sqlite_store: Store) -> None:
    async def wait_forever() -> str:
        """A tool that never returns."""
        await asyncio.Event().wait()
        return "never"

    order: list[str] = []
    waiting = tool(wait_forever)
    model = ScriptedModel([ModelResponse(tool_calls=[ToolCallRequest("c1", "wait_forever", "{}")])])
    setup = await _setup(sqlite_store, model, {"wait_forever": waiting})
    lease = _lease(order)
    await lease.__aenter__()
    run = TurnRun(setup, [TextPart("hi")], _Recorder(order), interrupted="gone", lease=lease, after_turn=None)
    async with contextlib.aclosing(run.events()) as events:
        async for event in events:
            if isinstance(event, StepStarted) and event.step_type == "tool_execution":
                break
    assert run.task is not None
    assert run.task.done()
    assert order == ["held", "begin", "interrupted", "released"]
    markers = [e for e in await sqlite_store.read(setup.conversation.id) if isinstance(e, TurnMarker)]
    assert [(m.status, m.reason) for m in markers] == [("started", None), ("interrupted", "gone")]


def test_the_servers_tool_timeout_is_a_setting_with_todays_default() -> None:
    assert load_config({}, env={}).tool_timeout == 60.0
    assert load_config({"tool_timeout": "2.5"}, env={}).tool_timeout == 2.5
