"""Cohere v2 chat adapter: a window in, `AsyncClientV2.chat_stream` (POST /v2/chat, SSE) events out as stream events.

The provider owns one `AsyncClientV2` over one httpx client it created (so `aclose` can close exactly that), shared
by every model and concurrent turn. SDK retries are off per request (`request_options`): `StreamingModel` retries.

Cohere's grammar is the OpenAI-chat shape with its own names: an assistant message carries `tool_calls`
(`{id, type: "function", function: {name, arguments}}`) and optionally `tool_plan` (the model's plan before calling
tools), and each result is a `tool` message with the `tool_call_id`. The plan and any `thinking` the model streams
come back as `ReasoningBlock(provider="cohere", data={"type": "tool_plan" | "thinking"})` and are rendered back onto
the next assistant message.

The SDK does not raise on an SSE event it cannot parse: it logs and either skips it or (for invalid JSON) builds a
`message-start` event carrying the raw SSE fields. `_is_unparsed` catches the latter so malformed JSON is a
`ModelResponseError`, not a silently shortened answer.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any, cast

import cohere
import httpx
from cohere.core.api_error import ApiError
from cohere.core.http_sse import SSEError
from cohere.core.request_options import RequestOptions
from cohere.types import ChatMessageEndEventDelta
from cohere.v2.types import (
    ContentDeltaV2ChatStreamResponse,
    ContentStartV2ChatStreamResponse,
    MessageEndV2ChatStreamResponse,
    ToolCallDeltaV2ChatStreamResponse,
    ToolCallStartV2ChatStreamResponse,
    ToolPlanDeltaV2ChatStreamResponse,
    V2ChatStreamResponse,
)

from .._errors import ConfigurationError, ModelError, ModelResponseError, ModelUnavailableError
from ..events import FilePart, ImagePart, Message, Part, Reasoning, TextPart
from ..view import Window
from ..view._render import Payload, segments
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

PROVIDER = "cohere"

_STOP_REASONS: dict[str, StopReason] = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
    "ERROR": "error",
    "TIMEOUT": "error",
}


class CohereProvider:
    """The API key, base URL and the one `AsyncClientV2` every `CohereModel` of this provider shares."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        client: cohere.AsyncClientV2 | None = None,
        timeout: float = 600,
    ) -> None:
        self._http: httpx.AsyncClient | None = None
        if client is not None:  # the caller's client stays theirs: never closed here
            self.client = client
            return
        key = api_key or os.environ.get("CO_API_KEY") or os.environ.get("COHERE_API_KEY")
        if not key:
            raise ConfigurationError("Cohere needs an API key: pass api_key= or set CO_API_KEY (or COHERE_API_KEY)")
        # Our own httpx client rather than the SDK's default: the SDK never closes the one it makes (only its
        # `__aexit__` does), and owning it makes `aclose` close exactly what this provider opened.
        self._http = httpx.AsyncClient(timeout=timeout)
        self.client = cohere.AsyncClientV2(
            api_key=key,
            base_url=base_url or os.environ.get("CO_API_URL"),
            timeout=timeout,
            max_retries=0,
            httpx_client=self._http,
        )

    async def aclose(self) -> None:
        """Close the HTTP client if this provider created it."""
        if self._http is not None:
            await self._http.aclose()


