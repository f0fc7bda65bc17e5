"""The Anthropic adapter over real HTTP: the official SDK talks to a loopback fake speaking the Messages SSE wire."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from anthropic import AsyncAnthropic

from contextfold._errors import (
    ConfigurationError,
    ContextLengthError,
    ModelAuthError,
    ModelRequestError,
    ModelResponseError,
    ModelUnavailableError,
    RateLimitError,
)
from contextfold.events import Item, Reasoning, ToolCall, ToolResult, ToolSpec, assistant, user
from contextfold.models import (
    ModelProfile,
    ModelSettings,
    ResponseDone,
    RetryPolicy,
    StreamEvent,
    TextChunk,
    ToolCallChunk,
    ToolCallRequest,
    ToolCallStart,
)
from contextfold.models._anthropic import AnthropicModel, AnthropicProvider
from contextfold.view import Window

from .fakes import fake_anthropic as wire
from .fakes._server import FakeServer, Reply, Request, StreamReply, drain

SETTINGS = ModelSettings()
WEATHER = ToolSpec("weather", "Weather of a city", {"type": "object", "properties": {"city": {"type": "string"}}})


def window(*texts: str, system_prompt: str | None = "Be brief.") -> Window:
    return Window(system_prompt, None, None, [user(text) for text in texts])


@pytest.fixture
async def provider(server: FakeServer) -> AsyncIterator[AnthropicProvider]:
    provider = AnthropicProvider(api_key="sk-test", base_url=server.url)
    yield provider
    await provider.aclose()


def claude(provider: AnthropicProvider, attempts: int = 3, profile: ModelProfile | None = None) -> AnthropicModel:
    retry = RetryPolicy(attempts=attempts, initial=0.001, maximum=0.01)
    return AnthropicModel("claude-sonnet-4-6", provider, profile=profile, retry=retry)


async def events(model: AnthropicModel, win: Window, settings: ModelSettings = SETTINGS) -> list[StreamEvent]:
    return [event async for event in model.stream(win, settings)]


# --- answers ------------------------------------------------------------------------------------------------


async def test_text_streams_in_chunks(server: FakeServer, provider: AnthropicProvider) -> None:
    server.reply(wire.text_reply(["Hel", "lo, ", "world"]))
    out = await events(claude(provider), window("hi"))
    assert [e.text for e in out if isinstance(e, TextChunk)] == ["Hel", "lo, ", "world"]
    assert isinstance(out[-1], ResponseDone)
    done = out[-1].response
    assert (done.text, done.stop_reason, done.model) == ("Hello, world", "stop", "claude-sonnet-4-6")


async def test_request_collects_the_stream(server: FakeServer, provider: AnthropicProvider) -> None:
    server.reply(wire.text_reply(["One ", "two"]))
    assert (await claude(provider).request(window("count"), SETTINGS)).text == "One two"


async def test_parallel_tool_calls_stream_their_arguments(server: FakeServer, provider: AnthropicProvider) -> None:
    server.reply(
        wire.stream(
            [
                wire.message_start(),
                *wire.text_block(0, ["Checking."]),
                *wire.tool_block(1, "toolu_1", "weather", ['{"ci', 'ty": "Par', 'is"}']),
                *wire.tool_block(2, "toolu_2", "weather", ['{"city":', ' "Rome"}']),
                wire.message_delta("tool_use", 30),
                wire.message_stop(),
            ]
        )
    )
    out = await events(claude(provider), window("weather?"))
    assert [e for e in out if isinstance(e, ToolCallStart)] == [
        ToolCallStart(0, "toolu_1", "weather"),
        ToolCallStart(1, "toolu_2", "weather"),
    ]
    chunks = [(e.index, e.arguments) for e in out if isinstance(e, ToolCallChunk)]
    assert chunks == [(0, '{"ci'), (0, 'ty": "Par'), (0, 'is"}'), (1, '{"city":'), (1, ' "Rome"}')]
    assert isinstance(out[-1], ResponseDone)
    done = out[-1].response
    assert done.tool_calls == [
        ToolCallRequest("toolu_1", "weather", '{"city": "Paris"}'),
        ToolCallRequest("toolu_2", "weather", '{"city": "Rome"}'),
    ]
    assert (done.text, done.stop_reason) == ("Checking.", "tool_calls")


async def test_usage_counts_cached_tokens_in_the_input(server: FakeServer, provider: AnthropicProvider) -> None:
    server.reply(wire.text_reply(["ok"], input_tokens=40, output_tokens=7, cache_read=1000))
    response = await claude(provider).request(window("hi"), SETTINGS)
    assert (response.input_tokens, response.output_tokens, response.cached_input_tokens) == (1040, 7, 1000)


@pytest.mark.parametrize(
    ("stop", "expected"),
    [("max_tokens", "length"), ("refusal", "content_filter"), ("stop_sequence", "stop"), ("end_turn", "stop")],
)
async def test_stop_reasons(server: FakeServer, provider: AnthropicProvider, stop: str, expected: str) -> None:
    server.reply(wire.stream([wire.message_start(), wire.message_delta(stop), wire.message_stop()]))
    assert (await claude(provider).request(window("hi"), SETTINGS)).stop_reason == expected


async def test_thinking_comes_back_as_reasoning_the_renderer_passes_back(
    server: FakeServer, provider: AnthropicProvider
) -> None:
    server.reply(
        wire.stream(
            [
                wire.message_start(),
                *wire.thinking_block(0, ["Let me ", "think."], "SIG=="),
                *wire.text_block(1, ["Done."]),
                wire.message_delta(),
                wire.message_stop(),
            ]
        ),
        wire.text_reply(["again"]),
    )
    model = claude(provider)
    response = await model.request(window("think"), SETTINGS)
    assert response.text == "Done."
    [block] = response.reasoning
    assert (block.provider, block.text) == ("anthropic", "Let me think.")
    reasoning = Reasoning(provider=block.provider, data=block.data, text=block.text)
    await model.request(
        Window(None, None, None, [user("think"), reasoning, assistant("Done."), user("more")]), SETTINGS
    )
    sent = server.requests[1].json["messages"][1]
    assert sent == {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Let me think.", "signature": "SIG=="},
            {"type": "text", "text": "Done."},
        ],
    }


# --- the request ----------------------------------------------------------------------------------------------


async def test_request_body_renders_the_window_tools_and_limits(
    server: FakeServer, provider: AnthropicProvider
) -> None:
    server.reply(wire.text_reply(["ok"]))
    items: list[Item] = [
        user("Weather in Paris and Rome?"),
        ToolCall(call_id="c1", name="weather", arguments='{"city": "Paris"}', batch_id="b1"),
        ToolCall(call_id="c2", name="weather", arguments='{"city": "Rome"}', batch_id="b1"),
        ToolResult(call_id="c2", output="rain"),
        ToolResult(call_id="c1", output="sun"),
    ]
    settings = ModelSettings(max_output_tokens=321, tool_choice="required", parallel_tool_calls=False, timeout=30)
    await claude(provider).request(Window("Be brief.", [WEATHER], None, items), settings)
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    body = request.json
    assert body["model"] == "claude-sonnet-4-6"
    assert body["stream"] is True
    assert body["max_tokens"] == 321
    assert body["system"] == "Be brief."
    assert "temperature" not in body
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "c1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "c2", "name": "weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "sun"},
                {"type": "tool_result", "tool_use_id": "c2", "content": "rain"},
            ],
        },
    ]
    assert body["tools"] == [
        {"name": "weather", "description": "Weather of a city", "input_schema": WEATHER.parameters}
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert request.headers["authorization"] == "Bearer sk-test"  # SDK 2.x sends the API key as a bearer token


@pytest.mark.parametrize(
    ("window_limit", "profile_limit", "expected"), [(222, 333, 222), (None, 333, 333), (None, None, 4096)]
)
async def test_max_tokens_falls_back_to_window_profile_then_4096(
    server: FakeServer, provider: AnthropicProvider, window_limit: int | None, profile_limit: int | None, expected: int
) -> None:
    server.reply(wire.text_reply(["ok"]))
    model = claude(provider, profile=ModelProfile(max_output_tokens=profile_limit))
    await model.request(Window(None, None, window_limit, [user("hi")]), SETTINGS)
    body = server.requests[0].json
    assert body["max_tokens"] == expected
    assert not {"system", "tools", "tool_choice"} & body.keys()


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (ModelSettings(tool_choice="auto"), {"type": "auto"}),
        (ModelSettings(tool_choice="none"), {"type": "none"}),
        (ModelSettings(parallel_tool_calls=False), {"type": "auto", "disable_parallel_tool_use": True}),
        (ModelSettings(), None),
    ],
)
async def test_tool_choice(
    server: FakeServer, provider: AnthropicProvider, settings: ModelSettings, expected: object
) -> None:
    server.reply(wire.text_reply(["ok"]))
    await claude(provider).request(Window(None, [WEATHER], None, [user("hi")]), settings)
    assert server.requests[0].json.get("tool_choice") == expected


async def test_a_client_passed_in_has_sdk_retries_off_and_stays_the_callers(server: FakeServer) -> None:
    client = AsyncAnthropic(api_key="sk-test", base_url=server.url)  # the SDK would retry twice by default
    provider = AnthropicProvider(client=client)
    server.reply(wire.error_reply(500, "api_error", "boom"))
    with pytest.raises(ModelUnavailableError):
        await claude(provider, attempts=1).request(window("hi"), SETTINGS)
    assert len(server.requests) == 1
    await provider.aclose()
    assert not client.is_closed()
    await client.close()


def test_missing_api_key_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY"):
        AnthropicProvider()


# --- errors and retries ---------------------------------------------------------------------------------------


async def test_429_waits_retry_after_then_succeeds(server: FakeServer, provider: AnthropicProvider) -> None:
    server.reply(wire.error_reply(429, "rate_limit_error", "slow down", {"retry-after": "0"}), wire.text_reply(["ok"]))
    assert (await claude(provider).request(window("hi"), SETTINGS)).text == "ok"
    assert len(server.requests) == 2


async def test_429_exhausting_attempts_is_a_rate_limit_error(server: FakeServer, provider: AnthropicProvider) -> None:
    server.reply(*[wire.error_reply(429, "rate_limit_error", "slow down", {"retry-after": "7"}) for _ in range(3)])
    with pytest.raises(RateLimitError) as caught:
        await claude(provider, attempts=3).request(window("hi"), SETTINGS)
    assert caught.value.retry_after == 7
    assert len(server.requests) == 3


async def test_500_is_retried_then_succeeds(server: FakeServer, provider: AnthropicProvider) -> None:
    server.reply(wire.error_reply(500, "api_error", "boom"), wire.text_reply(["ok"]))
    assert (await claude(provider).request(window("hi"), SETTINGS)).text == "ok"
    assert len(server.requests) == 2


@pytest.mark.parametrize("status", [500, 529])
async def test_5xx_repeatedly_is_unavailable_after_all_attempts(
    server: FakeServer, provider: AnthropicProvider, status: int
) -> None:
    server.reply(*[wire.error_reply(status, "overloaded_error", "Overloaded") for _ in range(4)])
    with pytest.raises(ModelUnavailableError):
        await claude(provider, attempts=4).request(window("hi"), SETTINGS)
    assert len(server.requests) == 4


@pytest.mark.parametrize(
    ("status", "kind", "message"),
    [
        (400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
        (413, "invalid_request_error", "Request exceeds the maximum allowed number of bytes."),
    ],
)
async def test_too_long_is_a_context_length_error_never_retried(
    server: FakeServer, provider: AnthropicProvider, status: int, kind: str, message: str
) -> None:
    server.reply(wire.error_reply(status, kind, message))
    with pytest.raises(ContextLengthError) as caught:
        await claude(provider).request(window("hi"), SETTINGS)
    assert caught.value.status == status
    assert len(server.requests) == 1


async def test_other_400_is_a_request_error_never_retried(server: FakeServer, provider: AnthropicProvider) -> None:
    server.reply(wire.error_reply(400, "invalid_request_error", "messages: roles must alternate"))
    with pytest.raises(ModelRequestError, match="roles must alternate"):
        await claude(provider).request(window("hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_401_is_an_auth_error(server: FakeServer, provider: AnthropicProvider) -> None:
    server.reply(wire.error_reply(401, "authentication_error", "invalid x-api-key"))
    with pytest.raises(ModelAuthError):
        await claude(provider).request(window("hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_error_event_mid_stream_is_unavailable_and_not_retried(
    server: FakeServer, provider: AnthropicProvider
) -> None:
    server.reply(wire.stream([wire.message_start(), *wire.text_block(0, ["partial"]), wire.error_event()]))
    seen: list[StreamEvent] = []
    with pytest.raises(ModelUnavailableError, match="Overloaded"):
        await drain(claude(provider).stream(window("hi"), SETTINGS), seen)
    assert seen == [TextChunk("partial")]
    assert len(server.requests) == 1


async def test_error_event_before_any_output_is_retried(server: FakeServer, provider: AnthropicProvider) -> None:
    server.reply(wire.stream([wire.message_start(), wire.error_event()]), wire.text_reply(["ok"]))
    assert (await claude(provider).request(window("hi"), SETTINGS)).text == "ok"
    assert len(server.requests) == 2


async def test_stream_cut_after_text_is_a_response_error_not_retried(
    server: FakeServer, provider: AnthropicProvider
) -> None:
    server.reply(wire.stream([wire.message_start(), *wire.text_block(0, ["Hel", "lo"])[:2]], cut=True))
    with pytest.raises(ModelResponseError, match="cut off"):
        await claude(provider).request(window("hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_stream_cut_before_any_output_is_retried(server: FakeServer, provider: AnthropicProvider) -> None:
    server.reply(wire.stream([wire.message_start()], cut=True), wire.text_reply(["ok"]))
    assert (await claude(provider).request(window("hi"), SETTINGS)).text == "ok"
    assert len(server.requests) == 2


async def test_malformed_stream_event_is_a_response_error(server: FakeServer, provider: AnthropicProvider) -> None:
    server.reply(StreamReply([*wire.chunks([wire.message_start()]), wire.malformed_event()]))
    with pytest.raises(ModelResponseError, match="malformed"):
        await claude(provider).request(window("hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_a_body_that_is_not_an_event_stream_is_a_response_error(
    server: FakeServer, provider: AnthropicProvider
) -> None:
    server.reply(Reply(200, body=b'{"id": "msg_1", "content": [', content_type="application/json"))
    with pytest.raises(ModelResponseError, match="before message_stop"):
        await claude(provider).request(window("hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_unreachable_server_is_unavailable() -> None:
    with FakeServer() as gone:
        url = gone.url
    closed = AnthropicProvider(api_key="sk-test", base_url=url)
    try:
        with pytest.raises(ModelUnavailableError, match="could not be reached"):
            await claude(closed, attempts=2).request(window("hi"), SETTINGS)
    finally:
        await closed.aclose()


# --- concurrency ----------------------------------------------------------------------------------------------


async def test_twenty_concurrent_requests_through_one_model(server: FakeServer, provider: AnthropicProvider) -> None:
    def echo(request: Request) -> StreamReply:
        last = request.json["messages"][-1]["content"][-1]["text"]
        return wire.text_reply(["echo: ", last])

    server.handler = echo
    model = claude(provider)
    prompts = [f"question {n}" for n in range(20)]
    answers = await asyncio.gather(*(model.request(window("first", prompt), SETTINGS) for prompt in prompts))
    assert [answer.text for answer in answers] == [f"echo: {prompt}" for prompt in prompts]
    assert len(server.requests) == 20
