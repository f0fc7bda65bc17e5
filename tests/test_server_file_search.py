"""`file_search` in Responses: offered to the upstream as a tool, run by the server, shown as a `file_search_call`
item (results with `include`), streamed with its own events, kept in the log like any tool output; the same tool
for a library agent, whose tool_execution step is marked server-side; `web_search` refused with the reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from contextfold import Agent
from contextfold.events import ToolCall, ToolResult
from contextfold.models import ModelProfile, ModelResponse, ScriptedModel, ToolCallRequest
from contextfold.runtime import StepStarted
from contextfold.runtime._file_search import file_search_tool
from contextfold.runtime._ingest import Ingestor
from contextfold.store import Store

from .fakes._server import FakeServer, Request, StreamReply
from .fakes.fake_openai import chat_finish, chat_stream, chat_text, chat_tool_call, chat_usage, models_list
from .processes import Replica
from .server_fixtures import Served, check_error

HERON = b"# Project Heron\n\nThe launch code for project heron is 7741. Keep it secret.\n"
RESULTS: Any = ["file_search_call.results"]


async def knowledge_base(client: openai.AsyncOpenAI | openai.OpenAI) -> str:
    if isinstance(client, openai.OpenAI):
        uploaded = client.files.create(file=("heron.md", HERON), purpose="assistants")
        store = client.vector_stores.create(name="kb")
        done = client.vector_stores.files.create_and_poll(
            vector_store_id=store.id, file_id=uploaded.id, poll_interval_ms=20
        )
    else:
        uploaded = await client.files.create(file=("heron.md", HERON), purpose="assistants")
        store = await client.vector_stores.create(name="kb")
        done = await client.vector_stores.files.create_and_poll(
            vector_store_id=store.id, file_id=uploaded.id, poll_interval_ms=20
        )
    assert done.status == "completed"
    return store.id


def _upstream(request: Request) -> Any:
    """A model that searches first, then answers from what the search found (quoting it)."""
    if request.method == "GET":
        return models_list({"id": "fake-gpt"})
    body = request.json
    last = body["messages"][-1]
    if last["role"] == "tool":
        found = json.loads(last["content"])["results"]
        quote = found[0]["text"].splitlines()[-1] if found else "nothing found"
        answer = f"From {found[0]['filename'] if found else 'no file'}: {quote}"
        return StreamReply(chat_stream(chat_text(answer), chat_finish("stop"), chat_usage(50, 10)))
    names = [t["function"]["name"] for t in body.get("tools") or []]
    assert "file_search" in names, names
    arguments = json.dumps({"queries": ["launch code project heron"]})
    return StreamReply(
        chat_stream(chat_tool_call(0, "call_1", "file_search", arguments), chat_finish("tool_calls"), chat_usage(40, 5))
    )


def test_a_streamed_turn_searches_the_files_and_quotes_them(tmp_path: Path) -> None:
    with FakeServer() as upstream:
        upstream.handler = _upstream
        flags = ("--upstream", f"{upstream.url}/v1", "--model", "fake-gpt", "--context-window", "32000")
        replica = Replica(str(tmp_path / "s.db"), tmp_path / "server.log", *flags)
        try:
            replica.wait_ready()
            with openai.OpenAI(base_url=f"{replica.url}/v1", api_key="unused", max_retries=0) as client:
                store_id = client.vector_stores.create(name="kb").id
                uploaded = client.files.create(file=("heron.md", HERON), purpose="assistants")
                done = client.vector_stores.files.create_and_poll(
                    vector_store_id=store_id, file_id=uploaded.id, poll_interval_ms=20
                )
                assert done.status == "completed"
                tools: Any = [{"type": "file_search", "vector_store_ids": [store_id], "max_num_results": 3}]
                with client.responses.stream(
                    model="fake-gpt", input="What is the launch code?", tools=tools, include=RESULTS
                ) as stream:
                    kinds = [event.type for event in stream]
                    final = stream.get_final_response()
                searching = [k for k in kinds if k.startswith("response.file_search_call.")]
                assert searching == [
                    "response.file_search_call.in_progress",
                    "response.file_search_call.searching",
                    "response.file_search_call.completed",
                ]
                assert "7741" in final.output_text
                assert "heron.md" in final.output_text
                call = next(item for item in final.output if item.type == "file_search_call")
                assert call.status == "completed"
                assert call.queries == ["launch code project heron"]
                assert call.results is not None
                assert "7741" in (call.results[0].text or "")
                assert final.tools[0].type == "file_search"
                assert final.conversation is not None
                items = client.conversations.items.list(final.conversation.id, order="asc")
                assert [i.type for i in items.data] == ["message", "file_search_call", "message"]
                again = client.responses.retrieve(final.id)  # stored as it was asked for: with results
                assert next(i for i in again.output if i.type == "file_search_call").results is not None
        finally:
            replica.stop()


async def test_the_search_results_are_in_the_log_and_include_controls_them(served: Served) -> None:
    store_id = await knowledge_base(served.client)
    tools: Any = [{"type": "file_search", "vector_store_ids": [store_id]}]
    ask = '/tool file_search {"queries": ["heron launch code"]}'
    plain = await served.client.responses.create(model="test", input=ask, tools=tools)
    call = next(i for i in plain.output if i.type == "file_search_call")
    assert call.results is None
    assert "heron.md" in plain.output_text  # the test model quotes (the start of) the tool's output
    assert plain.conversation is not None
    log = await served.store.read(plain.conversation.id)
    (stored,) = [e for e in log if isinstance(e, ToolResult)]
    assert "7741" in stored.output
    assert stored.summary is not None
    assert "heron.md" in stored.summary
    assert [e.name for e in log if isinstance(e, ToolCall)] == ["file_search"]
    included = await served.client.responses.create(model="test", input=ask, tools=tools, include=RESULTS)
    found = next(i for i in included.output if i.type == "file_search_call")
    assert found.results is not None
    assert found.results[0].filename == "heron.md"


async def test_bad_file_search_and_web_search_tools_are_400s(served: Served) -> None:
    for tool, param, words in (
        ({"type": "file_search"}, "tools[0].vector_store_ids", "vector_store_ids"),
        ({"type": "file_search", "vector_store_ids": ["vs_x"], "max_num_results": 0}, None, "no vector store"),
        ({"type": "web_search"}, "tools[0].type", "no web search provider is configured"),
        ({"type": "web_search_preview"}, "tools[0].type", "no web search provider is configured"),
    ):
        reply = await served.http.post("/v1/responses", json={"model": "test", "input": "hi", "tools": [tool]})
        status = 404 if "no vector store" in words else 400
        message = check_error(reply, status, param=param)
        assert words in message or status == 404, message
    store_id = await knowledge_base(served.client)
    bad = {"type": "file_search", "vector_store_ids": [store_id], "filters": {"type": "near"}}
    reply = await served.http.post("/v1/responses", json={"model": "test", "input": "hi", "tools": [bad]})
    check_error(reply, 400, param="tools[0].filters.type")
    reply = await served.http.post(
        "/v1/responses", json={"model": "test", "input": "hi", "include": ["file_search_call.everything"]}
    )
    check_error(reply, 400, param="include[0]")


async def test_another_tenants_vector_store_cannot_be_searched(tmp_path: Path) -> None:
    from contextfold.server import ServerConfig

    from .server_fixtures import serving

    async with serving(ServerConfig(db=str(tmp_path / "s.db"))) as served:
        acme_key, _ = await served.store.keys.create("acme")
        globex_key, _ = await served.store.keys.create("globex")
        acme, globex = await served.as_key(acme_key), await served.as_key(globex_key)
        store_id = await knowledge_base(acme.client)
        tools: Any = [{"type": "file_search", "vector_store_ids": [store_id]}]
        with pytest.raises(openai.NotFoundError):
            await globex.client.responses.create(model="test", input="what is the code?", tools=tools)


async def test_a_library_agent_searches_in_a_server_side_step(sqlite_store: Store) -> None:
    knowledge = sqlite_store.knowledge  # type: ignore[attr-defined]
    record = await knowledge.files.put("me", "heron.md", "assistants", HERON)
    vs = await knowledge.vector_stores.create("me", name="kb", metadata={}, data={})
    chunking = {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}
    await knowledge.vector_files.add(vs.id, [record.id], tenant="me", attributes={}, chunking=chunking)
    await Ingestor(knowledge).drain()
    search = ToolCallRequest(call_id="call_1", name="file_search", arguments='{"queries": ["launch code"]}')
    profile = ModelProfile(context_window=16_000, max_output_tokens=1_000)
    model = ScriptedModel([ModelResponse(text="", tool_calls=[search]), "The code is 7741."], profile=profile)
    agent = Agent(model, store=sqlite_store, tools=[file_search_tool(knowledge, "me", [vs.id])])
    session = await agent.create_session()
    events = [e async for e in session.stream("what is the launch code?")]
    (step,) = [e for e in events if isinstance(e, StepStarted) and e.step_type == "tool_execution"]
    assert step.metadata["server_side"] is True
    assert step.metadata["tool_type"] == "file_search"
    window, _ = model.calls[-1]  # the search's result reached the model as the tool's output
    assert any(isinstance(item, ToolResult) and "7741" in item.output for item in window.items)
