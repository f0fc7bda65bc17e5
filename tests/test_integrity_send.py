"""Issue 14, item 4: invariant 6 on the send path. Before every model request of a turn the window is checked for
pairing and for the target provider's own grammar (the adapter's `violations`: its renderer and validator); a
violation is repaired, logged and counted in /metrics, never sent. Bedrock, which refuses tool blocks in a request
that declares no tools, is told that history as text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contextfold._errors import GrammarError
from contextfold.events import Item, ToolCall, ToolResult, ToolSpec, assistant, user
from contextfold.models import ModelSettings, ScriptedModel, checks_grammar
from contextfold.models._bedrock import BedrockModel, BedrockProvider
from contextfold.models._bedrock_render import render_bedrock, validate_bedrock
from contextfold.models._cohere import render_cohere, validate_cohere
from contextfold.models._rendered import Rendered
from contextfold.view import Window
from contextfold.view._grammar import (
    REPAIRS,
    send_check,
    validate_anthropic,
    validate_gemini,
    validate_openai_chat,
    validate_openai_responses,
)
from contextfold.view._render import render_anthropic, render_gemini, render_openai_chat, render_openai_responses

from .fakes import fake_bedrock
from .fakes._server import FakeServer
from .fakes.fake_openai import ResponsesEvents, responses_answer
from .processes import Replica
from .test_grammar import conversations

GRAMMARS: dict[str, Callable[[Window], list[str]]] = {
    "openai-chat": lambda w: validate_openai_chat(render_openai_chat(w)),
    "openai-responses": lambda w: validate_openai_responses(render_openai_responses(w)[1]),
    "anthropic": lambda w: validate_anthropic(render_anthropic(w)[1]),
    "gemini": lambda w: validate_gemini(render_gemini(w)[1]),
    "cohere": lambda w: validate_cohere(render_cohere(w)),
    "bedrock": lambda w: validate_bedrock(render_bedrock(w)[1], tools_declared=bool(w.tools)),
}


# --- a real server, a real adapter, a window only the provider's grammar rejects -----------------------------


@pytest.fixture
def replica(tmp_path: Path, server: FakeServer) -> Iterator[Replica]:
    config = tmp_path / "server.toml"
    config.write_text(
        'model = "upstream"\n[[models]]\nname = "upstream"\nprovider = "openai-responses"\n'
        f'base_url = "{server.url}/v1"\napi_key = "unused"\ncontext_window = 32768\n'
    )
    running = Replica(str(tmp_path / "server.db"), tmp_path / "server.log", "--config", str(config))
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def _repairs(metrics: str) -> float:
    found = re.findall(r"^contextfold_grammar_repairs_total\{[^}]*\} ([0-9.]+)$", metrics, re.MULTILINE)
    return sum(float(value) for value in found)


def test_a_window_the_provider_would_refuse_is_repaired_counted_and_never_sent(
    replica: Replica, server: FakeServer
) -> None:
    """An answer of reasoning alone (no text, no call) leaves a reasoning item that nothing follows: the pairing
    check passes it, OpenAI's Responses API refuses it. The send check repairs the window and counts it."""
    server.reply(ResponsesEvents().created().reasoning(summary=["thinking"]).completed().reply())
    server.reply(responses_answer("fine"))
    with httpx.Client(base_url=replica.url, timeout=30) as http:
        first = http.post("/v1/responses", json={"input": "hi"})
        assert first.status_code == 200, first.text
        before = _repairs(http.get("/metrics").text)
        second = http.post("/v1/responses", json={"input": "and now?", "previous_response_id": first.json()["id"]})
        assert second.status_code == 200, second.text
        assert _repairs(http.get("/metrics").text) == before + 1
    sent = json.loads(server.requests[-1].body)
    assert validate_openai_responses(sent["input"]) == []  # what reached the upstream obeys its grammar
    assert [item.get("type", "message") for item in sent["input"]] == ["message", "message"]
    assert "repairing a window before sending it to" in replica.output()


# --- Bedrock: tool history, no tools declared ----------------------------------------------------------------


def _tool_history(tools: bool) -> Window:
    items: list[Item] = [
        user("weather?", seq=1),
        ToolCall(seq=2, call_id="t1", name="weather", arguments='{"city": "Oslo"}', batch_id="b"),
        ToolResult(seq=3, call_id="t1", output="rain"),
        assistant("It rains.", seq=4),
        user("thanks", seq=5),
    ]
    specs = [ToolSpec("weather", "Weather", {"type": "object"})] if tools else None
    return Window("Be brief.", specs, None, items)


