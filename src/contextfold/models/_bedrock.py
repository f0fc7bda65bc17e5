"""AWS Bedrock Converse adapter: a window in, `bedrock-runtime` ConverseStream events out as stream events.

boto3 is synchronous, so each stream runs in its own worker thread: it makes the call, iterates the event stream
and hands each event to the event loop (`call_soon_threadsafe` into an `asyncio.Queue`); the loop never blocks.
When the consumer stops early or is cancelled, the worker is told to stop and the response's socket is shut down,
which wakes a read blocked on a stalled server, so no thread is left behind (the worker then closes the stream).
A thread per stream (rather than the loop's default executor) keeps long streams from starving `to_thread` users
such as DNS lookups.

The provider builds one client with explicit credentials (arguments, else the standard AWS environment variables)
and never consults boto3's credential chain, whose instance-metadata lookup would reach for the network. botocore's
retries are off (`total_max_attempts=1`): `StreamingModel` retries. boto3 clients are thread-safe, so one client
serves every concurrent stream.

Errors come as botocore `ClientError`s with an AWS error code: before the stream with the HTTP status in
`ResponseMetadata`, during it as exception events (`EventStreamError`, status always 400), so codes are classified
through the HTTP status each one stands for, then `error_for_status` like every other adapter.

The window is rendered by `_bedrock_render` (which needs no boto3).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import os
import socket
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import urllib3.exceptions

from .._errors import ConfigurationError, ModelError, ModelResponseError, ModelUnavailableError
from ..view import Window
from ._base import ResponseBuilder, RetryPolicy, StreamingModel, connection_lost, error_for_status
from ._bedrock_render import render_bedrock, render_tools, validate_bedrock
from ._protocol import (
    ModelProfile,
    ModelSettings,
    ReasoningBlock,
    StopReason,
    StreamEvent,
    TextChunk,
    ToolCallChunk,
    ToolCallStart,
)
from ._rendered import Rendered

PROVIDER = "bedrock"
MAX_CONNECTIONS = 64
"""Pooled connections of the shared client: one per concurrent stream (botocore's default is 10)."""

_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
    "malformed_model_output": "error",
    "malformed_tool_use": "error",
}

# The HTTP status each error code stands for (lower-cased: mid-stream exception events name them in camelCase).
# ModelNotReady is sent as a 429 but means "loading", so it counts as unavailable, as do model failures (424).
_CODE_STATUS = {
    "throttlingexception": 429,
    "validationexception": 400,
    "accessdeniedexception": 403,
    "unrecognizedclientexception": 403,
    "expiredtokenexception": 403,
    "invalidsignatureexception": 403,
    "resourcenotfoundexception": 404,
    "modeltimeoutexception": 408,
    "internalserverexception": 500,
    "serviceunavailableexception": 503,
    "modelnotreadyexception": 503,
    "modelstreamerrorexception": 502,
    "modelerrorexception": 502,
}
_CODE_OVER_STATUS = {"modelnotreadyexception", "modelstreamerrorexception", "modelerrorexception"}


class BedrockProvider:
    """Region, credentials and the one `bedrock-runtime` client every `BedrockModel` of this provider shares."""

    def __init__(
        self,
        region: str | None = None,
        *,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        endpoint_url: str | None = None,
        client: Any = None,
        connect_timeout: float = 10,
        read_timeout: float = 600,
    ) -> None:
        self._owns_client = client is None
        if client is not None:
            self.client = client
            return
        env = os.environ.get
        region = region or env("AWS_REGION") or env("AWS_DEFAULT_REGION")
        if access_key_id is None:
            # A session token belongs to the key it was issued with: take it from the environment only with the key.
            access_key_id, session_token = env("AWS_ACCESS_KEY_ID"), session_token or env("AWS_SESSION_TOKEN")
        secret_access_key = secret_access_key or env("AWS_SECRET_ACCESS_KEY")
        missing = [
            what
            for what, value in (
                ("region (region= or AWS_REGION / AWS_DEFAULT_REGION)", region),
                ("access key id (access_key_id= or AWS_ACCESS_KEY_ID)", access_key_id),
                ("secret access key (secret_access_key= or AWS_SECRET_ACCESS_KEY)", secret_access_key),
            )
            if not value
        ]
        if missing:
            raise ConfigurationError("Bedrock is missing " + ", ".join(missing))
        session = boto3.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            aws_session_token=session_token or None,
            region_name=region,
        )
        config = botocore.config.Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=MAX_CONNECTIONS,
        )
        self.client = session.client("bedrock-runtime", endpoint_url=endpoint_url, config=config)

    def close(self) -> None:
        """Close the client's connections if this provider created it."""
        if self._owns_client:
            self.client.close()

    async def aclose(self) -> None:
        self.close()


