"""contextfold's one ASGI layer (body limits, lone surrogates, metrics and the request log), and the hot routes
served past FastAPI.

    uvicorn -> app --POST to a hot route--> serve_hot: limit, body, surrogates, decode, key, handler, error, metrics
                  \\--anything else-------> FastAPI's stack -> Edge (the same limit, checks, metrics) -> its route

A turn's own work is milliseconds; on the way to it FastAPI had a dozen ASGI layers, its dependency solver and
pydantic validating the body. The hot routes (`POST /v1/responses`, `/v1/chat/completions`, `/v1/messages`) are
called directly: the handler reads the body (under the limit, checked for lone surrogates, as `Edge` does), decodes
it with msgspec and checks the key itself, and any error is answered by `_errors.api_error` in the route's shape, as
FastAPI's handlers do. A handler that cannot decode a body hands the request (its body replayed) to FastAPI, which
words the 400 as it always did. FastAPI's own OpenTelemetry layer is skipped only while it is off (no provider
configured): with tracing on, every request takes FastAPI's path and gets its server span.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..._errors import PayloadTooLargeError
from ._errors import api_error, error_response
from ._gone import gone
from ._metrics import Metrics
from ._text import check_text, maybe_lone

log = logging.getLogger("contextfold.server")

PASSED = "contextfold.edge"
"""Scope key of a request `serve_hot` handed on to FastAPI: limits, checks and metrics are done; `Edge` lets it by."""
_ESCAPES = (b"\\ud", b"\\uD")
_NOT_JSON = (b"multipart/", b"application/x-www-form-urlencoded")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""The methods counted by name in /metrics; any other is counted as `other`, so the series stay bounded."""
UPLOADS = "/v1/files"
"""A file upload (`POST /v1/files`) is under its own, larger limit (`max_file_bytes`)."""


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    metrics: Metrics
    limit: int
    """`max_body_bytes`: every body but a file upload's."""
    uploads: int
    """What a file upload may send (`max_file_bytes` and its multipart framing)."""


class Body:
    """A hot request's body, read once on demand: refused over the limit (413, `PayloadTooLargeError`) and with a
    lone UTF-16 surrogate escape (400 naming the field, `check_text`), as `Edge` refuses them on other routes."""

    __slots__ = ("_receive", "bytes", "checked", "json", "limit", "over")

    def __init__(self, receive: Receive, limit: int, json: bool) -> None:
        self._receive = receive
        self.limit = limit
        self.json = json
        self.bytes: bytes | None = None
        self.over = False
        self.checked = False

    async def read(self, surrogates: bool = True) -> bytes:
        """The body. `surrogates=False`: the lone-surrogate check is the caller's, on the parts of the body it has
        not seen before (the proxy routes' decoders, `proxy._chat_decode`: a resent history is not scanned whole
        again on every request); a later read that asks for the check gets it."""
        if self.bytes is not None:
            if surrogates and not self.checked:
                self._check(self.bytes)
            return self.bytes
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk: bytes = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                self.over = True
                raise PayloadTooLargeError(_too_large(self.limit, "max_body_bytes"))
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if surrogates:
            self._check(body)
        self.bytes = body
        return body

    def _check(self, body: bytes) -> None:
        if self.json and any(e in body for e in _ESCAPES) and maybe_lone(body):
            check_text(body)
        self.checked = True

    def replay(self, receive: Receive) -> Receive:
        """`receive` with the body read so far given first, for the app the request is handed on to."""
        if self.bytes is None:
            return receive
        pending: list[Message] = [{"type": "http.request", "body": self.bytes, "more_body": False}]

        async def replayed() -> Message:
            return pending.pop() if pending else await receive()

        return replayed


Hot = Callable[[Request, Body], Awaitable[Response | None]]
"""A hot route's handler: its answer, or None to hand the request (and the body it read) on to FastAPI."""


