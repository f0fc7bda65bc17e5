"""What every adapter shares: bounded retries with backoff and jitter, and `request` as a collected stream.

An adapter subclasses `StreamingModel` and writes `_stream_once`: render the window, call its SDK once, yield the
provider's chunks as `StreamEvent`s, end with `ResponseDone`, and raise `ModelError` subclasses (never SDK
exceptions). Retries happen here, and only while nothing has been yielded: once a chunk reached the caller, a retry
would show it twice, so a failure after that point is raised as it is. The time limits are kept here too, for every
adapter alike: `ModelSettings.first_byte_timeout` for each attempt's first chunk and `ModelSettings.deadline` for
the whole answer, retries and backoff included; nothing is retried that could not finish before the deadline.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from .. import _tracing as tracing
from .._errors import (
    ContextLengthError,
    ModelAuthError,
    ModelError,
    ModelRequestError,
    ModelResponseError,
    ModelUnavailableError,
    RateLimitError,
)
from ..view import Window
from ..view._grammar import send_check
from ._protocol import (
    ModelProfile,
    ModelResponse,
    ModelSettings,
    ResponseDone,
    StreamEvent,
    TextChunk,
    ToolCallChunk,
    ToolCallRequest,
    ToolCallStart,
    checks_grammar,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry retryable errors up to `attempts` tries in all, waiting `initial` x 2^n seconds (with full jitter),
    never more than `maximum`; a provider's Retry-After is honoured up to `maximum`."""

    attempts: int = 4
    initial: float = 0.5
    maximum: float = 30.0

    def delay(self, attempt: int, error: ModelError) -> float:
        if isinstance(error, RateLimitError) and error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.maximum)
        return random.uniform(0, min(self.maximum, self.initial * 2**attempt))


class StreamingModel:
    """Base of the provider adapters. Subclasses set `provider_name` and implement `_stream_once`."""

    provider_name = "unknown"

    def __init__(self, name: str, *, profile: ModelProfile | None = None, retry: RetryPolicy | None = None) -> None:
        from ._profiles import profile_for

        self._name = name
        self._profile = profile or profile_for(name)
        self.retry = retry or RetryPolicy()

    @property
    def name(self) -> str:
        return self._name

    @property
    def profile(self) -> ModelProfile:
        return self._profile

    def _stream_once(self, window: Window, settings: ModelSettings) -> AsyncIterator[StreamEvent]:
        raise NotImplementedError

    async def stream(self, window: Window, settings: ModelSettings) -> AsyncIterator[StreamEvent]:
        # Invariant 6, on the one path every request to a provider takes (turns, summaries, library calls): the
        # window's pairing and the provider's grammar (the adapter's `violations`, a check of what it would send).
        # A violation is a bug: repaired, logged and counted, never sent.
        grammar = self.violations if checks_grammar(self) else None
        window = send_check(window, grammar, self.provider_name, where=f"model {self.name!r}")
        attempt = 0
        while True:
            yielded = False
            events = self._stream_once(window, settings)
            call = tracing.start(
                "contextfold.model.call", model=self.name, provider=self.provider_name, attempt=attempt
            )
            try:
                while True:
                    try:
                        event = await self._next(events, settings, first=not yielded)
                    except StopAsyncIteration:
                        break
                    yielded = True
                    if isinstance(event, ResponseDone):
                        tracing.set_attributes(call, **_usage(event.response))
                    yield event
                    if isinstance(event, ResponseDone):
                        return
                raise ModelResponseError(
                    f"{self.provider_name} stream for {self.name!r} ended before the response was complete",
                    provider=self.provider_name,
                )
            except ModelError as error:
                tracing.fail(call, error)
                attempt += 1
                if yielded or not error.retryable or attempt >= self.retry.attempts:
                    raise
                delay = self.retry.delay(attempt - 1, error)
                if settings.deadline is not None and time.monotonic() + delay >= settings.deadline:
                    raise  # another try could not finish before the deadline: what failed is the answer
                await asyncio.sleep(delay)
            finally:
                call.end()
                await close(events)  # now, not when it is collected: it may hold a connection

    async def _next(self, events: AsyncIterator[StreamEvent], settings: ModelSettings, *, first: bool) -> StreamEvent:
        """The attempt's next chunk, within the first-byte limit (for its first) and the deadline. The limits are
        kept here, not left to each SDK: an SDK's timeout is per read, so an upstream that trickles or never
        answers would otherwise hold the turn for as long as it likes."""
        remaining = None if settings.deadline is None else settings.deadline - time.monotonic()
        first_byte = settings.first_byte_timeout if first else None
        if remaining is None and first_byte is None:
            return await anext(events)
        by_deadline = first_byte is None or (remaining is not None and remaining <= first_byte)
        limit = remaining if by_deadline else first_byte
        assert limit is not None
        bound = asyncio.timeout(max(limit, 0.0))
        try:
            async with bound:
                return await anext(events)
        except TimeoutError:
            if not bound.expired():
                raise  # not ours: something inside the SDK
            raise self._timed_out(by_deadline, limit, streamed=not first) from None

    def _timed_out(self, by_deadline: bool, limit: float, *, streamed: bool) -> ModelError:
        provider = self.provider_name
        if by_deadline:
            what = "the turn's deadline passed (turn_timeout)"
            if streamed:
                return ModelResponseError(f"{provider} timed out mid-answer: {what}", provider=provider)
            return ModelUnavailableError(f"{provider} timed out before any output: {what}", provider=provider)
        return ModelUnavailableError(
            f"{provider} timed out: {self.name!r} sent nothing within {limit:g} s (first_byte_timeout)",
            provider=provider,
        )

    async def request(self, window: Window, settings: ModelSettings) -> ModelResponse:
        return await collect(self.stream(window, settings))


