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

from openai import not_given, omit
from openai.types.responses import (
    FunctionToolParam,
    Response,
    ResponseCompletedEvent,
    ResponseErrorEvent,
    ResponseFailedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionToolCall,
    ResponseIncompleteEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseReasoningItem,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
)

from .._errors import ModelError
from ..view import Window
from ..view._grammar import validate_openai_responses
from ..view._render import render_openai_responses
from ._base import ResponseBuilder, RetryPolicy, StreamingModel
from ._openai import AzureProvider, OpenAIProvider, bearer, model_error, stream_error
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
        state = _EventState(self.provider_name)
        streamed = False
        try:
            stream = await self.provider.client.responses.create(
                model=self.provider.model_for(self.name),
                # The renderer builds plain JSON in the wire shape. Passed as `extra_body` (merged over the SDK's own
                # fields) the items and tools skip the SDK's recursive TypedDict transform, whose cost grows with
                # every item; the typed fields are sent empty and overridden.
                input=[],
                extra_body={**(settings.extra or {}), "input": items, **({"tools": tools} if tools else {})},
                extra_headers=bearer(settings.api_key),
                instructions=instructions if instructions is not None else omit,
                stream=True,
                store=False,
                tool_choice=settings.tool_choice if tools and settings.tool_choice else omit,
                parallel_tool_calls=parallel if tools and parallel is not None else omit,
                max_output_tokens=max_tokens or omit,
                temperature=settings.temperature if settings.temperature is not None else omit,
                top_p=settings.top_p if settings.top_p is not None else omit,
                timeout=settings.timeout if settings.timeout is not None else not_given,
            )
            async with stream:
                async for event in stream:
                    for out in state.events(event):
                        streamed = True
                        yield out
        except ModelError:
            raise
        except Exception as error:
            raise model_error(self.provider_name, error, streamed=streamed) from error
        if state.done is not None:
            yield state.done
        # else the stream ended before the response did: the base raises ModelResponseError


class _EventState:
    """Follows one Responses stream: numbers the function calls, remembers which had streamed arguments."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.builder = ResponseBuilder()
        self.done: ResponseDone | None = None
        self._calls: dict[int, int] = {}  # output_index -> tool call index
        self._streamed_arguments: set[int] = set()
        self._early: dict[int, list[str]] = {}  # output_index -> argument deltas sent before the call was added

    def events(self, event: ResponseStreamEvent) -> list[StreamEvent]:
        add = self.builder.add
        if isinstance(event, ResponseTextDeltaEvent):
            return [add(TextChunk(event.delta))] if event.delta else []
        if isinstance(event, ResponseOutputItemAddedEvent) and isinstance(event.item, ResponseFunctionToolCall):
            return [add(e) for e in self._start(event.output_index, event.item)]
        if isinstance(event, ResponseFunctionCallArgumentsDeltaEvent):
            index = self._calls.get(event.output_index)
            if not event.delta:
                return []
            if index is None:  # before its output_item.added: kept until the call is known
                self._early.setdefault(event.output_index, []).append(event.delta)
                return []
            self._streamed_arguments.add(index)
            return [add(ToolCallChunk(index, event.delta))]
        if isinstance(event, ResponseOutputItemDoneEvent) and isinstance(event.item, ResponseFunctionToolCall):
            out = [add(e) for e in self._start(event.output_index, event.item)]
            index = self._calls[event.output_index]
            final = event.item.arguments
            if index not in self._streamed_arguments and final:
                self._streamed_arguments.add(index)
                out.append(add(ToolCallChunk(index, final)))
            elif final and "".join(self.builder.calls.get(index, [])) != final:
                # the whole arguments win over what was streamed (pieces lost, doubled or out of order)
                self.builder.calls[index] = [final]
            return out
        if isinstance(event, (ResponseCompletedEvent, ResponseIncompleteEvent)):
            self.done = self._finish(event.response, incomplete=isinstance(event, ResponseIncompleteEvent))
            return []
        if isinstance(event, ResponseFailedEvent):
            error = event.response.error
            code = str(error.code) if error and error.code else None
            raise stream_error(self.provider, (error.message if error else None) or "the response failed", code)
        if isinstance(event, ResponseErrorEvent):
            raise stream_error(self.provider, event.message, event.code)
        return []

    def _start(self, output_index: int, item: ResponseFunctionToolCall) -> list[StreamEvent]:
        if output_index in self._calls:
            return []
        index = self._calls[output_index] = len(self._calls)
        out: list[StreamEvent] = [ToolCallStart(index, item.call_id, item.name)]
        early = self._early.pop(output_index, [])
        if early:
            self._streamed_arguments.add(index)
            out += [ToolCallChunk(index, delta) for delta in early]
        return out

    def _finish(self, response: Response, *, incomplete: bool) -> ResponseDone:
        calls = self.builder.tool_calls()
        stop: StopReason = "tool_calls" if calls else "stop"
        if incomplete:
            reason = response.incomplete_details.reason if response.incomplete_details else None
            stop = "content_filter" if reason == "content_filter" else "length"
        usage = response.usage
        cached = usage.input_tokens_details.cached_tokens if usage and usage.input_tokens_details else 0
        return self.builder.done(
            stop_reason=stop,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            cached_input_tokens=cached or 0,
            reasoning=[self._reasoning(item) for item in _reasoning_items(response)],
            model=response.model or None,
        )

    def _reasoning(self, item: ResponseReasoningItem) -> ReasoningBlock:
        # Only what the API takes back as an input item: extra output fields would be refused as unknown.
        data: dict[str, Any] = {
            "type": "reasoning",
            "id": item.id,
            "summary": [{"type": "summary_text", "text": s.text} for s in item.summary],
            "encrypted_content": item.encrypted_content,
        }
        text = "\n\n".join(s.text for s in item.summary) or None
        return ReasoningBlock(self.provider, data, text)


def _reasoning_items(response: Response) -> list[ResponseReasoningItem]:
    return [
        item for item in response.output or [] if isinstance(item, ResponseReasoningItem) and item.encrypted_content
    ]
