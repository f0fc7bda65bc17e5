"""The Anthropic Messages wire of the proxy: requests in (`parse_messages` and `canonical_anthropic`, in
`_messages_parse`), answers out. `MessagesAnswer` maps one turn's runtime events onto the Messages API's stream
events exactly as Anthropic sends them, and onto the one `message` body of a non-streamed answer; `anthropic_error`
gives our errors Anthropic's status codes and bodies.

    message_start                        the message with empty content (usage is only known at the end)
    content_block_start (text)           the first visible text; later steps' text continues it after a blank line
      content_block_delta (text_delta) ...
    content_block_stop                   when a tool_use block follows, or at the end
    content_block_start (tool_use)       a call of one of the client's tools: id, name, input {}
      content_block_delta (input_json_delta) ...
    content_block_stop
    message_delta                        stop_reason, usage (input and output tokens of every inference step)
    message_stop
  | error                                a failure mid-stream: {"type": "error", "error": {"type", "message"}}

Calls of `hidden` tools (the proxy's own recall/expand) and their results never reach the client, nor do compaction
steps. Visible blocks are numbered from 0 in the order they open; only one is open at a time, as in Anthropic's own
streams.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from ...runtime import (
    InferenceResult,
    StepCompleted,
    StepProgress,
    StepStarted,
    TextDelta,
    ToolCallDelta,
    ToolCallIssuedDelta,
    ToolCallStartedDelta,
    TurnCompleted,
    TurnEvent,
    TurnFailed,
)
from ...view._render import arguments_object
from ..edge._errors import ApiError, api_error
from ._messages_parse import canonical_anthropic, parse_messages

__all__ = ["MessagesAnswer", "anthropic_error", "canonical_anthropic", "parse_messages", "sse", "stop_reason"]

Event = dict[str, Any]

STEP_SEPARATOR = "\n\n"
"""Between the text of one inference step and the next one's, in the same text block."""


@dataclass(slots=True)
class _Block:
    """A visible content block: text, or a call of the client's tool."""

    index: int
    kind: Literal["text", "tool_use"]
    sent: list[str] = field(default_factory=list)
    """Text or argument JSON as streamed to the client."""
    call_id: str = ""
    name: str = ""
    received: list[str] = field(default_factory=list)
    """A call's argument pieces as the model wrote them (a piece for a block no longer open cannot be streamed)."""
    final: str | None = None
    """A call's arguments as the log holds them (from `ToolCallIssuedDelta`)."""

    def payload(self) -> dict[str, Any]:
        if self.kind == "text":
            return {"type": "text", "text": "".join(self.sent)}
        arguments = self.final if self.final is not None else "".join(self.received)
        return {"type": "tool_use", "id": self.call_id, "name": self.name, "input": arguments_object(arguments)}