class CohereModel(StreamingModel):
    """A Cohere chat model (`command-a-03-2025`, `command-r-plus-08-2024`, ...) over the v2 chat API."""

    provider_name = PROVIDER

    def __init__(
        self,
        name: str,
        provider: CohereProvider,
        *,
        profile: ModelProfile | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(name, profile=profile, retry=retry)
        self._rendered = Rendered(render_cohere)
        self._provider = provider

    def violations(self, window: Window) -> list[str]:
        """What breaks the grammar in the messages this model would send (the runtime's send check)."""
        return self._rendered.check(window, validate_cohere)

    async def _stream_once(self, window: Window, settings: ModelSettings) -> AsyncIterator[StreamEvent]:
        options: RequestOptions = {"max_retries": 0}
        if settings.timeout is not None:
            options["timeout"] = settings.timeout
        # Only what is set goes out: the SDK sends an explicit None as JSON null.
        extra: dict[str, Any] = {}
        max_tokens = settings.max_output_tokens or window.max_output_tokens or self.profile.max_output_tokens
        if max_tokens:
            extra["max_tokens"] = max_tokens
        if settings.temperature is not None:
            extra["temperature"] = settings.temperature
        if settings.top_p is not None:
            extra["p"] = settings.top_p
        if tools := render_tools(window):
            extra["tools"] = tools
            if settings.tool_choice in ("none", "required"):
                extra["tool_choice"] = settings.tool_choice.upper()
        # The SDK types `messages` and `tools` as its pydantic models; it serialises plain dicts of the same shape
        # as they are, which keeps the renderer free of SDK types.
        # `chat_stream` is an async generator typed as an iterator; closing it ends the HTTP response with us.
        stream = cast(
            AsyncGenerator[V2ChatStreamResponse, None],
            self._provider.client.chat_stream(
                model=self.name, messages=cast(Any, self._rendered.take(window)), request_options=options, **extra
            ),
        )
        reader = _Reader(self.name)
        try:
            async with contextlib.aclosing(stream):
                async for event in stream:
                    for out in reader.read(event):
                        reader.yielded = True
                        yield out
        except ApiError as error:
            raise _status_error(error) from error
        except SSEError as error:  # a 200 answer that is not an event stream (subclasses httpx.TransportError)
            raise ModelResponseError(f"cohere answered with no event stream: {error}", provider=PROVIDER) from error
        except httpx.TimeoutException as error:
            raise ModelUnavailableError(f"cohere timed out: {error!r}", provider=PROVIDER) from error
        except httpx.TransportError as error:
            # Dropped before anything reached the caller: worth another try. After: the answer is cut off.
            raise connection_lost(PROVIDER, repr(error), streamed=reader.yielded) from error
        except httpx.HTTPError as error:
            raise ModelResponseError(f"cohere answer could not be read: {error!r}", provider=PROVIDER) from error


def _status_error(error: ApiError) -> ModelError:
    body = error.body
    message = str(body.get("message", body)) if isinstance(body, Mapping) else str(body)
    if error.status_code is None:
        return ModelResponseError(f"cohere error without a status: {message}", provider=PROVIDER)
    # 498 is Cohere's "invalid token": an authentication failure by another number.
    status = 401 if error.status_code == 498 else error.status_code
    return error_for_status(PROVIDER, status, message, error.headers)


class _Reader:
    """Turns the SDK's typed stream events into our stream events, accumulating the final response."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.builder = ResponseBuilder()
        self.yielded = False
        self._calls: dict[int, int] = {}  # Cohere's tool-call index -> ours
        self._plan: list[str] = []
        self._thinking: list[str] = []

    def read(self, event: V2ChatStreamResponse) -> list[StreamEvent]:
        if _is_unparsed(event):
            raw = (event.model_extra or {}).get("data")
            raise ModelResponseError(f"cohere sent an unparseable stream event: {raw!r}", provider=PROVIDER)
        if isinstance(event, ContentStartV2ChatStreamResponse | ContentDeltaV2ChatStreamResponse):
            message = event.delta.message if event.delta else None
            content = message.content if message else None
            if content is not None and content.thinking:
                self._thinking.append(content.thinking)
            if content is not None and content.text:
                return [self.builder.add(TextChunk(content.text))]
        elif isinstance(event, ToolPlanDeltaV2ChatStreamResponse):
            if event.delta and event.delta.message and event.delta.message.tool_plan:
                self._plan.append(event.delta.message.tool_plan)
        elif isinstance(event, ToolCallStartV2ChatStreamResponse):
            call = event.delta.message.tool_calls if event.delta and event.delta.message else None
            if call is None or call.function is None or not call.function.name:
                raise ModelResponseError("cohere started a tool call without a name", provider=PROVIDER)
            index = len(self._calls)
            self._calls[event.index if event.index is not None else index] = index
            out: list[StreamEvent] = [ToolCallStart(index, call.id, call.function.name)]
            if call.function.arguments:
                out.append(ToolCallChunk(index, call.function.arguments))
            return [self.builder.add(e) for e in out]
        elif isinstance(event, ToolCallDeltaV2ChatStreamResponse):
            delta = event.delta.message if event.delta else None
            function = delta.tool_calls.function if delta and delta.tool_calls else None
            if function is not None and function.arguments:
                key = event.index if event.index is not None else len(self._calls) - 1
                if key not in self._calls:
                    raise ModelResponseError(f"cohere sent arguments for unknown tool call {key}", provider=PROVIDER)
                return [self.builder.add(ToolCallChunk(self._calls[key], function.arguments))]
        elif isinstance(event, MessageEndV2ChatStreamResponse):
            return [self._done(event.delta)]
        return []

    def _done(self, delta: ChatMessageEndEventDelta | None) -> StreamEvent:
        reasoning = []
        if self._thinking:
            reasoning.append(ReasoningBlock(PROVIDER, {"type": "thinking"}, "".join(self._thinking)))
        if self._plan:
            reasoning.append(ReasoningBlock(PROVIDER, {"type": "tool_plan"}, "".join(self._plan)))
        usage = delta.usage if delta else None
        # `tokens` are what the model read and wrote; `billed_units` (what is charged) only when they are missing.
        tokens = (usage.tokens or usage.billed_units) if usage else None
        stop = _STOP_REASONS.get(str(delta.finish_reason if delta else None), "stop")
        if stop == "stop" and self.builder.calls:
            stop = "tool_calls"
        return self.builder.done(
            stop_reason=stop,
            input_tokens=int(tokens.input_tokens or 0) if tokens else 0,
            output_tokens=int(tokens.output_tokens or 0) if tokens else 0,
            cached_input_tokens=int(usage.cached_tokens or 0) if usage else 0,
            reasoning=reasoning,
            model=self.model,
        )


def _is_unparsed(event: V2ChatStreamResponse) -> bool:
    """The SDK's fallback for an event whose data is not JSON: the raw SSE fields (`data`, `event`) as extras."""
    extra = event.model_extra or {}
    return isinstance(extra.get("data"), str) and "event" in extra


# --- rendering -----------------------------------------------------------------------------------------------


def render_tools(window: Window) -> list[Payload]:
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters or {"type": "object", "properties": {}},
            },
        }
        for tool in window.tools or []
    ]


