"""50 concurrent turns on 50 sessions sharing one agent, one model and one OpenAI client, against a loopback server
that answers each request from its own content: every turn's events land in its own conversation, with its own input.

This is the race a lightspeed-stack review found (one request's patch of a shared client overwrote another's): here
the client is built once and never mutated per request, and nothing of a turn is shared with another.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from contextfold import Agent, Store
from contextfold.events import Message, ToolCall, ToolResult, text_of
from contextfold.models import ModelProfile
from contextfold.models._openai import OpenAIProvider
from contextfold.models._openai_chat import OpenAIChatModel

from .fakes._server import AnyReply, FakeServer, Request, StreamReply
from .fakes.fake_openai import (
    chat_answer,
    chat_finish,
    chat_stream,
    chat_tool_call,
    chat_usage,
    models_list,
)

SESSIONS = 50


def answer(request: Request) -> AnyReply:
    """Stateless, like a model: a user message gets a tool call carrying its words; a tool result gets an answer
    quoting what the tool returned. The model list says the window, as vLLM does."""
    if request.method == "GET":
        return models_list({"id": "gpt-4o", "max_model_len": 32_000})
    messages = request.json["messages"]
    last = messages[-1]
    if last["role"] == "user":
        token = last["content"] if isinstance(last["content"], str) else last["content"][0]["text"]
        arguments = json.dumps({"text": token})
        half = len(arguments) // 2
        call = chat_tool_call(0, f"call_{abs(hash(token))}", "echo", arguments[:half], arguments[half:])
        return StreamReply(chat_stream(call, chat_finish("tool_calls"), chat_usage(len(messages) * 10, 5)))
    assert last["role"] == "tool"
    return chat_answer(f"the tool said: {last['content']}", prompt=len(messages) * 10)


def echo(text: str) -> str:
    """Echo the text back.

    Args:
        text: What to echo.
    """
    return f"echo<{text}>"


@pytest.fixture
async def model() -> AsyncIterator[tuple[OpenAIChatModel, FakeServer]]:
    with FakeServer() as server:
        server.handler = answer
        provider = OpenAIProvider(api_key="sk-test", base_url=f"{server.url}/v1")
        try:
            yield OpenAIChatModel("gpt-4o", provider, profile=ModelProfile(context_window=8_000)), server
        finally:
            await provider.aclose()


async def test_50_concurrent_turns_on_one_client_stay_in_their_own_sessions(
    store: Store, model: tuple[OpenAIChatModel, FakeServer]
) -> None:
    chat, server = model
    agent = Agent(chat, store=store, instructions="Echo things.", tools=[echo])
    sessions = await asyncio.gather(*(agent.create_session() for _ in range(SESSIONS)))
    inputs = {session.id: f"session {n} says {session.id}" for n, session in enumerate(sessions)}
    results = await asyncio.gather(*(session.turn(inputs[session.id]) for session in sessions))

    assert await agent.context_window() == 32_000  # what the upstream reported, asked once
    assert [r.path for r in server.requests if r.method == "GET"] == ["/v1/models"]
    chats = [r for r in server.requests if r.method == "POST"]
    assert len(chats) == 2 * SESSIONS
    for session, result in zip(sessions, results, strict=True):
        own = inputs[session.id]
        assert result.final_text == f"the tool said: echo<{own}>"
        log = await store.read(session.id)
        assert all(event.conversation_id == session.id for event in log)
        users = [text_of(e) for e in log if isinstance(e, Message) and e.role == "user"]
        assert users == [own]
        (call,) = [e for e in log if isinstance(e, ToolCall)]
        assert json.loads(call.arguments) == {"text": own}
        (output,) = [e.output for e in log if isinstance(e, ToolResult)]
        assert output == f"echo<{own}>"
        assert [e.turn_id for e in log[1:]] == [result.turn_id] * (len(log) - 1)
    for request in chats:  # no request mixed two sessions' messages
        texts = json.dumps(request.json["messages"])
        assert sum(session_id in texts for session_id in inputs) == 1
