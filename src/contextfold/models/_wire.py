"""The lean path to an OpenAI-compatible upstream: one POST streamed over httpx2, its SSE frames handed on as bytes.

The `openai` SDK builds each request through its option models and parses every chunk into pydantic objects;
on a loopback upstream that was ~40 % of a turn. Here the body is encoded once with msgspec, the response read
as server-sent events, and each frame's `data` left for the adapter to decode straight into its typed structs.
Errors keep the meaning the SDK path gave them (the message of an error body, its code, Retry-After), so both
paths raise the same `contextfold` errors with the same words.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx2
import msgspec

from .._errors import ModelError, ModelResponseError
from ._base import connection_lost, error_for_status

_encode = msgspec.json.Encoder().encode
_decode_any = msgspec.json.Decoder().decode


def status_error(provider: str, status: int, body: bytes, headers: Mapping[str, str]) -> ModelError:
    """The typed error of an HTTP error answer, worded as the SDK path words it: the body's `error.message`
    (with its code), the raw text when it is not JSON, `Error code: N` when it is empty."""
    from ._openai import error_fields  # here, not at import: _openai imports this module

    text = body.decode("utf-8", "replace").strip()
    parsed: object = text
    with contextlib.suppress(msgspec.DecodeError):  # not JSON: the text is the message
        parsed = _decode_any(text) if text else text
    message, code, _ = error_fields(parsed)
    message = message or f"Error code: {status}"
    if code and code not in message:
        message = f"{message} ({code})"
    return error_for_status(provider, status, message, headers)


def malformed(provider: str, error: Exception) -> ModelResponseError:
    """A frame that is not JSON, or JSON of the wrong shape: an unusable answer, never retried."""
    if isinstance(error, msgspec.ValidationError):
        return ModelResponseError(f"{provider} answered in an unexpected shape: {error}", provider=provider)
    return ModelResponseError(f"{provider} sent malformed JSON in its stream: {error}", provider=provider)


class SSEStream:
    """One streamed POST. Iterate for `(event, data)` frames; the response is closed when iteration ends, fails
    or the consumer closes the generator (so a cancelled turn gives its connection back at once)."""

    def __init__(self, provider: str, client: httpx2.AsyncClient, request: httpx2.Request) -> None:
        self.provider = provider
        self.client = client
        self.request = request
        self.streamed = False
        """Set by the adapter once it passed on part of the answer: a connection lost after that is a cut-off
        answer, before it a failed request (retried)."""

    async def frames(self) -> AsyncIterator[tuple[str | None, str]]:
        provider = self.provider
        try:
            response = await self.client.send(self.request, stream=True)
        except httpx2.TransportError as error:
            raise connection_lost(provider, error, streamed=False) from error
        try:
            if response.status_code >= 400:
                raise status_error(provider, response.status_code, await response.aread(), response.headers)
            kind = response.headers.get("content-type", "")
            if "json" in kind and "event-stream" not in kind:
                raise self._not_a_stream(await response.aread(), kind)
            event: str | None = None
            data: list[str] = []
            lines = response.aiter_lines()
            async for line in lines:
                if not line:  # a blank line ends the frame
                    if data:
                        joined = "\n".join(data)
                        if joined.startswith("[DONE]"):
                            async for _ in lines:  # drained, so the connection is reused
                                pass
                            return
                        yield event, joined
                    event, data = None, []
                elif line.startswith("data:"):
                    data.append(line[6:] if line.startswith("data: ") else line[5:])
                elif line.startswith("event:"):
                    event = line[6:].strip()
                # comments (": keep-alive"), `id:` and `retry:` lines carry nothing an answer needs
            if data and not "\n".join(data).startswith("[DONE]"):  # a last frame without its blank line
                yield event, "\n".join(data)
        except httpx2.TransportError as error:
            raise connection_lost(provider, error, streamed=self.streamed) from error
        finally:
            await response.aclose()

    def _not_a_stream(self, body: bytes, kind: str) -> ModelError:
        """A 200 with a JSON body where an event stream was asked for: the error it carries, else malformed."""
        from ._openai import error_fields, stream_error

        try:
            parsed = _decode_any(body)
        except msgspec.DecodeError as error:
            return malformed(self.provider, error)
        if isinstance(parsed, dict) and parsed.get("error"):
            message, code, kind_ = error_fields(parsed)
            return stream_error(self.provider, message or "An error occurred during streaming", code, kind_)
        return ModelResponseError(
            f"{self.provider} answered with {kind}, not an event stream, to a streamed request", provider=self.provider
        )


def post_stream(
    provider: str,
    client: httpx2.AsyncClient,
    url: str,
    body: dict[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> SSEStream:
    """An `SSEStream` for POSTing `body` (encoded once, with msgspec) to `url` on the shared pool `client`."""
    request = client.build_request(
        "POST",
        url,
        content=_encode(body),
        headers={"content-type": "application/json", "accept": "text/event-stream", **(headers or {})},
        params=params,
        timeout=httpx2.Timeout(timeout) if timeout is not None else httpx2.USE_CLIENT_DEFAULT,
    )
    return SSEStream(provider, client, request)
