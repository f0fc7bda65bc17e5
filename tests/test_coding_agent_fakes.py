"""The scripted coding agent and its fake upstream (tests/fakes/coding_*), tested on their own, without the proxy:
the client's script against the upstream on both wires, streamed and not; exact request counts; usage and the
full-history count; the context-length refusal through the SDKs and contextfold's adapters; the summary modes; the
fake model's recall path and repeated call ids; the first-delta gate."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import httpx
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contextfold import ContextLengthError, ModelError
from contextfold.compaction._summary import summarise
from contextfold.events import assistant, user
from contextfold.models import RetryPolicy, StreamingModel
from contextfold.models._anthropic import AnthropicModel, AnthropicProvider
from contextfold.models._openai import OpenAIProvider
from contextfold.models._openai_chat import OpenAIChatModel

from .fakes._server import FakeServer
from .fakes.coding_agent import (
    FACT_NAME,
    QUESTION,
    Call,
    ClientOptions,
    CodingClient,
    CodingUpstream,
    Exchange,
    Prompt,
    Result,
    SummaryMode,
    Text,
    Wire,
    count_tokens,
    decide,
    full_history_tokens,
)
from .fakes.coding_model import HUGE_SUMMARY_CHARS
from .fakes.coding_outputs import tool_output

WIRES: list[Wire] = ["openai-chat", "anthropic"]
ONCE = RetryPolicy(attempts=1)


def _messages_text(exchange: Exchange) -> str:
    return json.dumps(exchange.body["messages"])


# --- the script against the upstream directly --------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("wire", WIRES)
async def test_the_script_runs_against_the_upstream(wire: Wire, stream: bool) -> None:
    options = ClientOptions(requests=30, seed=7, wire=wire, stream=stream, headers={"x-team": "blue"})
    with CodingUpstream() as upstream:
        async with CodingClient(upstream.url, options) as client:
            run = await client.run()
    exchanges, received = run.exchanges, upstream.model_requests()
    assert len(exchanges) == len(received) == 30
    assert run.answer == f"The {FACT_NAME} is {client.fact}." == f"The deploy code is {run.fact}."
    # The whole history goes out every time, and it only grows: each request extends the previous one.
    for before, after in itertools.pairwise(exchanges):
        old, new = before.body["messages"], after.body["messages"]
        assert new[: len(old)] == old
        assert len(new) == len(old) + 1 + after.new_messages
    assert [r.body["messages"] for r in received] == [e.body["messages"] for e in exchanges]
    # Usage: the upstream's own count, reported back and equal to what the client predicts.
    assert [e.input_tokens for e in exchanges] == [r.tokens for r in received] == [e.full_tokens for e in exchanges]
    assert all(e.output_tokens for e in exchanges)
    assert full_history_tokens(exchanges) == sum(r.tokens for r in received)
    assert [e.full_tokens for e in exchanges] == sorted(e.full_tokens for e in exchanges)
    # The fact arrives with request 3, and the question is the last request's only new text.
    sentence = f"the deploy code is {run.fact}"
    assert sentence not in _messages_text(exchanges[1])
    assert sentence in _messages_text(exchanges[2])
    assert QUESTION in _messages_text(exchanges[-1])
    assert QUESTION not in _messages_text(exchanges[-2])
    # Tasks are done in order, with calls numbered from 0 in every answer, alternating tools within a task.
    done = [e.text for e in exchanges if e.text.startswith("done with task")]
    assert done == [f"done with task {n}" for n in range(1, len(done) + 1)]
    assert len(done) >= 4
    calls = [call for e in exchanges for call in e.calls]
    assert {call.call_id for call in calls} == {"call_0"}
    for call in calls:
        step = json.loads(call.arguments)["step"]
        assert call.name == ("read_file", "run_tests")[step % 2]
    stops = {e.stop_reason for e in exchanges}
    assert stops == ({"tool_calls", "stop"} if wire == "openai-chat" else {"tool_use", "end_turn"})
    texts = [e for e in exchanges if e.text]
    assert all(e.text_deltas > 1 for e in texts) if stream else all(e.text_deltas == 0 for e in texts)
    # The SDK's auth header and the extra header reach the upstream (anthropic 2.x sends its api_key as a bearer).
    headers = received[0].headers
    assert headers["authorization"] == "Bearer sk-coding-client"
    assert headers["x-team"] == "blue"
    assert exchanges[0].conversation is None  # no proxy in between


@settings(max_examples=15, deadline=None)
@given(requests=st.integers(2, 9), seed=st.integers(0, 10_000), wire=st.sampled_from(WIRES))
def test_a_run_makes_exactly_the_requests_asked_for(requests: int, seed: int, wire: Wire) -> None:
    async def scenario() -> None:
        with CodingUpstream() as upstream:
            options = ClientOptions(requests=requests, seed=seed, wire=wire, output_bytes=(200, 600))
            async with CodingClient(upstream.url, options) as client:
                run = await client.run()
                with pytest.raises(RuntimeError, match="all made"):
                    await client.step()
        assert len(run.exchanges) == len(upstream.model_requests()) == requests
        assert run.answer == f"The deploy code is {run.fact}."
        planted = _messages_text(run.exchanges[min(3, requests - 1) - 1])
        assert planted.count(f"the deploy code is {run.fact}") == 1
        assert all(not e.text.startswith("I ") for e in run.exchanges)  # the model never lost track

    asyncio.run(scenario())


def test_the_script_needs_a_task_and_a_question() -> None:
    with pytest.raises(ValueError, match="at least 2 requests"):
        CodingClient("http://127.0.0.1:1", ClientOptions(requests=1))


@settings(max_examples=60)
@given(
    seed=st.integers(0, 2**32),
    size=st.integers(1, 9000),
    name=st.sampled_from(["read_file", "run_tests"]),
)
def test_tool_outputs_have_the_size_asked_for_and_depend_only_on_the_seed(seed: int, size: int, name: str) -> None:
    arguments = json.dumps({"path": "src/app/module_004.py"})
    first = tool_output(random.Random(seed), name, arguments, size)
    assert len(first) == size
    assert first == tool_output(random.Random(seed), name, arguments, size)


# --- the window ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
async def test_a_prompt_over_the_window_is_refused_as_the_real_api_does(wire: Wire) -> None:
    with CodingUpstream(window=3000) as upstream:
        async with CodingClient(upstream.url, ClientOptions(requests=30, wire=wire)) as client:
            error: openai.BadRequestError | anthropic.BadRequestError
            if wire == "openai-chat":
                with pytest.raises(openai.BadRequestError) as caught:
                    await client.run()
                assert caught.value.code == "context_length_exceeded"
                error = caught.value
            else:
                with pytest.raises(anthropic.BadRequestError) as refused:
                    await client.run()
                error = refused.value
            last = upstream.requests[-1]
            upstream.window = None  # the client tries again: the same request, accepted this time
            assert (await client.step()).body["messages"] == last.body["messages"]
    assert (last.refused, last.status) == (True, 400)
    assert last.tokens > 3000
    assert all(r.tokens <= 3000 for r in upstream.requests[:-2])
    expected = (
        f"maximum context length is 3000 tokens. However, your messages resulted in {last.tokens} tokens"
        if wire == "openai-chat"
        else f"prompt is too long: {last.tokens} tokens > 3000 maximum"
    )
    assert expected in str(error)


@asynccontextmanager
async def _model(wire: Wire, url: str) -> AsyncIterator[StreamingModel]:
    """contextfold's own adapter for `wire`, as the proxy will use it, pointed at the upstream."""
    if wire == "openai-chat":
        async with OpenAIProvider("sk-test", url + "/v1") as chat:
            yield OpenAIChatModel("fake-coder", chat, retry=ONCE)
        return
    claude = AnthropicProvider("sk-test", url)
    try:
        yield AnthropicModel("claude-sonnet-4-6", claude, retry=ONCE)
    finally:
        await claude.aclose()


