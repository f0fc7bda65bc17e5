"""The agent API against a real `contextfold serve` process (`RemoteAgent`): client tools run here and return
through `function_call_output`, the events stream in the order an in-process turn yields them, interrupt cuts a turn
and the next goes on, and compaction (and recall) run on the server in a small window."""

from __future__ import annotations

import asyncio
import io
import json
import re
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from contextfold import BusyError, InvalidRequestError, NotFoundError, open_store
from contextfold.compaction import CompactionResult
from contextfold.runtime import (
    AgentAPI,
    AgentOptions,
    EventPrinter,
    InferenceResult,
    RemoteAgent,
    SessionAPI,
    StepCompleted,
    StepProgress,
    StepStarted,
    TextDelta,
    ToolCallCompletedDelta,
    ToolCallIssuedDelta,
    ToolExecutionResult,
    TurnCompleted,
    TurnEvent,
    TurnFailed,
    TurnStarted,
    tool,
)

from .fakes.faulty_upstream import MODEL, FaultyUpstream
from .processes import Replica
from .reliability_fixtures import check_log, eventually


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    folder = tmp_path_factory.mktemp("remote")
    replica = Replica(str(folder / "remote.db"), folder / "server.log", "--context-window", "2000")
    try:
        replica.wait_ready()
        yield replica
    finally:
        replica.stop()


seen: list[str] = []


@tool
def lookup(city: str) -> str:
    """The weather in a city."""
    seen.append(city)
    return f"{city}: 12 degrees and rain\nmore lines"


@pytest.fixture
async def agent(server: Replica) -> AsyncIterator[RemoteAgent]:
    async with RemoteAgent(server.url, instructions="Be brief.", tools=[lookup]) as remote:
        yield remote


def _items(server: Replica, conversation: str) -> list[dict[str, object]]:
    page = httpx.get(f"{server.url}/v1/conversations/{conversation}/items", params={"order": "asc", "limit": 100})
    data: list[dict[str, object]] = page.json()["data"]
    return data


def _shape(events: list[TurnEvent]) -> list[str]:
    """The events as type names, a step's progress collapsed to one entry per kind of delta in a row."""
    out: list[str] = []
    for event in events:
        if isinstance(event, StepStarted | StepCompleted):
            name = f"{type(event).__name__}({event.step_type})"
        elif isinstance(event, StepProgress):
            name = f"progress({event.delta.type})"
        else:
            name = type(event).__name__
        if not out or out[-1] != name or not name.startswith("progress"):
            out.append(name)
    return out


async def test_the_remote_agent_speaks_the_one_agent_api(agent: RemoteAgent) -> None:
    session = await agent.create_session()
    assert isinstance(agent, AgentAPI)
    assert isinstance(session, SessionAPI)
    result = await session.turn("hello there")
    assert 'You said: "hello there"' in result.final_text
    assert result.session_id == session.id
    assert result.num_steps == 1
    assert result.usage.input_tokens > 0
    assert result.usage.output_tokens > 0
    again = await agent.session(session.id)
    status = await again.status()
    assert status.requests == 1
    assert status.conversation_length > 0
    assert not status.running


async def test_a_client_tool_runs_here_and_its_output_goes_back_to_the_server(
    agent: RemoteAgent, server: Replica
) -> None:
    session = await agent.create_session()
    seen.clear()
    events = [e async for e in session.stream('/tool lookup {"city": "Oslo"}\n/tool lookup {"city": "Bergen"}')]
    assert sorted(seen) == ["Bergen", "Oslo"]
    assert _shape(events) == [
        "TurnStarted",
        "StepStarted(inference)",
        "progress(tool_call_started)",
        "progress(tool_call)",
        "progress(tool_call_started)",
        "progress(tool_call)",
        "progress(tool_call_issued)",
        "StepCompleted(inference)",
        "StepStarted(tool_execution)",
        "progress(tool_call_completed)",
        "StepCompleted(tool_execution)",
        "StepStarted(inference)",
        "progress(text)",
        "StepCompleted(inference)",
        "TurnCompleted",
    ]
    first = events[events.index(next(e for e in events if isinstance(e, StepCompleted)))]
    assert isinstance(first, StepCompleted)
    assert isinstance(first.result, InferenceResult)
    assert [c.name for c in first.result.tool_calls] == ["lookup", "lookup"]
    assert first.result.stop_reason == "tool_calls"
    tools = next(e for e in events if isinstance(e, StepCompleted) and e.step_type == "tool_execution")
    assert isinstance(tools.result, ToolExecutionResult)
    assert [r.output.split(":")[0] for r in tools.result.results] == ["Oslo", "Bergen"]  # in call order
    done = events[-1]
    assert isinstance(done, TurnCompleted)
    assert done.num_steps == 3
    assert "lookup" in done.final_text
    assert "12 degrees" in done.final_text
    text = "".join(e.delta.text for e in events if isinstance(e, StepProgress) and isinstance(e.delta, TextDelta))
    assert text == done.final_text
    kinds = [i["type"] for i in _items(server, session.id)]
    assert kinds == [
        "message",
        "function_call",
        "function_call",
        "function_call_output",
        "function_call_output",
        "message",
    ]


