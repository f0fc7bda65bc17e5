"""Gemini adapter: a window in, `generate_content_stream` chunks out as stream events (google-genai SDK).

The provider owns one `genai.Client` (SDK retries off: `StreamingModel` retries) and uses its `aio` side; per-request
options (the timeout) go in the call's config, never onto the client.

Gemini streams text in pieces but each function call whole, so a call becomes one `ToolCallStart` and one
`ToolCallChunk` with all of its arguments. Calls without an id get one made up here: results go back to Gemini by
tool name (`render_gemini` looks the name up by call id), so the id only has to be unique within the conversation.

A function call's thought signature (Gemini 3 refuses a later request whose function calls lack theirs) comes back
as a `ReasoningBlock(provider="gemini", data={"call_id", "thought_signature"})`; `render_gemini` puts it back on
that call.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import re
import secrets
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx2
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from .._errors import ConfigurationError, ModelError, ModelResponseError
from ..view import Window
from ..view._grammar import validate_gemini
from ..view._render import render_gemini
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

PROVIDER = "gemini"

_FILTERED = {"SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY", "MODEL_ARMOR"}
_FAILED = {"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS", "MALFORMED_RESPONSE"}


def _transport_error_types() -> tuple[type[BaseException], ...]:
    """What a dropped connection raises: the SDK sends with httpx2 by default, but with aiohttp when that is
    installed, or with httpx when asked to (GOOGLE_GENAI_HTTP_CLIENT), and does not wrap their errors."""
    found: list[type[BaseException]] = [httpx2.TransportError, TimeoutError]
    for module, name in (("httpx", "TransportError"), ("aiohttp", "ClientError")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except ImportError:
            continue
    return tuple(found)


_TRANSPORT_ERRORS = _transport_error_types()
_TOOL_MODES = {"auto": types.FunctionCallingConfigMode.AUTO, "none": types.FunctionCallingConfigMode.NONE}


class GeminiProvider:
    """API key, base URL and the one SDK client every `GeminiModel` of this provider shares."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        client: genai.Client | None = None,
        timeout: float = 600,
    ) -> None:
        if client is not None:
            self.client = client
            self._owns_client = False
            return
        key = api_key or os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")
        if not key:
            raise ConfigurationError("Gemini needs an API key: pass api_key= or set GEMINI_API_KEY (or GOOGLE_API_KEY)")
        options = types.HttpOptions(
            base_url=base_url,
            timeout=int(timeout * 1000),  # milliseconds
            retry_options=types.HttpRetryOptions(attempts=1),  # one attempt: StreamingModel retries
        )
        self.client = genai.Client(api_key=key, http_options=options)
        self._owns_client = True

    async def aclose(self) -> None:
        """Close the client if this provider created it (a client passed in belongs to the caller)."""
        if self._owns_client:
            await self.client.aio.aclose()
            self.client.close()  # the SDK opens a sync connection pool too


class GeminiModel(StreamingModel):
    """A Gemini model over `streamGenerateContent` (`request` collects the stream)."""

    provider_name = PROVIDER

    def __init__(
        self,
        name: str,
        provider: GeminiProvider,
        *,
        profile: ModelProfile | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(name, profile=profile, retry=retry)
        self._rendered = Rendered(render_gemini)
        self.provider = provider

    def config(
        self, window: Window, settings: ModelSettings, system: dict[str, Any] | None
    ) -> types.GenerateContentConfig:
        config = types.GenerateContentConfig(
            system_instruction=types.Content.model_validate(system) if system else None,
            max_output_tokens=settings.max_output_tokens or window.max_output_tokens or self.profile.max_output_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            # Function declarations only, so the SDK has nothing to call itself; say so rather than rely on it.
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        if window.tools:
            declarations = [
                types.FunctionDeclaration(
                    name=tool.name, description=tool.description, parameters_json_schema=tool.parameters or None
                )
                for tool in window.tools
            ]
            config.tools = [types.Tool(function_declarations=declarations)]
            if settings.tool_choice is not None:
                mode = _TOOL_MODES.get(settings.tool_choice, types.FunctionCallingConfigMode.ANY)
                config.tool_config = types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode=mode))
        if settings.timeout is not None:
            config.http_options = types.HttpOptions(timeout=int(settings.timeout * 1000))
        return config

    def violations(self, window: Window) -> list[str]:
        """What breaks Gemini's role rules in the contents this model would send (the runtime's send check)."""
        return self._rendered.check(window, lambda payload: validate_gemini(payload[1]))

    async def _stream_once(self, window: Window, settings: ModelSettings) -> AsyncIterator[StreamEvent]:
        system, rendered = self._rendered.take(window)
        # The renderer writes the REST shape (camelCase); the SDK's types read it by alias.
        contents = [types.Content.model_validate(content) for content in rendered]
        config = self.config(window, settings, system)
        state = _StreamState()
        try:
            stream = await self.provider.client.aio.models.generate_content_stream(
                model=self.name, contents=contents, config=config
            )
            try:
                async for chunk in stream:
                    for event in state.handle(chunk):
                        state.yielded = True
                        yield event
            finally:  # a caller that stops early must not leave the response open until garbage collection
                close = getattr(stream, "aclose", None)
                if close is not None:
                    await close()
        except genai_errors.APIError as error:
            raise _status_error(error) from error
        except ValueError as error:  # a chunk that is not JSON, or not a GenerateContentResponse
            raise ModelResponseError(f"gemini sent a malformed stream chunk: {error}", provider=PROVIDER) from error
        except _TRANSPORT_ERRORS as error:
            raise connection_lost(PROVIDER, str(error) or type(error).__name__, streamed=state.yielded) from error
        if state.finish_reason is None:  # the body ended cleanly but incomplete: an unusable answer
            raise ModelResponseError("gemini stream ended without a finishReason", provider=PROVIDER)
        yield state.done()


