"""The model seam: send a window, get a stream of text and tool-call chunks ending in one complete response.

Providers are split three ways (as pydantic-ai does):
- a `Model` per wire API (OpenAI Chat Completions, OpenAI Responses, Anthropic Messages, Gemini, Cohere, Bedrock
  Converse) renders the window, calls the SDK, and maps its stream and errors onto the types below;
- a provider object holds the credentials, base URL and the SDK client, built once and never mutated, so one client
  serves any number of concurrent turns;
- a `ModelProfile` says what the model can do: its context window, its output limit, its quirks.

A stream yields `TextChunk`, `ToolCallStart` and `ToolCallChunk` as the provider sends them and always ends with
`ResponseDone`, whose `ModelResponse` is the whole answer (text, tool calls with full arguments, usage, stop reason).
A stream that ends without it raises `ModelResponseError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeGuard

from ..view import Window

StopReason = Literal["stop", "tool_calls", "length", "content_filter", "error"]


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    call_id: str
    name: str
    arguments: str
    """The arguments as the model wrote them: a JSON object, as text."""


@dataclass(frozen=True, slots=True)
class ReasoningBlock:
    """Opaque reasoning state of a provider (encrypted content, signed thinking), to send back to it unchanged."""

    provider: str
    data: dict[str, Any] = field(default_factory=dict)
    text: str | None = None


@dataclass(frozen=True, slots=True)
class ModelResponse:
    text: str = ""
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    stop_reason: StopReason = "stop"
    reasoning: list[ReasoningBlock] = field(default_factory=list)
    model: str | None = None
    """The model that answered, as the provider named it (may differ from the one asked for)."""


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """Per-request settings. The runtime fills `max_output_tokens` from the session, the profile or the window."""

    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    timeout: float | None = None
    tool_choice: Literal["auto", "none", "required"] | None = None
    parallel_tool_calls: bool | None = None
    extra: Mapping[str, Any] | None = None
    """Parameters of the provider's wire format sent as they are, beside the ones the adapter sets (the proxy
    passes its client's own: `stop`, `seed`, `response_format`...). The adapter's messages and tools win."""
    first_byte_timeout: float | None = None
    """Seconds each attempt may take to produce its first chunk; one that sends nothing by then is abandoned as
    timed out (and retried while the deadline allows). None: only the SDK's own timeout applies."""
    deadline: float | None = None
    """A `time.monotonic()` instant by which the whole answer must be in, across every retry: past it the call
    fails as timed out and nothing is retried (the server sets it from the upstream's `turn_timeout`)."""
    api_key: str | None = field(default=None, repr=False)  # kept out of logs and tracebacks
    """A key sent with this request in place of the provider's (the proxy forwarding its client's key); the shared
    client is not changed. The OpenAI and Anthropic adapters send it (the server forwards keys only to those)."""


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """What a model can do. `context_window` and `max_output_tokens` are in tokens; None means unknown."""

    context_window: int | None = None
    max_output_tokens: int | None = None
    parallel_tool_calls: bool = True
    system_role: Literal["system", "developer"] = "system"


# --- stream events ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextChunk:
    text: str
    type: Literal["text"] = "text"


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    """The model began a tool call. `index` orders the calls of one response; later chunks refer to it."""

    index: int
    call_id: str
    name: str
    type: Literal["tool_call_start"] = "tool_call_start"


@dataclass(frozen=True, slots=True)
class ToolCallChunk:
    index: int
    arguments: str
    """The next piece of the call's JSON arguments."""
    type: Literal["tool_call_chunk"] = "tool_call_chunk"


@dataclass(frozen=True, slots=True)
class ResponseDone:
    response: ModelResponse
    type: Literal["done"] = "done"


StreamEvent = TextChunk | ToolCallStart | ToolCallChunk | ResponseDone


class Model(Protocol):
    """Anything that answers a window. Errors are `ModelError` subclasses (e.g. `ContextLengthError`)."""

    @property
    def name(self) -> str: ...

    @property
    def profile(self) -> ModelProfile: ...

    def stream(self, window: Window, settings: ModelSettings) -> AsyncIterator[StreamEvent]: ...

    async def request(self, window: Window, settings: ModelSettings) -> ModelResponse: ...


class ChecksGrammar(Protocol):
    """A model that can say what in the payload it would send for a window breaks its provider's grammar (invariant
    6); the runtime asks before every request, and repairs what it is told rather than send it."""

    def violations(self, window: Window) -> list[str]: ...


def checks_grammar(model: object) -> TypeGuard[ChecksGrammar]:
    return callable(getattr(model, "violations", None))


class ReportsContextWindow(Protocol):
    """A model whose server can say how long its context window is (vLLM's `max_model_len`, for example)."""

    async def upstream_context_window(self) -> int | None: ...


def reports_context_window(model: object) -> TypeGuard[ReportsContextWindow]:
    return callable(getattr(model, "upstream_context_window", None))