async def test_a_turn_reaching_max_steps_leaves_its_calls_for_the_next_turn(server: Replica) -> None:
    async with RemoteAgent(server.url, tools=[lookup], options=AgentOptions(max_steps=1)) as agent:
        session = await agent.create_session()
        result = await session.turn('/tool lookup {"city": "Oslo"}')
        assert result.incomplete_reason == "max_steps"
        assert list(session.unanswered.values()) == ["not run: the turn reached max_steps"]
        after = await session.turn("go on")
        assert 'You said: "go on"' in after.final_text
        assert session.unanswered == {}


async def test_interrupt_cuts_the_turn_and_the_conversation_goes_on(server: Replica) -> None:
    started = asyncio.Event()

    @tool
    async def slow(seconds: int) -> str:
        """Wait."""
        started.set()
        await asyncio.sleep(seconds)
        return "done"

    async with RemoteAgent(server.url, tools=[slow]) as agent:
        session = await agent.create_session()
        events: list[TurnEvent] = []

        async def consume() -> None:
            async for event in session.stream('/tool slow {"seconds": 600}'):
                events.append(event)

        consumer = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), 30)
        assert session.running
        with pytest.raises(BusyError):
            await session.turn("another")
        assert await session.interrupt() is True
        await consumer
        last = events[-1]
        assert isinstance(last, TurnFailed)
        assert last.error.kind == "interrupted"
        assert await session.interrupt() is False  # nothing runs any more
        answered = await session.turn("after the interrupt")
        assert 'You said: "after the interrupt"' in answered.final_text
        items = _items(server, session.id)
        outputs = [i for i in items if i["type"] == "function_call_output"]
        assert [o["output"] for o in outputs] == [
            "not run: the turn was interrupted before this call's result was sent"
        ]


async def test_compaction_runs_on_the_server_and_streams_as_a_step(agent: RemoteAgent) -> None:
    session = await agent.create_session()
    compactions: list[CompactionResult] = []
    for _ in range(10):
        async for event in session.stream("/long 250"):
            if isinstance(event, StepCompleted) and isinstance(event.result, CompactionResult):
                compactions.append(event.result)
        if compactions:
            break
    assert compactions, "no turn compacted in a 2,000-token window"
    result = compactions[0]
    status = await session.status()
    assert status.compactions >= 1
    context = await session.context()
    assert context["latest_compaction"]["id"] == result.compaction_id
    assert result.compacted
    assert result.tokens_before > result.tokens_after > 0
    assert result.strategy == context["latest_compaction"]["strategy"]
    manual = await session.compact()
    assert isinstance(manual, CompactionResult)
    assert manual.trigger == "manual"


async def test_server_tools_are_server_side_steps(agent: RemoteAgent) -> None:
    session = await agent.create_session()
    await session.turn("the secret word is marmalade")
    for _ in range(10):
        await session.turn("/long 250")
        if (await session.status()).compactions:
            break
    events = [e async for e in session.stream("/recall marmalade")]
    started = [e for e in events if isinstance(e, StepStarted) and e.step_type == "tool_execution"]
    assert started
    assert started[0].metadata["server_side"] is True
    completed = [e.delta for e in events if isinstance(e, StepProgress) and isinstance(e.delta, ToolCallCompletedDelta)]
    assert [d.tool_name for d in completed] == ["recall"]
    issued = [e.delta for e in events if isinstance(e, StepProgress) and isinstance(e.delta, ToolCallIssuedDelta)]
    assert [d.tool_name for d in issued] == ["recall"]
    assert isinstance(events[-1], TurnCompleted)


