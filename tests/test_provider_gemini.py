"""The Gemini adapter over real HTTP: the google-genai SDK talks to a loopback fake speaking streamGenerateContent."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Literal, cast

import pytest
from google import genai
from google.genai import types

from contextfold import Agent, Store
from contextfold._errors import (
    ConfigurationError,
    ContextLengthError,
    ModelAuthError,
    ModelRequestError,
    ModelResponseError,
    ModelUnavailableError,
    RateLimitError,
)
from contextfold.events import Item, ToolCall, ToolResult, ToolSpec, user
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
from contextfold.models._gemini import GeminiModel, GeminiProvider
from contextfold.view import Window

from .fakes import fake_gemini as wire
from .fakes._server import FakeServer, Reply, Request, StreamReply, drain, sse

SETTINGS = ModelSettings()
PATH = "/v1/models/gemini-2.5-flash:streamGenerateContent"
WEATHER = ToolSpec("weather", "Weather of a city", {"type": "object", "properties": {"city": {"type": "string"}}})
Choice = Literal["auto", "none", "required"] | None


def window(*texts: str, system_prompt: str | None = "Be brief.") -> Window:
    return Window(system_prompt, None, None, [user(text) for text in texts])


@pytest.fixture
async def provider(server: FakeServer) -> AsyncIterator[GeminiProvider]:
    provider = GeminiProvider(api_key="g-test", base_url=server.url)
    yield provider
    await provider.aclose()


def gemini(provider: GeminiProvider, attempts: int = 3, profile: ModelProfile | None = None) -> GeminiModel:
    retry = RetryPolicy(attempts=attempts, initial=0.001, maximum=0.01)
    return GeminiModel("gemini-2.5-flash", provider, profile=profile, retry=retry)


async def events(model: GeminiModel, win: Window, settings: ModelSettings = SETTINGS) -> list[StreamEvent]:
    return [event async for event in model.stream(win, settings)]


# --- answers ------------------------------------------------------------------------------------------------


async def test_text_streams_in_chunks(server: FakeServer, provider: GeminiProvider) -> None:
    server.reply(wire.text_reply(["Hel", "lo, ", "world"]))
    out = await events(gemini(provider), window("hi"))
    assert [e.text for e in out if isinstance(e, TextChunk)] == ["Hel", "lo, ", "world"]
    assert isinstance(out[-1], ResponseDone)
    done = out[-1].response
    assert (done.text, done.stop_reason, done.model, done.tool_calls) == ("Hello, world", "stop", wire.MODEL, [])
    assert (server.requests[0].path, server.requests[0].query) == (PATH, {"alt": ["sse"]})


async def test_request_collects_the_stream(server: FakeServer, provider: GeminiProvider) -> None:
    server.reply(wire.text_reply(["One ", "two"]))
    assert (await gemini(provider).request(window("count"), SETTINGS)).text == "One two"


async def test_parallel_function_calls_arrive_whole(server: FakeServer, provider: GeminiProvider) -> None:
    server.reply(
        wire.stream(
            wire.chunk(wire.text("Checking.")),
            wire.chunk(wire.call("weather", {"city": "Paris"}), wire.call("weather", {"city": "Rome"}, "fc_given")),
            wire.chunk(wire.call("time", {}), finish="STOP", usage=wire.usage()),
        )
    )
    out = await events(gemini(provider), window("weather?"))
    starts = [e for e in out if isinstance(e, ToolCallStart)]
    assert [(s.index, s.name) for s in starts] == [(0, "weather"), (1, "weather"), (2, "time")]
    assert starts[1].call_id == "fc_given"
    assert [starts[0].call_id[:7], starts[2].call_id[:7]] == ["call_0_", "call_2_"]
    assert len({s.call_id for s in starts}) == 3
    chunks = [(e.index, e.arguments) for e in out if isinstance(e, ToolCallChunk)]
    assert chunks == [(0, '{"city": "Paris"}'), (1, '{"city": "Rome"}'), (2, "{}")]
    assert isinstance(out[-1], ResponseDone)
    done = out[-1].response
    assert done.tool_calls == [
        ToolCallRequest(starts[0].call_id, "weather", '{"city": "Paris"}'),
        ToolCallRequest("fc_given", "weather", '{"city": "Rome"}'),
        ToolCallRequest(starts[2].call_id, "time", "{}"),
    ]
    assert (done.text, done.stop_reason) == ("Checking.", "tool_calls")


async def test_a_stream_left_early_closes_and_the_model_goes_on(server: FakeServer, provider: GeminiProvider) -> None:
    server.reply(wire.text_reply(["first", "second", "third"]), wire.text_reply(["next"]))
    stream = gemini(provider).stream(window("hi"), SETTINGS)
    assert await anext(stream) == TextChunk("first")
    await cast(AsyncGenerator[StreamEvent, None], stream).aclose()  # typed as an iterator, it is a generator
    assert (await gemini(provider).request(window("again"), SETTINGS)).text == "next"


async def test_usage_counts_cached_and_thinking_tokens(server: FakeServer, provider: GeminiProvider) -> None:
    server.reply(wire.text_reply(["ok"], token_usage=wire.usage(prompt=1040, candidates=7, cached=1000, thoughts=3)))
    response = await gemini(provider).request(window("hi"), SETTINGS)
    assert (response.input_tokens, response.output_tokens, response.cached_input_tokens) == (1040, 10, 1000)


async def test_thought_summaries_are_not_answer_text(server: FakeServer, provider: GeminiProvider) -> None:
    server.reply(wire.stream(wire.chunk(wire.thought("pondering")), wire.chunk(wire.text("42"), finish="STOP")))
    assert (await gemini(provider).request(window("answer?"), SETTINGS)).text == "42"


@pytest.mark.parametrize(
    ("finish", "expected"),
    [("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"), ("STOP", "stop")],
)
async def test_finish_reasons(server: FakeServer, provider: GeminiProvider, finish: str, expected: str) -> None:
    server.reply(wire.text_reply(["x"], finish=finish))
    assert (await gemini(provider).request(window("hi"), SETTINGS)).stop_reason == expected


async def test_a_blocked_prompt_is_content_filtered(server: FakeServer, provider: GeminiProvider) -> None:
    server.reply(wire.stream({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": wire.usage(candidates=0)}))
    response = await gemini(provider).request(window("hi"), SETTINGS)
    assert (response.text, response.stop_reason) == ("", "content_filter")


# --- the request ----------------------------------------------------------------------------------------------


async def test_request_body_renders_the_window_tools_and_limits(server: FakeServer, provider: GeminiProvider) -> None:
    server.reply(wire.text_reply(["ok"]))
    items: list[Item] = [
        user("Weather in Paris and Rome?"),
        ToolCall(call_id="c1", name="weather", arguments='{"city": "Paris"}', batch_id="b1"),
        ToolCall(call_id="c2", name="time", arguments='{"tz": "CET"}', batch_id="b1"),
        ToolResult(call_id="c2", output="12:00"),
        ToolResult(call_id="c1", output="sun"),
    ]
    settings = ModelSettings(max_output_tokens=321, temperature=0.2, tool_choice="required", timeout=30)
    await gemini(provider).request(Window("Be brief.", [WEATHER], None, items), settings)
    [request] = server.requests
    assert (request.method, request.path) == ("POST", PATH)
    assert request.headers["x-goog-api-key"] == "g-test"
    body = request.json
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "time", "args": {"tz": "CET"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "weather", "response": {"output": "sun"}}},
                {"functionResponse": {"name": "time", "response": {"output": "12:00"}}},
            ],
        },
    ]
    [declaration] = body["tools"][0]["functionDeclarations"]
    schema = declaration.get("parametersJsonSchema", declaration.get("parameters_json_schema"))
    assert (declaration["name"], declaration["description"], schema) == (
        "weather",
        "Weather of a city",
        WEATHER.parameters,
    )
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert body["generationConfig"] == {"maxOutputTokens": 321, "temperature": 0.2}


async def test_max_output_tokens_falls_back_to_window_then_profile(
    server: FakeServer, provider: GeminiProvider
) -> None:
    server.reply(wire.text_reply(["ok"]), wire.text_reply(["ok"]), wire.text_reply(["ok"]))
    model = gemini(provider, profile=ModelProfile(max_output_tokens=333))
    await model.request(Window(None, None, 222, [user("hi")]), SETTINGS)
    await model.request(Window(None, None, None, [user("hi")]), SETTINGS)
    await gemini(provider, profile=ModelProfile()).request(Window(None, None, None, [user("hi")]), SETTINGS)
    configs = [request.json.get("generationConfig", {}) for request in server.requests]
    assert [config.get("maxOutputTokens") for config in configs] == [222, 333, None]
    assert not {"systemInstruction", "tools", "toolConfig"} & server.requests[2].json.keys()


@pytest.mark.parametrize(("choice", "mode"), [("auto", "AUTO"), ("none", "NONE"), (None, None)])
async def test_tool_choice(server: FakeServer, provider: GeminiProvider, choice: Choice, mode: str | None) -> None:
    server.reply(wire.text_reply(["ok"]))
    await gemini(provider).request(Window(None, [WEATHER], None, [user("hi")]), ModelSettings(tool_choice=choice))
    config = server.requests[0].json.get("toolConfig")
    assert config == ({"functionCallingConfig": {"mode": mode}} if mode else None)


async def test_a_client_passed_in_stays_the_callers(server: FakeServer) -> None:
    client = genai.Client(api_key="g-test", http_options=types.HttpOptions(base_url=server.url))
    provider = GeminiProvider(client=client)
    server.reply(wire.text_reply(["ok"]), wire.text_reply(["still open"]))
    assert (await gemini(provider).request(window("hi"), SETTINGS)).text == "ok"
    await provider.aclose()
    assert (await gemini(GeminiProvider(client=client)).request(window("hi"), SETTINGS)).text == "still open"
    await client.aio.aclose()
    client.close()


def test_missing_api_key_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="GEMINI_API_KEY"):
        GeminiProvider()


async def test_api_key_falls_back_to_google_api_key(monkeypatch: pytest.MonkeyPatch, server: FakeServer) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", "from-env")
    provider = GeminiProvider(base_url=server.url)
    try:
        server.reply(wire.text_reply(["ok"]))
        await gemini(provider).request(window("hi"), SETTINGS)
    finally:
        await provider.aclose()
    assert server.requests[0].headers["x-goog-api-key"] == "from-env"


# --- errors and retries ---------------------------------------------------------------------------------------

QUOTA = "Resource has been exhausted (e.g. check quota)."


async def test_429_waits_retry_after_then_succeeds(server: FakeServer, provider: GeminiProvider) -> None:
    server.reply(
        wire.error_reply(429, "RESOURCE_EXHAUSTED", QUOTA, headers={"Retry-After": "0"}), wire.text_reply(["ok"])
    )
    assert (await gemini(provider).request(window("hi"), SETTINGS)).text == "ok"
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("headers", "details", "expected"),
    [({"Retry-After": "7"}, [], 7.0), ({}, [wire.retry_info("2s")], 2.0), ({}, [wire.retry_info("1.5s")], 1.5)],
)
async def test_429_exhausting_attempts_is_a_rate_limit_error(
    server: FakeServer,
    provider: GeminiProvider,
    headers: dict[str, str],
    details: list[dict[str, str]],
    expected: float,
) -> None:
    server.reply(*[wire.error_reply(429, "RESOURCE_EXHAUSTED", QUOTA, headers=headers, details=details)] * 3)
    with pytest.raises(RateLimitError) as caught:
        await gemini(provider, attempts=3).request(window("hi"), SETTINGS)
    assert caught.value.retry_after == expected
    assert len(server.requests) == 3


async def test_500_is_retried_then_succeeds(server: FakeServer, provider: GeminiProvider) -> None:
    server.reply(wire.error_reply(500, "INTERNAL", "An internal error has occurred."), wire.text_reply(["ok"]))
    assert (await gemini(provider).request(window("hi"), SETTINGS)).text == "ok"
    assert len(server.requests) == 2


async def test_500_repeatedly_is_unavailable_after_all_attempts(server: FakeServer, provider: GeminiProvider) -> None:
    server.reply(*[wire.error_reply(503, "UNAVAILABLE", "The model is overloaded.")] * 4)
    with pytest.raises(ModelUnavailableError):
        await gemini(provider, attempts=4).request(window("hi"), SETTINGS)
    assert len(server.requests) == 4


async def test_too_many_input_tokens_is_a_context_length_error(server: FakeServer, provider: GeminiProvider) -> None:
    message = "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."
    server.reply(wire.error_reply(400, "INVALID_ARGUMENT", message))
    with pytest.raises(ContextLengthError) as caught:
        await gemini(provider).request(window("hi"), SETTINGS)
    assert caught.value.status == 400
    assert len(server.requests) == 1


async def test_other_400_is_a_request_error_never_retried(server: FakeServer, provider: GeminiProvider) -> None:
    server.reply(wire.error_reply(400, "INVALID_ARGUMENT", "Request contains an invalid argument."))
    with pytest.raises(ModelRequestError, match="invalid argument"):
        await gemini(provider).request(window("hi"), SETTINGS)
    assert len(server.requests) == 1


@pytest.mark.parametrize(("code", "status"), [(401, "UNAUTHENTICATED"), (403, "PERMISSION_DENIED")])
async def test_401_403_are_auth_errors(server: FakeServer, provider: GeminiProvider, code: int, status: str) -> None:
    server.reply(wire.error_reply(code, status, "API key not valid. Please pass a valid API key."))
    with pytest.raises(ModelAuthError):
        await gemini(provider).request(window("hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_error_chunk_mid_stream_is_typed_and_not_retried(server: FakeServer, provider: GeminiProvider) -> None:
    server.reply(wire.stream(wire.chunk(wire.text("partial")), wire.error_body(503, "UNAVAILABLE", "overloaded")))
    seen: list[StreamEvent] = []
    with pytest.raises(ModelUnavailableError, match="overloaded"):
        await drain(gemini(provider).stream(window("hi"), SETTINGS), seen)
    assert seen == [TextChunk("partial")]
    assert len(server.requests) == 1


async def test_stream_cut_after_text_is_a_response_error_not_retried(
    server: FakeServer, provider: GeminiProvider
) -> None:
    server.reply(wire.stream(wire.chunk(wire.text("Hel")), wire.chunk(wire.text("lo")), cut=True))
    with pytest.raises(ModelResponseError, match="cut off"):
        await gemini(provider).request(window("hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_stream_cut_before_any_output_is_retried(server: FakeServer, provider: GeminiProvider) -> None:
    server.reply(StreamReply([], cut=True), wire.text_reply(["ok"]))
    assert (await gemini(provider).request(window("hi"), SETTINGS)).text == "ok"
    assert len(server.requests) == 2


async def test_stream_ending_without_finish_reason_is_cut_off(server: FakeServer, provider: GeminiProvider) -> None:
    server.reply(wire.stream(wire.chunk(wire.text("Hel"))))
    with pytest.raises(ModelResponseError, match="without a finishReason"):
        await gemini(provider).request(window("hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_malformed_stream_chunk_is_a_response_error(server: FakeServer, provider: GeminiProvider) -> None:
    server.reply(StreamReply(sse("{not json")))
    with pytest.raises(ModelResponseError, match="malformed"):
        await gemini(provider).request(window("hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_a_malformed_json_body_is_a_response_error(server: FakeServer, provider: GeminiProvider) -> None:
    server.reply(Reply(200, body=b'{"candidates": [}', content_type="application/json"))
    with pytest.raises(ModelResponseError, match="malformed"):
        await gemini(provider).request(window("hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_unreachable_server_is_unavailable() -> None:
    with FakeServer() as gone:
        url = gone.url
    closed = GeminiProvider(api_key="g-test", base_url=url)
    try:
        with pytest.raises(ModelUnavailableError):
            await gemini(closed, attempts=2).request(window("hi"), SETTINGS)
    finally:
        await closed.aclose()


# --- concurrency ----------------------------------------------------------------------------------------------


async def test_twenty_concurrent_requests_through_one_model(server: FakeServer, provider: GeminiProvider) -> None:
    def echo(request: Request) -> StreamReply:
        last = request.json["contents"][-1]["parts"][-1]["text"]
        return wire.text_reply(["echo: ", last])

    server.handler = echo
    model = gemini(provider)
    prompts = [f"question {n}" for n in range(20)]
    answers = await asyncio.gather(*(model.request(window("first", prompt), SETTINGS) for prompt in prompts))
    assert [answer.text for answer in answers] == [f"echo: {prompt}" for prompt in prompts]
    assert len(server.requests) == 20


async def test_thought_signatures_go_back_on_their_function_calls(
    server: FakeServer, provider: GeminiProvider, sqlite_store: Store
) -> None:
    signed = {**wire.call("weather", {"city": "Oslo"}, "fc_1"), "thoughtSignature": base64.b64encode(b"sig").decode()}
    server.reply(wire.stream(wire.chunk(signed, finish="STOP", usage=wire.usage())), wire.text_reply(["Sunny."]))

    def weather(city: str) -> str:
        """The weather.

        Args:
            city: A city.
        """
        return f"sunny in {city}"

    model = gemini(provider, profile=ModelProfile(context_window=100_000))
    session = await Agent(model, store=sqlite_store, tools=[weather]).create_session()
    assert (await session.turn("weather in Oslo?")).final_text == "Sunny."
    sent = server.requests[1].json["contents"]
    (model_turn,) = [c for c in sent if c["role"] == "model"]
    assert model_turn["parts"] == [
        {"functionCall": {"name": "weather", "args": {"city": "Oslo"}}, "thoughtSignature": signed["thoughtSignature"]}
    ]
