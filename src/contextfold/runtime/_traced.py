"""A turn's events as spans: the turn, and each step inside it (current while it runs, so the upstream calls and
store round trips the step makes are its children). See `contextfold._tracing` for the tree and the attributes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any

from .. import _tracing as tracing
from ._events import (
    InferenceResult,
    StepCompleted,
    StepStarted,
    ToolExecutionResult,
    TurnCompleted,
    TurnEvent,
    TurnFailed,
)

if TYPE_CHECKING:
    from ._turn import TurnSetup


async def traced(setup: TurnSetup, turn_id: str, events: AsyncGenerator[TurnEvent, None]) -> AsyncIterator[TurnEvent]:
    attributes = {"turn_id": turn_id, "session_id": setup.session_id, "model": setup.model.name}
    with tracing.span("contextfold.turn", **attributes, budget=setup.budget) as turn:
        step: tuple[Any, object | None] | None = None
        try:
            # Closed with the wrapper, at once: the turn's own cleanup (its upstream stream) must not wait for GC.
            async with contextlib.aclosing(events) as inner:
                async for event in inner:
                    if isinstance(event, StepStarted):
                        opened = tracing.start(
                            "contextfold.step",
                            step_type=event.step_type,
                            step_id=event.step_id,
                            server_side=event.metadata.get("server_side"),
                        )
                        step = (opened, tracing.attach(opened))
                    elif isinstance(event, StepCompleted) and step is not None:
                        tracing.set_attributes(step[0], **_step_attributes(event))
                        tracing.detach(step[1])
                        step[0].end()
                        step = None
                    elif isinstance(event, TurnCompleted):
                        tracing.set_attributes(
                            turn,
                            outcome="completed",
                            steps=event.num_steps,
                            input_tokens=event.usage.input_tokens,
                            output_tokens=event.usage.output_tokens,
                            incomplete_reason=event.incomplete_reason,
                        )
                    elif isinstance(event, TurnFailed):
                        tracing.set_attributes(turn, outcome="failed", error_kind=event.error.kind)
                        tracing.fail(turn, event.exception or RuntimeError(event.error.message))
                    yield event
        finally:
            if step is not None:  # the turn was cut off (interrupted) inside a step
                tracing.set_attributes(step[0], outcome="interrupted")
                tracing.detach(step[1])
                step[0].end()


def _step_attributes(event: StepCompleted) -> dict[str, Any]:
    result = event.result
    if isinstance(result, InferenceResult):
        return {
            "input_tokens": result.usage.input_tokens,
            "output_tokens": result.usage.output_tokens,
            "stop_reason": result.stop_reason,
            "tool_calls": len(result.tool_calls),
            "error": result.error,
        }
    if isinstance(result, ToolExecutionResult):
        return {
            "tools": ",".join(c.name for c in result.calls),
            "tool_errors": sum(1 for r in result.results if r.is_error),
        }
    return {
        "compaction.compacted": result.compacted,
        "compaction.trigger": result.trigger,
        "compaction.strategy": result.strategy,
        "compaction.tokens_before": result.tokens_before,
        "compaction.tokens_after": result.tokens_after,
        "compaction.summary_length": result.summary_length,
        "compaction.error": result.error,
    }