@pytest.mark.parametrize("wire", WIRES)
async def test_contextfold_adapters_see_the_refusal_as_a_context_length_error(wire: Wire) -> None:
    with CodingUpstream(window=10) as upstream:
        async with _model(wire, upstream.url) as model:
            with pytest.raises(ContextLengthError):
                await summarise(model, [user("x" * 200)], None, None, max_tokens=100, input_tokens=1000, time_limit=30)


@pytest.mark.parametrize("window", [32_768, None])
async def test_the_models_list_reports_the_window_as_vllm_does(server: FakeServer, window: int | None) -> None:
    upstream = CodingUpstream(window=window)
    server.handler = upstream.handle  # behind a FakeServer of the test's own
    async with OpenAIProvider("sk-test", server.url + "/v1") as provider:
        model = OpenAIChatModel("fake-coder", provider, retry=ONCE)
        assert await model.upstream_context_window() == window
    assert [(r.method, r.path, r.wire) for r in upstream.requests] == [("GET", "/v1/models", None)]


# --- summaries -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["short", "huge", "empty"])
@pytest.mark.parametrize("wire", WIRES)
async def test_summary_requests_get_the_summary_asked_for(wire: Wire, mode: SummaryMode) -> None:
    items = [user("task 4 (2 steps): fix module 004 (the deploy code is AB-1234-CD)"), assistant("done with task 4")]
    with CodingUpstream(summary=mode) as upstream:
        async with _model(wire, upstream.url) as model:
            text, input_tokens, _ = await summarise(
                model, items, None, None, max_tokens=500, input_tokens=4000, time_limit=30
            )
    [request] = upstream.requests
    assert request.summary
    assert upstream.summary_requests() == [request]
    assert upstream.model_requests() == []
    assert input_tokens == request.tokens
    if mode == "short":
        assert "## Current state\nWorked on task 4" in text
        assert "AB-1234-CD" not in text
    elif mode == "huge":
        assert len(text) > HUGE_SUMMARY_CHARS - 100
    else:
        assert text == ""


