"""The OpenAI Chat Completions wire of the proxy: requests in (`parse_chat`, in `_chat_parse`), answers out.

`ChatAnswer` maps one turn's runtime events onto `chat.completion.chunk`s exactly as OpenAI streams them, and onto
the one `chat.completion` body of a non-streamed answer:

    {"delta": {"role": "assistant", "content": ""}}       before the first thing the client is shown
    {"delta": {"content": "..."}} ...                      text as the upstream streams it
    {"delta": {"tool_calls": [{"index", "id", "type", "function": {"name", "arguments": ""}}]}}
    {"delta": {"tool_calls": [{"index", "function": {"arguments": "..."}}]}} ...
    {"delta": {}, "finish_reason": "stop" | "tool_calls" | "length" | "content_filter"}
    {"choices": [], "usage": {...}}                        with stream_options.include_usage
    data: [DONE]                                           (`SSE_DONE`, written by the caller)

The client sees one assistant message per turn. Calls of `hidden` tools (the proxy's own recall/expand), their
results, tool execution and compaction steps give nothing; the text of every inference step is shown, a later
step's text after a blank line; the client's own calls are numbered from 0 across the turn. Nothing is sent before
the first visible output, so a turn that fails early can still be answered with an HTTP error.

What the client is shown is what it will send back next time, so the answer (streamed or not) is built from what
was streamed: if the upstream's complete answer extends what was streamed (an adapter that does not stream text or
arguments), the rest is sent when the answer completes; `answer_key` is `canonical_chat` of that message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

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
from ..edge._errors import api_error
from ._chat_parse import canonical_chat, parse_chat

__all__ = ["SSE_DONE", "ChatAnswer", "canonical_chat", "parse_chat", "sse"]

Chunk = dict[str, Any]

SSE_DONE = b"data: [DONE]\n\n"
"""The last frame of a chat completion stream."""


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event frame: `data: {compact JSON}` and a blank line (chat streams name no event type)."""
    return b"data: " + msgspec.json.encode(event) + b"\n\n"


@dataclass(slots=True)
class _Call:
    index: int
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)


