"""The Responses adapter against a loopback server speaking the wire format, through the real openai SDK:
streamed text and parallel function calls, usage, reasoning items and their round trip, the request it sends,
retries and error mapping (HTTP errors and `response.failed` / `error` events), cut and malformed streams, and
concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from contextfold import (
    ContextLengthError,
    ModelAuthError,
    ModelRequestError,
    ModelResponseError,
    ModelUnavailableError,
    RateLimitError,
)
from contextfold.events import Item, Reasoning, assistant, user
from contextfold.models import (
    ModelSettings,
    ReasoningBlock,
    ResponseDone,
    RetryPolicy,
    StreamEvent,
    TextChunk,
    ToolCallChunk,
    ToolCallRequest,
    ToolCallStart,
)
from contextfold.models._openai import OpenAIProvider
from contextfold.models._openai_responses import OpenAIResponsesModel
from contextfold.view import Window

from .fakes._server import FakeServer, Reply, Request, StreamReply
from .fakes.fake_openai import (
    ResponsesEvents,
    ask,
    context_length_body,
    error_body,
    last_user_text,
    raw_sse,
    responses_answer,
    tool_window,
)

RETRY = RetryPolicy(attempts=3, initial=0.001, maximum=0.01)
SETTINGS = ModelSettings()


@pytest.fixture
async def provider(server: FakeServer) -> AsyncIterator[OpenAIProvider]:
    async with OpenAIProvider("test-key", server.url + "/v1") as created:
        yield created


@pytest.fixture
def model(provider: OpenAIProvider) -> OpenAIResponsesModel:
    return OpenAIResponsesModel("gpt-4.1", provider, retry=RETRY)


async def events_of(model: OpenAIResponsesModel, window: Window) -> list[StreamEvent]:
    return [event async for event in model.stream(window, SETTINGS)]


async def collect_into(events: list[StreamEvent], model: OpenAIResponsesModel, window: Window) -> None:
    """Stream into `events`, so a test sees what arrived before the stream failed."""
    async for event in model.stream(window, SETTINGS):
        events.append(event)


async def test_streams_text_in_chunks(server: FakeServer, model: OpenAIResponsesModel) -> None:
    server.reply(responses_answer("The sky is blue today"))
    events = await events_of(model, ask("Colour of the sky?"))
    assert [e.text for e in events if isinstance(e, TextChunk)] == ["The", " sky", " is", " blue", " today"]
    assert isinstance(events[-1], ResponseDone)
    done = events[-1].response
    assert (done.text, done.stop_reason, done.model, done.tool_calls) == (
        "The sky is blue today",
        "stop",
        "gpt-4.1",
        [],
    )


async def test_request_collects_the_stream(server: FakeServer, model: OpenAIResponsesModel) -> None:
    server.reply(responses_answer("Hello there"))
    assert (await model.request(ask("Hi"), SETTINGS)).text == "Hello there"
    assert server.requests[0].json["stream"] is True


async def test_parallel_function_calls_stream_their_arguments(server: FakeServer, model: OpenAIResponsesModel) -> None:
    stream = (
        ResponsesEvents()
        .created()
        .reasoning()
        .text("Checking.")
        .function_call("call_a", "weather", '{"ci', 'ty": ', '"Paris"}')
        .function_call("call_b", "weather", '{"city"', ': "Rome"}')
        .completed(50, 20)
    )
    server.reply(stream.reply())
    events = await events_of(model, tool_window())
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert starts == [ToolCallStart(0, "call_a", "weather"), ToolCallStart(1, "call_b", "weather")]
    chunks = [(e.index, e.arguments) for e in events if isinstance(e, ToolCallChunk)]
    assert chunks == [(0, '{"ci'), (0, 'ty": '), (0, '"Paris"}'), (1, '{"city"'), (1, ': "Rome"}')]
    done = events[-1]
    assert isinstance(done, ResponseDone)
    assert done.response.tool_calls == [
        ToolCallRequest("call_a", "weather", '{"city": "Paris"}'),
        ToolCallRequest("call_b", "weather", '{"city": "Rome"}'),
    ]
    assert (done.response.text, done.response.stop_reason) == ("Checking.", "tool_calls")


async def test_arguments_sent_only_whole(server: FakeServer, model: OpenAIResponsesModel) -> None:
    stream = ResponsesEvents().created().function_call("call_a", "weather").completed()
    stream.events[-2]["item"]["arguments"] = '{"city": "Oslo"}'  # no deltas, the arguments only in the done item
    server.reply(stream.reply())
    events = await events_of(model, ask("Hi"))
    assert [e for e in events if isinstance(e, ToolCallChunk)] == [ToolCallChunk(0, '{"city": "Oslo"}')]


async def test_usage_and_cached_tokens(server: FakeServer, model: OpenAIResponsesModel) -> None:
    server.reply(ResponsesEvents().created().text("ok").completed(1500, 9, cached=1280).reply())
    response = await model.request(ask("Hi"), SETTINGS)
    assert (response.input_tokens, response.output_tokens, response.cached_input_tokens) == (1500, 9, 1280)


async def test_incomplete_response_stops_for_length(server: FakeServer, model: OpenAIResponsesModel) -> None:
    server.reply(ResponsesEvents().created().text("Cut sh").incomplete("max_output_tokens").reply())
    response = await model.request(ask("Hi"), SETTINGS)
    assert (response.text, response.stop_reason) == ("Cut sh", "length")


async def test_reasoning_items_round_trip(server: FakeServer, provider: OpenAIProvider) -> None:
    model = OpenAIResponsesModel("o3", provider, retry=RETRY)
    stream = ResponsesEvents("o3").created().reasoning("ENC-1", ["Thinking."]).reasoning(None).text("42").completed()
    server.reply(stream.reply())
    response = await model.request(ask("Meaning of life?"), SETTINGS)
    item = {"type": "reasoning", "id": "rs_0", "summary": [{"type": "summary_text", "text": "Thinking."}]}
    # the item without encrypted content is dropped: with store=False nothing could resolve it by id
    assert response.reasoning == [ReasoningBlock("openai", {**item, "encrypted_content": "ENC-1"}, "Thinking.")]

    block = response.reasoning[0]
    reasoning = Reasoning(provider=block.provider, data=block.data, text=block.text)
    server.reply(responses_answer("ok", model="o3"))
    # with the answer it produced: a reasoning item followed by nothing it produced breaks the Responses grammar,
    # which the send check repairs (issue 14)
    given: list[Item] = [user("Meaning of life?"), reasoning, assistant("42"), user("Sure?")]
    await model.request(Window(None, None, None, given), SETTINGS)
    assert server.requests[1].json["input"][1] == {**item, "encrypted_content": "ENC-1"}


async def test_request_body(server: FakeServer, model: OpenAIResponsesModel) -> None:
    server.reply(responses_answer("ok"))
    settings = ModelSettings(temperature=0.2, tool_choice="required", parallel_tool_calls=False, timeout=30)
    await model.request(tool_window(), settings)
    request = server.requests[0]
    assert (request.method, request.path) == ("POST", "/v1/responses")
    body = request.json
    assert (body["model"], body["instructions"], body["store"]) == ("gpt-4.1", "Be brief.", False)
    assert "include" not in body  # refused (400) by models that do not reason
    assert body["input"] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Paris and Rome?"}]},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": '{"city": "Rome"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "rain"},
        {"type": "function_call_output", "call_id": "c2", "output": "sunny"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Rain in Paris, sun in Rome."}],
        },
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Thanks!"}]},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "name": "weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "strict": False,
        }
    ]
    assert body["max_output_tokens"] == 500
    assert (body["tool_choice"], body["parallel_tool_calls"], body["temperature"]) == ("required", False, 0.2)


async def test_no_tools_sends_no_tool_options(server: FakeServer, model: OpenAIResponsesModel) -> None:
    server.reply(responses_answer("ok"))
    await model.request(ask("Hi"), ModelSettings(tool_choice="auto", parallel_tool_calls=True))
    body = server.requests[0].json
    assert not {"tools", "tool_choice", "parallel_tool_calls", "instructions", "temperature"} & body.keys()
    assert body["max_output_tokens"] == 32_768  # the profile's output limit


async def test_429_waits_for_retry_after_then_succeeds(server: FakeServer, model: OpenAIResponsesModel) -> None:
    server.reply(Reply(429, json=error_body("Rate limit reached", "rate_limit_exceeded"), headers={"retry-after": "0"}))
    server.reply(responses_answer("finally"))
    assert (await model.request(ask("Hi"), SETTINGS)).text == "finally"
    assert len(server.requests) == 2


async def test_429_exhausting_attempts(server: FakeServer, model: OpenAIResponsesModel) -> None:
    server.handler = lambda r: Reply(
        429, json=error_body("Slow down", "rate_limit_exceeded"), headers={"retry-after": "0"}
    )
    with pytest.raises(RateLimitError) as caught:
        await model.request(ask("Hi"), SETTINGS)
    assert caught.value.retry_after == 0.0
    assert len(server.requests) == RETRY.attempts


async def test_500_is_retried(server: FakeServer, model: OpenAIResponsesModel) -> None:
    server.reply(Reply(500, json=error_body("The server had an error", None, "server_error")), responses_answer("ok"))
    assert (await model.request(ask("Hi"), SETTINGS)).text == "ok"
    assert len(server.requests) == 2


async def test_500_repeatedly_is_unavailable(server: FakeServer, model: OpenAIResponsesModel) -> None:
    server.handler = lambda request: Reply(500, json=error_body("The server had an error", None, "server_error"))
    with pytest.raises(ModelUnavailableError):
        await model.request(ask("Hi"), SETTINGS)
    assert len(server.requests) == RETRY.attempts


async def test_context_length_is_not_retried(server: FakeServer, model: OpenAIResponsesModel) -> None:
    server.handler = lambda request: Reply(400, json=context_length_body())
    with pytest.raises(ContextLengthError):
        await model.request(ask("Hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_other_400_is_a_request_error(server: FakeServer, model: OpenAIResponsesModel) -> None:
    server.handler = lambda request: Reply(400, json=error_body("Unknown parameter: 'foo'.", "unknown_parameter"))
    with pytest.raises(ModelRequestError, match="Unknown parameter"):
        await model.request(ask("Hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_401_is_an_auth_error(server: FakeServer, model: OpenAIResponsesModel) -> None:
    server.handler = lambda request: Reply(401, json=error_body("Incorrect API key provided", "invalid_api_key"))
    with pytest.raises(ModelAuthError):
        await model.request(ask("Hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_failed_response_and_error_events(server: FakeServer, model: OpenAIResponsesModel) -> None:
    server.reply(ResponsesEvents().created().failed("server_error", "The server had an error").reply())
    server.reply(responses_answer("recovered"))
    assert (await model.request(ask("Hi"), SETTINGS)).text == "recovered"  # retried: nothing was streamed yet
    assert len(server.requests) == 2

    server.reply(ResponsesEvents().created().error("context_length_exceeded", "Your input exceeds the window.").reply())
    with pytest.raises(ContextLengthError):
        await model.request(ask("Hi"), SETTINGS)
    server.reply(ResponsesEvents().created().failed("invalid_prompt", "Invalid prompt.").reply())
    with pytest.raises(ModelRequestError, match="invalid_prompt"):
        await model.request(ask("Hi"), SETTINGS)
    assert len(server.requests) == 4


async def test_failure_after_text_is_raised_as_is(server: FakeServer, model: OpenAIResponsesModel) -> None:
    server.reply(ResponsesEvents().created().text("Half").failed("server_error", "The server had an error").reply())
    with pytest.raises(ModelUnavailableError):
        await model.request(ask("Hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_stream_cut_after_text_is_not_retried(server: FakeServer, model: OpenAIResponsesModel) -> None:
    server.reply(ResponsesEvents().created().text("Half", " an").reply(cut=True))
    events: list[StreamEvent] = []
    with pytest.raises(ModelResponseError):
        await collect_into(events, model, ask("Hi"))
    assert events == [TextChunk("Half"), TextChunk(" an")]
    assert len(server.requests) == 1


async def test_stream_cut_before_any_chunk_is_retried(server: FakeServer, model: OpenAIResponsesModel) -> None:
    server.reply(ResponsesEvents().created().reply(cut=True), responses_answer("second try"))
    assert (await model.request(ask("Hi"), SETTINGS)).text == "second try"
    assert len(server.requests) == 2


async def test_stream_ending_without_completion(server: FakeServer, model: OpenAIResponsesModel) -> None:
    server.reply(ResponsesEvents().created().text("Half").reply())
    with pytest.raises(ModelResponseError, match="ended before"):
        await model.request(ask("Hi"), SETTINGS)


async def test_malformed_json(server: FakeServer, model: OpenAIResponsesModel) -> None:
    server.reply(StreamReply(ResponsesEvents().created().chunks() + raw_sse('{"type": "response.output_text.delta",')))
    with pytest.raises(ModelResponseError, match="malformed JSON"):
        await model.request(ask("Hi"), SETTINGS)
    server.reply(Reply(200, body=b"<html>gateway</html>", content_type="text/html"))
    with pytest.raises(ModelResponseError):
        await model.request(ask("Hi"), SETTINGS)
    assert len(server.requests) == 2


async def test_concurrent_requests_share_one_model(server: FakeServer, model: OpenAIResponsesModel) -> None:
    def echo(request: Request) -> StreamReply:
        return responses_answer(f"echo {last_user_text(request)}")

    server.handler = echo
    windows = [ask(f"question {n}") for n in range(20)]
    responses = await asyncio.gather(*(model.request(w, SETTINGS) for w in windows))
    assert [r.text for r in responses] == [f"echo question {n}" for n in range(20)]
    assert len(server.requests) == 20


async def test_argument_deltas_before_the_item_is_added_are_replayed(
    server: FakeServer, model: OpenAIResponsesModel
) -> None:
    stream = ResponsesEvents().created().function_call("call_a", "weather", '{"city"', ': "Lima"}').completed()
    added = next(n for n, e in enumerate(stream.events) if e["type"] == "response.output_item.added")
    deltas = [e for e in stream.events if e["type"] == "response.function_call_arguments.delta"]
    rest = [e for e in stream.events if e["type"] != "response.function_call_arguments.delta"]
    stream.events[:] = [*rest[:added], *deltas, *rest[added:]]  # as Llama Stack sends them: deltas first
    next(e for e in stream.events if e["type"] == "response.output_item.done")["item"]["arguments"] = ""
    server.reply(stream.reply())
    events = await events_of(model, tool_window())
    assert [e for e in events if isinstance(e, ToolCallStart)] == [ToolCallStart(0, "call_a", "weather")]
    assert [e.arguments for e in events if isinstance(e, ToolCallChunk)] == ['{"city"', ': "Lima"}']
    done = events[-1]
    assert isinstance(done, ResponseDone)
    assert done.response.tool_calls == [ToolCallRequest("call_a", "weather", '{"city": "Lima"}')]


async def test_the_arguments_of_the_done_item_win(server: FakeServer, model: OpenAIResponsesModel) -> None:
    stream = ResponsesEvents().created().function_call("call_a", "weather", '{"city"', '{"city"').completed()
    done_item = next(e for e in stream.events if e["type"] == "response.output_item.done")
    done_item["item"]["arguments"] = '{"city": "Oslo"}'
    server.reply(stream.reply())
    events = await events_of(model, tool_window())
    done = events[-1]
    assert isinstance(done, ResponseDone)
    assert done.response.tool_calls == [ToolCallRequest("call_a", "weather", '{"city": "Oslo"}')]