@pytest.mark.parametrize("wire", WIRES)
async def test_a_failing_summariser_answers_500(wire: Wire) -> None:
    with CodingUpstream(summary="error") as upstream:
        async with _model(wire, upstream.url) as model:
            with pytest.raises(ModelError) as caught:
                await summarise(model, [user("hi")], None, None, max_tokens=100, input_tokens=1000, time_limit=30)
    assert not isinstance(caught.value, ContextLengthError)
    assert [r.status for r in upstream.requests] == [500]
    assert upstream.requests[0].summary


# --- what the model answers ----------------------------------------------------------------------------------------

ASK = Text("user", QUESTION)


def test_a_question_is_answered_from_the_prompt_else_by_recall() -> None:
    found = Prompt("NOTE: the deploy code is QZ-1000-AA.", (ASK,), ())
    assert decide(found).text == "The deploy code is QZ-1000-AA."
    assert decide(Prompt("", (ASK,), ())).text == "I do not know the deploy code."
    recall = decide(Prompt("", (ASK,), ("read_file", "recall", "expand"))).call
    assert recall == Call("call_0", "recall", json.dumps({"query": "deploy code"}))


def test_recall_and_expand_results_are_answered_from() -> None:
    tools = ("recall", "expand")
    recall = Call("call_0", "recall", '{"query": "deploy code"}')
    hit = Result("call_0", "[ev_7, tool_result] …NOTE: the deploy code is QZ-1000-AA. …")
    assert decide(Prompt("", (ASK, recall, hit), tools)).text == "The deploy code is QZ-1000-AA."
    vague = Result("call_0", "[ev_7, tool_result] …the deploy …\nexpand an event id to read that event in full")
    assert decide(Prompt("", (ASK, recall, vague), tools)).call == Call("call_0", "expand", '{"id": "ev_7"}')
    assert decide(Prompt("", (ASK, recall, vague), ("recall",))).text == "I do not know the deploy code."
    expand = Call("call_0", "expand", '{"id": "ev_7"}')
    nothing = Result("call_0", "[ev_7, result of call_0] a listing without it")
    assert decide(Prompt("", (ASK, recall, vague, expand, nothing), tools)).text == "I do not know the deploy code."
    assert decide(Prompt("", (recall, hit), tools)).text == "I read the recall result."


def test_a_result_answers_the_nearest_call_with_its_id() -> None:
    """Ids repeat across requests (`call_0` every time): the result belongs to the newest call with its id."""
    old = Call("call_0", "read_file", json.dumps({"path": "a.py", "task": 1, "step": 0, "steps": 3}))
    new = Call("call_0", "run_tests", json.dumps({"path": "b.py", "task": 2, "step": 1, "steps": 2}))
    items = (Text("user", "task 1 (3 steps): x"), old, Result("call_0", "..."), new, Result("call_0", "log"))
    assert decide(Prompt("", items, ())).text == "done with task 2"
    assert decide(Prompt("", (Result("call_9", "?"),), ())).text.startswith("I got a result for call_9")


def test_tasks_alternate_tools_for_their_steps() -> None:
    answer = decide(Prompt("", (Text("user", "task 5 (3 steps): fix it"),), ()))
    assert answer.call is not None
    assert answer.call.name == "read_file"
    assert json.loads(answer.call.arguments) == {"path": "src/app/module_005.py", "task": 5, "step": 0, "steps": 3}
    assert decide(Prompt("", (Text("user", "task 6 (0 steps): nothing"),), ())).text == "done with task 6"
    assert decide(Prompt("", (Text("user", "hello"),), ())).text == "Noted."


