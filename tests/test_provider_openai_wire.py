"""The lean upstream path of the Chat Completions and Responses adapters (httpx2 + msgspec, `models/_wire.py`) on
the real wire: error bodies worded as the SDK path worded them, Retry-After dates, frames of the wrong shape, SSE
details (comments, multi-line data, a last frame without its blank line), one pooled connection reused across turns, the
first-byte limit and the turn's deadline against an upstream that stalls, and a consumer leaving mid-stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from email.utils import formatdate

import pytest

from contextfold import ModelRequestError, ModelResponseError, ModelUnavailableError, RateLimitError
from contextfold.models import ModelSettings, RetryPolicy, StreamEvent, TextChunk
from contextfold.models._openai import OpenAIProvider
from contextfold.models._openai_chat import OpenAIChatModel
from contextfold.models._openai_responses import OpenAIResponsesModel

from .fakes._server import FakeServer, Reply, StreamReply, sse
from .fakes.fake_openai import ask, chat_answer, chat_finish, chat_stream, chat_text, raw_sse

RETRY = RetryPolicy(attempts=2, initial=0.001, maximum=0.01)
SETTINGS = ModelSettings()


@pytest.fixture
async def model(server: FakeServer) -> AsyncIterator[OpenAIChatModel]:
    async with OpenAIProvider("test-key", server.url + "/v1") as provider:
        yield OpenAIChatModel("gpt-4o", provider, retry=RETRY)


async def test_error_body_that_is_not_json_is_the_message(server: FakeServer, model: OpenAIChatModel) -> None:
    server.reply(Reply(400, body=b"  bad gateway config  ", content_type="text/plain"))
    with pytest.raises(ModelRequestError, match=r"openai answered 400: bad gateway config$"):
        await model.request(ask("Hi"), SETTINGS)


async def test_empty_error_body_names_the_status(server: FakeServer, model: OpenAIChatModel) -> None:
    server.handler = lambda request: Reply(502, body=b"")
    with pytest.raises(ModelUnavailableError, match="answered 502: Error code: 502") as caught:
        await model.request(ask("Hi"), SETTINGS)
    assert caught.value.status == 502
    assert len(server.requests) == RETRY.attempts


async def test_retry_after_as_an_http_date(server: FakeServer, model: OpenAIChatModel) -> None:
    later = formatdate(time.time() + 120, usegmt=True)
    server.handler = lambda request: Reply(
        429, json={"error": {"message": "slow down"}}, headers={"retry-after": later}
    )
    model.retry = RetryPolicy(attempts=1)
    with pytest.raises(RateLimitError) as caught:
        await model.request(ask("Hi"), SETTINGS)
    assert caught.value.retry_after is not None
    assert 100 < caught.value.retry_after <= 120


async def test_a_frame_of_the_wrong_shape(server: FakeServer, model: OpenAIChatModel) -> None:
    server.reply(StreamReply(raw_sse('{"choices": [{"index": 0, "delta": {"content": 42}}]}')))
    with pytest.raises(ModelResponseError, match="unexpected shape"):
        await model.request(ask("Hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_a_json_answer_to_a_streamed_request(server: FakeServer, model: OpenAIChatModel) -> None:
    server.reply(Reply(200, json={"id": "chatcmpl-1", "choices": []}))
    with pytest.raises(ModelResponseError, match="not an event stream"):
        await model.request(ask("Hi"), SETTINGS)


async def test_sse_comments_multiline_data_and_a_last_frame_without_blank_line(
    server: FakeServer, model: OpenAIChatModel
) -> None:
    first = json.dumps(chat_text("one")[1], indent=1).replace("\n", "\ndata: ")  # one frame over several lines
    chunks = [b": keep-alive\n\n", f"data: {first}\n\n".encode()]
    chunks += [b"data:" + json.dumps(chat_text(" two")[1]).encode() + b"\n\n"]  # no space after the colon
    chunks += [b"data: " + json.dumps(chat_finish("stop")).encode()]  # the server closes without a blank line
    server.reply(StreamReply(chunks))
    response = await model.request(ask("Hi"), SETTINGS)
    assert (response.text, response.stop_reason) == ("one two", "stop")


async def test_extra_fields_go_over_the_options_and_messages_over_everything(
    server: FakeServer, model: OpenAIChatModel
) -> None:
    server.reply(chat_answer("ok"))
    extra = {"seed": 7, "temperature": 0.9, "messages": ["ignored"]}
    await model.request(ask("Hi"), ModelSettings(temperature=0.1, extra=extra, api_key="client-key"))
    request = server.requests[0]
    assert (request.json["seed"], request.json["temperature"]) == (7, 0.9)
    assert request.json["messages"] == [{"role": "user", "content": "Hi"}]
    assert request.headers["authorization"] == "Bearer client-key"  # a forwarded key replaces the provider's


async def test_turns_reuse_one_pooled_connection(server: FakeServer, model: OpenAIChatModel) -> None:
    server.reply(chat_answer("one"), chat_answer("two"), chat_answer("three"))
    for _ in range(3):
        await model.request(ask("Hi"), SETTINGS)
    assert len(server.requests) == 3
    pool = model.provider.http._transport._pool  # type: ignore[attr-defined]
    assert len(pool.connections) == 1


class _Stalling:
    """A loopback upstream that sends the stream's headers and `frames`, then sends nothing more until closed."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.closed = asyncio.Event()
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for writer in self.writers:  # a handler still waiting on its client (3.11 leaves them open)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for frame in self.frames:
            writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
        await writer.drain()
        await reader.read()  # until the client closes the connection
        self.closed.set()


