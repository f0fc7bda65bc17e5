"""The Cohere adapter over real HTTP: the official SDK (`AsyncClientV2`) talks to a loopback fake of /v2/chat SSE."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from contextfold._errors import (
    ConfigurationError,
    ContextLengthError,
    ModelAuthError,
    ModelRequestError,
    ModelResponseError,
    ModelUnavailableError,
    RateLimitError,
)
from contextfold.events import Reasoning, TextPart, ToolCall, ToolResult, ToolSpec, assistant, system, user
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
from contextfold.models._cohere import CohereModel, CohereProvider, render_cohere, validate_cohere
from contextfold.view import Window

from .fakes import fake_cohere as wire
from .fakes._server import FakeServer, Reply, Request, StreamReply, drain

SETTINGS = ModelSettings()
WEATHER = ToolSpec("weather", "Weather of a city", {"type": "object", "properties": {"city": {"type": "string"}}})


def window(*texts: str, system_prompt: str | None = "Be brief.") -> Window:
    return Window(system_prompt, None, None, [user(text) for text in texts])


@pytest.fixture
async def provider(server: FakeServer) -> AsyncIterator[CohereProvider]:
    provider = CohereProvider("co-test", base_url=server.url)
    yield provider
    await provider.aclose()


def command(provider: CohereProvider, attempts: int = 3) -> CohereModel:
    return CohereModel("command-a-03-2025", provider, retry=RetryPolicy(attempts=attempts, initial=0.001, maximum=0.01))


async def events(model: CohereModel, win: Window, settings: ModelSettings = SETTINGS) -> list[StreamEvent]:
    return [event async for event in model.stream(win, settings)]


# --- answers ------------------------------------------------------------------------------------------------


async def test_text_streams_in_chunks(server: FakeServer, provider: CohereProvider) -> None:
    server.reply(wire.text_answer("Hel", "lo, ", "world"))
    out = await events(command(provider), window("hi"))
    assert [e.text for e in out if isinstance(e, TextChunk)] == ["Hel", "lo, ", "world"]
    assert isinstance(out[-1], ResponseDone)
    done = out[-1].response
    assert (done.text, done.stop_reason, done.model, done.tool_calls) == (
        "Hello, world",
        "stop",
        "command-a-03-2025",
        [],
    )
    assert server.requests[0].path == "/v2/chat"
    assert server.requests[0].headers["authorization"] == "Bearer co-test"


async def test_request_collects_the_stream(server: FakeServer, provider: CohereProvider) -> None:
    server.reply(wire.text_answer("One ", "two"))
    assert (await command(provider).request(window("count"), SETTINGS)).text == "One two"


async def test_parallel_tool_calls_stream_their_arguments(server: FakeServer, provider: CohereProvider) -> None:
    server.reply(
        StreamReply(
            wire.events(
                wire.message_start(),
                wire.tool_plan("I will check "),
                wire.tool_plan("both cities."),
                *wire.tool_call(0, "c_1", "weather", '{"ci', 'ty": "Par', 'is"}'),
                *wire.tool_call(1, "c_2", "weather", '{"city":', ' "Rome"}'),
                wire.message_end("TOOL_CALL", 30, 12),
            )
        )
    )
    out = await events(command(provider), window("weather?"))
    starts = [e for e in out if isinstance(e, ToolCallStart)]
    assert starts == [ToolCallStart(0, "c_1", "weather"), ToolCallStart(1, "c_2", "weather")]
    chunks = [(e.index, e.arguments) for e in out if isinstance(e, ToolCallChunk)]
    assert chunks == [(0, '{"ci'), (0, 'ty": "Par'), (0, 'is"}'), (1, '{"city":'), (1, ' "Rome"}')]
    assert isinstance(out[-1], ResponseDone)
    done = out[-1].response
    assert done.tool_calls == [
        ToolCallRequest("c_1", "weather", '{"city": "Paris"}'),
        ToolCallRequest("c_2", "weather", '{"city": "Rome"}'),
    ]
    assert (done.stop_reason, done.text) == ("tool_calls", "")
    assert done.reasoning == [ReasoningBlock("cohere", {"type": "tool_plan"}, "I will check both cities.")]


async def test_usage(server: FakeServer, provider: CohereProvider) -> None:
    server.reply(wire.text_answer("ok", input_tokens=1040, output_tokens=7, cached=1000))
    response = await command(provider).request(window("hi"), SETTINGS)
    assert (response.input_tokens, response.output_tokens, response.cached_input_tokens) == (1040, 7, 1000)


@pytest.mark.parametrize(("finish", "expected"), [("MAX_TOKENS", "length"), ("ERROR", "error"), ("COMPLETE", "stop")])
async def test_finish_reasons(server: FakeServer, provider: CohereProvider, finish: str, expected: str) -> None:
    server.reply(StreamReply(wire.events(wire.message_start(), wire.content_delta("x"), wire.message_end(finish))))
    assert (await command(provider).request(window("hi"), SETTINGS)).stop_reason == expected


# --- the request --------------------------------------------------------------------------------------------


def tool_window() -> Window:
    return Window(
        "Be brief.",
        [WEATHER],
        None,
        [
            user("Weather in Paris and Rome?", turn_id="t1"),
            Reasoning(provider="cohere", data={"type": "tool_plan"}, text="Check both.", turn_id="t1"),
            ToolCall(call_id="c1", name="weather", arguments='{"city": "Paris"}', batch_id="b1", turn_id="t1"),
            ToolCall(call_id="c2", name="weather", arguments='{"city": "Rome"}', batch_id="b1", turn_id="t1"),
            ToolResult(call_id="c2", output="rain", turn_id="t1"),
            ToolResult(call_id="c1", output="sun", turn_id="t1"),
            system("Answer in French."),
            assistant("Soleil et pluie.", turn_id="t1"),
            user("Merci"),
        ],
    )


async def test_request_body_renders_the_window_tools_and_limits(server: FakeServer, provider: CohereProvider) -> None:
    server.reply(wire.text_answer("De rien."))
    settings = ModelSettings(max_output_tokens=300, temperature=0.2, tool_choice="required")
    await command(provider).request(tool_window(), settings)
    body = server.requests[0].json
    assert (body["model"], body["stream"], body["max_tokens"], body["temperature"]) == (
        "command-a-03-2025",
        True,
        300,
        0.2,
    )
    assert body["tool_choice"] == "REQUIRED"
    assert body["tools"] == [{"type": "function", "function": {"name": "weather", **WEATHER_FUNCTION}}]
    assert body["messages"] == [
        {"role": "system", "content": "Be brief.\n\nAnswer in French."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "tool_plan": "Check both.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
                {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Rome"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "sun"}]},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "rain"}]},
        {"role": "assistant", "content": "Soleil et pluie."},
        {"role": "user", "content": "Merci"},
    ]
    assert validate_cohere(body["messages"]) == []


WEATHER_FUNCTION = {"description": WEATHER.description, "parameters": WEATHER.parameters}


async def test_unset_options_are_not_sent(server: FakeServer, provider: CohereProvider) -> None:
    server.reply(wire.text_answer("ok"))
    await CohereModel("some-new-model", provider).request(window("hi", system_prompt=None), SETTINGS)
    assert server.requests[0].json == {
        "model": "some-new-model",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }


def test_validator_reports_unanswered_and_orphan_tool_messages() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [call]},
        {"role": "user", "content": "again"},
        {"role": "tool", "tool_call_id": "c9", "content": "x"},
    ]
    problems = validate_cohere(messages)
    assert len(problems) == 2
    assert "'c1'" in problems[0]
    assert "'c9'" in problems[1]


def test_renderer_drops_other_providers_reasoning_and_empty_messages() -> None:
    win = Window(
        None,
        None,
        None,
        [
            user("hi"),
            Reasoning(provider="anthropic", data={"signature": "S"}, text="hmm"),
            assistant(""),
            assistant("Hello"),
        ],
    )
    assert render_cohere(win) == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"}]
    assert user("x").content == [TextPart("x")]


def test_missing_api_key_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CO_API_KEY", raising=False)
    monkeypatch.delenv("COHERE_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="CO_API_KEY"):
        CohereProvider()


async def test_api_key_from_the_environment(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CO_API_KEY", raising=False)
    monkeypatch.setenv("COHERE_API_KEY", "co-env")
    provider = CohereProvider(base_url=server.url)
    server.reply(wire.text_answer("ok"))
    try:
        await command(provider).request(window("hi"), SETTINGS)
    finally:
        await provider.aclose()
    assert server.requests[0].headers["authorization"] == "Bearer co-env"


# --- errors and retries ---------------------------------------------------------------------------------------


async def test_429_waits_retry_after_then_succeeds(server: FakeServer, provider: CohereProvider) -> None:
    server.reply(wire.error(429, "rate limited", {"Retry-After": "0"}), wire.text_answer("ok"))
    assert (await command(provider).request(window("hi"), SETTINGS)).text == "ok"
    assert len(server.requests) == 2


async def test_429_exhausting_attempts_is_a_rate_limit_error(server: FakeServer, provider: CohereProvider) -> None:
    server.reply(*[wire.error(429, "rate limited", {"Retry-After": "0.001"}) for _ in range(3)])
    with pytest.raises(RateLimitError) as caught:
        await command(provider).request(window("hi"), SETTINGS)
    assert caught.value.retry_after == 0.001
    assert len(server.requests) == 3


async def test_500_is_retried_then_succeeds(server: FakeServer, provider: CohereProvider) -> None:
    server.reply(wire.error(500, "internal"), wire.text_answer("ok"))
    assert (await command(provider).request(window("hi"), SETTINGS)).text == "ok"
    assert len(server.requests) == 2


@pytest.mark.parametrize("status", [500, 503, 502])
async def test_5xx_repeatedly_is_unavailable_after_all_attempts(
    server: FakeServer, provider: CohereProvider, status: int
) -> None:
    server.reply(*[wire.error(status, "down") for _ in range(4)])
    with pytest.raises(ModelUnavailableError):
        await command(provider, attempts=4).request(window("hi"), SETTINGS)
    assert len(server.requests) == 4


async def test_too_many_tokens_is_a_context_length_error_never_retried(
    server: FakeServer, provider: CohereProvider
) -> None:
    message = "too many tokens: total number of tokens in the prompt cannot exceed 256000 - received 270000"
    server.reply(wire.error(400, message))
    with pytest.raises(ContextLengthError, match="cannot exceed"):
        await command(provider).request(window("hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_other_400_is_a_request_error_never_retried(server: FakeServer, provider: CohereProvider) -> None:
    server.reply(wire.error(400, "invalid request: model 'nope' not found"))
    with pytest.raises(ModelRequestError, match="not found"):
        await command(provider).request(window("hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_500_with_a_body_that_is_not_json(server: FakeServer, provider: CohereProvider) -> None:
    server.reply(*[Reply(500, body=b"<html>oops</html>", content_type="text/html") for _ in range(3)])
    with pytest.raises(ModelUnavailableError, match="oops"):
        await command(provider).request(window("hi"), SETTINGS)


@pytest.mark.parametrize("status", [401, 498])
async def test_bad_key_is_an_auth_error(server: FakeServer, provider: CohereProvider, status: int) -> None:
    server.reply(wire.error(status, "invalid api token"))
    with pytest.raises(ModelAuthError):
        await command(provider).request(window("hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_stream_cut_after_text_is_a_response_error_not_retried(
    server: FakeServer, provider: CohereProvider
) -> None:
    server.reply(StreamReply(wire.events(wire.message_start(), wire.content_delta("Hel")), cut=True))
    seen: list[StreamEvent] = []
    with pytest.raises(ModelResponseError, match="cut off"):
        await drain(command(provider).stream(window("hi"), SETTINGS), seen)
    assert seen == [TextChunk("Hel")]
    assert len(server.requests) == 1


async def test_stream_cut_before_any_output_is_retried(server: FakeServer, provider: CohereProvider) -> None:
    server.reply(StreamReply(wire.events(wire.message_start()), cut=True), wire.text_answer("ok"))
    assert (await command(provider).request(window("hi"), SETTINGS)).text == "ok"
    assert len(server.requests) == 2


async def test_stream_ending_without_message_end_is_a_response_error(
    server: FakeServer, provider: CohereProvider
) -> None:
    server.reply(StreamReply(wire.events(wire.message_start(), wire.content_delta("Hel"))))
    with pytest.raises(ModelResponseError, match="ended before"):
        await command(provider).request(window("hi"), SETTINGS)


async def test_malformed_stream_event_is_a_response_error(server: FakeServer, provider: CohereProvider) -> None:
    server.reply(StreamReply(wire.events(wire.message_start(), "{not json", wire.message_end())))
    with pytest.raises(ModelResponseError, match="unparseable"):
        await command(provider).request(window("hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_a_body_that_is_not_an_event_stream_is_a_response_error(
    server: FakeServer, provider: CohereProvider
) -> None:
    server.reply(Reply(200, body=b"{not json"))
    with pytest.raises(ModelResponseError, match="no event stream"):
        await command(provider).request(window("hi"), SETTINGS)


async def test_unreachable_server_is_unavailable() -> None:
    with FakeServer() as gone:
        url = gone.url
    provider = CohereProvider("co-test", base_url=url)
    try:
        with pytest.raises(ModelUnavailableError):
            await command(provider, attempts=2).request(window("hi"), SETTINGS)
    finally:
        await provider.aclose()


async def test_caller_client_is_used_and_left_open(server: FakeServer) -> None:
    import cohere
    import httpx

    async with httpx.AsyncClient() as http:
        client = cohere.AsyncClientV2(api_key="co-own", base_url=server.url, httpx_client=http)
        provider = CohereProvider(client=client)
        server.reply(wire.text_answer("ok"))
        await command(provider).request(window("hi"), SETTINGS)
        await provider.aclose()
        assert not http.is_closed
    assert server.requests[0].headers["authorization"] == "Bearer co-own"


# --- concurrency ----------------------------------------------------------------------------------------------


def echo(request: Request) -> Reply | StreamReply:
    last = request.json["messages"][-1]["content"]
    return StreamReply(
        wire.events(wire.message_start(), wire.content_delta("echo: "), wire.content_delta(last), wire.message_end())
    )


async def test_twenty_concurrent_requests_through_one_model(server: FakeServer, provider: CohereProvider) -> None:
    server.handler = echo
    model = command(provider)
    prompts = [f"question {n}" for n in range(20)]
    answers = await asyncio.gather(*(model.request(window(p), SETTINGS) for p in prompts))
    assert [a.text for a in answers] == [f"echo: {p}" for p in prompts]
    assert len(server.requests) == 20
    assert sorted(json.dumps(r.json["messages"][-1]) for r in server.requests) == sorted(
        json.dumps({"role": "user", "content": p}) for p in prompts
    )
