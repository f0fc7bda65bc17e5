"""The server's refusals as the library's own errors, so a remote session fails as an in-process one does."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

import httpx2
import openai

from .._errors import (
    AuthenticationError,
    BusyError,
    ContextfoldError,
    InvalidRequestError,
    ModelError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
)


@contextlib.asynccontextmanager
async def translated(url: str) -> AsyncGenerator[None, None]:
    """The SDK's and httpx's exceptions as contextfold's own, with the server's message."""
    try:
        yield
    except openai.APIStatusError as exc:
        raise error_for(exc.status_code, exc.body, exc.message) from exc
    except (openai.APIConnectionError, httpx2.TransportError) as exc:
        raise ModelError(f"cannot reach a contextfold server at {url}: {exc}") from exc


def error_for(status: int, body: object, fallback: str) -> ContextfoldError:
    error = body.get("error", body) if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    param = error.get("param") if isinstance(error, dict) else None
    text = message if isinstance(message, str) and message else fallback
    if status in (400, 422):
        return InvalidRequestError(text, param=param if isinstance(param, str) else None)
    kinds: dict[int, type[ContextfoldError]] = {
        401: AuthenticationError,
        403: AuthenticationError,
        404: NotFoundError,
        409: BusyError,
        413: PayloadTooLargeError,
    }
    if status in kinds:
        return kinds[status](text)
    if status == 429:
        return RateLimitError(text)
    return ModelError(text, status=status)


def json_of(reply: httpx2.Response) -> dict[str, Any]:
    try:
        data = reply.json()
    except ValueError:
        data = None
    if reply.status_code >= 400:
        raise error_for(reply.status_code, data, reply.reason_phrase)
    if not isinstance(data, dict):
        raise ModelError(f"the server answered {reply.request.url.path} with something other than a JSON object")
    return data
