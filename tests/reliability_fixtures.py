"""What the reliability suite shares: servers wired to the faulty upstream, a streaming client that records what it
was acknowledged, and the checks run on the log after every fault (nothing lost, nothing duplicated, no half turn).

    config_file(tmp_path, upstream, lease_ttl=2)      # a `contextfold serve --config` routing `faulty` to it
    registry = FastRetries(config)                      # in-process: the same routes, retries without long sleeps
    turns = check_log(await store.read(conversation))   # {turn_id: status}, asserting the log's shape
    await check_views(store, conversation)              # the view folded from the store holds no half turn
    async with live(app) as url: ...                    # the app on a real loopback socket, in this event loop

The long tests of the suite are marked `slow`; run the whole suite with
`pytest -p no:cacheprovider tests/test_reliability_*.py`, or only the quick part with `-m "not slow"`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from contextfold._conversation import Conversation
from contextfold.events import AnyEvent, Message, TurnMarker, text_of
from contextfold.models import Model, RetryPolicy, StreamingModel
from contextfold.server import ModelRegistry, ModelRoute
from contextfold.store import Store
from contextfold.view._invariants import check as check_invariants

from .fakes.faulty_upstream import MODEL, FaultyUpstream
from .server_fixtures import check_stream, parse_sse

FAST_RETRIES = RetryPolicy(attempts=3, initial=0.02, maximum=2.0)
"""The adapters' retry logic unchanged, with backoffs short enough for a test (Retry-After is still honoured)."""
WINDOW = 32_768


# --- servers ------------------------------------------------------------------------------------------------------


def route(upstream: FaultyUpstream, *, timeout: float = 5.0) -> ModelRoute:
    """The `faulty` model: an OpenAI Chat Completions route to the upstream, with a short request timeout."""
    return ModelRoute(
        MODEL,
        "openai-chat",
        base_url=upstream.url,
        api_key="unused",
        context_window=WINDOW,
        options={"timeout": str(timeout)},
    )


def config_file(tmp_path: Path, upstream: FaultyUpstream, *, lease_ttl: float = 30.0, timeout: float = 30.0) -> Path:
    """A TOML file for `contextfold serve --config`: the `faulty` route as default model, and the lease TTL."""
    path = tmp_path / "server.toml"
    path.write_text(
        f'model = "{MODEL}"\nlease_ttl = {lease_ttl}\n'
        f'[[models]]\nname = "{MODEL}"\nprovider = "openai-chat"\nbase_url = "{upstream.url}"\n'
        f'api_key = "unused"\ncontext_window = {WINDOW}\noptions = {{ timeout = {timeout} }}\n'
    )
    return path


class FastRetries(ModelRegistry):
    """The configured routes, built as the server builds them, with `FAST_RETRIES` instead of the default policy."""

    def _build_route(self, route: ModelRoute) -> Model:
        model = super()._build_route(route)
        assert isinstance(model, StreamingModel)
        model.retry = FAST_RETRIES
        return model


@contextlib.asynccontextmanager
async def live(app: FastAPI) -> AsyncIterator[str]:
    """The app served by uvicorn on a free loopback port, in this event loop (so a test can look at its tasks);
    yields its base URL. Real sockets: a client that closes its connection is a disconnect the app sees."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve(), name="uvicorn")
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def open_sockets() -> int:
    """Sockets this process holds open (its file descriptors that are sockets)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


