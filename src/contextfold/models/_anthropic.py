"""Anthropic Messages adapter: a window in, the raw `messages.create(stream=True)` SSE events out as stream events.

Why raw events rather than the SDK's `messages.stream()` helper: the helper accumulates the whole message itself;
we only need the deltas, and mapping the few raw event types keeps every chunk (text, each tool call's partial JSON)
flowing to the caller the moment it arrives.

The provider owns one `AsyncAnthropic` client (SDK retries off: `StreamingModel` retries) shared by every model
and every concurrent turn; per-request options (the timeout) go as call arguments, never onto the client.

Thinking blocks come back as `ReasoningBlock(provider="anthropic", data={"type": "thinking", "thinking",
"signature"})` (or `{"type": "redacted_thinking", "data"}`), the shape `render_anthropic` passes back verbatim.
Sampling parameters are not sent: SDK 2.x dropped `temperature`, and API version 2026-10-21 refuses it with a 400.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import httpx2
from anthropic import APIConnectionError, APIStatusError, AsyncAnthropic, not_given, omit
from anthropic.types import (
    InputJSONDelta,
    MessageParam,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
    RedactedThinkingBlock,
    SignatureDelta,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolChoiceAnyParam,
    ToolChoiceAutoParam,
    ToolChoiceNoneParam,
    ToolChoiceParam,
    ToolParam,
    ToolUseBlock,
)

from .._errors import ConfigurationError, ContextLengthError, ModelError, ModelResponseError, ModelUnavailableError
from ..view import Window
from ..view._grammar import validate_anthropic
from ..view._render import render_anthropic
from ._base import ResponseBuilder, RetryPolicy, StreamingModel, connection_lost, error_for_status
from ._protocol import (
    ModelProfile,
    ModelSettings,
    ReasoningBlock,
    StopReason,
    StreamEvent,
    TextChunk,
    ToolCallChunk,
    ToolCallStart,
)
from ._rendered import Rendered

PROVIDER = "anthropic"
DEFAULT_MAX_TOKENS = 4096
"""The Messages API requires `max_tokens`; used when neither settings, window nor profile give one."""

_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}

# The HTTP status each Anthropic error type comes with, to classify an `error` event sent mid-stream (the HTTP
# status of that response was 200) exactly as the same error would be as an HTTP answer.
_ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicProvider:
    """Credentials, base URL and the one SDK client every `AnthropicModel` of this provider shares."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        client: AsyncAnthropic | None = None,
        timeout: float = 600,
    ) -> None:
        if client is not None:
            # A copy (the caller's client is left as it is) with the SDK's retries off: ours retry.
            self.client = client.with_options(max_retries=0)
            self._owns_client = False
            return
        key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise ConfigurationError("Anthropic needs an API key: pass api_key= or set ANTHROPIC_API_KEY")
        self.client = AsyncAnthropic(api_key=key, base_url=base_url, timeout=timeout, max_retries=0)
        self._owns_client = True

    async def aclose(self) -> None:
        """Close the client if this provider created it (a client passed in belongs to the caller)."""
        if self._owns_client:
            await self.client.close()