class _StreamState:
    """What one streamed answer has said so far: maps chunks to stream events and builds the response."""

    def __init__(self) -> None:
        self.builder = ResponseBuilder()
        self.yielded = False
        self.calls = 0
        self.finish_reason: str | None = None
        self.usage: types.GenerateContentResponseUsageMetadata | None = None
        self.model: str | None = None
        self.signatures: list[ReasoningBlock] = []

    def handle(self, chunk: types.GenerateContentResponse) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        self.model = chunk.model_version or self.model
        if chunk.usage_metadata is not None:  # running totals: the last one counts
            self.usage = chunk.usage_metadata
        if chunk.prompt_feedback is not None and chunk.prompt_feedback.block_reason is not None:
            self.finish_reason = "SAFETY"  # the prompt itself was blocked: no candidates follow
        if not chunk.candidates:
            return out
        candidate = chunk.candidates[0]
        parts = candidate.content.parts if candidate.content is not None else None
        for part in parts or []:
            if part.thought:  # a thought summary is not part of the answer
                continue
            if part.text:
                out.append(self.builder.add(TextChunk(part.text)))
            if part.function_call is not None:
                out.extend(self._call(part.function_call, part.thought_signature))
        if candidate.finish_reason is not None:
            self.finish_reason = str(candidate.finish_reason.value)
        return out

    def _call(self, call: types.FunctionCall, signature: bytes | None) -> list[StreamEvent]:
        index = self.calls
        self.calls += 1
        call_id = call.id or f"call_{index}_{secrets.token_hex(6)}"
        if signature:
            data = {"call_id": call_id, "thought_signature": base64.b64encode(signature).decode()}
            self.signatures.append(ReasoningBlock(PROVIDER, data))
        start = ToolCallStart(index, call_id, call.name or "")
        return [self.builder.add(start), self.builder.add(ToolCallChunk(index, json.dumps(call.args or {})))]

    def done(self) -> StreamEvent:
        usage = self.usage
        fields: dict[str, Any] = {"model": self.model, "reasoning": self.signatures}
        if usage is not None:
            # promptTokenCount already includes the cached tokens; thinking is billed as output.
            fields["input_tokens"] = usage.prompt_token_count or 0
            fields["output_tokens"] = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
            fields["cached_input_tokens"] = usage.cached_content_token_count or 0
        stop = _stop_reason(self.finish_reason)
        if stop is not None:
            fields["stop_reason"] = stop
        return self.builder.done(**fields)


def _stop_reason(finish_reason: str | None) -> StopReason | None:
    """None leaves it to the builder: "tool_calls" when the model called tools, else "stop"."""
    if finish_reason == "MAX_TOKENS":
        return "length"
    if finish_reason in _FILTERED:
        return "content_filter"
    if finish_reason in _FAILED:
        return "error"
    return None


def _status_error(error: genai_errors.APIError) -> ModelError:
    """The typed error for an HTTP error answer or an error sent mid-stream."""
    status = error.code if isinstance(error.code, int) and error.code >= 400 else 500
    message = error.message or str(error)
    headers: dict[str, str] = {}
    raw_headers = getattr(error.response, "headers", None)  # the HTTP response's, or the stream's
    if isinstance(raw_headers, Mapping):
        headers = {str(key).lower(): str(value) for key, value in raw_headers.items()}
    if status == 429 and "retry-after" not in headers:
        delay = _retry_delay(error.details)
        if delay is not None:
            headers["retry-after"] = delay
    return error_for_status(PROVIDER, status, message, headers)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _retry_delay(body: Any) -> str | None:
    """Seconds from a `google.rpc.RetryInfo` detail (`"retryDelay": "2s"`) of a Google error body, if any."""
    error = body.get("error", body) if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return match.group(1)
    return None