@pytest.mark.parametrize("wire", WIRES)
async def test_the_recall_path_over_the_wire(wire: Wire) -> None:
    """Offered `recall` and asked a fact it cannot see, the model calls recall; given the hit, it answers."""
    with CodingUpstream() as upstream:
        if wire == "openai-chat":
            chat = openai.AsyncOpenAI(api_key="k", base_url=upstream.url + "/v1", max_retries=0)
            tools: Any = [{"type": "function", "function": {"name": "recall", "parameters": {"type": "object"}}}]
            messages: list[Any] = [{"role": "user", "content": QUESTION}]
            first = await chat.chat.completions.create(model="m", messages=messages, tools=tools)
            [call] = first.choices[0].message.tool_calls or []
            assert call.type == "function"
            assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
                "call_0",
                "recall",
                {"query": "deploy code"},
            )
            messages += [
                first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": "call_0", "content": "[ev_1, message] the deploy code is ZZ-9"},
            ]
            second = await chat.chat.completions.create(model="m", messages=messages, tools=tools)
            await chat.close()
            assert second.choices[0].message.content == "The deploy code is ZZ-9."
        else:
            claude = anthropic.AsyncAnthropic(api_key="k", base_url=upstream.url, max_retries=0)
            schema: Any = [{"name": "recall", "input_schema": {"type": "object"}}]
            turns: list[Any] = [{"role": "user", "content": QUESTION}]
            reply = await claude.messages.create(
                model="claude-sonnet-4-6", max_tokens=100, messages=turns, tools=schema
            )
            [block] = reply.content
            assert block.type == "tool_use"
            assert (block.id, block.name, block.input) == (
                "call_0",
                "recall",
                {"query": "deploy code"},
            )
            result = {
                "type": "tool_result",
                "tool_use_id": "call_0",
                "content": "[ev_1, message] the deploy code is ZZ-9",
            }
            turns += [{"role": "assistant", "content": [block.model_dump()]}, {"role": "user", "content": [result]}]
            answer = await claude.messages.create(
                model="claude-sonnet-4-6", max_tokens=100, messages=turns, tools=schema
            )
            await claude.close()
            assert [b.text for b in answer.content if b.type == "text"] == ["The deploy code is ZZ-9."]


def test_the_token_count_rule() -> None:
    """ceil(chars / 4) over instructions, texts, call names and arguments, outputs and tool schemas."""
    chat = {"messages": [{"role": "system", "content": "s" * 10}, {"role": "user", "content": "u" * 7}]}
    assert count_tokens("openai-chat", chat) == 5
    claude = {"system": "s" * 10, "messages": [{"role": "user", "content": [{"type": "text", "text": "u" * 7}]}]}
    assert count_tokens("anthropic", claude) == 5
    tool = {"name": "ab", "description": "cd", "input_schema": {}}
    assert count_tokens("anthropic", {**claude, "tools": [tool]}) == 6  # 17 + len("ab" "cd" "{}") = 23 chars


async def test_malformed_requests_are_refused_in_the_wire_format() -> None:
    with CodingUpstream() as upstream:
        async with httpx.AsyncClient(base_url=upstream.url) as http:
            assert (await http.post("/v1/chat/completions", content=b"{not json")).status_code == 400
            missing = await http.post("/v1/messages", json={"model": "m", "messages": []})
            assert missing.status_code == 400
            assert missing.json()["error"]["message"] == "max_tokens: Field required"
            assert (await http.get("/v1/nothing")).status_code == 404
    assert [r.status for r in upstream.requests] == [400, 400, 404]


# --- the first-delta gate ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
async def test_the_client_gets_the_first_delta_while_the_stream_is_held(wire: Wire) -> None:
    gate = threading.Event()
    seen_open: list[bool] = []

    def on_text(_: str) -> None:
        if not seen_open:
            seen_open.append(upstream.held.is_set())  # the upstream has not sent the rest yet
            gate.set()

    with CodingUpstream(first_delta_gate=gate) as upstream:
        # Two requests: a task of no steps (answered in text at once), then the question.
        options = ClientOptions(requests=2, wire=wire, stream=True)
        async with CodingClient(upstream.url, options, on_text=on_text) as client:
            first = await client.step()
            assert seen_open == [True]
            assert first.text == "done with task 1"
            assert first.text_deltas == 4
            assert not upstream.held.is_set()
            run = await client.run()
    assert run.answer == f"The deploy code is {run.fact}."


async def test_a_client_that_reads_the_whole_body_sees_the_stream_ended() -> None:
    """The control: read whole, the delta arrives only after the stream was released (here by the safety timeout)."""
    gate = threading.Event()
    with CodingUpstream(first_delta_gate=gate, gate_timeout=0.01) as upstream:
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
        async with httpx.AsyncClient(base_url=upstream.url) as http:
            response = await http.post("/v1/chat/completions", json=body)
        assert not upstream.held.is_set()
        assert not gate.is_set()
    assert b'"content": "Noted."' in response.content
    assert response.content.endswith(b"data: [DONE]\n\n")