class AnthropicModel(StreamingModel):
    """A Claude model over the Messages API, always streamed (`request` collects the stream)."""

    provider_name = PROVIDER

    def __init__(
        self,
        name: str,
        provider: AnthropicProvider,
        *,
        profile: ModelProfile | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(name, profile=profile, retry=retry)
        self._rendered = Rendered(render_anthropic)
        self.provider = provider

    def max_tokens(self, window: Window, settings: ModelSettings) -> int:
        """The Messages API requires a limit: the settings', the window's, the profile's, or 4096."""
        return (
            settings.max_output_tokens
            or window.max_output_tokens
            or self.profile.max_output_tokens
            or DEFAULT_MAX_TOKENS
        )

    def violations(self, window: Window) -> list[str]:
        """What breaks the Messages grammar in the messages this model would send (the runtime's send check)."""
        return self._rendered.check(window, lambda payload: validate_anthropic(payload[1]))

    async def _stream_once(self, window: Window, settings: ModelSettings) -> AsyncIterator[StreamEvent]:
        system, messages = self._rendered.take(window)
        tools = _tools(window)
        choice = _tool_choice(settings) if tools else None
        state = _StreamState()
        try:
            stream = await self.provider.client.messages.create(
                model=self.name,
                max_tokens=self.max_tokens(window, settings),
                # The renderer's plain dicts are in the API's shape; the SDK types them as TypedDicts.
                messages=cast("list[MessageParam]", messages),
                system=system or omit,
                tools=tools or omit,
                tool_choice=choice or omit,
                stream=True,
                timeout=settings.timeout if settings.timeout is not None else not_given,
                extra_body=dict(settings.extra) if settings.extra else None,
                extra_headers={"x-api-key": settings.api_key} if settings.api_key else None,
            )
        except APIStatusError as error:
            raise _status_error(error) from error
        except APIConnectionError as error:
            raise ModelUnavailableError(f"anthropic could not be reached: {error}", provider=PROVIDER) from error
        async with stream:
            try:
                async for event in stream:
                    for out in state.handle(event):
                        state.yielded = True
                        yield out
                    if state.finished:
                        yield state.done()
                        return
            except APIStatusError as error:  # an `error` event in the stream
                raise _status_error(error) from error
            except ValueError as error:  # an event whose data is not JSON
                raise ModelResponseError(
                    f"anthropic sent a malformed stream event: {error}", provider=PROVIDER
                ) from error
            except (httpx2.TransportError, APIConnectionError) as error:
                raise connection_lost(PROVIDER, str(error), streamed=state.yielded) from error
        # The body ended cleanly but incomplete (or was not an event stream at all): an unusable answer.
        raise ModelResponseError("anthropic stream ended before message_stop", provider=PROVIDER)


class _StreamState:
    """What one streamed message has said so far: maps raw events to stream events and builds the response."""

    def __init__(self) -> None:
        self.builder = ResponseBuilder()
        self.yielded = False
        self.finished = False
        self.tool_index: dict[int, int] = {}  # content block index -> index among the tool calls
        self.thinking: dict[int, dict[str, str]] = {}  # content block index -> thinking block so far
        self.reasoning: list[ReasoningBlock] = []
        self.usage: dict[str, int] = {}
        self.stop_reason: StopReason | None = None
        self.model: str | None = None

    def handle(self, event: object) -> list[StreamEvent]:
        if isinstance(event, RawMessageStartEvent):
            self.model = event.message.model
            self._usage(event.message.usage)
        elif isinstance(event, RawContentBlockStartEvent):
            return self._block_start(event)
        elif isinstance(event, RawContentBlockDeltaEvent):
            return self._delta(event)
        elif isinstance(event, RawContentBlockStopEvent):
            block = self.thinking.pop(event.index, None)
            if block is not None:
                self.reasoning.append(ReasoningBlock(PROVIDER, block, block.get("thinking")))
        elif isinstance(event, RawMessageDeltaEvent):
            if event.delta.stop_reason is not None:
                self.stop_reason = _STOP_REASONS.get(event.delta.stop_reason, "stop")
            self._usage(event.usage)
        elif isinstance(event, RawMessageStopEvent):
            self.finished = True
        return []

    def _block_start(self, event: RawContentBlockStartEvent) -> list[StreamEvent]:
        block = event.content_block
        if isinstance(block, TextBlock) and block.text:
            return [self.builder.add(TextChunk(block.text))]
        if isinstance(block, ToolUseBlock):
            index = self.tool_index[event.index] = len(self.tool_index)
            out = [self.builder.add(ToolCallStart(index, block.id, block.name))]
            if block.input:  # streamed tool_use blocks start empty; arguments come as input_json_delta
                out.append(self.builder.add(ToolCallChunk(index, json.dumps(block.input))))
            return out
        if isinstance(block, ThinkingBlock):
            self.thinking[event.index] = {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
        elif isinstance(block, RedactedThinkingBlock):
            self.thinking[event.index] = {"type": "redacted_thinking", "data": block.data}
        return []

    def _delta(self, event: RawContentBlockDeltaEvent) -> list[StreamEvent]:
        delta = event.delta
        if isinstance(delta, TextDelta) and delta.text:
            return [self.builder.add(TextChunk(delta.text))]
        if isinstance(delta, InputJSONDelta) and delta.partial_json and event.index in self.tool_index:
            return [self.builder.add(ToolCallChunk(self.tool_index[event.index], delta.partial_json))]
        block = self.thinking.get(event.index)
        if block is not None and isinstance(delta, ThinkingDelta):
            block["thinking"] = block.get("thinking", "") + delta.thinking
        elif block is not None and isinstance(delta, SignatureDelta):
            block["signature"] = block.get("signature", "") + delta.signature
        return []

    def _usage(self, usage: Any) -> None:
        """Take the counts the event carries (message_delta's are cumulative and may repeat message_start's)."""
        for field in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
            value = getattr(usage, field, None)
            if isinstance(value, int):
                self.usage[field] = value

    def done(self) -> StreamEvent:
        cache_read = self.usage.get("cache_read_input_tokens", 0)
        fields: dict[str, Any] = {
            # Anthropic's input_tokens leave out cached tokens; the window's size is all three together.
            "input_tokens": self.usage.get("input_tokens", 0)
            + cache_read
            + self.usage.get("cache_creation_input_tokens", 0),
            "output_tokens": self.usage.get("output_tokens", 0),
            "cached_input_tokens": cache_read,
            "reasoning": self.reasoning,
            "model": self.model,
        }
        if self.stop_reason is not None:
            fields["stop_reason"] = self.stop_reason
        return self.builder.done(**fields)


def _tools(window: Window) -> list[ToolParam]:
    return [
        # The API requires an object schema, even for a tool without parameters.
        ToolParam(name=tool.name, description=tool.description, input_schema=tool.parameters or _EMPTY_SCHEMA)
        for tool in window.tools or []
    ]


_EMPTY_SCHEMA: dict[str, object] = {"type": "object", "properties": {}}


def _tool_choice(settings: ModelSettings) -> ToolChoiceParam | None:
    """auto/none/required -> auto/none/any; parallel_tool_calls=False -> disable_parallel_tool_use."""
    if settings.tool_choice == "none":
        return ToolChoiceNoneParam(type="none")
    single = settings.parallel_tool_calls is False
    if settings.tool_choice is None and not single:
        return None  # nothing asked: the API's default
    choice: ToolChoiceAnyParam | ToolChoiceAutoParam = (
        ToolChoiceAnyParam(type="any") if settings.tool_choice == "required" else ToolChoiceAutoParam(type="auto")
    )
    if single:
        choice["disable_parallel_tool_use"] = True
    return choice


def _status_error(error: APIStatusError) -> ModelError:
    """The typed error for an HTTP error answer or an `error` event (which arrives on a 200 stream)."""
    kind: str = error.type or ""
    status = error.status_code
    if status < 400:
        status = _ERROR_TYPE_STATUS.get(kind, 500)
    message = error.api_message or error.message
    if status == 413 or kind == "request_too_large":
        # 413 is the request's byte size: too much context, whatever the message says.
        return ContextLengthError(f"anthropic answered {status}: {message}", status=status, provider=PROVIDER)
    headers: Mapping[str, str] = error.response.headers
    return error_for_status(PROVIDER, status, message, headers)
