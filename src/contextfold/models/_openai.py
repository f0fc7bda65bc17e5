"""OpenAI-compatible providers (OpenAI itself, any OpenAI-compatible server, Azure OpenAI) and their error mapping.

A provider holds the credentials, one httpx2 pool for the turns (the lean path of `_wire.py`: the adapters
POST and read the stream themselves) and one `AsyncOpenAI` client for the rest (`/models`, doctor's probes), all
built once and never changed, so any number of models and concurrent turns share them. Per-request options (a
timeout, a forwarded key) go with each request. The SDK's own retries are off: `StreamingModel` retries, and only
while nothing has reached the caller.

`model_error` turns whatever the SDK raises into the typed errors of `contextfold`, through `error_for_status`,
so every adapter classifies an HTTP status the same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx2
import openai
from openai import AsyncAzureOpenAI, AsyncOpenAI

from .._errors import ConfigurationError, ModelError, ModelResponseError
from ._base import connection_lost, error_for_status

OPENAI_BASE_URL = "https://api.openai.com/v1"
NO_KEY = "not-needed"
"""Sent as the key to servers that need none (vLLM, Ollama, llama.cpp): the SDK refuses an empty one."""

MaxTokensField = Literal["max_completion_tokens", "max_tokens"]


class OpenAIProvider:
    """OpenAI, or any server speaking its API (vLLM, Ollama, llama.cpp, LM Studio, OpenRouter) at `base_url`.

    The key falls back to `OPENAI_API_KEY` and the base URL to `OPENAI_BASE_URL`, as the SDK does. OpenAI itself
    needs a key; another server may need none. Pass `client` to share one you built (it is then yours to close).
    """

    name = "openai"

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        client: AsyncOpenAI | None = None,
        timeout: float = 600,
    ) -> None:
        if client is not None:
            self.client = client
            self._owns_client = False
        else:
            url = base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL
            key = api_key or os.environ.get("OPENAI_API_KEY")
            if not key and _is_openai(url):
                raise ConfigurationError(
                    "OpenAIProvider needs an API key for api.openai.com: pass api_key= or set OPENAI_API_KEY"
                )
            self.client = AsyncOpenAI(api_key=key or NO_KEY, base_url=url, timeout=timeout, max_retries=0)
            self._owns_client = True
        self.base_url = str(self.client.base_url)
        # The streamed turns go over the lean path (`_wire`) on this pool of our own, one per provider, reused by
        # every turn; the SDK client stays for the rest (`/models`, the doctor's probe, a client passed in).
        shared = getattr(self.client, "_client", None)  # a client passed in: its own pool (and its proxies...)
        self.http = pool(timeout) if self._owns_client or not isinstance(shared, httpx2.AsyncClient) else shared
        self._owns_http = self.http is not shared
        self.headers = {"Authorization": f"Bearer {self.client.api_key}"}
        self.params: dict[str, str] = {}
        # OpenAI deprecated `max_tokens` and its reasoning models refuse it, so it gets `max_completion_tokens`.
        # Other servers get `max_tokens`: all of them honour it, while some (Ollama, llama.cpp before 2026,
        # llamafile) silently ignore `max_completion_tokens` and would generate without any limit. The choice
        # follows the server, not the model's profile: it is the server that parses the request.
        self.max_tokens_field: MaxTokensField = "max_completion_tokens" if _is_openai(self.base_url) else "max_tokens"

    def model_for(self, name: str) -> str:
        """The `model` to send for a model named `name`."""
        return name

    def url(self, name: str, path: str) -> str:
        """Where the lean path POSTs `path` (`chat/completions`) for the model named `name`."""
        return f"{self.base_url.rstrip('/')}/{path}"

    async def aclose(self) -> None:
        """Close the client this provider created (a client passed in is left to its owner) and the pool."""
        if self._owns_http:
            await self.http.aclose()
        if self._owns_client:
            await self.client.close()

    async def __aenter__(self) -> OpenAIProvider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AzureProvider:
    """An Azure OpenAI resource. Requests name the `deployment`, whatever model name the adapter was given (that
    name only picks the profile). `endpoint` overrides `https://{resource}.openai.azure.com`; the key falls back to
    `AZURE_OPENAI_API_KEY`, the endpoint to `AZURE_OPENAI_ENDPOINT`.

    The Responses API on Azure needs an `api_version` of 2025-03-01-preview or later; the default is the GA
    version of Chat Completions.
    """

    name = "azure"
    max_tokens_field: MaxTokensField = "max_completion_tokens"  # Azure follows OpenAI (GA since 2024-10-21)

    def __init__(
        self,
        resource: str | None = None,
        *,
        deployment: str,
        api_version: str = "2024-10-21",
        api_key: str | None = None,
        endpoint: str | None = None,
        timeout: float = 600,
    ) -> None:
        endpoint = endpoint or (f"https://{resource}.openai.azure.com" if resource else None)
        endpoint = endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT")
        if not endpoint:
            raise ConfigurationError(
                "AzureProvider needs the resource: pass resource= (or endpoint=), or set AZURE_OPENAI_ENDPOINT"
            )
        key = api_key or os.environ.get("AZURE_OPENAI_API_KEY")
        if not key:
            raise ConfigurationError("AzureProvider needs an API key: pass api_key= or set AZURE_OPENAI_API_KEY")
        if not deployment:
            raise ConfigurationError("AzureProvider needs the deployment name: pass deployment=")
        self.deployment = deployment
        self.endpoint = endpoint
        # No `azure_deployment` here: the SDK routes a request whose `model` is the deployment to
        # /openai/deployments/{deployment}/..., and keeps /openai/responses for the Responses API.
        self.client: AsyncOpenAI = AsyncAzureOpenAI(
            azure_endpoint=endpoint, api_version=api_version, api_key=key, timeout=timeout, max_retries=0
        )
        self.base_url = str(self.client.base_url)
        self.http = pool(timeout)
        self.headers = {"api-key": key}
        self.params = {"api-version": api_version}

    def model_for(self, name: str) -> str:
        return self.deployment

    def url(self, name: str, path: str) -> str:
        """As the SDK routes it: /openai/deployments/{deployment}/{path}, but /openai/responses for Responses."""
        if path == "responses":
            return f"{self.base_url.rstrip('/')}/{path}"
        return f"{self.base_url.rstrip('/')}/deployments/{self.deployment}/{path}"

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.client.close()

    async def __aenter__(self) -> AzureProvider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def pool(timeout: float) -> httpx2.AsyncClient:
    """One provider's connection pool for the lean path, with the SDK's limits (a turn may stream for minutes)."""
    limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
    # a float timeout bounds every phase, as the SDK takes one
    return httpx2.AsyncClient(timeout=httpx2.Timeout(timeout), limits=limits)


def bearer(api_key: str | None) -> dict[str, str] | None:
    """Headers sending `api_key` with one request in place of the client's own key (None: the client's)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else None