async def test_first_byte_limit_against_a_stalling_upstream() -> None:
    stalling = _Stalling([])
    async with stalling as url, OpenAIProvider("k", url) as provider:
        model = OpenAIChatModel("gpt-4o", provider, retry=RETRY)
        with pytest.raises(ModelUnavailableError, match="first_byte_timeout"):
            await model.request(ask("Hi"), ModelSettings(first_byte_timeout=0.2))
        assert stalling.connections == RETRY.attempts  # nothing was read: retried
        await asyncio.wait_for(stalling.closed.wait(), 10)  # the abandoned attempt's connection was closed


async def test_deadline_mid_answer_is_a_cut_off_answer() -> None:
    stalling = _Stalling(sse(*chat_text("Half")))
    async with stalling as url, OpenAIProvider("k", url) as provider:
        model = OpenAIChatModel("gpt-4o", provider, retry=RETRY)
        events: list[StreamEvent] = []

        async def collect() -> None:
            async for event in model.stream(ask("Hi"), ModelSettings(deadline=time.monotonic() + 0.5)):
                events.append(event)

        with pytest.raises(ModelResponseError, match="timed out mid-answer"):
            await collect()
        assert events == [TextChunk("Half")]
        assert stalling.connections == 1  # part of the answer was shown: never retried


async def test_consumer_leaving_mid_stream_closes_the_connection() -> None:
    stalling = _Stalling(sse(*chat_text("one", " two")))
    async with stalling as url, OpenAIProvider("k", url) as provider:
        stream = OpenAIChatModel("gpt-4o", provider).stream(ask("Hi"), SETTINGS)
        assert await anext(stream) == TextChunk("one")
        await stream.aclose()  # type: ignore[attr-defined]
        await asyncio.wait_for(stalling.closed.wait(), 10)


async def test_cancelled_mid_stream_closes_the_connection() -> None:
    stalling = _Stalling(sse(*chat_text("one")))
    async with stalling as url, OpenAIProvider("k", url) as provider:
        model = OpenAIChatModel("gpt-4o", provider)
        seen = asyncio.Event()

        async def consume() -> None:
            async for _ in model.stream(ask("Hi"), SETTINGS):
                seen.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(seen.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(stalling.closed.wait(), 10)


async def test_stream_done_marker_ends_the_answer(server: FakeServer, model: OpenAIChatModel) -> None:
    server.reply(StreamReply(chat_stream(chat_text("ok"), chat_finish("stop"), done=True)))
    assert (await model.request(ask("Hi"), SETTINGS)).text == "ok"


@pytest.fixture
async def responses(server: FakeServer) -> AsyncIterator[OpenAIResponsesModel]:
    async with OpenAIProvider("test-key", server.url + "/v1") as provider:
        yield OpenAIResponsesModel("gpt-4.1", provider, retry=RETRY)


async def test_responses_frame_that_is_not_json(server: FakeServer, responses: OpenAIResponsesModel) -> None:
    server.reply(StreamReply(raw_sse('{"type": "response.output_text.delta", "delta": ')))
    with pytest.raises(ModelResponseError, match="malformed JSON"):
        await responses.request(ask("Hi"), SETTINGS)
    assert len(server.requests) == 1


async def test_responses_error_object_before_any_output_is_retried(
    server: FakeServer, responses: OpenAIResponsesModel
) -> None:
    failing = StreamReply(raw_sse('{"error": {"message": "overloaded", "code": "server_is_overloaded"}}'))
    server.reply(failing, failing)
    with pytest.raises(ModelUnavailableError, match=r"overloaded \(server_is_overloaded\)"):
        await responses.request(ask("Hi"), SETTINGS)
    assert len(server.requests) == RETRY.attempts


async def test_responses_items_arrive_unparsed_until_used(server: FakeServer, responses: OpenAIResponsesModel) -> None:
    created = {"type": "response.created", "response": {"id": "r", "output": [], "anything": {"deep": [1, 2]}}}
    added = {"type": "response.output_item.added", "output_index": 0, "item": {"type": "message", "content": []}}
    delta = {"type": "response.output_text.delta", "output_index": 0, "delta": "ok"}
    done = {"type": "response.completed", "response": {"model": "gpt-4.1", "output": [], "usage": None}}
    server.reply(StreamReply(sse(created, added, delta, done)))
    response = await responses.request(ask("Hi"), SETTINGS)
    assert (response.text, response.model, response.input_tokens) == ("ok", "gpt-4.1", 0)
    assert server.requests[0].path == "/v1/responses"
    assert server.requests[0].json["store"] is False
