"""Builders for realistic conversations: turns with parallel tool batches, used by tests and benchmarks."""

from __future__ import annotations

from contextfold import CompactionPolicy, Conversation, Model
from contextfold.events import (
    Event,
    Reasoning,
    TextPart,
    ToolCall,
    ToolResult,
    TurnMarker,
    TurnStatus,
    assistant,
    new_id,
    user,
)
from contextfold.runtime import TurnCompleted, TurnFailed, run_turn, turn_setup


def turn(
    text: str,
    *,
    batches: list[int] | None = None,
    output: str = "ok",
    tool_summary: str | None = None,
    reasoning: bool = False,
    answer: str = "done",
    status: TurnStatus | None = "completed",
    turn_id: str | None = None,
) -> list[Event]:
    """One turn's events: started, user input, parallel tool batches with results, the answer, the end marker.

    `status=None` leaves the turn open, as a crash would.
    """
    tid = turn_id or new_id("turn")
    events: list[Event] = [TurnMarker(status="started", turn_id=tid), user(text, turn_id=tid)]
    if reasoning:
        events.append(Reasoning(provider="openai", data={"encrypted_content": "xyz"}, text="thinking", turn_id=tid))
    for size in batches or []:
        batch = new_id("batch")
        calls = [
            ToolCall(call_id=new_id("call"), name="read", arguments='{"path": "a.py"}', batch_id=batch, turn_id=tid)
            for _ in range(size)
        ]
        events += calls
        events += [ToolResult(call_id=c.call_id, output=output, summary=tool_summary, turn_id=tid) for c in calls]
    if status is None:
        return events
    if status == "completed":
        events.append(assistant(answer, turn_id=tid))
    events.append(TurnMarker(status=status, turn_id=tid))
    return events


async def answer(
    conversation: Conversation,
    model: Model,
    *,
    budget: int,
    summariser: Model | None = None,
    policy: CompactionPolicy | None = None,
) -> str:
    """One turn of the runtime on `conversation` (compacting first if due; on a context-length refusal, one reactive
    compaction and one retry): the answer's text, or the error the turn failed with."""
    setup = turn_setup(
        conversation,
        model,
        budget=budget,
        reserved=512,
        policy=policy or CompactionPolicy(),
        summariser=summariser,
        max_steps=1,
        tool_timeout=10.0,
        context_window=None,
    )
    events = [event async for event in run_turn(setup, new_id("turn"), [TextPart("go on")])]
    outcome = events[-1]
    if isinstance(outcome, TurnFailed):
        assert outcome.exception is not None
        raise outcome.exception
    assert isinstance(outcome, TurnCompleted)
    return outcome.final_text
