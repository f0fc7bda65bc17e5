"""Grammar validators: each rule reported by name, and generated windows that render clean for every API."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contextfold._errors import GrammarError, InvalidRequestError
from contextfold.events import (
    Item,
    Message,
    Reasoning,
    TextPart,
    ToolCall,
    ToolResult,
    assistant,
    system,
    user,
)
from contextfold.view._fold import Window
from contextfold.view._grammar import (
    WIRE_APIS,
    check,
    repair,
    validate_anthropic,
    validate_gemini,
    validate_items,
    validate_openai_chat,
    validate_openai_responses,
)


def call(seq: int, call_id: str, batch: str = "b1") -> ToolCall:
    return ToolCall(seq=seq, call_id=call_id, name="f", arguments="{}", batch_id=batch)


def result(seq: int, call_id: str) -> ToolResult:
    return ToolResult(seq=seq, call_id=call_id, output="ok")


def window(*items: Item) -> Window:
    return Window(system_prompt="sys", tools=None, max_output_tokens=None, items=list(items))


def reported(violations: list[str], *words: str) -> bool:
    return any(all(w in v for w in words) for v in violations)


# --- validate_items -----------------------------------------------------------------------------------------


def test_valid_items_have_no_violations() -> None:
    items: list[Item] = [
        user("hi", seq=1),
        call(2, "a"),
        call(3, "b"),
        result(4, "b"),
        result(5, "a"),
        assistant("x", seq=6),
    ]
    assert validate_items(items) == []


def test_items_call_without_result() -> None:
    assert reported(validate_items([user("hi", seq=1), call(2, "a")]), "'a'", "has no result")


def test_items_result_without_call() -> None:
    assert reported(validate_items([user("hi", seq=1), result(2, "a")]), "'a'", "no earlier call")


def test_items_result_before_call() -> None:
    violations = validate_items([result(1, "a"), call(2, "a")])
    assert reported(violations, "no earlier call")
    assert reported(violations, "'a'", "has no result")


def test_items_answered_twice() -> None:
    assert reported(validate_items([call(1, "a"), result(2, "a"), result(3, "a")]), "answered twice")


def test_items_duplicate_call_id() -> None:
    items: list[Item] = [call(1, "a"), result(2, "a"), call(3, "a", batch="b2"), result(4, "a")]
    assert reported(validate_items(items), "used by two calls")


def test_items_batch_not_contiguous() -> None:
    items: list[Item] = [call(1, "a"), result(2, "a"), call(3, "b"), result(4, "b")]
    assert reported(validate_items(items), "'b1'", "not contiguous")


def test_items_batch_not_answered_before_next_item() -> None:
    items: list[Item] = [call(1, "a"), call(2, "b"), result(3, "a"), user("hi", seq=4), result(5, "b")]
    assert reported(validate_items(items), "'b1'", "not fully answered before seq 4", "'b'")


def test_items_new_batch_before_previous_answered() -> None:
    items: list[Item] = [call(1, "a"), call(2, "b", batch="b2"), result(3, "a"), result(4, "b")]
    assert reported(validate_items(items), "'b1'", "not fully answered before seq 2")


# --- OpenAI chat --------------------------------------------------------------------------------------------


def chat_call(*ids: str) -> dict[str, Any]:
    calls = [{"id": i, "type": "function", "function": {"name": "f", "arguments": "{}"}} for i in ids]
    return {"role": "assistant", "content": None, "tool_calls": calls}


def tool(call_id: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": "ok"}


USER = {"role": "user", "content": "hi"}


def test_chat_valid() -> None:
    assert validate_openai_chat([USER, chat_call("a", "b"), tool("a"), tool("b"), USER]) == []


def test_chat_tool_answers_other_message() -> None:
    messages = [USER, chat_call("a"), tool("a"), chat_call("b"), tool("a"), tool("b")]
    assert reported(validate_openai_chat(messages), "messages[4]", "closest preceding", "messages[3]")


def test_chat_tool_without_any_call() -> None:
    assert reported(validate_openai_chat([USER, tool("a")]), "messages[1]", "no earlier assistant")


def test_chat_call_unanswered_before_next_message() -> None:
    messages = [USER, chat_call("a", "b"), tool("a"), USER]
    assert reported(validate_openai_chat(messages), "['b']", "not answered", "before messages[3]")


def test_chat_call_unanswered_at_end() -> None:
    assert reported(validate_openai_chat([USER, chat_call("a")]), "['a']", "at the end")


def test_chat_duplicate_ids() -> None:
    messages = [USER, chat_call("a"), tool("a"), chat_call("a"), tool("a")]
    assert reported(validate_openai_chat(messages), "'a'", "used twice")


def test_chat_tool_after_intervening_message() -> None:
    messages = [USER, chat_call("a"), USER, tool("a")]
    violations = validate_openai_chat(messages)
    assert reported(violations, "does not directly follow")
    assert reported(violations, "not answered")


def test_chat_answered_twice() -> None:
    assert reported(validate_openai_chat([USER, chat_call("a"), tool("a"), tool("a")]), "answered twice")


def test_chat_empty_assistant_and_unknown_role() -> None:
    violations = validate_openai_chat([USER, {"role": "assistant", "content": None}, {"role": "bot"}])
    assert reported(violations, "neither content nor tool_calls")
    assert reported(violations, "unknown role 'bot'")


# --- OpenAI Responses ---------------------------------------------------------------------------------------


def fc(call_id: str) -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": "f", "arguments": "{}"}


def fco(call_id: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": "ok"}


MSG = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
REASONING = {"type": "reasoning", "id": "rs", "summary": []}


def test_responses_valid() -> None:
    assert validate_openai_responses([MSG, REASONING, fc("a"), fc("b"), fco("b"), fco("a")]) == []


def test_responses_call_without_output() -> None:
    assert reported(validate_openai_responses([MSG, fc("a")]), "'a'", "no function_call_output")


def test_responses_output_without_call() -> None:
    assert reported(validate_openai_responses([MSG, fco("a"), fc("a")]), "input[1]", "no function_call before")


def test_responses_output_twice() -> None:
    assert reported(validate_openai_responses([fc("a"), fco("a"), fco("a")]), "two function_call_output")


def test_responses_dangling_reasoning() -> None:
    assert reported(validate_openai_responses([MSG, REASONING, MSG]), "input[1]", "reasoning", "not followed")


def test_responses_unknown_item_and_role() -> None:
    violations = validate_openai_responses([{"type": "mystery"}, {"type": "message", "role": "tool"}])
    assert reported(violations, "unknown item type 'mystery'")
    assert reported(violations, "unknown role 'tool'")


# --- Anthropic ----------------------------------------------------------------------------------------------


def a_user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks) or [{"type": "text", "text": "hi"}]}


def a_assistant(*ids: str) -> dict[str, Any]:
    blocks = [{"type": "tool_use", "id": i, "name": "f", "input": {}} for i in ids]
    return {"role": "assistant", "content": blocks or [{"type": "text", "text": "ok"}]}


def tr(call_id: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": call_id, "content": "ok"}


TEXT = {"type": "text", "text": "more"}


def test_anthropic_valid() -> None:
    messages = [a_user(), a_assistant("a", "b"), a_user(tr("a"), tr("b"), TEXT), a_assistant()]
    assert validate_anthropic(messages) == []


def test_anthropic_empty() -> None:
    assert reported(validate_anthropic([]), "empty")


def test_anthropic_must_start_with_user() -> None:
    assert reported(validate_anthropic([a_assistant(), a_user()]), "first message must be from the user")


def test_anthropic_alternation() -> None:
    assert reported(validate_anthropic([a_user(), a_user()]), "both 'user'", "alternate")


def test_anthropic_system_role_in_messages() -> None:
    violations = validate_anthropic([a_user(), {"role": "system", "content": "x"}])
    assert reported(violations, "'system'", "not user or assistant")


def test_anthropic_tool_use_unanswered() -> None:
    messages = [a_user(), a_assistant("a", "b"), a_user(tr("a"))]
    assert reported(validate_anthropic(messages), "messages[1]", "['b']", "not answered")


def test_anthropic_tool_use_at_end() -> None:
    assert reported(validate_anthropic([a_user(), a_assistant("a")]), "not followed by a user message")


def test_anthropic_tool_result_not_first() -> None:
    messages = [a_user(), a_assistant("a"), a_user(TEXT, tr("a"))]
    assert reported(validate_anthropic(messages), "messages[2]", "must come first")


def test_anthropic_tool_result_without_tool_use() -> None:
    messages = [a_user(), a_assistant("a"), a_user(tr("a"), tr("zzz"))]
    assert reported(validate_anthropic(messages), "'zzz'", "no tool_use")


def test_anthropic_empty_text_block() -> None:
    assert reported(validate_anthropic([a_user({"type": "text", "text": "  "})]), "empty or only whitespace")


# --- Gemini -------------------------------------------------------------------------------------------------


def g(role: str, *parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": role, "parts": list(parts) or [{"text": "hi"}]}


FC = {"functionCall": {"name": "f", "args": {}}}
FR = {"functionResponse": {"name": "f", "response": {"output": "ok"}}}


def test_gemini_valid() -> None:
    assert validate_gemini([g("user"), g("model", FC, FC), g("user", FR, FR), g("model")]) == []


def test_gemini_empty() -> None:
    assert reported(validate_gemini([]), "empty")


def test_gemini_bad_role() -> None:
    assert reported(validate_gemini([g("user"), g("assistant")]), "'assistant'", "not user or model")


def test_gemini_must_start_with_user() -> None:
    assert reported(validate_gemini([g("model"), g("user")]), "first turn must be from the user")


def test_gemini_response_count_mismatch() -> None:
    contents = [g("user"), g("model", FC, FC), g("user", FR)]
    assert reported(validate_gemini(contents), "2 functionCall", "has 1 functionResponse")


def test_gemini_response_without_call() -> None:
    assert reported(validate_gemini([g("user"), g("model"), g("user", FR)]), "no functionCall")


# --- check and repair ---------------------------------------------------------------------------------------


def test_check_returns_payload_and_raises_on_violation() -> None:
    good = window(user("hi", seq=1), call(2, "a"), result(3, "a"))
    assert check(good, "openai-chat")[0] == {"role": "system", "content": "sys"}
    assert check(good, "anthropic")[0] == "sys"
    bad = window(user("hi", seq=1), call(2, "a"))
    for api in WIRE_APIS:
        with pytest.raises(GrammarError) as info:
            check(bad, api)
        assert info.value.api == api
        assert info.value.violations
    with pytest.raises(InvalidRequestError):
        check(good, "cohere")


def test_repair_drops_orphans_and_whole_batches(caplog: pytest.LogCaptureFixture) -> None:
    w = window(
        user("hi", seq=1),
        result(2, "ghost"),
        Reasoning(seq=3, provider="openai", data={"id": "rs"}),
        call(4, "a"),
        call(5, "b"),
        result(6, "a"),
        user("next", seq=7),
        call(8, "c", batch="b2"),
        result(9, "c"),
        result(10, "c"),
    )
    with caplog.at_level(logging.WARNING, logger="contextfold.view"):
        repaired = repair(w)
    assert [i.seq for i in repaired.items] == [1, 7, 8, 9]
    assert "[2, 3, 4, 5, 6, 10]" in caplog.text
    assert validate_items(repaired.items) == []


# --- generated windows --------------------------------------------------------------------------------------

TEXTS = st.text(alphabet="ab \n", min_size=1, max_size=6)
USER_TEXTS = TEXTS.filter(str.strip)  # a window of only blank user text has nothing Anthropic can take


@st.composite
def conversations(draw: st.DrawFn) -> list[Item]:
    """Turns of user text, steps of (reasoning?, assistant text?, parallel batch, results), a final answer."""
    seq, ids = itertools.count(1), itertools.count()
    items: list[Item] = []

    def reasoning(turn: str) -> None:
        if draw(st.booleans()):
            provider = draw(st.sampled_from(["openai", "anthropic", "gemini"]))
            data = {"id": f"rs_{next(ids)}", "encrypted_content": "E", "signature": "S"}
            items.append(Reasoning(seq=next(seq), provider=provider, text="r", data=data, turn_id=turn))

    if draw(st.booleans()):  # the head was folded away: the window opens with the assistant
        items.append(assistant(draw(TEXTS), seq=next(seq), turn_id="t-1"))
    for t in range(draw(st.integers(1, 3))):
        turn = f"t{t}"
        items.append(user(draw(USER_TEXTS), seq=next(seq), turn_id=turn))
        if draw(st.booleans()):
            items.append(system(draw(TEXTS), seq=next(seq)))
        for _ in range(draw(st.integers(0, 2))):
            reasoning(turn)
            if draw(st.booleans()):
                items.append(assistant(draw(TEXTS), seq=next(seq), turn_id=turn))
            batch = f"b{next(ids)}"
            calls = [
                ToolCall(seq=next(seq), call_id=f"c{next(ids)}", name="f", arguments='{"x": 1}', batch_id=batch)
                for _ in range(draw(st.integers(1, 3)))
            ]
            items.extend(calls)
            for c in draw(st.permutations(calls)):
                items.append(ToolResult(seq=next(seq), call_id=c.call_id, output=draw(TEXTS)))
        if draw(st.booleans()):
            reasoning(turn)
            items.append(Message(seq=next(seq), role="assistant", content=[TextPart(draw(TEXTS))], turn_id=turn))
    return items


def assert_clean_for_every_api(w: Window) -> None:
    for api in WIRE_APIS:
        check(w, api)  # raises GrammarError with the violations


@settings(deadline=None, max_examples=300)
@given(conversations())
def test_well_formed_windows_render_clean(items: list[Item]) -> None:
    w = window(*items)
    assert validate_items(items) == []
    assert repair(w).items == items
    assert_clean_for_every_api(w)


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.filter_too_much])
@given(conversations().filter(lambda items: any(isinstance(i, ToolCall) for i in items)), st.data())
def test_broken_windows_are_reported_and_repaired(items: list[Item], data: st.DataObject) -> None:
    tool_items = [i for i, item in enumerate(items) if isinstance(item, (ToolCall, ToolResult))]
    victim = data.draw(st.sampled_from(tool_items))
    broken = items[:victim] + items[victim + 1 :]
    assert validate_items(broken) != []
    repaired = repair(window(*broken))
    assert validate_items(repaired.items) == []
    assert repair(repaired).items == repaired.items
    assert_clean_for_every_api(repaired)