async def eventually(condition: Callable[[], bool], what: str, *, limit: float = 30.0) -> None:
    """Wait until `condition()` holds. The limit is a safety net for a hung test, not a timing under test."""
    for _ in range(int(limit / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


# --- clients ------------------------------------------------------------------------------------------------------


@dataclass
class Seen:
    """What a streaming client was told about one response."""

    input: str
    response_id: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def final(self) -> dict[str, Any] | None:
        last = self.events[-1] if self.events else None
        return last["response"] if last and last["type"] in _FINAL else None

    @property
    def acknowledged(self) -> bool:
        """The server said the response completed: everything in it is committed."""
        return self.final is not None and self.final["status"] == "completed"


_FINAL = ("response.completed", "response.incomplete", "response.failed")


async def stream_turn(http: httpx.AsyncClient, body: dict[str, Any], seen: Seen) -> Seen:
    """POST a streamed response, recording every event as it arrives (a connection lost mid-way keeps what came)."""
    try:
        async with http.stream("POST", "/v1/responses", json={**body, "stream": True}) as reply:
            if reply.status_code != 200:
                seen.error = f"{reply.status_code}: {(await reply.aread()).decode(errors='replace')}"
                return seen
            async for frame in _frames(reply):
                seen.events.append(frame)
                if frame["type"] == "response.created":
                    seen.response_id = frame["response"]["id"]
    except httpx.HTTPError as error:
        seen.error = f"{type(error).__name__}: {error}"
    return seen


async def _frames(reply: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    data: str | None = None
    async for line in reply.aiter_lines():
        if line.startswith("data: "):
            data = line[6:]
        elif not line and data is not None:
            yield json.loads(data)
            data = None


# --- one client per route -----------------------------------------------------------------------------------------

ROUTES = ("responses", "responses-stream", "chat", "chat-stream", "messages", "messages-stream")
"""The ways a client reaches the model: the Responses API (a stored conversation) and the two proxy wires (the
client resends its history), each streamed and not."""
KINDS = {
    # what the client was told, by route family, as one word: an upstream failure, a timeout, a rate limit, or a
    # context-length refusal
    502: "upstream",
    504: "timeout",
    429: "rate",
    400: "context",
    "upstream_error": "upstream",
    "upstream_timeout": "timeout",
    "rate_limit_exceeded": "rate",
    "context_length_exceeded": "context",
    "api_error": "upstream",
    "timeout_error": "timeout",
    "rate_limit_error": "rate",
    "invalid_request_error": "context",
    503: "store",
    529: "store",  # Anthropic's "overloaded, try again shortly", the proxy's word for 503 on its wire
    "store_unavailable": "store",
    "overloaded_error": "store",
}


@dataclass
class Outcome:
    """How one turn ended for its client: the answer's text, or the error it was given and how."""

    status: int
    text: str | None = None
    kind: str | None = None
    """`upstream`, `timeout`, `rate`, `context` or `store` (see KINDS), when it failed."""
    message: str = ""
    streamed_error: bool = False
    """The error came inside a stream that had already started (200), not as an HTTP error."""
    retry_after: str | None = None


class RouteClient:
    """One conversation through one route. Proxy clients keep their history as a chat client does: a message the
    server failed to answer stays in it, and goes again with the next request."""

    def __init__(self, http: httpx.AsyncClient, route: str, model: str = MODEL) -> None:
        self.http = http
        self.route = route
        self.model = model
        self.stream = route.endswith("-stream")
        self.conversation: str | None = None
        self.history: list[dict[str, Any]] = []
        self.said: list[tuple[str, Outcome]] = []
        """Every turn's input and how it ended, in order."""

    async def start(self) -> str:
        """Create the conversation (the proxy's, by a first exchange) and return its id."""
        if self.route.startswith("responses"):
            reply = await self.http.post("/v1/conversations", json={})
            self.conversation = reply.json()["id"]
        outcome = await self.turn("hello there")
        assert outcome.text is not None, outcome
        assert self.conversation is not None
        return self.conversation

    async def turn(self, text: str) -> Outcome:
        if self.route.startswith("responses"):
            outcome = await self._responses(text)
        else:
            self.history.append({"role": "user", "content": text})
            outcome = await (self._chat() if self.route.startswith("chat") else self._messages())
            if outcome.text is not None:
                self.history.append({"role": "assistant", "content": outcome.text})
        self.said.append((text, outcome))
        return outcome

    def check_log(self, events: Sequence[AnyEvent]) -> None:
        """What this client was answered is in the log: every answered input in a completed turn, with its answer,
        and no input in two completed turns (a proxy client resends what failed: it must land once)."""
        status = check_log(events)
        completed = user_texts(events, status, "completed")
        assert len(completed) == len(set(completed)), f"an input in two completed turns: {completed}"
        answers = [
            text_of(e)
            for e in events
            if isinstance(e, Message) and e.role == "assistant" and status.get(e.turn_id or "") == "completed"
        ]
        for text, outcome in self.said:
            if outcome.text is not None:
                assert text in completed, f"answered input {text!r} is not in a completed turn"
                assert outcome.text in answers, f"the answer to {text!r} is not in the log"

    async def _responses(self, text: str) -> Outcome:
        body = {"model": self.model, "input": text, "conversation": self.conversation, "stream": self.stream}
        reply = await self.http.post("/v1/responses", json=body)
        if reply.status_code != 200:
            return _http_error(reply, reply.json()["error"]["code"])
        if not self.stream:
            return Outcome(200, text=_output_text(reply.json()))
        events = check_stream(parse_sse(reply.text))  # a failed stream is still a well-formed one
        final = events[-1]["response"]
        if final["status"] == "completed":
            return Outcome(200, text=_output_text(final))
        error = final["error"]
        return Outcome(200, kind=KINDS.get(error.get("type")), message=error["message"], streamed_error=True)

    async def _chat(self) -> Outcome:
        body = {"model": self.model, "messages": self.history, "stream": self.stream}
        reply = await self.http.post("/v1/chat/completions", json=body, headers=self._named())
        if reply.status_code != 200:
            return _http_error(reply, reply.json()["error"]["code"])
        self.conversation = reply.headers[CONVERSATION_HEADER]
        if not self.stream:
            return Outcome(200, text=reply.json()["choices"][0]["message"]["content"])
        chunks = [json.loads(line[6:]) for line in reply.text.split("\n") if line.startswith("data: {")]
        if "error" in chunks[-1]:
            error = chunks[-1]["error"]
            return Outcome(200, kind=KINDS.get(error["code"]), message=error["message"], streamed_error=True)
        assert reply.text.rstrip().endswith("data: [DONE]"), reply.text
        return Outcome(200, text="".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]))

    async def _messages(self) -> Outcome:
        body = {"model": self.model, "max_tokens": 512, "messages": self.history, "stream": self.stream}
        reply = await self.http.post("/v1/messages", json=body, headers=self._named())
        if reply.status_code != 200:
            return _http_error(reply, reply.json()["error"]["type"])
        self.conversation = reply.headers[CONVERSATION_HEADER]
        if not self.stream:
            return Outcome(200, text="".join(b["text"] for b in reply.json()["content"] if b["type"] == "text"))
        events = [json.loads(line[6:]) for line in reply.text.split("\n") if line.startswith("data: ")]
        if events[-1]["type"] == "error":
            error = events[-1]["error"]
            return Outcome(200, kind=KINDS.get(error["type"]), message=error["message"], streamed_error=True)
        assert events[-1]["type"] == "message_stop", events[-1]
        deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
        return Outcome(200, text="".join(d.get("text", "") for d in deltas))

    def _named(self) -> dict[str, str]:
        return {CONVERSATION_HEADER: self.conversation} if self.conversation else {}


CONVERSATION_HEADER = "x-contextfold-conversation"


def _http_error(reply: httpx.Response, code: str | None) -> Outcome:
    """An error answer; its status and its code (OpenAI) or type (Anthropic) must say the same thing."""
    message = reply.json()["error"]["message"]
    kind = KINDS.get(reply.status_code)
    if reply.status_code == 400 and "context" not in message.lower():
        kind = None
    assert kind is None or KINDS.get(code or "") == kind, (reply.status_code, code, message)
    return Outcome(reply.status_code, kind=kind, message=message, retry_after=reply.headers.get("retry-after"))


def _output_text(response: dict[str, Any]) -> str:
    return "".join(p["text"] for i in response["output"] if i["type"] == "message" for p in i["content"])


# --- checks on the log --------------------------------------------------------------------------------------------


def check_log(events: Sequence[AnyEvent]) -> dict[str, str]:
    """The log's shape, whatever faults it went through: seqs dense from 1, ids unique, every turn started once
    before its events, its events contiguous, ended at most once and nothing of it after its end. Returns each
    turn's status (`open` for a turn with no end marker yet)."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), "seqs are dense from 1"
    duplicated = [i for i, n in Counter(e.id for e in events).items() if n > 1]
    assert not duplicated, f"event ids stored twice: {duplicated}"
    status: dict[str, str] = {}
    current: str | None = None
    for event in events:
        turn = event.turn_id
        if isinstance(event, TurnMarker) and event.status == "started":
            assert turn not in status, f"turn {turn} started twice"
            assert current is None, f"turn {turn} started while turn {current} was open"
            status[turn or ""] = "open"
            current = turn
        elif isinstance(event, TurnMarker):
            assert status.get(turn or "") == "open", f"turn {turn} ended as {event.status} but it was not open"
            status[turn or ""] = event.status
            if turn == current:
                current = None
        elif turn is not None:
            assert turn == current, f"an event of turn {turn} outside it (running: {current})"
    return status


def user_texts(events: Sequence[AnyEvent], turns: dict[str, str], *statuses: str) -> list[str]:
    """The user messages of the turns with one of `statuses`, in log order."""
    return [
        text_of(e)
        for e in events
        if isinstance(e, Message) and e.role == "user" and turns.get(e.turn_id or "") in statuses
    ]


async def check_views(store: Store, conversation_id: str) -> Conversation:
    """The conversation as a fresh load sees it: no item of a failed, interrupted or still-open turn in the view,
    and every invariant holding against its log."""
    conversation = await Conversation.load(store, conversation_id)
    log = await store.read(conversation_id)
    problems = check_invariants(log, conversation.view)
    assert not problems, problems
    assert not conversation.view.open_turns, f"half turns in the view: {conversation.view.open_turns}"
    return conversation
