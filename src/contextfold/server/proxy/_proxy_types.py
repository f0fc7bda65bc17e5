"""What the proxy's two wire formats (OpenAI Chat Completions, Anthropic Messages) reduce a request to.

A client that keeps its own history resends all of it on every request. Each wire module parses a request into a
`ProxyRequest`: the leading instructions, then one `ClientMessage` per message the client sent, each with its
canonical `key` (what the proxy hashes to find the stored conversation) and the events it becomes in the log if it
turns out to be new. Which messages are new is decided by the proxy (`_proxy_match`), not by the wire module.

The wire modules also map the runtime's turn events back onto their stream format; `AnswerMapper` is the shape the
proxy drives them through.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import msgspec

from ...events import Event, ToolSpec
from ...models import ModelSettings
from ...runtime import TurnEvent

Wire = Literal["openai-chat", "anthropic"]


class ClientMessage(msgspec.Struct, frozen=True):
    """One message as the client sent it (a struct, not a dataclass: a request makes one per message of its
    history, and a frozen dataclass's `__init__` was a third of a 400 KB history's parse)."""

    key: bytes
    """Canonical bytes: equal for the same message however the client spells it (a string or a list of text
    parts, `null` or empty content, key order, cache-control markers, whitespace in tool-call arguments)."""
    build: Callable[[], tuple[Event, ...]]
    """Makes `events`. Only a request's new messages become events (usually the last one or two of hundreds),
    so a wire may defer the work; the message must be fully validated when it is parsed all the same."""
    role: str
    """The client's role for it: system, developer, user, assistant or tool."""

    @property
    def events(self) -> tuple[Event, ...]:
        """What the message becomes in the log if it is new: a `Message`, the `ToolCall`s of one batch (sharing a
        `batch_id`), `ToolResult`s, `Reasoning` blocks; in the order the model produced or will read them. A
        deferred build makes new events (new ids) on each access."""
        return self.build()


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    wire: Wire
    model: str
    system_prompt: str | None
    """The leading instructions, verbatim (Chat: the leading system/developer messages, joined by a blank line;
    Anthropic: `system`). Instructions later in the history are `ClientMessage`s of role system."""
    messages: tuple[ClientMessage, ...]
    """Everything after the leading instructions, in order."""
    tools: tuple[ToolSpec, ...] | None
    settings: ModelSettings
    """temperature, top_p, tool_choice (when it is auto/none/required), parallel_tool_calls."""
    max_output_tokens: int | None
    stream: bool
    include_usage: bool = False
    """Chat only: `stream_options.include_usage`, a final chunk with the usage."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Other parameters of the client's wire format (stop, seed, response_format, a named tool choice, metadata,
    top_k, ...), passed through only to an upstream that speaks the same wire format."""


class AnswerMapper(Protocol):
    """Turns one turn's runtime events into the client's wire format.

    Calls of `hidden` tools (the proxy's own recall/expand) never reach the client: neither their deltas nor their
    results; the client's own tool calls are numbered from 0 as the client sees them. Text deltas are passed on as
    they come (a later step's text after an earlier step's text is separated by a blank line).
    """

    def start(self) -> list[dict[str, Any]]:
        """The stream's opening events (Anthropic: message_start; Chat: nothing, the role rides on the first delta)."""
        ...

    def map(self, event: TurnEvent) -> list[dict[str, Any]]:
        """Stream events for one runtime event (often none)."""
        ...

    def finish(self, outcome: TurnEvent | None) -> list[dict[str, Any]]:
        """The closing events for a `TurnCompleted` (finish/stop reason, usage) or a failure (`TurnFailed`, None):
        an error event in the wire's format."""
        ...

    def answer(self) -> dict[str, Any]:
        """The whole answer as one non-streamed response body (a `chat.completion` or an Anthropic `message`)."""
        ...

    def answer_key(self) -> bytes:
        """The canonical key of the assistant message as the client will send it back next time: what it was
        shown (all visible text, its own tool calls), reduced as the wire's parser reduces a client message."""
        ...


# --- the request bodies, as the OpenAPI document describes them --------------------------------------------------
# The routes read their bodies themselves (the wire modules name every bad field); these schemas only describe
# them, so the document (and the fuzzing built on it) knows what the routes take. Unknown fields are allowed: the
# proxy forwards them to an upstream of the same wire.

_PARTS: dict[str, Any] = {"type": "array", "items": {"type": "object"}}

CHAT_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role"],
                "properties": {
                    "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
                    "content": {"anyOf": [{"type": "string"}, _PARTS, {"type": "null"}]},
                    "tool_calls": _PARTS,
                    "tool_call_id": {"type": "string"},
                },
            },
        },
        "stream": {"type": "boolean"},
        "stream_options": {"type": "object"},
        "max_tokens": {"type": "integer", "minimum": 1},
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "tools": _PARTS,
        "parallel_tool_calls": {"type": "boolean"},
        "n": {"enum": [1]},
    },
}
"""`POST /v1/chat/completions`: OpenAI's Chat Completions request."""

MESSAGES_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["model", "max_tokens", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "max_tokens": {"type": "integer", "minimum": 1},
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"enum": ["user", "assistant"]},
                    "content": {"anyOf": [{"type": "string"}, _PARTS]},
                },
            },
        },
        "system": {"anyOf": [{"type": "string"}, _PARTS]},
        "stream": {"type": "boolean"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "tools": _PARTS,
        "tool_choice": {"type": "object"},
    },
}
"""`POST /v1/messages`: Anthropic's Messages request."""


def request_body(schema: dict[str, Any]) -> dict[str, Any]:
    """A route's `openapi_extra` describing its JSON body."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
