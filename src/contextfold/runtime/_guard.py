"""The guardrail hook of a turn: its input is checked before the model is called, its answer before it is stored.

    class TurnGuard(Protocol):
        checks_output: bool
        async def check_input(self, texts) -> Blocked | None
        async def check_output(self, text) -> Blocked | None

A blocked turn still completes: its answer is the refusal, stored with the input, and the turn is ended in the log
with status `blocked`, which takes the whole turn (the input, any steps before an output check, the refusal) out of
the view, so the model never reads the blocked words again, while the log and the inspector keep them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from .._conversation import Conversation
from ..events import Event, Message, TextPart, TokenUsage, ToolResult, TurnMarker, new_id, text_of
from ._events import InferenceResult, StepCompleted, StepProgress, StepStarted, TextDelta, TurnCompleted, TurnEvent


@dataclass(frozen=True, slots=True)
class Blocked:
    """A check's verdict against a turn: the answer to give instead, and why (kept on the turn's end marker)."""

    refusal: str
    reason: str


class TurnGuard(Protocol):
    checks_output: bool
    """Whether answers are checked: the server then holds an answer's deltas back until it has passed."""

    async def check_input(self, texts: Sequence[str]) -> Blocked | None: ...

    async def check_output(self, text: str) -> Blocked | None: ...


def input_texts(given: Sequence[Event]) -> list[str]:
    """What of a turn's input is checked: its messages' text and the tool outputs it carries."""
    return [t for e in given if isinstance(e, (Message, ToolResult)) and (t := text_of(e))]


async def blocked_turn(
    conv: Conversation,
    turn_id: str,
    blocked: Blocked,
    *,
    model: str,
    steps: int,
    used: TokenUsage,
    also: Sequence[Event] = (),
) -> AsyncIterator[TurnEvent]:
    """End the turn with the refusal as its answer (one inference-like step, so a stream shows it as a message);
    `also` are events to store with it (the usage of a model call whose answer was blocked)."""
    step_id, message_id = new_id("step"), new_id()
    yield StepStarted(step_id, "inference", turn_id, {"model": model, "guardrail": True})
    yield StepProgress(step_id, TextDelta(blocked.refusal, message_id))
    refusal = Message(id=message_id, role="assistant", content=[TextPart(blocked.refusal)], turn_id=turn_id)
    marker = TurnMarker(status="blocked", turn_id=turn_id, reason=blocked.reason)
    await conv.append(*also, refusal, marker)
    yield StepCompleted(step_id, "inference", InferenceResult(blocked.refusal, [], "content_filter", used, model))
    yield TurnCompleted(turn_id, blocked.refusal, steps + 1, used)
