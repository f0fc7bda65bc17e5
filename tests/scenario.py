"""Builders for realistic conversations: turns with parallel tool batches, used by tests and benchmarks."""

from __future__ import annotations

from contextfold.events import (
    Event,
    Reasoning,
    ToolCall,
    ToolResult,
    TurnMarker,
    TurnStatus,
    assistant,
    new_id,
    user,
)


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