class ChatAnswer:
    """Turns one turn's runtime events into Chat Completions chunks and body (an `AnswerMapper`). One per turn."""

    def __init__(self, response_id: str, model: str, created: int, hidden: frozenset[str], include_usage: bool) -> None:
        self.response_id = response_id
        self.model = model
        self.created = created
        self.hidden = hidden
        self.include_usage = include_usage
        self._text: list[str] = []  # every piece of text shown, separators included
        self._text_step: str | None = None  # the inference step whose text was shown last
        self._step_text: list[str] = []  # the text streamed by the current inference step
        self._calls: dict[str, _Call] = {}  # visible call id -> call, in the order shown
        self._role_sent = False
        self._prompt_tokens = 0
        self._completion_tokens = 0
        self._finish_reason: str | None = None

    # --- AnswerMapper -------------------------------------------------------------------------------------------

    def start(self) -> list[Chunk]:
        return []  # the role rides on the first delta

    def map(self, event: TurnEvent) -> list[Chunk]:
        if isinstance(event, StepProgress):
            delta = event.delta
            if isinstance(delta, TextDelta):
                return self._show_text(event.step_id, delta.text)
            if isinstance(delta, ToolCallStartedDelta):
                return self._start_call(delta.call_id, delta.tool_name)
            if isinstance(delta, ToolCallDelta):
                call = self._calls.get(delta.call_id)
                return self._arguments(call, delta.arguments_delta) if call is not None else []
            if isinstance(delta, ToolCallIssuedDelta):
                return self._issued(delta)
            return []  # a tool's result: the client ran its own tools, and never sees the hidden ones
        if isinstance(event, StepStarted) and event.step_type == "inference":
            self._step_text = []
        elif isinstance(event, StepCompleted) and isinstance(event.result, InferenceResult):
            return self._inference_done(event.step_id, event.result)
        return []

    def finish(self, outcome: TurnEvent | None) -> list[Chunk]:
        if isinstance(outcome, TurnCompleted):
            self._finish_reason = _finish_reason(outcome)
            out = self._chunks({}, self._finish_reason)
            if self.include_usage:
                out.append({**self._envelope(), "choices": [], "usage": self._usage()})
            return out
        if isinstance(outcome, TurnFailed) and outcome.exception is not None:
            return [api_error(outcome.exception).body()]
        message = outcome.error.message if isinstance(outcome, TurnFailed) else "the turn ended without an answer"
        return [{"error": {"message": message, "type": "server_error", "param": None, "code": None}}]

    def answer(self) -> dict[str, Any]:
        return {
            **self._envelope(),
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": self._message(),
                    "logprobs": None,
                    "finish_reason": self._finish_reason or "stop",
                }
            ],
            "usage": self._usage(),
        }

    def answer_key(self) -> bytes:
        return canonical_chat(self._message())

    # --- text -----------------------------------------------------------------------------------------------------

    def _show_text(self, step_id: str, text: str) -> list[Chunk]:
        if not text:
            return []
        self._step_text.append(text)
        if self._text and self._text_step != step_id:  # a later step's text: one message, paragraphs apart
            text = "\n\n" + text
        self._text_step = step_id
        self._text.append(text)
        return self._chunks({"content": text})

    def _inference_done(self, step_id: str, result: InferenceResult) -> list[Chunk]:
        self._prompt_tokens += result.usage.input_tokens
        self._completion_tokens += result.usage.output_tokens
        streamed = "".join(self._step_text)
        if result.error is None and result.text.startswith(streamed):
            return self._show_text(step_id, result.text[len(streamed) :])
        return []

    # --- tool calls -----------------------------------------------------------------------------------------------

    def _start_call(self, call_id: str, name: str) -> list[Chunk]:
        if name in self.hidden or call_id in self._calls:
            return []
        call = self._calls[call_id] = _Call(len(self._calls), call_id, name)
        function = {"name": name, "arguments": ""}
        return self._chunks(
            {"tool_calls": [{"index": call.index, "id": call_id, "type": "function", "function": function}]}
        )

    def _arguments(self, call: _Call, piece: str) -> list[Chunk]:
        if not piece:
            return []
        call.arguments.append(piece)
        return self._chunks({"tool_calls": [{"index": call.index, "function": {"arguments": piece}}]})

    def _issued(self, delta: ToolCallIssuedDelta) -> list[Chunk]:
        """The complete call: show it if it was never started, and whatever of its arguments was not streamed."""
        out = [] if delta.call_id in self._calls else self._start_call(delta.call_id, delta.tool_name)
        call = self._calls.get(delta.call_id)
        if call is not None:
            streamed = "".join(call.arguments)
            if delta.arguments.startswith(streamed):
                out += self._arguments(call, delta.arguments[len(streamed) :])
        return out

    # --- shapes ---------------------------------------------------------------------------------------------------

    def _envelope(self) -> Chunk:
        return {"id": self.response_id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}

    def _chunks(self, delta: dict[str, Any], finish_reason: str | None = None) -> list[Chunk]:
        """The chunk for `delta`, after the opening role chunk if this is the first thing shown."""
        out: list[Chunk] = []
        if not self._role_sent:
            self._role_sent = True
            out.append(self._chunk({"role": "assistant", "content": ""}, None))
        out.append(self._chunk(delta, finish_reason))
        return out

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None) -> Chunk:
        chunk = {
            **self._envelope(),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self.include_usage:  # OpenAI marks every chunk but the last as having no usage
            chunk["usage"] = None
        return chunk

    def _message(self) -> dict[str, Any]:
        """The assistant message as the client was shown it."""
        text = "".join(self._text)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text or (None if self._calls else ""),
            "refusal": None,
            "annotations": [],
        }
        if self._calls:
            message["tool_calls"] = [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": "".join(call.arguments)},
                }
                for call in self._calls.values()
            ]
        return message

    def _usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self._prompt_tokens,
            "completion_tokens": self._completion_tokens,
            "total_tokens": self._prompt_tokens + self._completion_tokens,
        }


def _finish_reason(completed: TurnCompleted) -> str:
    if completed.awaiting:
        return "tool_calls"
    reason = completed.incomplete_reason
    if reason in ("max_output_tokens", "max_steps"):
        return "length"
    if reason == "content_filter":
        return "content_filter"
    return "stop"
