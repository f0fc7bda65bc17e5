"""The one place that maps errors to HTTP status codes and OpenAI-shaped error bodies.

    {"error": {"message": "...", "type": "invalid_request_error", "param": "input[2].content", "code": null}}

User mistakes are 4xx and name what was wrong; upstream failures are 502/504 with the upstream's own message (429
keeps the upstream's Retry-After); a store failure is 503; anything else is a 500 whose body carries an id that is
also in the log, and never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..._errors import (
    AuthenticationError,
    BusyError,
    ConfigurationError,
    ConflictError,
    ContextfoldError,
    ContextLengthError,
    ContextOverflowError,
    GrammarError,
    InvalidRequestError,
    ModelAuthError,
    ModelError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    StoreError,
)
from ...events import new_id

log = logging.getLogger("contextfold.server")


@dataclass(frozen=True, slots=True)
class ApiError:
    status: int
    type: str
    message: str
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] | None = None

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def api_error(exc: BaseException) -> ApiError:
    """The status and body for `exc`; unknown exceptions become a logged 500 that names its log id."""
    param = getattr(exc, "param", None)
    message = str(exc)
    if isinstance(exc, AuthenticationError):
        return ApiError(401, "invalid_request_error", message, "invalid_api_key")
    if isinstance(exc, NotFoundError):
        return ApiError(404, "invalid_request_error", message, "not_found", param)
    if isinstance(exc, BusyError):
        return ApiError(409, "invalid_request_error", message, "conversation_busy")
    if isinstance(exc, ConflictError):
        return ApiError(409, "invalid_request_error", f"{message}; retry the request", "conflict")
    if isinstance(exc, PayloadTooLargeError):
        return ApiError(413, "invalid_request_error", message, "payload_too_large", param)
    if isinstance(exc, (ContextOverflowError, ContextLengthError)):
        return ApiError(400, "invalid_request_error", message, "context_length_exceeded", param or "input")
    if isinstance(exc, RateLimitError):
        headers = {"retry-after": str(max(1, round(exc.retry_after)))} if exc.retry_after is not None else None
        return ApiError(
            429, "rate_limit_error", f"upstream rate limit: {message}", "rate_limit_exceeded", None, headers
        )
    if isinstance(exc, ModelAuthError):
        return ApiError(502, "upstream_error", f"the upstream refused the server's credentials: {message}", "upstream")
    if isinstance(exc, ModelError):
        timed_out = exc.status in (408, 504) or "timed out" in message.lower() or "timeout" in message.lower()
        status, code = (504, "upstream_timeout") if timed_out else (502, "upstream_error")
        return ApiError(status, "upstream_error", f"upstream {exc.provider or 'model'} failed: {message}", code)
    if isinstance(exc, ConfigurationError):
        return ApiError(400, "invalid_request_error", message, "configuration", param)
    if isinstance(exc, GrammarError):  # a bug, but one that names what could not be sent: the view, never the body
        incident = new_id("err")
        log.error("internal error %s: %s", incident, message)
        text = f"the conversation's window could not be sent: {message} (a bug; log id {incident})"
        return ApiError(500, "server_error", text, "grammar_violation")
    if isinstance(exc, StoreError):
        log.error("store failure: %s", message)
        return ApiError(503, "server_error", "the database is unavailable; retry shortly", "store_unavailable")
    if isinstance(exc, (InvalidRequestError, ContextfoldError)) and not isinstance(exc, _INTERNAL):
        return ApiError(400, "invalid_request_error", message, None, param)
    incident = new_id("err")
    log.error("internal error %s", incident, exc_info=exc)
    return ApiError(500, "server_error", f"internal server error (log id {incident})", "internal_error")


_INTERNAL: tuple[type[BaseException], ...] = ()
"""ContextfoldErrors that are bugs rather than user mistakes (GrammarError is mapped above, to a 500)."""


def _validation_param(loc: Sequence[int | str]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def _validation_error(exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        context = first.get("ctx")
        detail = context.get("error") if isinstance(context, dict) else None
        message = "the request body is not valid JSON" + (f": {detail}" if detail else "")
        return ApiError(400, "invalid_request_error", message, "invalid_json")
    loc = tuple(first.get("loc", ()))
    # A field that accepts several types (`input`: a string or a list) fails once per type, each error's loc ending
    # in the type's tag (`input.str`, `input.list[any]`): the field is what they have in common, and the message
    # names every type it accepts.
    same = [e for e in errors if tuple(e.get("loc", ()))[:2] == loc[:2]] if len(loc) >= 2 else [first]
    for other in same[1:]:
        shared = 0
        for mine, theirs in zip(loc, tuple(other.get("loc", ())), strict=False):
            if mine != theirs:
                break
            shared += 1
        loc = loc[:shared]
    param = _validation_param(loc)
    message = " or ".join(dict.fromkeys(str(e.get("msg", "invalid value")) for e in same))
    where = f"{param}: " if param else "the request body: "  # no field: the body as a whole is wrong
    return ApiError(400, "invalid_request_error", f"{where}{message}", None, param or None)


ANTHROPIC_ROUTES = ("/v1/messages",)
"""Routes that answer errors in Anthropic's shape, since their clients parse that one."""


def error_response(path: str, error: ApiError) -> JSONResponse:
    """The error in the shape the route's clients read: OpenAI's, or Anthropic's on the Anthropic routes."""
    if path in ANTHROPIC_ROUTES:
        from ..proxy._messages_wire import anthropic_error

        status, body = anthropic_error(error)
        return JSONResponse(body, status_code=status, headers=error.headers)
    return error.response()


def install(app: FastAPI) -> None:
    """Route every error through `api_error`."""

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(request.url.path, api_error(exc))

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(request.url.path, _validation_error(exc))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if isinstance(exc.__cause__, ContextfoldError):
            # FastAPI turns any error while it reads the body into a 400 "error parsing the body", the body limit's
            # 413 among them: answer with the cause.
            return error_response(request.url.path, api_error(exc.__cause__))
        if isinstance(exc.__cause__, RecursionError):  # the JSON parser gave up on a body nested thousands deep
            from ..responses._schemas import too_deep

            return error_response(request.url.path, api_error(too_deep()))
        if exc.__cause__ is not None and exc.status_code == 400:  # the body could not be read as JSON (not UTF-8)
            message = f"the request body is not valid JSON: {exc.__cause__}"
            return error_response(request.url.path, ApiError(400, "invalid_request_error", message, "invalid_json"))
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return error_response(request.url.path, ApiError(exc.status_code, "invalid_request_error", message, code))

    app.add_exception_handler(ContextfoldError, on_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_error)
