"""Server fixtures and checks: the app in-process behind the official `openai` SDK, and every body and stream event
it sends validated with the SDK's own models.

Import them in conftest.py with `from .server_fixtures import *`.

    async def test_x(served: Served) -> None:
        r = await served.client.responses.create(model="test", input="hi")   # the SDK, unchanged
        body = await served.post("/v1/responses", json={...})                   # raw JSON, status checked
        events = await served.stream({...})                                     # parsed, validated SSE events
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from fastapi import FastAPI
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.conversations import (
    Conversation,
    ConversationDeletedResource,
    ConversationItem,
    ConversationItemList,
)
from openai.types.responses import (
    CompactedResponse,
    FunctionToolParam,
    InputTokenCountResponse,
    Response,
    ResponseItemList,
    ResponseStreamEvent,
)
from pydantic import TypeAdapter

from contextfold.compaction import SUMMARY_PROMPT
from contextfold.models import ModelSettings, StreamEvent
from contextfold.server import ModelRegistry, ResolvedModel, ServerConfig, create_app
from contextfold.server._state import ServerState
from contextfold.server._testmodel import TestModel, window_tokens
from contextfold.store import ServerStore
from contextfold.view import Window

from .knowledge_checks import check_knowledge

__all__ = ["served"]

STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
CONVERSATION_ITEM: TypeAdapter[Any] = TypeAdapter(ConversationItem)
ANTHROPIC_EVENT: TypeAdapter[Any] = TypeAdapter(anthropic.types.RawMessageStreamEvent)
_FINAL = ("response.completed", "response.incomplete", "response.failed")


# --- the app, served in-process --------------------------------------------------------------------------------


@dataclass
class Served:
    app: FastAPI
    http: httpx.AsyncClient
    """Raw HTTP to the app, with the API key (if any) sent as a bearer token."""
    client: openai.AsyncOpenAI
    """The official SDK, retries off (a retried 429 would hide the status under test)."""
    exits: contextlib.AsyncExitStack

    async def as_key(self, api_key: str) -> Served:
        """Clients on the same app sending another API key (closed with the app)."""
        return await _clients(self.app, api_key, self.exits)

    @property
    def state(self) -> ServerState:
        state: ServerState = self.app.state.server
        return state

    @property
    def store(self) -> ServerStore:
        return self.state.store

    async def post(self, path: str, json: Any = None, *, status: int = 200) -> Any:
        reply = await self.http.post(path, json=json)
        assert reply.status_code == status, reply.text
        return reply.json()

    async def get(self, path: str, *, status: int = 200, **params: Any) -> Any:
        reply = await self.http.get(path, params=params)
        assert reply.status_code == status, reply.text
        return reply.json()

    async def delete(self, path: str, *, status: int = 200) -> Any:
        reply = await self.http.delete(path)
        assert reply.status_code == status, reply.text
        return reply.json()

    async def respond(self, **body: Any) -> dict[str, Any]:
        """POST /v1/responses (non-streamed); the body is checked against the SDK's `Response`."""
        out: dict[str, Any] = await self.post("/v1/responses", json={"model": "test", **body})
        check_response(out)
        return out

    async def turns(self, conversation: str, count: int, *, words: int = 40) -> None:
        """`count` turns of about `words` words each: history to fold."""
        for _ in range(count):
            await self.respond(input=f"/long {words}", conversation=conversation)

    async def stream(self, **body: Any) -> list[dict[str, Any]]:
        """POST /v1/responses with stream on: the events, each checked, and the stream's order checked."""
        reply = await self.http.post("/v1/responses", json={"model": "test", **body, "stream": True})
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"].startswith("text/event-stream")
        return check_stream(parse_sse(reply.text))


@contextlib.asynccontextmanager
async def serving(
    config: ServerConfig,
    *,
    registry: ModelRegistry | None = None,
    store: ServerStore | None = None,
    api_key: str | None = None,
) -> AsyncIterator[Served]:
    """The app with its lifespan running, and clients on it (sending `api_key` when given)."""
    app = create_app(config, registry=registry, store=store)
    async with app.router.lifespan_context(app), contextlib.AsyncExitStack() as exits:
        yield await _clients(app, api_key, exits)


