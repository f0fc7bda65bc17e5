"""The running server as `contextfold chat` sees it: the Responses and Conversations APIs through the official
`openai` SDK (as any client would use them), contextfold's extension endpoints through httpx2.

Every failure comes out as one `ServerError` whose message is the server's own (its OpenAI-shaped error body), with
the HTTP status and code, so the chat can print it and go on. The SDK does not retry: a person at the prompt sees a
409 or a 502 at once and decides what to do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx2
import openai
from openai import Stream, omit
from openai.types.responses import ResponseInputParam, ResponseStreamEvent

from .._errors import ContextfoldError

DEFAULT_URL = "http://127.0.0.1:8400"
_TIMEOUT = httpx2.Timeout(600.0, connect=10.0)  # a compaction with a real summariser can take minutes


class ServerError(ContextfoldError):
    """The server answered with an error, or could not be reached (`status` is then None)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ServerUnreachableError(ServerError):
    """Nothing answered at the URL."""


class ChatServer:
    """One server, one API key; `close()` (or `with`) releases its connections."""

    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url.rstrip("/").removesuffix("/v1")
        self.keyed = bool(api_key)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx2.Client(base_url=f"{self.url}/v1", headers=headers, timeout=_TIMEOUT)
        # The SDK insists on a key; a loopback server without keys ignores this placeholder.
        self.openai = openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=api_key or "unused", max_retries=0, timeout=_TIMEOUT.read
        )

    def __enter__(self) -> ChatServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.openai.close()
        self.http.close()

    # --- the OpenAI APIs ------------------------------------------------------------------------------------------

    def create_conversation(self) -> str:
        with self.translated():
            return self.openai.conversations.create().id

    def stream(
        self, conversation_id: str, items: ResponseInputParam, *, model: str | None, instructions: str | None
    ) -> Stream[ResponseStreamEvent]:
        """Start a streamed response in the conversation (errors before the first event raise `ServerError`)."""
        with self.translated():
            return self.openai.responses.create(
                input=items,
                conversation=conversation_id,
                stream=True,
                model=model or omit,
                instructions=instructions or omit,
            )

    # --- the extensions, and plain JSON calls ----------------------------------------------------------------------

    def context(self, conversation_id: str, model: str | None) -> dict[str, Any]:
        return self.get(f"/conversations/{conversation_id}/context", **({"model": model} if model else {}))

    def recent_items(self, conversation_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """The conversation's newest items, newest first."""
        page = self.get(f"/conversations/{conversation_id}/items", order="desc", limit=limit)
        data: list[dict[str, Any]] = page["data"]
        return data

    def get(self, path: str, **params: str | int) -> dict[str, Any]:
        return self._json(lambda: self.http.get(path, params=params))

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._json(lambda: self.http.post(path, json=body))

    def delete(self, path: str) -> dict[str, Any]:
        return self._json(lambda: self.http.delete(path))

    def _json(self, send: Callable[[], httpx2.Response]) -> dict[str, Any]:
        with self.translated():
            response = send()
        if response.status_code >= 400:
            raise self._error(response.status_code, _error_body(response), response.reason_phrase)
        data: dict[str, Any] = response.json()
        return data

    # --- errors ---------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def translated(self) -> Iterator[None]:
        """Turn the SDK's and httpx2's exceptions into `ServerError`s that read well at the prompt."""
        try:
            yield
        except openai.APITimeoutError as exc:
            raise ServerError(f"the server at {self.url} did not answer in time") from exc
        except (openai.APIConnectionError, httpx2.TransportError) as exc:
            raise ServerUnreachableError(
                f"cannot reach a contextfold server at {self.url}: start one with `contextfold serve` "
                "(or check --url / CONTEXTFOLD_URL)"
            ) from exc
        except openai.APIStatusError as exc:
            raise self._error(exc.status_code, exc.body, exc.message) from exc

    def _error(self, status: int, body: object, fallback: str) -> ServerError:
        error = body.get("error", body) if isinstance(body, dict) else None  # the SDK already unwraps "error"
        message = error.get("message") if isinstance(error, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        text = message if isinstance(message, str) and message else fallback
        if status == 401 and not self.keyed:
            text += " (no API key given: pass --api-key or set CONTEXTFOLD_API_KEY)"
        code = code if isinstance(code, str) else None
        return ServerError(f"{text} (HTTP {status}{', ' + code if code else ''})", status=status, code=code)


def _error_body(response: httpx2.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def unanswered_calls(items: Sequence[dict[str, Any]]) -> list[str]:
    """The call ids of the function calls at the end of a conversation that have no output yet (`items` newest
    first): the next request must answer them before anything else."""
    answered: set[str] = set()
    pending: list[str] = []
    for item in items:
        kind = item.get("type")
        if kind == "function_call_output":
            answered.add(str(item.get("call_id")))
        elif kind == "function_call" and item.get("call_id") not in answered:
            pending.append(str(item.get("call_id")))
        elif kind == "message":
            break  # calls before the last message were answered, or the server would not have taken that message
    return list(reversed(pending))
