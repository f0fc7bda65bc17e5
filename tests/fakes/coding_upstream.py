"""`CodingUpstream`: a deterministic fake LLM server speaking the OpenAI Chat Completions and Anthropic Messages wires.

    with CodingUpstream(window=20_000) as upstream:           # its own loopback FakeServer
        AsyncOpenAI(base_url=upstream.url + "/v1", ...)       # or AsyncAnthropic(base_url=upstream.url, ...)
    server.handler = CodingUpstream().handle                  # or behind a FakeServer you already have

`POST /v1/chat/completions`, `POST /v1/messages` (streamed or not, field for field as the real APIs: `coding_wire`)
and `GET /v1/models` (the model, with vLLM's `max_model_len` = the window).
It counts each prompt by its own rule (`Prompt.tokens`), refuses one over the window with the wire's real
context-length error, reports that count as the usage's prompt tokens, and records every request. What it answers
is `coding_model.decide`; a request carrying contextfold's summary prompt gets a summary per `summary`.

`first_delta_gate`: a stream of a text answer to the agent (not a summary) waits on it right after its first text
delta, with `held` set while it waits; a test sets the gate once its client has the delta, which proves the delta
reached it before the stream ended.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Literal, Self, overload

from ._server import AnyReply, FakeServer, Reply, Request, StreamReply
from .coding_model import Answer, Call, Prompt, decide, summary_text
from .coding_wire import (
    Wire,
    anthropic_chunks,
    anthropic_message,
    chat_chunks,
    chat_completion,
    context_length_error,
    error_reply,
    prompt_of,
)
from .fake_openai import error_body, models_list

SummaryMode = Literal["short", "huge", "empty", "error"]
JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """One request the upstream got, and what it made of it."""

    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names (`authorization`, `x-api-key`, ...)."""
    raw: bytes
    body: Any
    wire: Wire | None
    """None for anything but a model call (`GET /v1/models`)."""
    tokens: int = 0
    summary: bool = False
    status: int = 200
    text: str = ""
    call: Call | None = None

    @property
    def refused(self) -> bool:
        return self.status != 200


class CodingUpstream:
    def __init__(
        self,
        *,
        window: int | None = None,
        summary: SummaryMode = "short",
        first_delta_gate: threading.Event | None = None,
        model: str = "fake-coder",
        gate_timeout: float = 30.0,
    ) -> None:
        self.window = window
        self.summary = summary
        self.gate = first_delta_gate
        self.gate_timeout = gate_timeout
        """A safety net, not a timing: a client that never gets its first delta fails its test instead of hanging."""
        self.model = model
        self.held = threading.Event()
        """Set while a stream waits at the gate, that is, after its first text delta and before its end."""
        self.requests: list[UpstreamRequest] = []
        self._lock = threading.Lock()
        self._server: FakeServer | None = None

    # --- serving -----------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The root URL of its own server (the OpenAI SDK wants `url + "/v1"`, the Anthropic SDK `url`)."""
        if self._server is None:
            raise RuntimeError("CodingUpstream serves only inside `with`; else set server.handler = upstream.handle")
        return self._server.url

    def __enter__(self) -> Self:
        self._server = FakeServer().__enter__()
        self._server.handler = self.handle
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.__exit__(kind, error, tb)
            self._server = None

    def model_requests(self) -> list[UpstreamRequest]:
        """The agent's requests: model calls that are not summary requests."""
        with self._lock:
            return [r for r in self.requests if r.wire is not None and not r.summary]

    def summary_requests(self) -> list[UpstreamRequest]:
        with self._lock:
            return [r for r in self.requests if r.summary]

    def handle(self, request: Request) -> AnyReply:
        """Answer one HTTP request (FakeServer calls this on its threads, concurrently)."""
        base = UpstreamRequest(request.method, request.path, dict(request.headers), request.body, None, None)
        if request.method == "GET" and request.path.endswith("/models"):
            self._record(base)
            entry: JSON = {"id": self.model}
            if self.window is not None:
                entry["max_model_len"] = self.window
            return models_list(entry)
        wire: Wire | None = None
        if request.method == "POST" and request.path.endswith("/chat/completions"):
            wire = "openai-chat"
        elif request.method == "POST" and request.path.endswith("/messages"):
            wire = "anthropic"
        if wire is None:
            self._record(replace(base, status=404))
            return Reply(404, json=error_body(f"no route {request.method} {request.path}", "not_found"))
        try:
            body = json.loads(request.body)
            prompt = prompt_of(wire, body)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            self._record(replace(base, wire=wire, status=400))
            return error_reply(wire, 400, f"malformed request body: {error!r}")
        return self._answer(replace(base, body=body, wire=wire), wire, body, prompt)

    def _answer(self, base: UpstreamRequest, wire: Wire, body: JSON, prompt: Prompt) -> AnyReply:
        tokens = prompt.tokens
        base = replace(base, tokens=tokens, summary=prompt.is_summary_request)
        if wire == "anthropic" and not isinstance(body.get("max_tokens"), int):
            self._record(replace(base, status=400))
            return error_reply(wire, 400, "max_tokens: Field required")
        if self.window is not None and tokens > self.window:
            self._record(replace(base, status=400))
            return context_length_error(wire, tokens, self.window)
        if prompt.is_summary_request:
            if self.summary == "error":
                self._record(replace(base, status=500))
                return error_reply(wire, 500, "The server had an error while processing your request.")
            answer = Answer(summary_text(prompt, self.summary))
        else:
            answer = decide(prompt)
        self._record(replace(base, text=answer.text, call=answer.call))
        model = str(body.get("model") or self.model)
        stream = body.get("stream") is True
        if wire == "openai-chat":
            if not stream:
                return Reply(200, json=chat_completion(answer, model, tokens))
            options = body.get("stream_options")
            usage = isinstance(options, dict) and options.get("include_usage") is True
            chunks, first = chat_chunks(answer, model, tokens, usage)
        else:
            if not stream:
                return Reply(200, json=anthropic_message(answer, model, tokens))
            chunks, first = anthropic_chunks(answer, model, tokens)
        if self.gate is not None and first is not None and not prompt.is_summary_request:
            return StreamReply(_GatedChunks(chunks, first, self.gate, self.held, self.gate_timeout))
        return StreamReply(chunks)

    def _record(self, request: UpstreamRequest) -> None:
        with self._lock:
            self.requests.append(request)


# --- the gate ----------------------------------------------------------------------------------------------------


class _GatedChunks(Sequence[bytes]):
    """Stream chunks that, iterated (as FakeServer writes them), hold the stream after chunk `first` until `gate`."""

    def __init__(
        self, chunks: list[bytes], first: int, gate: threading.Event, held: threading.Event, timeout: float
    ) -> None:
        self._chunks, self._first, self._gate, self._held, self._timeout = chunks, first, gate, held, timeout

    def __iter__(self) -> Iterator[bytes]:
        for index, chunk in enumerate(self._chunks):
            if index == self._first:
                self._held.set()  # before the delta leaves: whoever reads it sees the stream still open
            yield chunk  # FakeServer writes and flushes it before asking for the next one
            if index == self._first:
                self._gate.wait(self._timeout)
                self._held.clear()

    def __len__(self) -> int:
        return len(self._chunks)

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        return self._chunks[index]