def _is_openai(url: str) -> bool:
    return (urlsplit(url).hostname or "").lower() == "api.openai.com"


# --- errors ------------------------------------------------------------------------------------------------------

# Error codes OpenAI puts in a stream's error event (no HTTP status there) and the status they stand for.
_CODE_STATUS = {
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "server_error": 500,
    "internal_error": 500,
    "server_is_overloaded": 503,
    "vector_store_timeout": 504,
}


def error_fields(body: object) -> tuple[str, str | None, str | None]:
    """(message, code, type) of an OpenAI error body, `{"message", "code", "type"}` or `{"error": {...}}`."""
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        body = body["error"]
    if not isinstance(body, Mapping):
        return (str(body) if body else "", None, None)
    message, code, kind = body.get("message"), body.get("code"), body.get("type")
    return (str(message) if message else "", None if code is None else str(code), None if kind is None else str(kind))


def stream_error(provider: str, message: str, code: str | None, kind: str | None = None) -> ModelError:
    """The typed error of an error the server reported inside a stream (there is no HTTP status), by its code.

    vLLM puts the HTTP status in `code`; OpenAI a name (`server_error`, `context_length_exceeded`...). A known
    server-side name is retryable, another name is the request's fault; with no code, the error `type` decides.
    """
    if code is not None and code.isdigit() and 400 <= int(code) < 600:
        status = int(code)
    elif code:
        status = _CODE_STATUS.get(code, 400)
    else:
        status = 400 if kind == "invalid_request_error" else 500
    text = f"{message} ({code})" if code and code not in message else message
    return error_for_status(provider, status, text or "error in the stream")


def model_error(provider: str, error: BaseException, *, streamed: bool = False) -> ModelError:
    """The `ModelError` for an exception raised by the openai SDK (or while reading its stream).

    `streamed` says whether part of the answer was already read: a connection lost then is a cut-off answer
    (`ModelResponseError`), not an unreachable server.
    """
    if isinstance(error, ModelError):
        return error
    if isinstance(error, openai.APIStatusError):
        message, code, _ = error_fields(error.body)
        message = message or error.message
        if code and code not in message:
            message = f"{message} ({code})"
        return error_for_status(provider, error.status_code, message, error.response.headers)
    if isinstance(error, openai.APIConnectionError):  # timeouts among them
        # The SDK's own words ("Request timed out.") when the transport's error says nothing (ReadTimeout('')).
        cause = error.__cause__ if error.__cause__ is not None and str(error.__cause__) else error
        return connection_lost(provider, cause, streamed=streamed)
    if isinstance(error, openai.APIResponseValidationError):
        return ModelResponseError(f"{provider} answered in an unexpected shape: {error}", provider=provider)
    if isinstance(error, openai.APIError):  # an error object inside the stream (no status)
        message, code, kind = error_fields(error.body)
        return stream_error(provider, message or error.message, code or error.code, kind)
    if isinstance(error, (json.JSONDecodeError, UnicodeDecodeError)):
        return ModelResponseError(f"{provider} sent malformed JSON in its stream: {error}", provider=provider)
    if isinstance(error, openai.OpenAIError):
        return ModelResponseError(f"{provider} client failed: {error}", provider=provider)
    return ModelResponseError(f"{provider} answer could not be read: {error!r}", provider=provider)


def positive_int(value: Any) -> int | None:
    """`value` as a positive int (context lengths arrive as ints, floats or strings), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None