async def test_errors_are_the_librarys_own(agent: RemoteAgent, server: Replica) -> None:
    with pytest.raises(NotFoundError):
        await agent.session("conv_missing")
    with pytest.raises(InvalidRequestError, match="the server's for a remote agent"):
        RemoteAgent(server.url, options=AgentOptions(context_window=1000))
    async with RemoteAgent(server.url, model="no-such-model") as wrong:
        session = await wrong.create_session()
        with pytest.raises(InvalidRequestError, match="no-such-model"):
            await session.turn("hi")
    session = await agent.create_session()
    events = [e async for e in session.stream("/fail 500 upstream fell over")]
    assert isinstance(events[0], TurnStarted)
    assert isinstance(events[-1], TurnFailed)
    assert "upstream fell over" in events[-1].error.message


async def test_the_printer_prints_a_remote_turn(agent: RemoteAgent) -> None:
    session = await agent.create_session()
    out, err = io.StringIO(), io.StringIO()
    printer = EventPrinter(out, err, color=False)
    last = await printer.print_stream(session.stream('/tool lookup {"city": "Oslo"}'))
    assert isinstance(last, TurnCompleted)
    assert out.getvalue() == last.final_text + "\n"
    assert '(tool lookup({"city": "Oslo"}): ' in err.getvalue()


async def test_the_server_keeps_the_remote_conversation(server: Replica) -> None:
    """Nothing of the conversation lives in the client: a second agent resumes it whole."""
    async with RemoteAgent(server.url) as one:
        session = await one.create_session()
        await session.turn("remember the word teapot")
    async with RemoteAgent(server.url) as two:
        resumed = await two.session(session.id)
        result = await resumed.turn("and now?")
        assert "I saw 3 items" in result.final_text


def test_the_docs_remote_example_runs(server: Replica, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/agents.md's example, as written (its top-level `async with` inside a coroutine), against the server."""
    text = (Path(__file__).parent.parent / "docs" / "agents.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "RemoteAgent(" in b]
    body = block.replace("http://127.0.0.1:8400", server.url)
    head, _, rest = body.partition("async with")
    script = head + "import asyncio\n\nasync def main():\n" + textwrap.indent("async with" + rest, "    ")
    script += "\nasyncio.run(main())\n"
    exec(compile(script, "agents.md", "exec"), {})
    assert 'You said: "What is in setup.cfg?"' in capsys.readouterr().out


async def test_interrupting_mid_answer_marks_the_turn_interrupted_on_the_server(tmp_path: Path) -> None:
    """The server streams from a slow upstream; the client interrupts after the first words: the server sees the
    connection go, marks the turn interrupted in its log, and the next turn never shows the model the cut one."""
    with FaultyUpstream(delay=0.2, pieces=8) as upstream:
        db = str(tmp_path / "i.db")
        replica = Replica(db, tmp_path / "log", "--upstream", upstream.url, "--context-window", "8000")
        try:
            replica.wait_ready()
            async with RemoteAgent(replica.url, model=MODEL) as agent:
                session = await agent.create_session()
                events: list[TurnEvent] = []
                async for event in session.stream("an answer I will not wait for"):
                    events.append(event)
                    if isinstance(event, StepProgress) and isinstance(event.delta, TextDelta):
                        assert await session.interrupt() is True
                last = events[-1]
                assert isinstance(last, TurnFailed)
                assert last.error.kind == "interrupted"
                await eventually(lambda: upstream.active == 0, "the server letting go of the upstream")
                store = await open_store(db)
                try:
                    statuses = check_log(await store.read(session.id))
                finally:
                    await store.close()
                assert list(statuses.values()) == ["interrupted"]
                answered = await session.turn("and now?")
                assert answered.final_text == "answer to and now?"
                (sent,) = [c for c in upstream.model_calls() if c.text == "and now?"]
                assert "an answer I will not wait for" not in json.dumps(sent.body["messages"])
        finally:
            replica.stop()