async def _clients(app: FastAPI, api_key: str | None, exits: contextlib.AsyncExitStack) -> Served:
    """Raw HTTP (httpx) and the SDK (on httpx2, the client it is typed with) on the app, closed by `exits`."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    hooks = {"response": [check_reply]}  # every body the app sends, checked with the SDK's models
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", headers=headers, event_hooks=hooks
    )
    await exits.enter_async_context(http)
    sdk_http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), event_hooks=hooks)
    await exits.enter_async_context(sdk_http)
    client = openai.AsyncOpenAI(
        base_url="http://test/v1", api_key=api_key or "unused", http_client=sdk_http, max_retries=0
    )
    return Served(app, http, client, exits)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """The server with its defaults (the `test` model, no keys) on a fresh SQLite file."""
    async with serving(ServerConfig(db=str(tmp_path / "server.db"))) as running:
        yield running


# --- scripted models -------------------------------------------------------------------------------------------


class GatedModel(TestModel):
    """The test model, holding every answer until `gate` is set; `entered` is set once a request is waiting."""

    __test__ = False

    def __init__(self, name: str = "gated", *, context_window: int | None = None) -> None:
        super().__init__(name, context_window=context_window)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.order: list[str] = []
        """The last user text of each window, in the order the model answered them."""

    async def _stream_once(self, window: Window, settings: ModelSettings) -> AsyncIterator[StreamEvent]:
        self.entered.set()
        await self.gate.wait()
        self.order.append(_last_text(window))
        async for event in super()._stream_once(window, settings):
            yield event


class RecordingModel(TestModel):
    """The test model, recording the estimated tokens of every window it is sent (and the budget it had)."""

    __test__ = False

    def __init__(self, name: str = "recording", *, context_window: int | None = None) -> None:
        super().__init__(name, context_window=context_window)
        self.windows: list[int] = []
        """The tokens of every window sent for an answer (not for a summary)."""
        self.summaries = 0
        self.settings: list[ModelSettings] = []
        self.texts: list[str] = []
        """The last user message of every window (a summariser's request carries its instructions there)."""

    async def _stream_once(self, window: Window, settings: ModelSettings) -> AsyncIterator[StreamEvent]:
        if window.system_prompt == SUMMARY_PROMPT:
            self.summaries += 1
        else:
            self.windows.append(window_tokens(window))
            self.settings.append(settings)
        self.texts.append(_last_text(window))
        async for event in super()._stream_once(window, settings):
            yield event


class ServerFixtureRegistry(ModelRegistry):
    """The configured models, plus the scripted ones a test adds by name."""

    def __init__(self, config: ServerConfig, *models: TestModel) -> None:
        super().__init__(config)
        self.extra = {model.name: model for model in models}

    def names(self) -> list[str]:
        return [*super().names(), *self.extra]

    async def resolve(self, name: str | None) -> ResolvedModel:
        model = self.extra.get(name or "")
        if model is None:
            return await super().resolve(name)
        return ResolvedModel(model.name, model, model, model.profile.context_window or 0)


def _last_text(window: Window) -> str:
    from contextfold.events import Message, text_of

    return next((text_of(i) for i in reversed(window.items) if isinstance(i, Message) and i.role == "user"), "")


# --- checks against the SDK's own models -----------------------------------------------------------------------


async def check_reply(reply: httpx.Response | httpx2.Response) -> None:
    """Any reply of the app's API, checked by what it is: an error's OpenAI shape, every event of a stream, and
    each body with the SDK's model of its object (contextfold's extensions, which the SDK has no models of, by
    the conversations and items they hold)."""
    await reply.aread()
    if not reply.url.path.startswith("/v1/"):
        return
    if reply.url.path in ("/v1/chat/completions", "/v1/messages"):
        check_proxy_reply(reply)
        return
    if reply.status_code >= 400:
        check_error(reply, reply.status_code)
        return
    if reply.headers.get("content-type", "").startswith("text/event-stream"):
        for event in parse_sse(reply.text):
            STREAM_EVENT.validate_python(event)
        return
    if not reply.headers.get("content-type", "").startswith("application/json"):
        return  # a file's bytes (GET /v1/files/{id}/content)
    body = reply.json()
    if check_knowledge(body, reply.url.path):
        return
    kind = body.get("object") if isinstance(body, dict) else None
    path = reply.url.path
    if kind == "response":
        check_response(body)
    elif kind == "conversation":
        check_conversation(body)
    elif kind == "conversation.deleted":
        ConversationDeletedResource.model_validate(body)
    elif kind == "response.compaction":
        check_compacted(body)
    elif kind == "response.input_tokens":
        InputTokenCountResponse.model_validate(body)
    elif kind == "list" and path.endswith(("/items", "/input_items")):
        check_items_page(body, of="response" if path.endswith("/input_items") else "conversation")
    elif kind == "list" and path == "/v1/conversations":
        for conversation in body["data"]:
            check_conversation(conversation)
    elif kind is None and "/items/" in path:
        check_item(body)


def check_proxy_reply(reply: httpx.Response | httpx2.Response) -> None:
    """A proxy route's reply, checked with the models of the SDK its clients use (OpenAI's or Anthropic's)."""
    anthropic_route = reply.url.path == "/v1/messages"
    if reply.status_code >= 400:
        if anthropic_route:
            check_anthropic_error(reply, reply.status_code)
        else:
            check_error(reply, reply.status_code)
        return
    assert reply.headers.get("x-contextfold-conversation", "").startswith("conv_"), reply.headers
    streamed = reply.headers.get("content-type", "").startswith("text/event-stream")
    if anthropic_route:
        if streamed:
            for event in parse_anthropic_sse(reply.text):
                ANTHROPIC_EVENT.validate_python(event)
        else:
            anthropic.types.Message.model_validate(reply.json())
    elif streamed:
        for chunk in parse_chat_sse(reply.text):
            if "error" not in chunk:
                ChatCompletionChunk.model_validate(chunk)
    else:
        ChatCompletion.model_validate(reply.json())


def check_anthropic_error(reply: httpx.Response | httpx2.Response, status: int, *, kind: str | None = None) -> str:
    """An Anthropic-shaped error with this status (and error type, when given); returns its message."""
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["type"] == "error", body
    assert set(body["error"]) == {"type", "message"}, body
    if kind is not None:
        assert body["error"]["type"] == kind, body
    message: str = body["error"]["message"]
    assert message
    assert "Traceback" not in message
    return message


def parse_chat_sse(text: str) -> list[dict[str, Any]]:
    """The chunks of a Chat Completions stream (`data:` lines, ending with `data: [DONE]` when it completed)."""
    chunks: list[dict[str, Any]] = []
    for frame in text.split("\n\n"):
        if not frame.strip() or frame.strip() == "data: [DONE]":
            continue
        assert frame.startswith("data: "), frame
        chunks.append(json.loads(frame[6:]))
    return chunks


def parse_anthropic_sse(text: str) -> list[dict[str, Any]]:
    """The events of an Anthropic stream: `event:` then `data:` lines."""
    events: list[dict[str, Any]] = []
    for frame in text.split("\n\n"):
        if not frame.strip():
            continue
        lines = dict(line.split(": ", 1) for line in frame.split("\n"))
        event = json.loads(lines["data"])
        assert event["type"] == lines["event"], frame
        events.append(event)
    return events


def check_response(body: Mapping[str, Any]) -> Response:
    response = Response.model_validate(body)
    assert body["object"] == "response"
    for item in body["output"]:
        assert item["id"], item  # every item can be referred back to
    return response


def check_item(item: Mapping[str, Any]) -> Any:
    return CONVERSATION_ITEM.validate_python(item)


def check_items_page(body: Mapping[str, Any], *, of: str = "conversation") -> Any:
    """A list page of items. An empty page has no first/last id (null), which the SDK's models type as str."""
    if not body["data"]:
        assert body["first_id"] is None
        assert body["last_id"] is None
        assert body["has_more"] is False
        return None
    model = ConversationItemList if of == "conversation" else ResponseItemList
    page = model.model_validate(body)
    assert body["first_id"] == body["data"][0]["id"]
    assert body["last_id"] == body["data"][-1]["id"]
    return page


def check_conversation(body: Mapping[str, Any]) -> Conversation:
    return Conversation.model_validate(body)


def check_compacted(body: Mapping[str, Any]) -> CompactedResponse:
    """The `/responses/compact` answer: the view's items, with at most one compaction item. The SDK types `output`
    as output items, whose messages are the assistant's only, so every other item is checked as a conversation
    item and the body with its compaction item alone."""
    compactions = [item for item in body["output"] if item["type"] == "compaction"]
    assert len(compactions) <= 1
    for item in body["output"]:
        if item["type"] != "compaction":
            check_item(item)
    return CompactedResponse.model_validate({**body, "output": compactions})


def check_error(
    reply: httpx.Response | httpx2.Response, status: int, *, code: str | None = None, param: str | None = None
) -> str:
    """An OpenAI-shaped error with this status (and code, and param when given); returns its message."""
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["type"], str)
    assert error["type"]
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    assert "Traceback" not in error["message"]
    message: str = error["message"]
    return message


