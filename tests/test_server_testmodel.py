"""The built-in `test` model: every rule on the last item, streamed in chunks, and good enough to be its own
summariser in a real session that compacts and recalls."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contextfold import (
    ContextLengthError,
    ModelAuthError,
    ModelRequestError,
    ModelUnavailableError,
    RateLimitError,
    Store,
)
from contextfold.compaction import CompactionPolicy
from contextfold.compaction._summary import summarise
from contextfold.events import Compaction, Message, ToolCall, ToolResult, ToolSpec, assistant, user
from contextfold.models import ModelResponse, ModelSettings, ResponseDone, StreamEvent, TextChunk, ToolCallStart
from contextfold.runtime import Agent, AgentOptions
from contextfold.server._testmodel import TEST_MAX_OUTPUT, TEST_WINDOW, TestModel, window_tokens
from contextfold.view import Window

TOOLS = [ToolSpec("search", "Search the web."), ToolSpec("recall", "Search what was folded away.")]


def ask(text: str, *, tools: list[ToolSpec] | None = None, history: int = 0) -> Window:
    items = [m for n in range(history) for m in (user(f"earlier {n}"), assistant(f"answer {n}"))]
    return Window("Be brief.", tools, None, [*items, user(text)])


async def events_of(window: Window, model: TestModel | None = None) -> list[StreamEvent]:
    return [event async for event in (model or TestModel()).stream(window, ModelSettings())]


async def answer(window: Window, settings: ModelSettings | None = None) -> ModelResponse:
    return await TestModel().request(window, settings or ModelSettings())


def test_profile() -> None:
    assert (TestModel().profile.context_window, TestModel().profile.max_output_tokens) == (TEST_WINDOW, TEST_MAX_OUTPUT)
    assert TestModel(context_window=4_000).profile.context_window == 4_000
    assert TestModel().name == "test"


async def test_it_answers_under_its_own_name() -> None:
    assert (await answer(ask("hi"))).model == "test"
    assert (await TestModel("small").request(ask("hi"), ModelSettings())).model == "small"


async def test_plain_text_is_quoted_back_with_what_the_model_saw() -> None:
    window = ask("What is the capital of France and why is it Paris?", history=2)
    events = await events_of(window)
    chunks = [e.text for e in events if isinstance(e, TextChunk)]
    done = events[-1]
    assert isinstance(done, ResponseDone)
    assert len(chunks) > 2  # streamed in word groups
    assert "".join(chunks) == done.response.text
    assert 'You said: "What is the capital of France and why is it Paris?"' in done.response.text
    assert "I saw 5 items" in done.response.text
    assert done.response.input_tokens == window_tokens(window) > 0
    assert done.response.output_tokens > 0
    assert done.response.stop_reason == "stop"


async def test_tool_lines_become_parallel_calls() -> None:
    events = await events_of(ask('/tool search {"q": "paris"}\n/tool search {"q": "rome"}', tools=TOOLS))
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    done = events[-1]
    assert isinstance(done, ResponseDone)
    assert [s.index for s in starts] == [0, 1]
    calls = done.response.tool_calls
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("search", {"q": "paris"}), ("search", {"q": "rome"})]
    assert len({c.call_id for c in calls}) == 2
    assert done.response.stop_reason == "tool_calls"


async def test_a_tool_without_arguments_gets_an_empty_object() -> None:
    response = await answer(ask("/tool search", tools=TOOLS))
    assert [(c.name, c.arguments) for c in response.tool_calls] == [("search", "{}")]


async def test_recall_calls_the_recall_tool() -> None:
    response = await answer(ask("/recall staging password", tools=TOOLS))
    assert [(c.name, json.loads(c.arguments)) for c in response.tool_calls] == [
        ("recall", {"query": "staging password"})
    ]


@pytest.mark.parametrize(
    ("text", "tools", "expected"),
    [
        ("/tool fetch {}", TOOLS, "tool 'fetch' is not among this request's tools. Tools offered: search, recall"),
        ("/tool search [1, 2]", TOOLS, "the arguments of search are not a JSON object"),
        ("/tool search {oops", TOOLS, "the arguments of search are not a JSON object"),
        ("/recall", TOOLS, "usage: /recall WORDS"),
        ("/recall x", None, "recall is not among this request's tools. Tools offered: none"),
    ],
)
async def test_calls_it_cannot_make_are_explained(text: str, tools: list[ToolSpec] | None, expected: str) -> None:
    response = await answer(ask(text, tools=tools))
    assert response.tool_calls == []
    assert expected in response.text


@pytest.mark.parametrize(
    ("text", "error", "status"),
    [
        ("/fail 429", RateLimitError, 429),
        ("/fail 503", ModelUnavailableError, 503),
        ("/fail 401", ModelAuthError, 401),
        ("/fail 404 no such model", ModelRequestError, 404),
        ("/fail 400 context length exceeded", ContextLengthError, 400),
    ],
)
async def test_fail_raises_the_typed_error_once(text: str, error: type[Exception], status: int) -> None:
    model = TestModel()
    with pytest.raises(error) as caught:
        await model.request(ask(text), ModelSettings())
    assert getattr(caught.value, "status", None) == status
    assert model.retry.attempts == 1  # a failure asked for is not retried


@pytest.mark.parametrize("text", ["/fail", "/fail 200", "/fail abc", "/long", "/long 0", "/long many"])
async def test_malformed_commands_answer_with_their_usage(text: str) -> None:
    assert "usage: " + text.split()[0] in (await answer(ask(text))).text


async def test_commands_match_whole_words() -> None:
    response = await answer(ask("/toolbox search {}", tools=TOOLS))
    assert response.tool_calls == []
    assert response.text.startswith('You said: "/toolbox')


async def test_long_answers_about_n_words() -> None:
    response = await answer(ask("/long 50"))
    assert len(response.text.split()) == 50
    assert response.stop_reason == "stop"


async def test_long_is_cut_at_the_output_limit() -> None:
    response = await answer(ask("/long 5000"), ModelSettings(max_output_tokens=100))
    assert response.stop_reason == "length"
    assert 0 < response.output_tokens <= 100
    assert len(response.text.split()) < 5000


async def test_tool_results_are_named_with_their_first_line() -> None:
    call_a = ToolCall(call_id="a", name="search", arguments="{}", batch_id="b")
    call_b = ToolCall(call_id="b", name="recall", arguments="{}", batch_id="b")
    results = [
        ToolResult(call_id="a", output="\nParis is the capital.\nmore"),
        ToolResult(call_id="b", output="[ev_1, message] TANGERINE-4471", is_error=False),
    ]
    window = Window(None, TOOLS, None, [user("go"), call_a, call_b, *results])
    text = (await answer(window)).text
    assert text == "search returned: Paris is the capital.; recall returned: [ev_1, message] TANGERINE-4471."
    failed = Window(None, TOOLS, None, [user("go"), call_a, ToolResult(call_id="a", output="boom", is_error=True)])
    assert (await answer(failed)).text == "search failed with: boom."


async def test_it_summarises_with_identifiers_when_sent_the_summary_prompt() -> None:
    items = [
        user("Deploy service-7 to staging and fix ticket T-1042."),
        assistant("Deployed build 3.2.1; ticket T-1042 closed."),
        user("thanks"),
    ]
    text, tokens_in, tokens_out = await summarise(
        TestModel(), items, None, None, max_tokens=300, input_tokens=4_000, time_limit=5
    )
    assert text.startswith("## Goal\nDeploy service-7 to staging")
    assert "T-1042" in text
    assert "3.2.1" in text
    assert "## Current state" in text
    assert "## Lookup hints" in text
    assert tokens_in > 0
    assert 0 < tokens_out <= 300
    again, _, _ = await summarise(
        TestModel(), [user("now rotate key K-99")], text, None, max_tokens=300, input_tokens=4_000, time_limit=5
    )
    assert again.startswith("## Goal\nDeploy service-7 to staging")  # the goal carries over
    assert "T-1042" in again
    assert "K-99" in again


@given(st.text(max_size=200), st.integers(50, 2_000))
async def test_any_message_gets_an_answer_within_the_limit(text: str, limit: int) -> None:
    window = ask(text, tools=TOOLS)
    settings = ModelSettings(max_output_tokens=limit)
    if text.strip().startswith("/fail ") and text.split()[1:2] and text.split()[1].isascii():
        return  # a well-formed /fail raises on purpose (covered above)
    response = await TestModel().request(window, settings)
    assert response.text or response.tool_calls
    assert response.output_tokens <= max(limit, len(response.text) // 4 + 1)


@given(st.lists(st.text(min_size=1, max_size=60), min_size=1, max_size=30), st.integers(40, 600))
async def test_a_summary_always_fits_its_budget(lines: list[str], max_tokens: int) -> None:
    items = [user(line) if n % 2 == 0 else assistant(line) for n, line in enumerate(lines)]
    text, _, _ = await summarise(
        TestModel(), items, None, None, max_tokens=max_tokens, input_tokens=4_000, time_limit=5
    )
    assert text
    assert len(text) <= max_tokens * 3.5


async def test_it_runs_a_session_that_compacts_with_its_own_summaries_and_recalls(sqlite_store: Store) -> None:
    model = TestModel(context_window=4_000)
    agent = Agent(
        model,
        store=sqlite_store,
        instructions="Be brief.",
        options=AgentOptions(max_output_tokens=300, summariser=model, policy=CompactionPolicy()),
    )
    session = await agent.create_session()
    await session.turn("hello")
    await session.turn("Remember this: the staging password is TANGERINE-4471.")
    for n in range(25):
        await session.turn(f"Task {n}: " + "inspect the build logs and report what failed. " * 8)
    log = await sqlite_store.read(session.id)
    compactions = [e for e in log if isinstance(e, Compaction)]
    assert any(c.strategy == "summary" for c in compactions)
    assert all(c.strategy != "fallback" for c in compactions)
    fact = next(e for e in log if isinstance(e, Message) and "TANGERINE" in str(e.content))
    assert fact.id not in {item.id for item in session.conversation.window().items}  # folded away
    result = await session.turn("/recall staging password")
    assert "recall returned: " in result.final_text
    assert "TANGERINE-4471" in result.final_text
