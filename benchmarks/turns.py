"""`turns`: what the agent runtime adds to a turn, and how 50 concurrent turns on one provider client go.

Each turn is the common shape: the model calls one tool, the tool answers (~2 KB), the model answers. That is two
inference steps, one tool step and five appends (start + input, answer + call + usage, result, completion...).
- scripted: the scripted model (no network), so the figure is the runtime and the store alone;
- openai: the OpenAI Chat Completions adapter, the real `openai` SDK streaming over HTTP from a loopback server
  that speaks the wire format (the server answers at once: the figure is our side plus the SDK and HTTP);
- 50 concurrent: 50 sessions on one agent and one client, one turn each, all at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.fakes._server import AnyReply, FakeServer, Request, StreamReply
from tests.fakes.fake_openai import chat_answer, chat_finish, chat_stream, chat_tool_call, chat_usage

from contextfold import Agent, AgentOptions, Store
from contextfold.cli._simulate import ExtractiveSummariser
from contextfold.models import Model, ModelProfile, ModelResponse, ScriptedModel, Step, ToolCallRequest
from contextfold.models._openai import OpenAIProvider
from contextfold.models._openai_chat import OpenAIChatModel
from contextfold.store import PostgresStore, SQLiteStore

from ._report import Table, median, ms, percentile
from ._stores import RESULTS, Context, progress

CONCURRENT = 50
OUTPUT = "ok " * 700
OPTIONS = AgentOptions(context_window=16_000, max_output_tokens=1_000, summariser=ExtractiveSummariser())
"""A 16k window, so the view (and each request) stays bounded by compaction as in real use."""


def read_file(path: str) -> str:
    """Read a file.

    Args:
        path: The file's path.
    """
    return f"{path}\n{OUTPUT}"


def _answer(request: Request) -> AnyReply:
    messages = request.json["messages"]
    if messages[-1]["role"] == "user":
        call = chat_tool_call(0, f"call_{len(messages)}", "read_file", '{"path": ', '"src/app.py"}')
        return StreamReply(chat_stream(call, chat_finish("tool_calls"), chat_usage(len(messages) * 50, 9)))
    return chat_answer("The parser drops the last token; the fix is one line.", prompt=len(messages) * 50)


def _scripted(turns: int) -> ScriptedModel:
    steps: list[Step] = []
    for n in range(turns):
        steps += [ModelResponse(tool_calls=[ToolCallRequest(f"c{n}", "read_file", '{"path": "src/app.py"}')])]
        steps += ["The parser drops the last token; the fix is one line."]
    return ScriptedModel(steps, profile=ModelProfile(context_window=16_000))


@asynccontextmanager
async def _openai() -> AsyncIterator[OpenAIChatModel]:
    with FakeServer() as server:
        server.handler = _answer
        provider = OpenAIProvider(api_key="sk-bench", base_url=f"{server.url}/v1")
        try:
            yield OpenAIChatModel("gpt-4o", provider, profile=ModelProfile(context_window=16_000))
        finally:
            await provider.aclose()


async def _sequential(store: Store, model: Model, turns: int) -> list[float]:
    agent = Agent(model, store=store, tools=[read_file], options=OPTIONS)
    session = await agent.create_session()
    times = []
    for n in range(turns):
        started = time.perf_counter()
        await session.turn(f"why does test {n} fail?")
        times.append(time.perf_counter() - started)
    return times


async def _concurrent(store: Store, model: Model) -> float:
    agent = Agent(model, store=store, tools=[read_file], options=OPTIONS)
    sessions = await asyncio.gather(*(agent.create_session() for _ in range(CONCURRENT)))
    started = time.perf_counter()
    await asyncio.gather(*(s.turn(f"session {n}: why?") for n, s in enumerate(sessions)))
    return time.perf_counter() - started


async def run(ctx: Context) -> list[Table]:
    turns = 50 if ctx.quick else 200
    table = Table(
        f"Runtime: one tool-calling turn (2 inferences, 1 tool step) in a 16k window, {turns} turns in one session",
        ["store", "model", "ms/turn (median)", "ms/turn (p95)", "50 concurrent turns: s", "turns/s"],
    )
    for name in ("SQLite", "PostgreSQL"):
        for model_name in ("scripted", "openai (loopback)"):
            progress(f"turns: {name} {model_name}")
            store: Store
            url = None
            if name == "SQLite":
                path = RESULTS / "turns.db"
                for leftover in RESULTS.glob("turns.db*"):
                    leftover.unlink()
                store = await SQLiteStore.open(str(path))
            else:
                url = ctx.pg.database()
                store = await PostgresStore.open(url)
            try:
                if model_name == "scripted":
                    times = await _sequential(store, _scripted(turns), turns)
                    wall = await _concurrent(store, _scripted(CONCURRENT))
                else:
                    async with _openai() as chat:
                        times = await _sequential(store, chat, turns)
                        wall = await _concurrent(store, chat)
            finally:
                await store.close()
                if url is not None:
                    ctx.pg.drop(url)
            table.add(
                name,
                model_name,
                round(ms(median(times)), 2),
                round(ms(percentile(times, 0.95)), 2),
                round(wall, 3),
                round(CONCURRENT / wall, 1),
            )
    table.notes.append(
        "The loopback server answers at once, so the openai rows are our side, the SDK and HTTP; a real model's "
        "latency comes on top. Each turn appends 5 transactions (9 events); every few turns one also compacts (the "
        "extractive summariser of `simulate`, no model call)."
    )
    return [table]