class MessagesAnswer:
    """An `AnswerMapper` for the Messages API: runtime events in, Anthropic stream events and bodies out.

    One per answer. `hidden` names the tools the proxy runs itself (their calls and results are not shown).
    """

    def __init__(self, message_id: str, model: str, hidden: frozenset[str]) -> None:
        self.message_id = message_id
        self.model = model
        self.hidden = hidden
        self._blocks: list[_Block] = []
        self._open: _Block | None = None
        self._calls: dict[str, _Block] = {}  # call id -> block, for the client's own calls
        self._new_step = False  # an inference step started and has shown no text yet
        self._step_text: list[str] = []  # the text the current inference step has streamed
        self._input_tokens = 0
        self._output_tokens = 0
        self._stop_reason: str | None = None

    def start(self) -> list[Event]:
        return [{"type": "message_start", "message": self._message([], None)}]

    def map(self, event: TurnEvent) -> list[Event]:
        if isinstance(event, StepProgress):
            delta = event.delta
            if isinstance(delta, TextDelta):
                return self._text(delta)
            if isinstance(delta, ToolCallStartedDelta):
                return self._call_started(delta)
            if isinstance(delta, ToolCallDelta):
                return self._arguments(delta)
            if isinstance(delta, ToolCallIssuedDelta):
                return self._issued(delta)
        elif isinstance(event, StepStarted) and event.step_type == "inference":
            self._new_step = True
            self._step_text = []
        elif isinstance(event, StepCompleted) and isinstance(event.result, InferenceResult):
            return self._inference_done(event.result)
        return []

    def finish(self, outcome: TurnEvent | None) -> list[Event]:
        if not isinstance(outcome, TurnCompleted):
            return [anthropic_error(_failure(outcome))[1]]
        out = self._close()
        self._stop_reason = stop_reason(outcome)
        delta = {"stop_reason": self._stop_reason, "stop_sequence": None}
        out.append({"type": "message_delta", "delta": delta, "usage": self._usage()})
        out.append({"type": "message_stop"})
        return out

    def answer(self) -> dict[str, Any]:
        return self._message([block.payload() for block in self._blocks], self._stop_reason)

    def answer_key(self) -> bytes:
        return canonical_anthropic({"role": "assistant", "content": [block.payload() for block in self._blocks]})

    # --- blocks -----------------------------------------------------------------------------------------------------

    def _text(self, delta: TextDelta) -> list[Event]:
        if not delta.text:
            return []
        out: list[Event] = []
        text = delta.text
        block = self._open
        if block is None or block.kind != "text":
            out.extend(self._close())
            block = self._begin("text")
            out.append(_block_start(block.index, {"type": "text", "text": ""}))
        elif self._new_step and block.sent:
            text = STEP_SEPARATOR + text
        self._new_step = False
        self._step_text.append(delta.text)
        block.sent.append(text)
        out.append(_block_delta(block.index, {"type": "text_delta", "text": text}))
        return out

    def _inference_done(self, result: InferenceResult) -> list[Event]:
        """Count the step's usage; if its complete text extends what was streamed (an adapter that does not stream
        text), show the rest."""
        self._input_tokens += result.usage.input_tokens
        self._output_tokens += result.usage.output_tokens
        shown = "".join(self._step_text)
        if result.text == shown or not result.text.startswith(shown):
            return []
        return self._text(TextDelta(result.text[len(shown) :]))

    def _call_started(self, delta: ToolCallStartedDelta) -> list[Event]:
        if delta.tool_name in self.hidden or delta.call_id in self._calls:
            return []
        out = self._close()
        block = self._begin("tool_use")
        block.call_id, block.name = delta.call_id, delta.tool_name
        self._calls[delta.call_id] = block
        content = {"type": "tool_use", "id": delta.call_id, "name": delta.tool_name, "input": {}}
        out.append(_block_start(block.index, content))
        return out

    def _arguments(self, delta: ToolCallDelta) -> list[Event]:
        block = self._calls.get(delta.call_id)  # None for a hidden call
        if block is None or not delta.arguments_delta:
            return []
        block.received.append(delta.arguments_delta)
        if block is not self._open:
            return []
        block.sent.append(delta.arguments_delta)
        return [_block_delta(block.index, {"type": "input_json_delta", "partial_json": delta.arguments_delta})]

    def _issued(self, delta: ToolCallIssuedDelta) -> list[Event]:
        """The complete call. If its block is still open and the log holds more than was streamed (arguments sent
        whole at the end, a piece that arrived while another block was open), stream the rest."""
        block = self._calls.get(delta.call_id)
        if block is None:
            return []
        block.final = delta.arguments
        sent = "".join(block.sent)
        if block is not self._open or delta.arguments == sent or not delta.arguments.startswith(sent):
            return []
        rest = delta.arguments[len(sent) :]
        block.sent.append(rest)
        return [_block_delta(block.index, {"type": "input_json_delta", "partial_json": rest})]

    def _begin(self, kind: Literal["text", "tool_use"]) -> _Block:
        block = _Block(len(self._blocks), kind)
        self._blocks.append(block)
        self._open = block
        return block

    def _close(self) -> list[Event]:
        if self._open is None:
            return []
        index = self._open.index
        self._open = None
        return [{"type": "content_block_stop", "index": index}]

    # --- bodies -----------------------------------------------------------------------------------------------------

    def _usage(self) -> dict[str, int]:
        return {"input_tokens": self._input_tokens, "output_tokens": self._output_tokens}

    def _message(self, content: list[dict[str, Any]], stop: str | None) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": self._usage(),
        }


def _block_start(index: int, content: dict[str, Any]) -> Event:
    return {"type": "content_block_start", "index": index, "content_block": content}


def _block_delta(index: int, delta: dict[str, Any]) -> Event:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def stop_reason(done: TurnCompleted) -> str:
    """Calls awaiting the client -> tool_use; cut short by a limit -> max_tokens; filtered -> refusal; else
    end_turn."""
    if done.awaiting:
        return "tool_use"
    if done.incomplete_reason in ("max_output_tokens", "max_steps"):
        return "max_tokens"
    if done.incomplete_reason == "content_filter":
        return "refusal"
    return "end_turn"


def _failure(outcome: TurnEvent | None) -> ApiError:
    if isinstance(outcome, TurnFailed):
        if outcome.exception is not None:
            return api_error(outcome.exception)
        error = outcome.error
        return ApiError(500, "server_error", f"the turn failed ({error.kind}): {error.message}")
    return ApiError(500, "server_error", "the answer ended before it was complete")


# --- errors -------------------------------------------------------------------------------------------------------

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error(error: ApiError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and Anthropic error body for one of our errors:

        {"type": "error", "error": {"type": "invalid_request_error", "message": "messages[2].content: ..."}}

    The status is kept, except 503 (our database unavailable), which becomes 529 `overloaded_error`: Anthropic's
    "try again shortly", which its clients retry with backoff. An upstream failure (502) stays 502 `api_error` and
    an upstream timeout 504 `timeout_error` (both retried by the SDK, like every 5xx); a busy conversation (409) is
    `conflict_error`. Anthropic bodies have no `param`, so the message starts with it when it does not already.
    """
    status = 529 if error.status == 503 else error.status
    kind = _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    message = error.message
    if error.param and not message.startswith(error.param):
        message = f"{error.param}: {message}"
    return status, {"type": "error", "error": {"type": kind, "message": message}}


def sse(event: Event) -> bytes:
    """One SSE frame as Anthropic writes it: `event: <type>`, then the JSON `data:` line."""
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()