class BedrockModel(StreamingModel):
    """A model on Bedrock by model id or inference profile (`anthropic.claude-...`, `amazon.nova-pro-v1:0`)."""

    provider_name = PROVIDER

    def __init__(
        self,
        model_id: str,
        provider: BedrockProvider,
        *,
        profile: ModelProfile | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(model_id, profile=profile, retry=retry)
        self._rendered = Rendered(render_bedrock)
        self._provider = provider

    def violations(self, window: Window) -> list[str]:
        """What breaks Converse's grammar in the request this model would send (the runtime's send check)."""
        declared = bool(render_tools(window))
        return self._rendered.check(window, lambda payload: validate_bedrock(payload[1], tools_declared=declared))

    def _request(self, window: Window, settings: ModelSettings) -> dict[str, Any]:
        system, messages = self._rendered.take(window)
        request: dict[str, Any] = {"modelId": self.name, "messages": messages}
        if system:
            request["system"] = system
        inference: dict[str, Any] = {}
        if max_tokens := settings.max_output_tokens or window.max_output_tokens or self.profile.max_output_tokens:
            inference["maxTokens"] = max_tokens
        if settings.temperature is not None:
            inference["temperature"] = settings.temperature
        if settings.top_p is not None:
            inference["topP"] = settings.top_p
        if inference:
            request["inferenceConfig"] = inference
        if tools := render_tools(window):
            # Converse has no "none": the tools must stay declared while the history holds tool blocks.
            request["toolConfig"] = {"tools": tools}
            if settings.tool_choice == "required":
                request["toolConfig"]["toolChoice"] = {"any": {}}
        return request

    async def _stream_once(self, window: Window, settings: ModelSettings) -> AsyncIterator[StreamEvent]:
        reader = _Reader(self.name)
        pump = _pump(self._provider.client, self._request(window, settings), settings.timeout)
        try:
            async with contextlib.aclosing(pump):  # closing this stream closes the pump, which stops the worker
                async for raw in pump:
                    for event in reader.read(raw):
                        reader.yielded = True
                        yield event
        except ModelError:
            raise
        except Exception as error:
            raise _model_error(error, cut_off=reader.yielded) from error
        if reader.stopped:
            yield reader.done()


async def _pump(client: Any, request: dict[str, Any], wait: float | None) -> AsyncGenerator[dict[str, Any], None]:
    """The raw ConverseStream events, read by a worker thread; its exceptions are re-raised here as they are.

    `wait` bounds each wait for the next event (the request's timeout, as an HTTP read timeout would).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    stop = threading.Event()
    opened: list[Any] = []  # the event stream, once open, so this side can abort it

    def send(kind: str, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def work() -> None:
        stream = None
        try:
            stream = client.converse_stream(**request)["stream"]
            opened.append(stream)
            if stop.is_set():  # the consumer left while the call was made, before it could see the stream
                return
            for event in stream:
                if stop.is_set():
                    return
                send("event", event)
            send("end", None)
        except BaseException as error:
            send("error", error)
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):  # a half-read, failed stream may complain; it is closed
                    stream.close()

    threading.Thread(target=work, name="contextfold-bedrock-stream", daemon=True).start()
    finished = False
    try:
        while True:
            kind, value = await asyncio.wait_for(queue.get(), wait)
            if kind == "event":
                yield value
                continue
            finished = True
            if kind == "error":
                raise value
            return
    finally:
        stop.set()
        if not finished:  # the consumer stopped early, was cancelled or timed out: wake the worker now
            for stream in opened:
                _abort(stream)


def _abort(stream: Any) -> None:
    """Wake the worker's blocked read by shutting the stream's socket down, from the event loop's thread.

    Never `close()` from here: it waits for the read in progress (the buffered reader's lock), which would block
    the loop for as long as the server stalls. The socket is reached through botocore's and urllib3's attributes
    (`_raw_stream.connection.sock`); should they change, the worker stops at its next event or its read timeout.
    """
    connection = getattr(getattr(stream, "_raw_stream", None), "connection", None)
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            # The plain socket's shutdown, also for TLS: SSLSocket's own would drop its SSL state under the reader.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _model_error(error: Exception, *, cut_off: bool) -> ModelError:
    if isinstance(error, botocore.exceptions.ClientError):
        details = error.response.get("Error", {})
        code, message = str(details.get("Code", "")), str(details.get("Message", "") or error)
        meta = error.response.get("ResponseMetadata", {})
        known = _CODE_STATUS.get(code.lower())
        # Exception events come with no HTTP status of their own, and a few codes' statuses mislead (a model
        # that is loading answers 429; a failed model 424): their code says more.
        sent = None if isinstance(error, botocore.exceptions.EventStreamError) else meta.get("HTTPStatusCode")
        status = known if known is not None and (sent is None or code.lower() in _CODE_OVER_STATUS) else sent
        return error_for_status(PROVIDER, int(status or 500), f"{code}: {message}", meta.get("HTTPHeaders"))
    # urllib3's own read timeout surfaces mid-stream, where botocore does not wrap it.
    timeouts = (
        TimeoutError,
        urllib3.exceptions.TimeoutError,
        botocore.exceptions.ConnectTimeoutError,
        botocore.exceptions.ReadTimeoutError,
    )
    if isinstance(error, timeouts):
        return ModelUnavailableError(f"bedrock timed out: {error!r}", provider=PROVIDER)
    cut = (
        urllib3.exceptions.ProtocolError,
        http.client.IncompleteRead,
        botocore.exceptions.ResponseStreamingError,
        botocore.exceptions.IncompleteReadError,
        ConnectionError,
    )
    if isinstance(error, (*cut, botocore.exceptions.ConnectionError)):  # EndpointConnectionError among them
        return connection_lost(PROVIDER, repr(error), streamed=cut_off and isinstance(error, cut))
    return ModelResponseError(f"bedrock answer could not be read: {error!r}", provider=PROVIDER)


class _Reader:
    """Turns raw ConverseStream events into our stream events, accumulating the final response."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.builder = ResponseBuilder()
        self.yielded = False
        self.stopped = False
        self._stop: StopReason = "stop"
        self._usage: dict[str, int] = {}
        self._calls: dict[int, int] = {}  # content block index -> our tool call index
        self._reasoning: dict[int, dict[str, str]] = {}

    def read(self, raw: dict[str, Any]) -> list[StreamEvent]:
        if "contentBlockStart" in raw:
            event = _require(raw, "contentBlockStart", "start", "contentBlockIndex")
            tool = event["start"].get("toolUse")
            if tool is not None:
                index = self._calls[event["contentBlockIndex"]] = len(self._calls)
                return [self.builder.add(ToolCallStart(index, tool["toolUseId"], tool["name"]))]
        elif "contentBlockDelta" in raw:
            event = _require(raw, "contentBlockDelta", "delta", "contentBlockIndex")
            return self._delta(event["contentBlockIndex"], event["delta"])
        elif "messageStop" in raw:
            reason = _require(raw, "messageStop", "stopReason")["stopReason"]
            self._stop, self.stopped = _STOP_REASONS.get(reason, "stop"), True
        elif "metadata" in raw:
            self._usage = _require(raw, "metadata", "usage")["usage"]
        return []

    def _delta(self, block: int, delta: dict[str, Any]) -> list[StreamEvent]:
        if "text" in delta:
            return [self.builder.add(TextChunk(delta["text"]))] if delta["text"] else []
        if "toolUse" in delta:
            if block not in self._calls:
                raise ModelResponseError(
                    f"bedrock sent tool input for block {block} before its start", provider=PROVIDER
                )
            piece = delta["toolUse"].get("input", "")
            return [self.builder.add(ToolCallChunk(self._calls[block], piece))] if piece else []
        if "reasoningContent" in delta:
            part = delta["reasoningContent"]
            state = self._reasoning.setdefault(block, {})
            if "redactedContent" in part:  # bytes from botocore; kept as base64 to stay JSON
                state["redactedContent"] = base64.b64encode(part["redactedContent"]).decode()
            for key in ("text", "signature"):
                if key in part:
                    state[key] = state.get(key, "") + part[key]
        return []

    def done(self) -> StreamEvent:
        usage = self._usage
        cache_read = usage.get("cacheReadInputTokens", 0)
        stop = "tool_calls" if self._stop == "stop" and self.builder.calls else self._stop
        reasoning = [
            ReasoningBlock(PROVIDER, {k: v for k, v in state.items() if k != "text"}, state.get("text"))
            for _, state in sorted(self._reasoning.items())
        ]
        return self.builder.done(
            stop_reason=stop,
            # Converse counts cached prompt tokens apart from inputTokens; the prompt's size is all of them.
            input_tokens=usage.get("inputTokens", 0) + cache_read + usage.get("cacheWriteInputTokens", 0),
            output_tokens=usage.get("outputTokens", 0),
            cached_input_tokens=cache_read,
            reasoning=reasoning,
            model=self.model,
        )


def _require(raw: dict[str, Any], name: str, *keys: str) -> dict[str, Any]:
    """The event's body, checked for its required members: botocore turns an unparseable payload into `{}`."""
    body = raw[name]
    if not isinstance(body, dict) or any(key not in body for key in keys):
        raise ModelResponseError(f"bedrock sent a malformed {name} event: {body!r}", provider=PROVIDER)
    return body
