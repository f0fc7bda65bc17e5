"""The Chat Completions adapter against a loopback server speaking the wire format, through the real openai SDK:
streamed text and parallel tool calls, usage, the request it sends, retries and error mapping, cut and malformed
streams, concurrency, and the context window a vLLM or llama.cpp server reports."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncGenerator, AsyncIterator

import pytest
from openai import AsyncOpenAI

from contextfold import (
    ConfigurationError,
    ContextLengthError,
    ModelAuthError,
    ModelRequestError,
    ModelResponseError,
    ModelUnavailableError,
    RateLimitError,
)
from contextfold.models import (
    ModelSettings,
    ResponseDone,
    RetryPolicy,
    StreamEvent,
    TextChunk,
    ToolCallChunk,
    ToolCallRequest,
    ToolCallStart,
)
from contextfold.models._openai import OpenAIProvider
from contextfold.models._openai_chat import OpenAIChatModel
from contextfold.view import Window

from .fakes._server import FakeServer, Reply, Request, StreamReply, sse
from .fakes.fake_openai import (
    ask,
    chat_answer,
    chat_finish,
    chat_stream,
    chat_text,
    chat_tool_call,
    chat_usage,
    context_length_body,
    error_body,
    last_user_text,
    models_list,
    raw_sse,
    tool_window,
)

RETRY = RetryPolicy(attempts=3, initial=0.001, maximum=0.01)
SETTINGS = ModelSettings()


@pytest.fixture
async def provider(server: FakeServer) -> AsyncIterator[OpenAIProvider]:
    async with OpenAIProvider("test-key", server.url + "/v1") as created:
        yield created


@pytest.fixture
def model(provider: OpenAIProvider) -> OpenAIChatModel:
    return OpenAIChatModel("gpt-4o", provider, retry=RETRY)


async def events_of(model: OpenAIChatModel, window: Window) -> list[StreamEvent]:
    return [event async for event in model.stream(window, SETTINGS)]


async def collect_into(events: list[StreamEvent], model: OpenAIChatModel, window: Window) -> None:
    """Stream into `events`, so a test sees what arrived before the stream failed."""
    async for event in model.stream(window, SETTINGS):
        events.append(event)


async def test_streams_text_in_chunks(server: FakeServer, model: OpenAIChatModel) -> None:
    server.reply(chat_answer("The sky is blue today"))
    events = await events_of(model, ask("Colour of the sky?"))
    texts = [e.text for e in events if isinstance(e, TextChunk)]
    assert texts == ["The", " sky", " is", " blue", " today"]
    assert isinstance(events[-1], ResponseDone)
    done = events[-1].response
    assert (done.text, done.stop_reason, done.model, done.tool_calls) == ("The sky is blue today", "stop", "gpt-4o", [])


async def test_request_collects_the_stream(server: FakeServer, model: OpenAIChatModel) -> None:
    server.reply(chat_answer("Hello there"))
    response = await model.request(ask("Hi"), SETTINGS)
    assert response.text == "Hello there"
    assert server.requests[0].json["stream"] is True
    assert server.requests[0].json["stream_options"] == {"include_usage": True}


async def test_parallel_tool_calls_stream_their_arguments(server: FakeServer, model: OpenAIChatModel) -> None:
    server.reply(
        StreamReply(
            chat_stream(
                chat_text("Checking."),
                chat_tool_call(0, "call_a", "weather", '{"ci', 'ty": ', '"Paris"}'),
                chat_tool_call(1, "call_b", "weather", '{"city"', ': "Rome"}'),
                chat_finish("tool_calls"),
                chat_usage(50, 20),
            )
        )
    )
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


async def test_usage_and_cached_tokens(server: FakeServer, model: OpenAIChatModel) -> None:
    server.reply(StreamReply(chat_stream(chat_text("ok"), chat_finish("stop"), chat_usage(1200, 7, cached=1024))))
    response = await model.request(ask("Hi"), SETTINGS)
    assert (response.input_tokens, response.output_tokens, response.cached_input_tokens) == (1200, 7, 1024)


async def test_stop_reasons(server: FakeServer, model: OpenAIChatModel) -> None:
    server.reply(StreamReply(chat_stream(chat_text("cut"), chat_finish("length"))))
    assert (await model.request(ask("Hi"), SETTINGS)).stop_reason == "length"
    server.reply(StreamReply(chat_stream(chat_tool_call(0, "c", "weather", "{}"), chat_finish("stop"))))
    assert (await model.request(ask("Hi"), SETTINGS)).stop_reason == "tool_calls"  # as older Ollama says it


async def test_request_body(server: FakeServer, model: OpenAIChatModel) -> None:
    server.reply(chat_answer("ok"))
    settings = ModelSettings(temperature=0.2, tool_choice="auto", parallel_tool_calls=True, timeout=30)
    await model.request(tool_window(), settings)
    request = server.requests[0]
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer test-key"
    body = request.json
    assert body["model"] == "gpt-4o"
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
        {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Rome"}'}},
    ]
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "c1", "content": "rain"},
        {"role": "tool", "tool_call_id": "c2", "content": "sunny"},
        {"role": "assistant", "content": "Rain in Paris, sun in Rome."},
        {"role": "user", "content": "Thanks!"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "The weather in a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    # a server other than OpenAI gets `max_tokens`, which every OpenAI-compatible server honours
    assert body["max_tokens"] == 500
    assert "max_completion_tokens" not in body
    assert (body["tool_choice"], body["parallel_tool_calls"], body["temperature"]) == ("auto", True, 0.2)


async def test_no_tools_sends_no_tool_options(server: FakeServer, model: OpenAIChatModel) -> None:
    server.reply(chat_answer("ok"))
    await model.request(ask("Hi"), ModelSettings(tool_choice="auto", parallel_tool_calls=False, max_output_tokens=9))
    body = server.requests[0].json
    assert not {"tools", "tool_choice", "parallel_tool_calls", "temperature"} & body.keys()
    assert body["max_tokens"] == 9


async def test_reasoning_models_get_developer_instructions(server: FakeServer, provider: OpenAIProvider) -> None:
    server.reply(chat_answer("ok"))
    await OpenAIChatModel("o3", provider).request(ask("Hi", system_prompt="Be brief."), SETTINGS)
    assert server.requests[0].json["messages"][0] == {"role": "developer", "content": "Be brief."}
    assert server.requests[0].json["max_tokens"] == 100_000  # the profile's output limit


async def test_429_waits_for_retry_after_then_succeeds(server: FakeServer, model: OpenAIChatModel) -> None:
    server.reply(Reply(429, json=error_body("Rate limit reached", "rate_limit_exceeded"), headers={"retry-after": "0"}))
    server.reply(chat_answer("finally"))
    assert (await model.request(ask("Hi"), SETTINGS)).text == "finally"
    assert len(server.requests) == 2


async def test_429_exhausting_attempts(server: FakeServer, model: OpenAIChatModel) -> None:
    limited = Reply(429, json=error_body("Rate limit reached", "rate_limit_exceeded"), headers={"retry-after-ms": "5"})
    server.reply(limited, limited, limited)
    with pytest.raises(RateLimitError) as caught:
        await model.request(ask("Hi"), SETTINGS)
    assert caught.value.retry_after == 0.005
    assert caught.value.provider == "openai"
    assert len(server.requests) == RETRY.attempts


async def test_500_is_retried(server: FakeServer, model: OpenAIChatModel) -> None:
    server.reply(Reply(500, json=error_body("The server had an error", None, "server_error")), chat_answer("ok"))
    assert (await model.request(ask("Hi"), SETTINGS)).text == "ok"
    assert len(server.requests) == 2


async def test_500_repeatedly_is_unavailable(server: FakeServer, model: OpenAIChatModel) -> None:
    server.handler = lambda request: Reply(503, json=error_body("Overloaded", None, "server_error"))
    with pytest.raises(ModelUnavailableError) as caught:
        await model.request(ask("Hi"), SETTINGS)
    assert caught.value.status == 503
    assert len(server.requests) == RETRY.attempts


async def test_context_length_is_not_retried(server: FakeServer, model: OpenAIChatModel) -> None:
    server.handler = lambda request: Reply(400, json=context_length_body())
    with pytest.raises(ContextLengthError, match="maximum context length"):
        await model.request(ask("Hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_other_400_is_a_request_error(server: FakeServer, model: OpenAIChatModel) -> None:
    server.handler = lambda request: Reply(400, json=error_body("Invalid value for 'temperature'", "invalid_value"))
    with pytest.raises(ModelRequestError, match="temperature") as caught:
        await model.request(ask("Hi"), SETTINGS)
    assert caught.value.status == 400
    assert len(server.requests) == 1


async def test_401_is_an_auth_error(server: FakeServer, model: OpenAIChatModel) -> None:
    server.handler = lambda request: Reply(401, json=error_body("Incorrect API key provided", "invalid_api_key"))
    with pytest.raises(ModelAuthError, match="Incorrect API key"):
        await model.request(ask("Hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_stream_cut_after_text_is_not_retried(server: FakeServer, model: OpenAIChatModel) -> None:
    server.reply(StreamReply(chat_stream(chat_text("Half", " an"), done=False), cut=True))
    events: list[StreamEvent] = []
    with pytest.raises(ModelResponseError, match="cut off"):
        await collect_into(events, model, ask("Hi"))
    assert events == [TextChunk("Half"), TextChunk(" an")]
    assert len(server.requests) == 1


async def test_stream_cut_before_any_chunk_is_retried(server: FakeServer, model: OpenAIChatModel) -> None:
    server.reply(StreamReply(chat_stream(chat_text(), done=False), cut=True), chat_answer("second try"))
    assert (await model.request(ask("Hi"), SETTINGS)).text == "second try"
    assert len(server.requests) == 2


async def test_stream_ending_without_finish_reason(server: FakeServer, model: OpenAIChatModel) -> None:
    server.reply(StreamReply(chat_stream(chat_text("Half"))))
    with pytest.raises(ModelResponseError, match="ended before"):
        await model.request(ask("Hi"), SETTINGS)


async def test_malformed_json_in_the_stream(server: FakeServer, model: OpenAIChatModel) -> None:
    server.reply(StreamReply(sse(*chat_text("ok")) + raw_sse('{"id": "chatcmpl-1", "choices": [')))
    with pytest.raises(ModelResponseError, match="malformed JSON"):
        await model.request(ask("Hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_malformed_body(server: FakeServer, model: OpenAIChatModel) -> None:
    server.reply(Reply(200, body=b"{this is not json", content_type="application/json"))
    with pytest.raises(ModelResponseError):
        await model.request(ask("Hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_error_object_inside_the_stream(server: FakeServer, model: OpenAIChatModel) -> None:
    # vLLM reports a failure after the 200 as an error object with the HTTP status as its code
    body = error_body("This model's maximum context length is 4096 tokens.", None, "BadRequestError")
    body["error"]["code"] = 400
    server.reply(StreamReply(sse(body)))
    with pytest.raises(ContextLengthError):
        await model.request(ask("Hi"), SETTINGS)
    server.reply(StreamReply(sse(error_body("boom", "server_error", "server_error"))), chat_answer("ok"))
    assert (await model.request(ask("Hi"), SETTINGS)).text == "ok"  # a server error before any text is retried


async def test_concurrent_requests_share_one_model(server: FakeServer, model: OpenAIChatModel) -> None:
    def echo(request: Request) -> StreamReply:
        return chat_answer(f"echo {last_user_text(request)}")

    server.handler = echo
    windows = [ask(f"question {n}") for n in range(20)]
    responses = await asyncio.gather(*(model.request(w, SETTINGS) for w in windows))
    assert [r.text for r in responses] == [f"echo question {n}" for n in range(20)]
    assert len(server.requests) == 20


async def test_upstream_context_window_of_vllm(server: FakeServer, provider: OpenAIProvider) -> None:
    server.reply(models_list({"id": "other", "max_model_len": 4096}, {"id": "qwen", "max_model_len": 32768}))
    assert await OpenAIChatModel("qwen", provider).upstream_context_window() == 32768
    assert (server.requests[0].method, server.requests[0].path) == ("GET", "/v1/models")


async def test_upstream_context_window_absent(server: FakeServer, provider: OpenAIProvider) -> None:
    model = OpenAIChatModel("llama3", provider)
    server.reply(models_list({"id": "llama3"}))
    assert await model.upstream_context_window() is None
    server.reply(models_list({"id": "something-else"}, {"id": "another"}))
    assert await model.upstream_context_window() is None
    server.reply(Reply(500, json=error_body("down", None, "server_error")))
    assert await model.upstream_context_window() is None


async def test_upstream_context_window_of_llama_cpp_and_openrouter(
    server: FakeServer, provider: OpenAIProvider
) -> None:
    server.reply(models_list({"id": "/models/q.gguf", "owned_by": "llamacpp", "meta": {"n_ctx_train": 8192}}))
    assert await OpenAIChatModel("anything", provider).upstream_context_window() == 8192  # its only model
    server.reply(models_list({"id": "x/y", "context_length": 200000}, {"id": "z", "context_length": 1}))
    assert await OpenAIChatModel("x/y", provider).upstream_context_window() == 200000


async def test_openai_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        OpenAIProvider()
    async with OpenAIProvider("sk-test") as openai_itself:
        assert openai_itself.max_tokens_field == "max_completion_tokens"  # OpenAI refuses max_tokens for o-series


async def test_local_server_needs_no_key(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    async with OpenAIProvider(base_url=server.url + "/v1") as local:
        server.reply(chat_answer("ok"))
        assert (await OpenAIChatModel("llama3", local).request(ask("Hi"), SETTINGS)).text == "ok"
    assert server.requests[0].headers["authorization"] == "Bearer not-needed"


async def test_a_client_passed_in_is_not_closed(server: FakeServer) -> None:
    async with AsyncOpenAI(api_key="k", base_url=server.url + "/v1", max_retries=0) as client:
        provider = OpenAIProvider(client=client)
        await provider.aclose()
        assert not client.is_closed()
        server.reply(chat_answer("still open"))
        assert (await OpenAIChatModel("gpt-4o", provider).request(ask("Hi"), SETTINGS)).text == "still open"


async def test_unreachable_server_is_unavailable() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with OpenAIProvider("k", f"http://127.0.0.1:{port}/v1") as provider:
        model = OpenAIChatModel("gpt-4o", provider, retry=RETRY)
        with pytest.raises(ModelUnavailableError, match="failed before any output"):
            await model.request(ask("Hi"), SETTINGS)
        assert await model.upstream_context_window() is None


async def test_consumer_stopping_early_closes_the_stream(server: FakeServer, model: OpenAIChatModel) -> None:
    server.reply(chat_answer("one two three four"), chat_answer("next"))
    stream = model.stream(ask("Hi"), SETTINGS)
    assert isinstance(stream, AsyncGenerator)
    assert await anext(stream) == TextChunk("one")
    await stream.aclose()  # the response is closed, no connection or warning leaks
    assert (await model.request(ask("Again"), SETTINGS)).text == "next"
