"""A turn's events on a terminal: the answer's text as it streams, one short line for everything else.

    printer = EventPrinter()
    async for event in session.stream("Fix the build."):
        printer.print(event)
    # or: last = await printer.print_stream(session.stream("Fix the build."))

The answer goes to `out` (stdout), delta by delta and flushed, so a pipe reads only answers; steps (compaction,
tool calls and their results, server-side tools) and failures go to `err` (stderr), dim on a terminal. It works the
same for an in-process `Session` and a `RemoteSession`, and `contextfold chat` prints with it. Subclass and override
`text`, `note` and `error` to print elsewhere, or `describe_call` to say something else of a call the turn
ended on (a deferred call, whose result is the next input).
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterable
from typing import TextIO

from ..compaction import CompactionResult
from ._events import (
    StepCompleted,
    StepProgress,
    StepStarted,
    TextDelta,
    ToolCallCompletedDelta,
    ToolCallIssuedDelta,
    TurnCompleted,
    TurnEvent,
    TurnFailed,
)

_DIM, _RED, _RESET = "\x1b[2m", "\x1b[31m", "\x1b[0m"


class EventPrinter:
    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, *, color: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.color = self.err.isatty() if color is None else color
        self.mid_line = False
        """The answer's text has no newline at its end yet."""
        self._server_side: set[str] = set()  # step ids of tool steps the server ran
        self._arguments: dict[str, tuple[str, str]] = {}  # call id -> (tool name, arguments)

    async def print_stream(self, events: AsyncIterable[TurnEvent]) -> TurnEvent | None:
        """Print every event of a turn; returns the last (TurnCompleted or TurnFailed)."""
        last: TurnEvent | None = None
        async for event in events:
            self.print(event)
            last = event
        return last

    def print(self, event: TurnEvent) -> None:
        if isinstance(event, StepProgress):
            delta = event.delta
            if isinstance(delta, TextDelta):
                if delta.text:
                    self.text(delta.text)
                    self.mid_line = not delta.text.endswith("\n")
            elif isinstance(delta, ToolCallIssuedDelta):
                self._arguments[delta.call_id] = (delta.tool_name, delta.arguments)
            elif isinstance(delta, ToolCallCompletedDelta):
                self._completed(event.step_id, delta)
        elif isinstance(event, StepStarted):
            if event.step_type == "compaction":
                self._note("(compacting the conversation…)")
            elif event.step_type == "tool_execution" and event.metadata.get("server_side"):
                self._server_side.add(event.step_id)
        elif isinstance(event, StepCompleted):
            self._step_completed(event)
        elif isinstance(event, TurnCompleted):
            if event.incomplete_reason:
                self._note(f"(the answer is incomplete: {event.incomplete_reason})")
            for call in event.awaiting:
                self._note(self.describe_call(call.name, call.arguments))
            self.end_line()
        elif isinstance(event, TurnFailed):
            self.end_line()
            self.error(f"{event.error.message} ({event.error.kind})")

    def _step_completed(self, event: StepCompleted) -> None:
        result = event.result
        if isinstance(result, CompactionResult):
            if result.compacted and result.tokens_before:
                how = f"{result.strategy or 'compaction'}, {result.trigger}"
                self._note(f"(compacted: {how}: {result.tokens_before:,} → {result.tokens_after:,} tokens)")
            if result.error:
                self._note(f"(the summariser failed, a deterministic digest stands in: {result.error})")

    def _completed(self, step_id: str, delta: ToolCallCompletedDelta) -> None:
        name, arguments = self._arguments.pop(delta.call_id, (delta.tool_name, ""))
        outcome = "failed" if delta.is_error else f"{len(delta.result)} characters back"
        where = "server tool" if step_id in self._server_side else "tool"
        self._note(f"({where} {name}({short(arguments)}): {outcome})")

    def describe_call(self, name: str, arguments: str) -> str:
        """The line for a call the turn ended on, whose result the caller sends as the next input."""
        return f"(the model called {name}({short(arguments)}): its result is awaited as the next input)"

    # --- where it goes ------------------------------------------------------------------------------------------

    def text(self, delta: str) -> None:
        self.out.write(delta)
        self.out.flush()  # each delta as it arrives, even into a pipe

    def note(self, message: str) -> None:
        self.err.write(f"{_DIM}{message}{_RESET}\n" if self.color else f"{message}\n")
        self.err.flush()

    def error(self, message: str) -> None:
        self.err.write(f"{_RED}error: {message}{_RESET}\n" if self.color else f"error: {message}\n")
        self.err.flush()

    def _note(self, message: str) -> None:
        self.end_line()
        self.note(message)

    def end_line(self) -> None:
        if self.mid_line:
            self.text("\n")
            self.mid_line = False


def short(arguments: str, limit: int = 80) -> str:
    """A call's JSON arguments on one line, clipped."""
    try:
        text = json.dumps(json.loads(arguments), ensure_ascii=False)
    except ValueError:
        text = arguments
    return text if len(text) <= limit else text[: limit - 1] + "…"
