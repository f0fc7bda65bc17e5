"""One turn of `contextfold chat`: send the user's line, print the answer's text as it streams, and say what else
happened in the turn (a compaction, the server's own recall, a tool call the chat cannot run, a failure).

The answer's text goes to stdout, delta by delta, flushed; everything else is a dim line on stderr, so a script
piping the chat reads only answers. Ctrl-C while an answer streams closes the stream: the server sees the client
go away, cancels the turn and marks it interrupted in the log; the chat goes back to the prompt.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from openai.types.responses import (
    ResponseErrorEvent,
    ResponseFailedEvent,
    ResponseIncompleteEvent,
    ResponseInputParam,
    ResponseOutputItemDoneEvent,
    ResponseStreamEvent,
)
from rich.console import Console

from ..events import TokenUsage
from ..runtime import EventPrinter, StepProgress, ToolCallIssuedDelta, TurnCompleted
from ..runtime._printer import short
from ..runtime._remote_events import CompactionDone, ResponseTranslator
from ._chat_client import ChatServer, ServerError

NO_TOOLS = "not run: this chat client (contextfold chat) has no tools; answer without them"
"""The output the chat sends back for a function call the model made: the call must be answered before the
conversation can go on, and this says why it was not run."""


@dataclass(slots=True)
class ChatState:
    """What the chat remembers between lines: the conversation, and what it last saw of it."""

    conversation_id: str
    model: str | None = None
    instructions: str | None = None
    compactions: int = 0
    """Compactions the conversation had at the last status line: more at the next one means one ran in between."""
    unanswered: list[str] = field(default_factory=list)
    """Call ids of function calls the model made, answered with `NO_TOOLS` along with the next line."""


@dataclass(frozen=True, slots=True)
class Ui:
    """Where the chat prints: `out` for results, `err` for notes, hints and errors."""

    out: Console
    err: Console

    def text(self, delta: str) -> None:
        sys.stdout.write(delta)
        sys.stdout.flush()  # each delta as it arrives, even into a pipe

    def say(self, message: str) -> None:
        """A result (on stdout), as it is: no markup, no wrapping."""
        self.out.print(message, markup=False, highlight=False, soft_wrap=True)

    def note(self, message: str) -> None:
        self.err.print(message, style="dim", markup=False, highlight=False, soft_wrap=True)

    def error(self, message: str) -> None:
        self.err.print(f"error: {message}", style="red", markup=False, highlight=False, soft_wrap=True)


@dataclass(frozen=True, slots=True)
class TurnResult:
    ok: bool
    """The answer completed."""
    streamed: bool
    """The server took the message and the stream ran to its end (completed, or failed upstream)."""


def run_turn(server: ChatServer, state: ChatState, line: str, ui: Ui) -> TurnResult:
    """Send `line` as the user's message and print the answer as it streams."""
    items: ResponseInputParam = [
        {"type": "function_call_output", "call_id": call_id, "output": NO_TOOLS} for call_id in state.unanswered
    ]
    if state.unanswered:
        count = len(state.unanswered)
        ui.note(f"(answering the model's {count} pending tool call{'s' if count > 1 else ''}: not run, no tools here)")
    items.append({"role": "user", "content": line})
    printer = _Printer(ui)
    try:
        with server.translated():
            stream = server.stream(state.conversation_id, items, model=state.model, instructions=state.instructions)
            state.unanswered = []  # the request took them
            with stream:  # leaving it closes the connection, which cancels the turn on the server
                for event in stream:
                    printer.show(event)
    except KeyboardInterrupt:
        printer.end_line()
        ui.note("(answer stopped: the server marks the turn interrupted)")
        return TurnResult(ok=False, streamed=False)
    except ServerError as exc:
        printer.end_line()
        ui.error(str(exc))
        return TurnResult(ok=False, streamed=False)
    printer.end_line()
    state.unanswered = printer.calls
    return TurnResult(ok=printer.failure is None, streamed=True)


class _ChatPrinter(EventPrinter):
    """The library's event printer, writing where the chat writes."""

    def __init__(self, ui: Ui) -> None:
        super().__init__(sys.stdout, sys.stderr, color=False)
        self.ui = ui

    def text(self, delta: str) -> None:
        self.ui.text(delta)

    def note(self, message: str) -> None:
        self.ui.note(message)

    def error(self, message: str) -> None:
        self.ui.error(message)


class _Printer:
    """Prints one response's stream events as they come: read back as the runtime's turn and step events (as a
    `RemoteSession` reads them) and printed by the library's `EventPrinter`."""

    def __init__(self, ui: Ui) -> None:
        self.printer = _ChatPrinter(ui)
        self.read = ResponseTranslator("chat")
        self.calls: list[str] = []
        self.failure: str | None = None

    def show(self, event: ResponseStreamEvent) -> None:
        if isinstance(event, ResponseErrorEvent):
            self._failed(f"{event.message}{f' ({event.code})' if event.code else ''}")
            return
        for out in self.read.feed(event):
            if isinstance(out, CompactionDone):
                continue  # the status line after the turn says what the compaction did
            client = isinstance(event, ResponseOutputItemDoneEvent)  # a server tool's call is issued otherwise
            if isinstance(out, StepProgress) and isinstance(out.delta, ToolCallIssuedDelta) and client:
                self._client_call(out.delta)
            self.printer.print(out)
        if self.read.status == "incomplete" and isinstance(event, ResponseIncompleteEvent):
            self.printer.print(TurnCompleted("chat", "", 0, TokenUsage(), self.read.incomplete_reason or "cut off"))
        elif self.read.status == "failed" and isinstance(event, ResponseFailedEvent):
            code, message = self.read.error or ("server_error", "the response failed")
            self._failed(f"{message} ({code})")

    def _client_call(self, call: ToolCallIssuedDelta) -> None:
        self.calls.append(call.call_id)
        self.printer.end_line()
        self.printer.ui.note(
            f"(the model called {call.tool_name}({short(call.arguments)}): this chat has no tools, so it was not "
            "run; the model is told so with your next message)"
        )

    def _failed(self, message: str) -> None:
        self.failure = message
        self.printer.end_line()
        self.printer.ui.error(message)

    def end_line(self) -> None:
        self.printer.end_line()