async def serve_hot(
    settings: EdgeSettings, scope: Scope, receive: Receive, send: Send, handler: Hot, route: str, fallback: ASGIApp
) -> None:
    """One request to a hot route, with everything `Edge` and FastAPI's error handlers do for it."""
    limit = settings.limit
    if _declared(scope) > limit:
        await _refuse(scope, receive, send, limit, "max_body_bytes")
        return
    started = time.perf_counter()
    status = 500
    kind = _header(scope, b"content-type").lower()
    body = Body(receive, limit, not kind.startswith(_NOT_JSON))

    async def sending(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            if body.over:  # over the limit, the rest is never read: the connection must close
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
        await send(message)

    try:
        try:
            response = await handler(Request(scope, receive), body)
        except ClientDisconnect:
            response = gone()
        except Exception as exc:  # what FastAPI's handlers answer: the error in the route's shape
            response = error_response(route, api_error(exc))
        if response is None:
            scope[PASSED] = True
            await fallback(scope, body.replay(receive), sending)
        else:
            await response(scope, receive, sending)
    finally:
        _observe(settings.metrics, scope, route, status, started)


class Edge:
    """The ASGI middleware for every route but the hot ones: the body limit (by Content-Length when sent, else as
    the body streams in; a file upload under its own), the lone-surrogate check, metrics and the request log.

    Over the limit the answer is a 413 that closes the connection (`connection: close`): the server then stops
    reading, so the client cannot go on sending the rest. A lone surrogate is raised to the reader of the body
    (the route's body parsing) as `InvalidRequestError`, which the error mapper answers with a 400 in the route's
    shape. A refusal by Content-Length is answered before anything else and not counted."""

    def __init__(self, app: ASGIApp, settings: EdgeSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or PASSED in scope:
            await self.app(scope, receive, send)
            return
        upload = scope["path"] == UPLOADS and scope["method"] == "POST"
        limit, name = (self.settings.uploads, "max_file_bytes") if upload else (self.settings.limit, "max_body_bytes")
        if _declared(scope) > limit:
            await _refuse(scope, receive, send, limit, name)
            return
        started = time.perf_counter()
        status = 500
        seen = 0
        check = not _header(scope, b"content-type").lower().startswith(_NOT_JSON)  # multipart is not JSON
        chunks: list[bytes] = []
        suspect = done = False

        async def checked() -> Message:
            nonlocal seen, suspect, done
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLargeError(_too_large(limit, name))
            if not check or done or message["type"] != "http.request":
                return message
            chunk: bytes = message.get("body", b"")
            if not suspect:
                # the escape may straddle two chunks: the seam is looked at too
                seam = chunks[-1][-2:] + chunk[:2] if chunks else b""
                suspect = any(e in chunk or e in seam for e in _ESCAPES)
            chunks.append(chunk)
            if not message.get("more_body", False):
                done = True
                if suspect:
                    whole = b"".join(chunks)
                    if maybe_lone(whole):
                        check_text(whole)
                chunks.clear()
            return message

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if seen > limit:  # whoever answers (the route's error handler, usually), the rest is never read
                    message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        try:
            try:
                await self.app(scope, checked, sending)
            except PayloadTooLargeError:  # raised past every handler: answered here
                status = 413
                await _refuse(scope, receive, send, limit, name)
        finally:
            route = scope.get("route")
            _observe(self.settings.metrics, scope, getattr(route, "path", "unmatched"), status, started)


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope.get("headers") or ():
        if key == name:
            return bytes(value)
    return b""


def _declared(scope: Scope) -> int:
    """The Content-Length the client declared (-1 when none, or not a number)."""
    declared = _header(scope, b"content-length")
    return int(declared) if declared.isdigit() else -1


def _too_large(limit: int, name: str) -> str:
    return f"the request body is over the {limit}-byte limit ({name}); send less per request"


async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int, name: str) -> None:
    response = error_response(scope["path"], api_error(PayloadTooLargeError(_too_large(limit, name))))
    response.headers["connection"] = "close"
    await response(scope, receive, send)


def _observe(metrics: Metrics, scope: Scope, route: str, status: int, started: float) -> None:
    """Request metrics (by the route's template: its parameters are not labels) and one structured log line."""
    method = scope["method"] if scope["method"] in _METHODS else "other"  # any token is a method in HTTP
    elapsed = time.perf_counter() - started
    metrics.requests.labels(method, route, str(status)).inc()
    metrics.latency.labels(method, route).observe(elapsed)
    if status >= 400:
        metrics.errors.labels(str(status)).inc()
    log.info(
        "%s %s %d %.1fms",
        scope["method"],
        _loggable(scope["path"]),
        status,
        elapsed * 1000,
        extra={"method": scope["method"], "route": route, "status": status, "ms": round(elapsed * 1000, 2)},
    )


def _loggable(path: str) -> str:
    """The path with its control characters escaped: a client sending `%0A` cannot start a log line of its own."""
    return path if path.isprintable() else path.encode("unicode_escape").decode("ascii")
