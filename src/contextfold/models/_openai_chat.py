"""The OpenAI Chat Completions adapter: OpenAI, Azure OpenAI, and every server that speaks the same API.

It always streams (`request` collects the stream), asking for usage in the last chunk. Text deltas become
`TextChunk`s; tool-call deltas are keyed by their `index`, and the first delta of an index (with the call's id and
name) becomes a `ToolCallStart`, every arguments piece a `ToolCallChunk`. `upstream_context_window` asks the
server's `/models` for the context length it serves this model with (vLLM, OpenRouter, llama.cpp report one).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import msgspec
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from ..view import Window
from ._base import ResponseBuilder, RetryPolicy, StreamingModel
from ._incremental import IncrementalChat
from ._openai import AzureProvider, OpenAIProvider, bearer, error_fields, positive_int, stream_error
from ._protocol import (
    ModelProfile,
    ModelSettings,
    StopReason,
    StreamEvent,
    TextChunk,
    ToolCallChunk,
    ToolCallStart,
)
from ._rendered import Rendered
from ._wire import malformed, post_stream

_STOP_REASONS: dict[str, StopReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


class OpenAIChatModel(StreamingModel):
    """A model behind the Chat Completions API of `provider` (`OpenAIProvider` or `AzureProvider`)."""

    def __init__(
        self,
        name: str,
        provider: OpenAIProvider | AzureProvider,
        *,
        profile: ModelProfile | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(name, profile=profile, retry=retry)
        self.provider = provider
        self.provider_name = provider.name
        self._chat = IncrementalChat()
        self._rendered = Rendered(self._chat)

    def violations(self, window: Window) -> list[str]:
        """What breaks Chat Completions' grammar in the messages this model would send (the runtime's send check):
        `validate_openai_chat` of them, scanning only what is new since the last window of its lineage."""
        return self._rendered.check(window, self._chat.violations)

    def _messages(self, window: Window) -> list[ChatCompletionMessageParam]:
        messages = self._rendered.take(window)
        # Reasoning models want instructions as `developer` (others as `system`); the profile says which, and
        # every instruction message follows it, so a server that knows only one of the roles gets that one.
        role = self.profile.system_role
        messages = [{**m, "role": role} if m["role"] in ("system", "developer") else m for m in messages]
        # The renderer builds plain JSON dicts in the wire shape; the SDK's TypedDicts describe the same shape.
        return cast("list[ChatCompletionMessageParam]", messages)

    def _tools(self, window: Window) -> list[ChatCompletionToolParam]:
        return [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
            }
            for t in window.tools or []
        ]

    async def _stream_once(self, window: Window, settings: ModelSettings) -> AsyncIterator[StreamEvent]:
        tools = self._tools(window)
        max_tokens = settings.max_output_tokens or window.max_output_tokens or self.profile.max_output_tokens
        parallel = settings.parallel_tool_calls
        if parallel is None and not self.profile.parallel_tool_calls:
            parallel = False
        body: dict[str, Any] = {
            "model": self.provider.model_for(self.name),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        # `tools`, `tool_choice` and `parallel_tool_calls` are refused without tools, so all go together.
        if tools and settings.tool_choice:
            body["tool_choice"] = settings.tool_choice
        if tools and parallel is not None:
            body["parallel_tool_calls"] = parallel
        if max_tokens:
            body[self.provider.max_tokens_field] = max_tokens
        if settings.temperature is not None:
            body["temperature"] = settings.temperature
        if settings.top_p is not None:
            body["top_p"] = settings.top_p
        # The client's own parameters go over the adapter's options (as the SDK's `extra_body` did); the
        # messages and tools go over everything.
        body.update(settings.extra or {})
        body["messages"] = self._messages(window)
        if tools:
            body["tools"] = tools
        provider = self.provider
        stream = post_stream(
            self.provider_name,
            provider.http,
            provider.url(self.name, "chat/completions"),
            body,
            headers={**provider.headers, **(bearer(settings.api_key) or {})},
            params=provider.params,
            timeout=settings.timeout,
        )
        builder = ResponseBuilder()
        state = _ChunkState(self.provider_name)
        async for _, data in stream.frames():
            for event in state.events(data):
                stream.streamed = True
                yield builder.add(event)
        if state.finish_reason is None:
            return  # the stream ended before the model finished: the base raises ModelResponseError
        calls = builder.tool_calls()
        stop = _STOP_REASONS.get(state.finish_reason, "tool_calls" if calls else "stop")
        if calls and stop == "stop":  # some servers (older Ollama, llama.cpp) say "stop" after tool calls
            stop = "tool_calls"
        yield builder.done(
            stop_reason=stop,
            input_tokens=state.input_tokens,
            output_tokens=state.output_tokens,
            cached_input_tokens=state.cached_tokens,
            model=state.model,
        )

    async def upstream_context_window(self) -> int | None:
        """The context length the server reports for this model in `/models`, or None when it reports none.

        vLLM says `max_model_len`, OpenRouter and others `context_length`, llama.cpp `meta.n_ctx` (or the
        model's trained length, `meta.n_ctx_train`). Failing to ask is not an error: the profile decides then.
        """
        wanted = self.provider.model_for(self.name)
        try:
            entries = [entry.model_dump() async for entry in self.provider.client.models.list()]
        except Exception:
            return None
        matches = [e for e in entries if e.get("id") == wanted]
        if not matches and len(entries) == 1:  # llama.cpp serves one model, whatever name it is asked for
            matches = entries
        if not matches:
            return None
        entry = matches[0]
        meta: dict[str, Any] = entry["meta"] if isinstance(entry.get("meta"), dict) else {}
        top: dict[str, Any] = entry["top_provider"] if isinstance(entry.get("top_provider"), dict) else {}
        for value in (
            entry.get("max_model_len"),
            entry.get("context_length"),
            entry.get("context_window"),
            top.get("context_length"),
            meta.get("n_ctx"),
            meta.get("n_ctx_train"),
        ):
            if (length := positive_int(value)) is not None:
                return length
        return None


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _CallDelta(msgspec.Struct):
    index: int | None = None  # required by the API, but a server that leaves it out still lists calls in order
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_CallDelta] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Details(msgspec.Struct):
    cached_tokens: int | None = None


class _ChunkUsage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: _Details | None = None


class Chunk(msgspec.Struct):
    """One `chat.completion.chunk`, as much of it as the adapter reads (other fields are skipped unparsed)."""

    model: str | None = None
    choices: list[_Choice] | None = None
    usage: _ChunkUsage | None = None
    error: Any = None
    """vLLM and others report a failure after the 200 as an error object in the stream."""


_decode_chunk = msgspec.json.Decoder(Chunk).decode


class _ChunkState:
    """What one stream has said so far besides its deltas: finish reason, usage, model, the calls' indexes."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.finish_reason: str | None = None
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_tokens = 0
        self.model: str | None = None
        self._started: set[int] = set()

    def events(self, data: str) -> list[StreamEvent]:
        try:
            chunk = _decode_chunk(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise malformed(self.provider, error) from error
        if chunk.error:
            message, code, kind = error_fields(chunk.error)
            raise stream_error(self.provider, message or "An error occurred during streaming", code, kind)
        self.model = self.model or chunk.model or None
        if chunk.usage is not None:  # the last chunk (some servers repeat usage on every chunk: keep the last)
            self.input_tokens = chunk.usage.prompt_tokens or 0
            self.output_tokens = chunk.usage.completion_tokens or 0
            details = chunk.usage.prompt_tokens_details
            self.cached_tokens = (details.cached_tokens or 0) if details else 0
        out: list[StreamEvent] = []
        for choice in chunk.choices or []:
            if choice.index != 0:  # we ask for one choice; a server that sends more gets the first one used
                continue
            delta = choice.delta
            if delta is not None:
                if delta.content:
                    out.append(TextChunk(delta.content))
                for position, call in enumerate(delta.tool_calls or []):
                    out.extend(self._call_events(call, position))
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        return out

    def _call_events(self, call: _CallDelta, position: int) -> list[StreamEvent]:
        index = call.index if call.index is not None else position
        function = call.function
        out: list[StreamEvent] = []
        if index not in self._started:
            self._started.add(index)
            name = (function.name if function else None) or ""
            out.append(ToolCallStart(index, call.id or f"call_{index}", name))
        if function is not None and function.arguments:
            out.append(ToolCallChunk(index, function.arguments))
        return out
