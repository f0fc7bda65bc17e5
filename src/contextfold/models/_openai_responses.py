"""The OpenAI Responses adapter (OpenAI, Azure OpenAI, and servers that implement `/responses`, such as vLLM).

Stateless: `store=False` and the whole window as `input` every turn, since the log is the truth and the window a
fold of it; nothing is left on the server to refer back to. Stream events map as follows:
- `response.output_text.delta` -> `TextChunk`;
- `response.output_item.added` of a function call -> `ToolCallStart` (calls numbered in output order), its
  `response.function_call_arguments.delta`s -> `ToolCallChunk`s (a server that sends the arguments only whole,
  in `response.output_item.done`, gives one chunk). Deltas that arrive before their call's
  `response.output_item.added` (some servers, Llama Stack among them, send them first) are kept and replayed once
  the call is known; the arguments in `response.output_item.done`, when present, are the call's arguments;
- `response.completed` / `response.incomplete` -> `ResponseDone` with usage, the stop reason, and the reasoning
  items that carry `encrypted_content` as `ReasoningBlock(provider=<provider name>, data=<the item>)`, which
  `render_openai_responses(window, reasoning_from=<provider name>)` passes back on the next turn;
- `response.failed` and `error` -> the typed error of their code.

`include=["reasoning.encrypted_content"]` is not sent: OpenAI answers 400 ("Encrypted content is not supported
with this model") for models that do not reason, such as gpt-4o and gpt-4.1, and reasoning models populate
`encrypted_content` by default in this API version. Reasoning items without it are not kept (with `store=False`
the server could not resolve them by id).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from openai.types.responses import FunctionToolParam

from ..view import Window
from ..view._grammar import validate_openai_responses
from ..view._render import render_openai_responses
from ._base import ResponseBuilder, RetryPolicy, StreamingModel
from ._openai import AzureProvider, OpenAIProvider, bearer, error_fields, stream_error
from ._protocol import (
    ModelProfile,
    ModelSettings,
    ReasoningBlock,
    ResponseDone,
    StopReason,
    StreamEvent,
    TextChunk,
    ToolCallChunk,
    ToolCallStart,
)
from ._rendered import Rendered
from ._wire import malformed, post_stream


class OpenAIResponsesModel(StreamingModel):
    """A model behind the Responses API of `provider` (`OpenAIProvider` or `AzureProvider`)."""

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
        self._rendered = Rendered(lambda window: render_openai_responses(window, reasoning_from=self.provider_name))

    def _tools(self, window: Window) -> list[FunctionToolParam]:
        # `strict` defaults to true in this API, which refuses any schema that is not closed and fully required;
        # tools declare ordinary JSON schemas, so it is turned off.
        return [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
                "strict": False,
            }
            for t in window.tools or []
        ]

    def violations(self, window: Window) -> list[str]:
        """What breaks the Responses grammar in the input this model would send (the runtime's send check)."""
        return self._rendered.check(window, lambda payload: validate_openai_responses(payload[1]))

    async def _stream_once(self, window: Window, settings: ModelSettings) -> AsyncIterator[StreamEvent]:
        instructions, items = self._rendered.take(window)
        tools = self._tools(window)
        max_tokens = settings.max_output_tokens or window.max_output_tokens or self.profile.max_output_tokens
        parallel = settings.parallel_tool_calls
        if parallel is None and not self.profile.parallel_tool_calls:
            parallel = False
        body: dict[str, Any] = {"model": self.provider.model_for(self.name), "stream": True, "store": False}
        if instructions is not None:
            body["instructions"] = instructions
        if tools and settings.tool_choice:
            body["tool_choice"] = settings.tool_choice
        if tools and parallel is not None:
            body["parallel_tool_calls"] = parallel
        if max_tokens:
            body["max_output_tokens"] = max_tokens
        if settings.temperature is not None:
            body["temperature"] = settings.temperature
        if settings.top_p is not None:
            body["top_p"] = settings.top_p
        body.update(settings.extra or {})  # the client's own parameters over the options, as `extra_body` did
        body["input"] = items
        if tools:
            body["tools"] = tools
        provider = self.provider
        stream = post_stream(
            self.provider_name,
            provider.http,
            provider.url(self.name, "responses"),
            body,
            headers={**provider.headers, **(bearer(settings.api_key) or {})},
            params=provider.params,
            timeout=settings.timeout,
        )
        state = _EventState(self.provider_name)
        async for _, data in stream.frames():
            for out in state.events(data):
                stream.streamed = True
                yield out
        if state.done is not None:
            yield state.done
        # else the stream ended before the response did: the base raises ModelResponseError


class _Summary(msgspec.Struct):
    text: str = ""


class _Item(msgspec.Struct):
    type: str = ""
    id: str | None = None
    call_id: str = ""
    name: str = ""
    arguments: str | None = None
    summary: list[_Summary] | None = None
    encrypted_content: str | None = None


class _Details(msgspec.Struct):
    cached_tokens: int | None = None


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    input_tokens_details: _Details | None = None


class _Incomplete(msgspec.Struct):
    reason: str | None = None


class _Failure(msgspec.Struct):
    code: Any = None
    message: str | None = None


class _Response(msgspec.Struct):
    model: str | None = None
    output: list[_Item] | None = None
    usage: _Usage | None = None
    incomplete_details: _Incomplete | None = None
    error: _Failure | None = None


class _Event(msgspec.Struct):
    """One Responses stream event, as much as the adapter reads; `item` and `response` are decoded only for the
    events that use them (`response.created` and others carry a whole response the adapter never looks at)."""

    type: str = ""
    delta: Any = None
    output_index: int = 0
    item: msgspec.Raw = msgspec.Raw()  # empty when absent
    response: msgspec.Raw = msgspec.Raw()
    message: Any = None
    code: Any = None
    error: Any = None


_decode_event = msgspec.json.Decoder(_Event).decode
_decode_item = msgspec.json.Decoder(_Item).decode
_decode_response = msgspec.json.Decoder(_Response).decode


class _EventState:
    """Follows one Responses stream: numbers the function calls, remembers which had streamed arguments."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.builder = ResponseBuilder()
        self.done: ResponseDone | None = None
        self._calls: dict[int, int] = {}  # output_index -> tool call index
        self._streamed_arguments: set[int] = set()
        self._early: dict[int, list[str]] = {}  # output_index -> argument deltas sent before the call was added

    def events(self, data: str) -> list[StreamEvent]:
        try:
            event = _decode_event(data)
            return self._events(event)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise malformed(self.provider, error) from error

    def _events(self, event: _Event) -> list[StreamEvent]:
        add = self.builder.add
        kind = event.type
        if event.error and isinstance(event.error, dict):  # a server's error object in the stream
            message, code, error_kind = error_fields(event.error)
            raise stream_error(self.provider, message or "An error occurred during streaming", code, error_kind)
        if kind == "response.output_text.delta":
            return [add(TextChunk(event.delta))] if isinstance(event.delta, str) and event.delta else []
        if kind in ("response.output_item.added", "response.output_item.done") and len(event.item):
            item = _decode_item(event.item)
            if item.type != "function_call":
                return []
            out = [add(e) for e in self._start(event.output_index, item)]
            if kind == "response.output_item.done":
                index = self._calls[event.output_index]
                final = item.arguments
                if index not in self._streamed_arguments and final:
                    self._streamed_arguments.add(index)
                    out.append(add(ToolCallChunk(index, final)))
                elif final and "".join(self.builder.calls.get(index, [])) != final:
                    # the whole arguments win over what was streamed (pieces lost, doubled or out of order)
                    self.builder.calls[index] = [final]
            return out
        if kind == "response.function_call_arguments.delta":
            known = self._calls.get(event.output_index)
            if not isinstance(event.delta, str) or not event.delta:
                return []
            if known is None:  # before its output_item.added: kept until the call is known
                self._early.setdefault(event.output_index, []).append(event.delta)
                return []
            self._streamed_arguments.add(known)
            return [add(ToolCallChunk(known, event.delta))]
        if kind in ("response.completed", "response.incomplete") and len(event.response):
            response = _decode_response(event.response)
            self.done = self._finish(response, incomplete=kind == "response.incomplete")
            return []
        if kind == "response.failed":
            failure = _decode_response(event.response).error if len(event.response) else None
            code = str(failure.code) if failure and failure.code else None
            raise stream_error(self.provider, (failure.message if failure else None) or "the response failed", code)
        if kind == "error":
            code = None if event.code is None else str(event.code)
            raise stream_error(self.provider, str(event.message or ""), code)
        return []

    def _start(self, output_index: int, item: _Item) -> list[StreamEvent]:
        if output_index in self._calls:
            return []
        index = self._calls[output_index] = len(self._calls)
        out: list[StreamEvent] = [ToolCallStart(index, item.call_id, item.name)]
        early = self._early.pop(output_index, [])
        if early:
            self._streamed_arguments.add(index)
            out += [ToolCallChunk(index, delta) for delta in early]
        return out

    def _finish(self, response: _Response, *, incomplete: bool) -> ResponseDone:
        calls = self.builder.tool_calls()
        stop: StopReason = "tool_calls" if calls else "stop"
        if incomplete:
            reason = response.incomplete_details.reason if response.incomplete_details else None
            stop = "content_filter" if reason == "content_filter" else "length"
        usage = response.usage
        details = usage.input_tokens_details if usage else None
        return self.builder.done(
            stop_reason=stop,
            input_tokens=(usage.input_tokens or 0) if usage else 0,
            output_tokens=(usage.output_tokens or 0) if usage else 0,
            cached_input_tokens=(details.cached_tokens or 0) if details else 0,
            reasoning=[self._reasoning(item) for item in response.output or [] if _kept_reasoning(item)],
            model=response.model or None,
        )

    def _reasoning(self, item: _Item) -> ReasoningBlock:
        # Only what the API takes back as an input item: extra output fields would be refused as unknown.
        summary = item.summary or []
        data: dict[str, Any] = {
            "type": "reasoning",
            "id": item.id,
            "summary": [{"type": "summary_text", "text": s.text} for s in summary],
            "encrypted_content": item.encrypted_content,
        }
        text = "\n\n".join(s.text for s in summary) or None
        return ReasoningBlock(self.provider, data, text)


def _kept_reasoning(item: _Item) -> bool:
    return item.type == "reasoning" and bool(item.encrypted_content)