def _user_part(part: Part) -> Payload:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):  # Cohere takes web URLs and base64 data URIs
        return {"type": "image_url", "image_url": {"url": part.url, "detail": part.detail}}
    if isinstance(part, FilePart) and part.media_type.startswith("image/") and part.data is not None:
        return {"type": "image_url", "image_url": {"url": f"data:{part.media_type};base64,{part.data}"}}
    # Chat takes no other attachments: say what was left out rather than drop it silently.
    return {"type": "text", "text": f"[attachment not shown: {part.filename or part.file_id or part.media_type}]"}


def _user_content(message: Message) -> str | list[Payload]:
    parts = [_user_part(p) for p in message.content if not isinstance(p, TextPart) or p.text]
    if all(p["type"] == "text" for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    return parts


def _open_assistant(out: list[Payload]) -> Payload:
    """The assistant message to add to: the last one unless it already made its tool calls."""
    if out and out[-1]["role"] == "assistant" and "tool_calls" not in out[-1]:
        return out[-1]
    out.append({"role": "assistant", "content": []})
    return out[-1]


def render_cohere(window: Window) -> list[Payload]:
    """v2 chat `messages`: one leading system message (system prompt and hoisted system/developer messages), then
    user / assistant (text, `tool_plan`, `tool_calls`) / tool messages. Reasoning of other providers is dropped."""
    system = [window.system_prompt] if window.system_prompt else []
    out: list[Payload] = []
    for segment in segments(window.items):
        if isinstance(segment, Reasoning):
            if segment.provider == PROVIDER and segment.text:
                assistant = _open_assistant(out)
                if segment.data.get("type") == "tool_plan":
                    assistant["tool_plan"] = assistant.get("tool_plan", "") + segment.text
                else:
                    assistant["content"].append({"type": "thinking", "thinking": segment.text})
        elif isinstance(segment, Message):
            texts = [p.text for p in segment.content if isinstance(p, TextPart) and p.text]
            if segment.role in ("system", "developer"):
                system.extend(texts)
            elif segment.role == "assistant" and texts:
                _open_assistant(out)["content"].extend({"type": "text", "text": t} for t in texts)
            elif segment.role == "user" and (content := _user_content(segment)):
                out.append({"role": "user", "content": content})
        else:
            if segment.calls:
                _open_assistant(out)["tool_calls"] = [
                    {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in segment.calls
                ]
            out.extend(
                {"role": "tool", "tool_call_id": r.call_id, "content": [{"type": "text", "text": r.output}]}
                for r in segment.results_in_call_order()
            )
    messages = [m for m in map(_finish_assistant, out) if m is not None]
    return ([{"role": "system", "content": "\n\n".join(system)}] if system else []) + messages


def _finish_assistant(message: Payload) -> Payload | None:
    """Plain-text content as a string; an assistant message with neither text nor tool calls is dropped."""
    if message["role"] != "assistant":
        return message
    content = message["content"]
    texts = [c["text"] for c in content if c["type"] == "text"]
    if not texts and "tool_calls" not in message:
        return None
    if len(texts) == len(content):
        message["content"] = "\n\n".join(texts)
    if not content:
        del message["content"]
    return message


def validate_cohere(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    """Violations of the grammar the renderer relies on: each tool call answered once by a tool message that
    follows its assistant message before any other message; no tool message without a pending call."""
    out: list[str] = []
    pending: dict[str, int] = {}
    seen: set[str] = set()
    for at, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in pending:
                out.append(f"message {at}: tool message answers {call_id!r}, which is not a pending tool call")
            else:
                del pending[call_id]
            continue
        for call_id, where in pending.items():
            out.append(f"tool call {call_id!r} of message {where} is not answered before message {at}")
        pending.clear()
        if role not in ("system", "user", "assistant"):
            out.append(f"message {at}: unknown role {role!r}")
        if role == "assistant":
            if not message.get("content") and not message.get("tool_calls"):
                out.append(f"message {at}: assistant message has neither content nor tool calls")
            for call in message.get("tool_calls") or []:
                if call["id"] in seen:
                    out.append(f"message {at}: tool call id {call['id']!r} is used twice")
                seen.add(call["id"])
                pending[call["id"]] = at
    out.extend(f"tool call {call_id!r} of message {where} is never answered" for call_id, where in pending.items())
    return out