def parse_sse(text: str) -> list[dict[str, Any]]:
    """The events of an SSE body, each an `event:` line naming its type and a `data:` line of JSON."""
    events: list[dict[str, Any]] = []
    for frame in text.split("\n\n"):
        if not frame.strip():
            continue
        lines = dict(line.split(": ", 1) for line in frame.split("\n"))
        assert set(lines) == {"event", "data"}, frame
        event = json.loads(lines["data"])
        assert event["type"] == lines["event"], frame
        events.append(event)
    return events


def check_stream(events: Sequence[dict[str, Any]], *, first: int = 0) -> list[dict[str, Any]]:
    """Every event valid as the SDK's `ResponseStreamEvent`, and in OpenAI's order: sequence numbers from `first`
    increasing by one; created then in_progress first (when the stream starts at 0); one final event, last; each
    item added before any delta of it and done after; output indexes handed out in order."""
    for event in events:
        STREAM_EVENT.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(first, first + len(events)))
    kinds = [e["type"] for e in events]
    if first == 0:
        assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    assert kinds[-1] in _FINAL, kinds
    assert sum(k in _FINAL for k in kinds) == 1, kinds
    assert "error" not in kinds
    added: dict[str, int] = {}
    done: set[str] = set()
    for event in events:
        kind = event["type"]
        if kind == "response.output_item.added":
            item_id = event["item"]["id"]
            assert item_id not in added
            if first == 0:
                assert event["output_index"] == len(added), (event, added)
            added[item_id] = event["output_index"]
        elif kind == "response.output_item.done":
            assert event["item"]["id"] in added or first > 0
            done.add(event["item"]["id"])
        elif "item_id" in event and kind != "response.compaction.compacting":
            if first == 0:
                assert event["item_id"] in added, f"{kind} before its item was added"
                assert event["output_index"] == added[event["item_id"]]
            assert event["item_id"] not in done, f"{kind} after its item was done"
    final = events[-1]["response"]
    check_response(final)
    if first == 0 and final["status"] != "failed":
        assert set(added) == done, "every added item is done"
        assert [i["id"] for i in final["output"]] == sorted(added, key=added.__getitem__)
    return list(events)


def text_of_stream(events: Sequence[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def said(response: Mapping[str, Any]) -> str:
    """The text of a response's message items."""
    return "".join(p["text"] for i in response["output"] if i["type"] == "message" for p in i["content"])


SDK_LOOKUP: FunctionToolParam = {
    "type": "function",
    "name": "lookup",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    "strict": False,
}
"""`function_tool()` as the SDK types it, for its calls."""


def function_tool(name: str = "lookup", **properties: Any) -> dict[str, Any]:
    props = properties or {"q": {"type": "string"}}
    return {"type": "function", "name": name, "parameters": {"type": "object", "properties": props}, "strict": False}


def items_of(events: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["item"] for e in events if e["type"] == "response.output_item.done" and e["item"]["type"] == kind]