async def close(stream: AsyncIterator[Any]) -> None:
    """Close an async generator (and the connection it may hold) at once; a plain iterator needs nothing."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def collect(stream: AsyncIterator[StreamEvent]) -> ModelResponse:
    """The response a stream ends with."""
    async for event in stream:
        if isinstance(event, ResponseDone):
            return event.response
    raise ModelResponseError("model stream ended without a response")


class ResponseBuilder:
    """Accumulates streamed chunks into the final `ModelResponse`, for adapters whose SDK streams only deltas."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, list[str]] = {}
        self._ids: dict[int, tuple[str, str]] = {}

    def add(self, event: StreamEvent) -> StreamEvent:
        if isinstance(event, TextChunk):
            self.text.append(event.text)
        elif isinstance(event, ToolCallStart):
            self._ids[event.index] = (event.call_id, event.name)
            self.calls.setdefault(event.index, [])
        elif isinstance(event, ToolCallChunk):
            self.calls.setdefault(event.index, []).append(event.arguments)
        return event

    def tool_calls(self) -> list[ToolCallRequest]:
        out = []
        for index in sorted(self.calls):
            call_id, name = self._ids.get(index, (f"call_{index}", ""))
            out.append(ToolCallRequest(call_id, name, "".join(self.calls[index]) or "{}"))
        return out

    def done(self, **fields: Any) -> ResponseDone:
        calls = self.tool_calls()
        fields.setdefault("stop_reason", "tool_calls" if calls else "stop")
        return ResponseDone(ModelResponse(text="".join(self.text), tool_calls=calls, **fields))


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` as seconds or an HTTP date."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        if "retry-after-ms" in lowered:
            return float(lowered["retry-after-ms"]) / 1000
        if "retry-after" in lowered:
            value = lowered["retry-after"]
            try:
                return float(value)
            except ValueError:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
    return None


_CONTEXT_LENGTH_MARKERS = (
    "context_length_exceeded",
    "context length",
    "context window",
    "prompt is too long",
    "input is too long",
    "too many tokens",
    "too many input tokens",
    "input token count",
    "reduce the length",
    "maximum number of tokens",
)


def connection_lost(provider: str, cause: object, *, streamed: bool) -> ModelError:
    """A connection that broke or timed out: worth retrying while nothing of the answer was read (the base class
    retries it), an unusable, cut-off answer once part of it was."""
    detail = str(cause) or type(cause).__name__  # some transport errors have no message of their own
    if streamed:
        return ModelResponseError(f"{provider} stream was cut off mid-answer: {detail}", provider=provider)
    return ModelUnavailableError(f"{provider} failed before any output: {detail}", provider=provider)


def is_context_length_message(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _CONTEXT_LENGTH_MARKERS)


def error_for_status(provider: str, status: int, message: str, headers: Mapping[str, str] | None = None) -> ModelError:
    """The typed error for an HTTP error answer, so every adapter classifies statuses the same way."""
    text = f"{provider} answered {status}: {message}"
    if status == 429:
        return RateLimitError(text, retry_after=retry_after_seconds(headers), provider=provider)
    if status in (401, 403):
        return ModelAuthError(text, status=status, provider=provider)
    if status in (408, 409) or status >= 500:
        return ModelUnavailableError(text, status=status, provider=provider)
    if is_context_length_message(message):
        return ContextLengthError(text, status=status, provider=provider)
    return ModelRequestError(text, status=status, provider=provider)


def _usage(response: ModelResponse) -> dict[str, Any]:
    """A model call's figures, as span attributes."""
    return {
        "input_tokens": response.input_tokens,
        "output_tokens": response.output_tokens,
        "cached_input_tokens": response.cached_input_tokens,
        "stop_reason": response.stop_reason,
    }