async def test_bedrock_tells_tool_history_as_text_when_no_tools_are_declared(server: FakeServer) -> None:
    provider = BedrockProvider("us-east-1", access_key_id="AKID", secret_access_key="s", endpoint_url=server.url)
    try:
        model = BedrockModel("anthropic.claude-3-5-sonnet-20240620-v1:0", provider)
        window = _tool_history(tools=False)
        assert checks_grammar(model)
        assert model.violations(window) == []
        server.reply(fake_bedrock.stream(fake_bedrock.text_answer("ok")))
        _ = [event async for event in model.stream(window, ModelSettings())]
        body = json.loads(server.requests[-1].body)
        assert "toolConfig" not in body
        blocks = [block for message in body["messages"] for block in message["content"]]
        assert not any("toolUse" in b or "toolResult" in b for b in blocks)
        texts = " ".join(b.get("text", "") for b in blocks)
        assert '[called tool weather with {"city": "Oslo"}]' in texts
        assert "[result of weather: rain]" in texts
        assert validate_bedrock(body["messages"], tools_declared=False) == []
        # with tools declared, the blocks are real tool blocks, as before
        declared = render_bedrock(_tool_history(tools=True))[1]
        assert any("toolUse" in b for m in declared for b in m["content"])
    finally:
        provider.close()


def test_validate_bedrock_flags_tool_blocks_without_tools() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"text": "hi"}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "a", "name": "f", "input": {}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "a", "content": [{"text": "r"}]}}]},
    ]
    assert validate_bedrock(messages) == []
    assert any("declares no tools" in v for v in validate_bedrock(messages, tools_declared=False))


# --- send_check --------------------------------------------------------------------------------------------


def test_a_window_still_broken_after_the_repair_is_never_sent() -> None:
    window = Window(None, None, None, [user("hi", seq=1)])
    count = REPAIRS["always-wrong"]
    with pytest.raises(GrammarError, match="never right"):
        send_check(window, lambda w: ["never right"], "always-wrong", where="conv_x")
    assert REPAIRS["always-wrong"] == count + 1
    assert send_check(window, None, "fine") is window  # valid: untouched, not counted
    assert "fine" not in REPAIRS


@st.composite
def corrupted(draw: st.DrawFn) -> list[Item]:
    """A well-formed conversation, then broken as a bad log could be: a result lost, a call id reused, a result
    answered twice, an item moved."""
    items = draw(conversations())
    for _ in range(draw(st.integers(1, 3))):
        if not items:
            break
        index = draw(st.integers(0, len(items) - 1))
        kind = draw(st.sampled_from(["drop", "reuse", "twice", "move"]))
        item = items[index]
        if kind == "drop":
            del items[index]
        elif kind == "reuse" and isinstance(item, ToolCall):
            others = [i.call_id for i in items if isinstance(i, ToolCall)]
            items[index] = msgspec.structs.replace(item, call_id=draw(st.sampled_from(others)))
        elif kind == "twice" and isinstance(item, ToolResult):
            items.insert(index, msgspec.structs.replace(item, seq=1_000 + index))  # another event, same answer
        elif kind == "move":
            items.insert(draw(st.integers(0, len(items) - 1)), items.pop(index))
    return items


@settings(deadline=None, max_examples=200)
@given(corrupted(), st.sampled_from(sorted(GRAMMARS)))
def test_what_the_send_check_lets_through_obeys_the_providers_grammar(items: list[Item], api: str) -> None:
    """Every pairing fault a log can hold is repaired, for every provider: what is sent is always valid."""
    window = Window("sys", None, None, [user("hi", seq=0), *items])
    grammar = GRAMMARS[api]
    sent = send_check(window, grammar, api)
    assert grammar(sent) == []


def test_the_checked_payload_is_sent_once_and_only_for_the_same_window() -> None:
    renders: list[Window] = []

    def render(window: Window) -> list[int]:
        renders.append(window)
        return [len(renders)]

    cache = Rendered(render)
    window, other = Window(None, None, None, [user("a", seq=1)]), Window(None, None, None, [user("a", seq=1)])
    assert cache.check(window, lambda payload: []) == []
    assert cache.take(window) == [1]  # the check's render, not a second one
    assert cache.take(window) == [2]  # used once: a retry renders afresh
    cache.check(window, lambda payload: ["bad"])
    assert cache.take(other) == [4]  # an equal window is not the same one: rendered for itself
    assert len(renders) == 4


async def test_every_request_to_a_streaming_model_is_checked_not_only_turns() -> None:
    """A summary request, or a library caller's own `request`, takes the same path as a turn's: what reaches the
    adapter is repaired, and counted."""
    model = ScriptedModel(["ok"])
    broken = Window(
        None, None, None, [user("hi", seq=1), ToolCall(seq=2, call_id="a", name="f", arguments="{}", batch_id="b")]
    )
    count = REPAIRS["scripted"]
    response = await model.request(broken, ModelSettings())
    assert response.text == "ok"
    ((sent, _),) = model.calls
    assert [item.seq for item in sent.items] == [1]  # the orphan call never reached the model
    assert REPAIRS["scripted"] == count + 1


def test_a_window_that_cannot_be_sent_is_a_500_naming_what_was_wrong() -> None:
    from contextfold.server.edge._errors import api_error

    error = api_error(GrammarError("anthropic", ["messages is empty: Anthropic needs at least one user message"]))
    assert (error.status, error.code) == (500, "grammar_violation")
    assert "messages is empty" in error.message
    assert "log id err_" in error.message
