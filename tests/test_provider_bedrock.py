"""The Bedrock adapter over real HTTP: boto3 (SigV4-signed, event-stream framed) against a loopback fake."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Iterator
from typing import Any, cast

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
from contextfold.events import ImagePart, Message, Reasoning, TextPart, ToolCall, ToolResult, ToolSpec, assistant, user
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
from contextfold.models._bedrock import BedrockModel, BedrockProvider
from contextfold.models._bedrock_render import render_bedrock, validate_bedrock
from contextfold.view import Window

from .fakes import fake_bedrock as wire
from .fakes._server import FakeServer, Reply, Request, StreamReply, drain

SETTINGS = ModelSettings()
MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"
WEATHER = ToolSpec("weather", "Weather of a city", {"type": "object", "properties": {"city": {"type": "string"}}})
AWS_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def window(*texts: str, system_prompt: str | None = "Be brief.") -> Window:
    return Window(system_prompt, None, None, [user(text) for text in texts])


@pytest.fixture
def provider(server: FakeServer) -> Iterator[BedrockProvider]:
    provider = BedrockProvider(
        "us-east-1", access_key_id="AKIDTEST", secret_access_key="s3cr3t", endpoint_url=server.url
    )
    yield provider
    provider.close()


def claude(provider: BedrockProvider, attempts: int = 3) -> BedrockModel:
    return BedrockModel(MODEL_ID, provider, retry=RetryPolicy(attempts=attempts, initial=0.001, maximum=0.01))


async def events(model: BedrockModel, win: Window, settings: ModelSettings = SETTINGS) -> list[StreamEvent]:
    return [event async for event in model.stream(win, settings)]


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "contextfold-bedrock-stream"]


# --- answers ------------------------------------------------------------------------------------------------


async def test_text_streams_in_chunks(server: FakeServer, provider: BedrockProvider) -> None:
    server.reply(wire.stream(wire.text_answer("Hel", "lo, ", "world")))
    out = await events(claude(provider), window("hi"))
    assert [e.text for e in out if isinstance(e, TextChunk)] == ["Hel", "lo, ", "world"]
    assert isinstance(out[-1], ResponseDone)
    done = out[-1].response
    assert (done.text, done.stop_reason, done.model, done.tool_calls) == ("Hello, world", "stop", MODEL_ID, [])
    request = server.requests[0]
    assert request.path == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"
    assert request.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
    assert "x-amz-security-token" not in request.headers


async def test_parallel_tool_calls_stream_their_arguments(server: FakeServer, provider: BedrockProvider) -> None:
    server.reply(
        wire.stream(
            [
                wire.message_start(),
                *wire.text_deltas("Checking."),
                wire.event("contentBlockStop", {"contentBlockIndex": 0}),
                *wire.tool_use(1, "tu_1", "weather", '{"ci', 'ty": "Par', 'is"}'),
                *wire.tool_use(2, "tu_2", "weather", '{"city":', ' "Rome"}'),
                wire.message_stop("tool_use"),
                wire.metadata(30, 12),
            ]
        )
    )
    out = await events(claude(provider), window("weather?"))
    starts = [e for e in out if isinstance(e, ToolCallStart)]
    assert starts == [ToolCallStart(0, "tu_1", "weather"), ToolCallStart(1, "tu_2", "weather")]
    chunks = [(e.index, e.arguments) for e in out if isinstance(e, ToolCallChunk)]
    assert chunks == [(0, '{"ci'), (0, 'ty": "Par'), (0, 'is"}'), (1, '{"city":'), (1, ' "Rome"}')]
    assert isinstance(out[-1], ResponseDone)
    done = out[-1].response
    assert done.tool_calls == [
        ToolCallRequest("tu_1", "weather", '{"city": "Paris"}'),
        ToolCallRequest("tu_2", "weather", '{"city": "Rome"}'),
    ]
    assert (done.text, done.stop_reason) == ("Checking.", "tool_calls")


async def test_usage_counts_cached_tokens_in_the_input(server: FakeServer, provider: BedrockProvider) -> None:
    server.reply(wire.stream(wire.text_answer("ok", input_tokens=40, output_tokens=7, cache_read=1000)))
    response = await claude(provider).request(window("hi"), SETTINGS)
    assert (response.input_tokens, response.output_tokens, response.cached_input_tokens) == (1040, 7, 1000)


@pytest.mark.parametrize(
    ("stop", "expected"),
    [("max_tokens", "length"), ("guardrail_intervened", "content_filter"), ("content_filtered", "content_filter")],
)
async def test_stop_reasons(server: FakeServer, provider: BedrockProvider, stop: str, expected: str) -> None:
    server.reply(wire.stream([wire.message_start(), *wire.text_deltas("x"), wire.message_stop(stop), wire.metadata()]))
    assert (await claude(provider).request(window("hi"), SETTINGS)).stop_reason == expected


# --- the request --------------------------------------------------------------------------------------------


def tool_window() -> Window:
    return Window(
        "Be brief.",
        [WEATHER],
        None,
        [
            assistant("Hello! Ask me about the weather.", turn_id="t0"),
            Message(role="user", content=[TextPart("Paris and Rome?"), ImagePart("data:image/png;base64,iVBORw==")]),
            Reasoning(provider="bedrock", data={"signature": "SIG"}, text="Two cities.", turn_id="t1"),
            ToolCall(call_id="c1", name="weather", arguments='{"city": "Paris"}', batch_id="b1", turn_id="t1"),
            ToolCall(call_id="c2", name="weather", arguments='{"city": "Rome"}', batch_id="b1", turn_id="t1"),
            ToolResult(call_id="c2", output="unknown city", is_error=True, turn_id="t1"),
            ToolResult(call_id="c1", output="sun", turn_id="t1"),
            user("And tomorrow?", turn_id="t2"),
        ],
    )


async def test_request_body_renders_the_window_tools_and_limits(server: FakeServer, provider: BedrockProvider) -> None:
    server.reply(wire.stream(wire.text_answer("Sun again.")))
    await claude(provider).request(tool_window(), ModelSettings(max_output_tokens=300, temperature=0.2))
    body = server.requests[0].json
    assert body["system"] == [{"text": "Be brief."}]
    assert body["inferenceConfig"] == {"maxTokens": 300, "temperature": 0.2}
    assert body["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "weather",
                    "description": WEATHER.description,
                    "inputSchema": {"json": WEATHER.parameters},
                }
            }
        ]
    }
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "(continuing the conversation)"}]},
        {"role": "assistant", "content": [{"text": "Hello! Ask me about the weather."}]},
        {
            "role": "user",
            "content": [{"text": "Paris and Rome?"}, {"image": {"format": "png", "source": {"bytes": "iVBORw=="}}}],
        },
        {
            "role": "assistant",
            "content": [
                {"reasoningContent": {"reasoningText": {"text": "Two cities.", "signature": "SIG"}}},
                {"toolUse": {"toolUseId": "c1", "name": "weather", "input": {"city": "Paris"}}},
                {"toolUse": {"toolUseId": "c2", "name": "weather", "input": {"city": "Rome"}}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "c1", "content": [{"text": "sun"}]}},
                {"toolResult": {"toolUseId": "c2", "content": [{"text": "unknown city"}], "status": "error"}},
                {"text": "And tomorrow?"},
            ],
        },
    ]
    assert validate_bedrock(body["messages"]) == []


async def test_max_tokens_from_the_profile_and_required_tool_choice(
    server: FakeServer, provider: BedrockProvider
) -> None:
    server.reply(wire.stream(wire.text_answer("ok")))
    win = Window(None, [WEATHER], None, [user("hi")])
    await claude(provider).request(win, ModelSettings(tool_choice="required"))
    body = server.requests[0].json
    assert body["inferenceConfig"] == {"maxTokens": 8192}
    assert body["toolConfig"]["toolChoice"] == {"any": {}}
    assert "system" not in body


def test_validator_reports_broken_grammar() -> None:
    use = {"toolUse": {"toolUseId": "u1", "name": "f", "input": {}}}
    problems = validate_bedrock([{"role": "assistant", "content": [use]}, {"role": "assistant", "content": []}])
    assert len(problems) == 4
    assert render_bedrock(Window(None, None, None, [user("  ")])) == ([], [])


# --- credentials ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({}, ["region", "access key id", "secret access key"]),
        ({"AWS_REGION": "eu-west-1"}, ["access key id", "secret access key"]),
        ({"AWS_DEFAULT_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AK"}, ["secret access key"]),
        ({"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "S"}, ["region"]),
    ],
)
def test_missing_credentials_are_named(
    monkeypatch: pytest.MonkeyPatch, given: dict[str, str], missing: list[str]
) -> None:
    for name in AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        BedrockProvider()
    message = str(caught.value)
    for what in ("region", "access key id", "secret access key"):
        assert (f"{what} (" in message) == (what in missing)


ARGS = {"region": "us-west-2", "access_key_id": "AKIDARG", "secret_access_key": "S"}


@pytest.mark.parametrize(
    ("args", "key", "region", "token"),
    [
        ({}, "AKIDENV", "eu-west-3", "envtoken"),
        (ARGS, "AKIDARG", "us-west-2", None),  # the environment's token is not paired with another key
        ({**ARGS, "session_token": "argtoken"}, "AKIDARG", "us-west-2", "argtoken"),
    ],
)
async def test_credentials_and_session_token_are_sent(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch, args: dict[str, Any], key: str, region: str, token: str | None
) -> None:
    for name, value in zip(AWS_VARS, ("eu-west-3", "", "AKIDENV", "envsecret", "envtoken"), strict=True):
        monkeypatch.setenv(name, value)
    provider = BedrockProvider(endpoint_url=server.url, **args)
    server.reply(wire.stream(wire.text_answer("ok")))
    try:
        await claude(provider).request(window("hi"), SETTINGS)
    finally:
        provider.close()
    headers = server.requests[0].headers
    assert headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={key}/")
    assert f"/{region}/bedrock/aws4_request" in headers["authorization"]
    assert headers.get("x-amz-security-token") == token


# --- errors and retries ---------------------------------------------------------------------------------------


async def test_429_waits_retry_after_then_succeeds(server: FakeServer, provider: BedrockProvider) -> None:
    server.reply(wire.error(429, "ThrottlingException", "Too many requests", {"Retry-After": "0"}))
    server.reply(wire.stream(wire.text_answer("ok")))
    assert (await claude(provider).request(window("hi"), SETTINGS)).text == "ok"
    assert len(server.requests) == 2


async def test_429_exhausting_attempts_is_a_rate_limit_error(server: FakeServer, provider: BedrockProvider) -> None:
    server.reply(*[wire.error(429, "ThrottlingException", "slow down", {"Retry-After": "0.001"}) for _ in range(3)])
    with pytest.raises(RateLimitError) as caught:
        await claude(provider).request(window("hi"), SETTINGS)
    assert caught.value.retry_after == 0.001
    assert len(server.requests) == 3


async def test_500_is_retried_then_succeeds(server: FakeServer, provider: BedrockProvider) -> None:
    server.reply(wire.error(500, "InternalServerException", "oops"), wire.stream(wire.text_answer("ok")))
    assert (await claude(provider).request(window("hi"), SETTINGS)).text == "ok"
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("status", "code"),
    [(500, "InternalServerException"), (503, "ServiceUnavailableException"), (429, "ModelNotReadyException")],
)
async def test_unavailable_repeatedly_fails_after_all_attempts(
    server: FakeServer, provider: BedrockProvider, status: int, code: str
) -> None:
    server.reply(*[wire.error(status, code, "not now") for _ in range(4)])
    with pytest.raises(ModelUnavailableError, match=code):
        await claude(provider, attempts=4).request(window("hi"), SETTINGS)
    assert len(server.requests) == 4


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (400, "ValidationException", "Input is too long for requested model.", ContextLengthError),
        (400, "ValidationException", "prompt is too long: 210000 tokens > 200000 maximum", ContextLengthError),
        (400, "ValidationException", "The provided model identifier is invalid.", ModelRequestError),
        (403, "AccessDeniedException", "You don't have access to the model.", ModelAuthError),
        (403, "UnrecognizedClientException", "The security token included in the request is invalid.", ModelAuthError),
    ],
)
async def test_refusals_are_typed_and_never_retried(
    server: FakeServer, provider: BedrockProvider, status: int, code: str, message: str, expected: type[Exception]
) -> None:
    server.reply(wire.error(status, code, message))
    with pytest.raises(expected, match=message[:12]):
        await claude(provider).request(window("hi"), SETTINGS)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("name", "message", "expected"),
    [
        ("throttlingException", "slow", RateLimitError),
        ("validationException", "too many input tokens", ContextLengthError),
    ],
)
async def test_exception_event_mid_stream_is_typed_and_not_retried(
    server: FakeServer, provider: BedrockProvider, name: str, message: str, expected: type[Exception]
) -> None:
    server.reply(wire.stream([wire.message_start(), *wire.text_deltas("Hel"), wire.exception(name, message)]))
    seen: list[StreamEvent] = []
    with pytest.raises(expected, match=message):
        await drain(claude(provider).stream(window("hi"), SETTINGS), seen)
    assert seen == [TextChunk("Hel")]
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "name", ["internalServerException", "modelStreamErrorException", "serviceUnavailableException"]
)
async def test_exception_event_before_any_output_is_retried(
    server: FakeServer, provider: BedrockProvider, name: str
) -> None:
    server.reply(wire.stream([wire.message_start(), wire.exception(name, "hiccup")]))
    server.reply(wire.stream(wire.text_answer("ok")))
    assert (await claude(provider).request(window("hi"), SETTINGS)).text == "ok"
    assert len(server.requests) == 2


async def test_stream_cut_after_text_is_a_response_error_not_retried(
    server: FakeServer, provider: BedrockProvider
) -> None:
    server.reply(wire.stream([wire.message_start(), *wire.text_deltas("Hel")], cut=True))
    seen: list[StreamEvent] = []
    with pytest.raises(ModelResponseError, match="cut off"):
        await drain(claude(provider).stream(window("hi"), SETTINGS), seen)
    assert seen == [TextChunk("Hel")]
    assert len(server.requests) == 1


async def test_stream_cut_before_any_output_is_retried(server: FakeServer, provider: BedrockProvider) -> None:
    server.reply(wire.stream([wire.message_start()], cut=True), wire.stream(wire.text_answer("ok")))
    assert (await claude(provider).request(window("hi"), SETTINGS)).text == "ok"
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("chunks", "match"),
    [
        ([wire.message_start(), wire.event("contentBlockDelta", b"{not json"), wire.message_stop()], "malformed"),
        ([wire.message_start(), *wire.text_deltas("Hel")], "ended before"),  # no messageStop: incomplete
    ],
)
async def test_unusable_stream_is_a_response_error(
    server: FakeServer, provider: BedrockProvider, chunks: list[bytes], match: str
) -> None:
    server.reply(wire.stream(chunks))
    with pytest.raises(ModelResponseError, match=match):
        await claude(provider).request(window("hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_unreachable_server_is_unavailable() -> None:
    with FakeServer() as gone:
        url = gone.url
    provider = BedrockProvider("us-east-1", access_key_id="AK", secret_access_key="S", endpoint_url=url)
    try:
        with pytest.raises(ModelUnavailableError):
            await claude(provider, attempts=2).request(window("hi"), SETTINGS)
    finally:
        provider.close()


# --- the worker thread ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cancel", [False, True])
async def test_consumer_leaving_early_ends_the_worker(
    server: FakeServer, provider: BedrockProvider, cancel: bool
) -> None:
    stalled = wire.Stalled([wire.message_start(), *wire.text_deltas("Hel")])
    server.reply(StreamReply(stalled, content_type=wire.EVENTSTREAM))
    stream = cast(AsyncGenerator[StreamEvent, None], claude(provider).stream(window("hi"), SETTINGS))
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in stream:
            first.set()  # the task goes on to wait for the next event before the test runs again

    try:
        if cancel:
            task = asyncio.create_task(consume())
            await first.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            assert await anext(stream) == TextChunk("Hel")
            await stream.aclose()
        # The server still stalls: only the socket shut down on leaving can wake the worker.
        for worker in workers():
            await asyncio.to_thread(worker.join, 10)
        assert workers() == []
    finally:
        stalled.release()


async def test_request_timeout_while_the_server_stalls_is_unavailable(
    server: FakeServer, provider: BedrockProvider
) -> None:
    stalled = wire.Stalled([wire.message_start()])
    server.reply(StreamReply(stalled, content_type=wire.EVENTSTREAM))
    try:
        with pytest.raises(ModelUnavailableError, match="timed out"):
            await claude(provider, attempts=1).request(window("hi"), ModelSettings(timeout=0.2))
    finally:
        stalled.release()


# --- concurrency ----------------------------------------------------------------------------------------------


def echo(request: Request) -> Reply | StreamReply:
    last = request.json["messages"][-1]["content"][0]["text"]
    return wire.stream(wire.text_answer("echo: ", last))


async def test_twenty_concurrent_requests_through_one_model(server: FakeServer, provider: BedrockProvider) -> None:
    server.handler = echo
    model = claude(provider)
    prompts = [f"question {n}" for n in range(20)]
    answers = await asyncio.gather(*(model.request(window(p), SETTINGS) for p in prompts))
    assert [a.text for a in answers] == [f"echo: {p}" for p in prompts]
    assert len(server.requests) == 20
