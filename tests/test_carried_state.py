"""Folds that keep what matters: the carried state, checked summaries, the digest, turns inside one input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contextfold import CompactionPolicy, Conversation, ScriptedModel, Store, View
from contextfold.compaction._state import classify, extract, identifiers, merge, render, supersedes
from contextfold.events import CarriedFact, TextPart, ToolResult, TurnMarker, new_id, user
from contextfold.runtime._builtin import builtin_tools
from contextfold.server import ServerConfig
from contextfold.view import Window
from contextfold.view._tokens import tools_tokens

from .scenario import turn
from .server_fixtures import RecordingModel, ServerFixtureRegistry, serving

POLICY = CompactionPolicy(head_items=2, tail_turns=2)


def _fact(seq: int, text: str) -> list[CarriedFact]:
    return extract([msgspec.structs.replace(user(text), seq=seq)])


def window_text(window: Window) -> str:
    return "\n".join(
        p.text for i in window.items if hasattr(i, "content") for p in i.content if isinstance(p, TextPart)
    )


async def grow(conv: Conversation, turns: int, start: int = 0, output: int = 2_000) -> None:
    for i in range(start, start + turns):
        await conv.append(*turn(f"step {i}", batches=[1], output=f"result {i}: " + "v" * output))


# --- extraction and supersession ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Never force-push to the main branch.", "rule"),
        ("Please don't touch the files in the vendor folder.", "rule"),
        ("Under no circumstances should you email the customers directly.", "rule"),
        ("Keep every answer under 150 words.", "constraint"),
        ("We have to ship this by March 3.", "constraint"),
        ("The staging database listens on port 5433.", "fact"),
        ("Our on-call engineer this week is Priya.", "fact"),
        ("For the exporter, our goal is to support Parquet output.", "goal"),
        ("I prefer short imperative commit messages.", "preference"),
        ("We decided to go with SQLite for the cache.", "decision"),
    ],
)
def test_statements_are_recognised_by_their_wording(text: str, kind: str) -> None:
    assert classify(text) == kind


@pytest.mark.parametrize(
    "text", ["Can you run the tests again?", "Looks good, next one.", "Show me the diff for that file."]
)
def test_questions_and_requests_are_not_carried(text: str) -> None:
    assert _fact(1, text) == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("The staging database listens on port 5433.", "Actually, the staging database now listens on port 6432."),
        ("Never force-push to the main branch.", "Force-pushing to main is fine now."),
        ("Our on-call engineer this week is Priya.", "Marco is now our on-call engineer."),
        ("Keep every answer under 150 words.", "Answers can now be up to 300 words."),
        ("The release deadline is March 3.", "Change of plan: the release deadline moves to April 10."),
        ("For the exporter, our goal is to ship CSV.", "Change of plans for the exporter: the goal is now Parquet."),
    ],
)
def test_a_later_statement_about_the_same_thing_supersedes(old: str, new: str) -> None:
    state = merge(_fact(1, old), _fact(2, new))
    assert [f.text for f in state] == [new]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("The staging database listens on port 5433.", "The staging database password lives in /etc/secrets/db."),
        ("Never force-push to the main branch.", "Never merge a pull request without a green build."),
        ("I prefer short commit messages.", "For code reviews, I like a numbered checklist."),
    ],
)
def test_statements_about_different_things_both_stay(a: str, b: str) -> None:
    assert len(merge(_fact(1, a), _fact(2, b))) == 2


SUBJECTS = ["staging database port", "nightly job timeout", "artifacts bucket name", "worker memory budget"]


@given(
    st.lists(st.tuples(st.sampled_from(SUBJECTS), st.integers(100, 99_999)), min_size=1, max_size=25),
    st.integers(1, 6),
)
def test_supersession_is_order_correct_and_independent_of_how_the_log_is_cut(
    statements: list[tuple[str, int]], chunk: int
) -> None:
    facts = [f for n, (subject, value) in enumerate(statements) for f in _fact(n + 1, f"The {subject} is {value}.")]
    assert len(facts) == len(statements)
    at_once = merge([], facts)
    stepwise: list[CarriedFact] = []
    for start in range(0, len(facts), chunk):
        stepwise = merge(stepwise, facts[start : start + chunk])
    assert stepwise == at_once
    latest = dict(statements)
    assert sorted(f.text for f in at_once) == sorted(f"The {s} is {v}." for s, v in latest.items())
    for f in at_once:  # nothing newer supersedes what stayed
        assert not any(g.seq > f.seq and supersedes(g, f) for g in facts)


# --- the state on the compaction event ----------------------------------------------------------------------------


async def test_the_state_is_carried_across_compactions_and_superseded_values_leave_it(sqlite_store: Store) -> None:
    conv = await Conversation.create(sqlite_store)
    await conv.append(*turn("We are fixing the exporter today."))
    await conv.append(*turn("Never commit generated protobuf files. The staging database listens on port 5433."))
    await grow(conv, 8)
    await conv.compact(budget=10_000, policy=POLICY, summariser=None)
    first = conv.view.active_summary()
    assert first is not None
    assert [f.kind for f in first.carried] == ["rule", "fact"]
    await conv.append(*turn("Heads up: the staging database moved to port 6432."))
    await grow(conv, 8, start=8)
    await conv.compact(budget=10_000, policy=POLICY, summariser=None)
    shown = window_text(conv.window())
    assert "Never commit generated protobuf files." in shown
    assert "the staging database moved to port 6432" in shown
    assert "5433" not in shown  # superseded: in the log and in recall, never shown as current
    hits = await conv.recall("staging database port")
    assert "6432" in hits[0].snippet
    assert not hits[0].superseded
    assert any(h.superseded and "5433" in h.snippet for h in hits)
    reloaded = await Conversation.load(sqlite_store, conv.id)
    assert reloaded.view.state() == conv.view.state()
    assert View.replay(await sqlite_store.read(conv.id)).state() == conv.view.state()


async def test_a_newer_statement_still_in_view_overrides_the_state(sqlite_store: Store) -> None:
    conv = await Conversation.create(sqlite_store)
    await conv.append(*turn("We are fixing the exporter today."))
    await conv.append(*turn("The artifacts bucket is called acme-old-17."))
    await grow(conv, 8)
    await conv.append(*turn("The artifacts bucket was renamed to acme-new-42."))  # in the verbatim tail
    await conv.compact(budget=8_000, policy=CompactionPolicy(head_items=2, tail_turns=1), summariser=None)
    assert "acme-old-17" not in window_text(conv.window())


def statement() -> st.SearchStrategy[str]:
    return st.builds("The {} is {}.".format, st.sampled_from(SUBJECTS), st.integers(100, 999)) | st.sampled_from(
        ["Never touch the vendor folder.", "I prefer tabs.", "step on", "Run the tests again."]
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(statement(), st.booleans(), st.sampled_from([None, "ok", "noted"])), min_size=3, max_size=14))
async def test_the_state_is_identical_on_replay_reload_and_incremental_build(
    sqlite_store: Store, ops: list[tuple[str, bool, str | None]]
) -> None:
    conv = await Conversation.create(sqlite_store)
    for text, compact_now, mode in ops:
        await conv.append(*turn(text, batches=[1], output="o" * 1_500))
        if compact_now:
            model = None if mode is None else ScriptedModel([mode if mode == "noted" else "## Goal\nkeep going"])
            await conv.compact(budget=3_000, policy=CompactionPolicy(head_items=1, tail_turns=1), summariser=model)
        replayed = View.replay(await sqlite_store.read(conv.id))
        reloaded = await Conversation.load(sqlite_store, conv.id)
        assert replayed.state() == conv.view.state() == reloaded.view.state()


# --- checked summaries and the digest -----------------------------------------------------------------------------


async def test_a_generic_summary_is_replaced_and_the_compaction_says_so(sqlite_store: Store) -> None:
    conv = await Conversation.create(sqlite_store)
    await conv.append(*turn("We are fixing the exporter today."))
    await conv.append(*turn("Never commit generated protobuf files. Keep every answer under 150 words."))
    await grow(conv, 8)
    result = await conv.compact(budget=10_000, policy=POLICY, summariser=ScriptedModel(["Noted."]))
    assert result.strategy == "fallback"
    event = conv.view.active_summary()
    assert event is not None
    assert event.check is not None
    assert event.check.startswith("replaced: the summary is generic")
    shown = window_text(conv.window())
    assert "Never commit generated protobuf files." in shown
    assert "Noted." not in shown


async def test_a_summary_that_drops_identifiers_is_completed(sqlite_store: Store) -> None:
    conv = await Conversation.create(sqlite_store)
    await conv.append(*turn("We are fixing the exporter today."))
    await conv.append(*turn("Look at src/export/csv_writer.py and lib/search/index.py, then ticket ACME-4411."))
    await grow(conv, 8)
    model = ScriptedModel(["## Goal\nFix the writer in src/export/csv_writer.py."])
    result = await conv.compact(budget=10_000, policy=POLICY, summariser=model)
    assert result.strategy == "summary"
    event = conv.view.active_summary()
    assert event is not None
    assert event.check is not None
    assert event.check.startswith("completed")
    assert event.summary is not None
    assert "lib/search/index.py" in event.summary
    assert "ACME-4411" in event.summary


async def test_a_summary_that_covers_the_span_is_accepted(sqlite_store: Store) -> None:
    conv = await Conversation.create(sqlite_store)
    await grow(conv, 12)
    await conv.compact(budget=10_000, policy=POLICY, summariser=ScriptedModel(["## Goal\nkeep stepping"]))
    event = conv.view.active_summary()
    assert event is not None
    assert event.check == "accepted"
    assert event.summary == "## Goal\nkeep stepping"


async def test_the_digest_merges_and_never_nests(sqlite_store: Store) -> None:
    conv = await Conversation.create(sqlite_store)
    await conv.append(*turn("We are fixing the exporter today. Never commit generated protobuf files."))
    for n in range(30):
        await grow(conv, 4, start=n * 4)
        await conv.compact(budget=6_000, policy=CompactionPolicy(head_items=0, tail_turns=1), summariser=None)
    event = conv.view.active_summary()
    assert event is not None
    assert event.summary is not None
    assert event.summary.count("[Digest of") == 1
    assert event.summary.count("## Folded activity") == 1
    assert "Never commit generated protobuf files." in event.summary
    assert "step 118" in event.summary  # the latest folded activity is there (119 is the verbatim tail)


# --- turns inside one input, the head, the built-in tools -------------------------------------------------------


async def test_a_whole_history_in_one_input_folds_like_a_stored_conversation(sqlite_store: Store) -> None:
    conv = await Conversation.create(sqlite_store)
    tid = new_id("turn")
    history: list[Any] = [TurnMarker(status="started", turn_id=tid)]
    for n in range(30):
        history.append(user(f"question {n}: " + "q" * 1_200, turn_id=tid))
        history.append(
            msgspec.structs.replace(user("x"), role="assistant", content=[TextPart("a" * 1_200)], turn_id=tid)
        )
    history.append(user("the newest question", turn_id=tid))
    await conv.append(*history)
    result = await conv.fit(budget=4_000, policy=POLICY, summariser=None)
    assert result.compacted
    assert conv.view.tokens <= 4_000
    shown = window_text(conv.window())
    assert shown.rstrip().endswith("the newest question")
    assert "question 0:" in shown  # the first user message is the head
    assert "question 15:" not in shown


async def test_the_head_keeps_the_first_message_and_masks_its_big_tool_outputs(sqlite_store: Store) -> None:
    conv = await Conversation.create(sqlite_store)
    await conv.append(*turn("set up the repo", batches=[1], output="H" * 20_000))
    await grow(conv, 6)
    await conv.compact(budget=8_000, policy=CompactionPolicy(head_items=3, tail_turns=1), summariser=None)
    head = list(conv.view.items.values())[:3]
    assert isinstance(head[2], ToolResult)
    assert head[2].seq in conv.view.masked
    assert "set up the repo" in window_text(conv.window())


async def test_a_proxy_client_with_history_gets_an_answer_not_an_overflow(tmp_path: Path) -> None:
    config = ServerConfig(db=str(tmp_path / "s.db"))
    recording = RecordingModel(context_window=6_000)
    async with serving(config, registry=ServerFixtureRegistry(config, recording)) as served:
        messages: list[dict[str, Any]] = [{"role": "system", "content": "You are terse."}]
        for n in range(40):
            messages.append({"role": "user", "content": f"question {n}: " + "q" * 1_000})
            messages.append({"role": "assistant", "content": "a" * 1_000})
        messages.append({"role": "user", "content": "the newest question"})
        assert len(json.dumps(messages)) / 4 > 6_000
        response = await served.http.post("/v1/chat/completions", json={"model": "recording", "messages": messages})
        assert response.status_code == 200, response.text
        assert max(recording.windows) <= 6_000 - min(1_024, 6_000 // 4)


def test_the_built_in_tool_specs_are_small() -> None:
    specs = [tool.spec for tool in builtin_tools(None, expand_tokens=1_000)]  # type: ignore[arg-type]
    assert tools_tokens(specs) < 200


async def test_recall_marks_superseded_hits_and_ranks_the_current_one_first(store: Store) -> None:
    conv = await Conversation.create(store)
    await conv.append(*turn("We are fixing the exporter today."))
    await conv.append(*turn("The nightly job timeout is 40 minutes."))
    await grow(conv, 3)
    await conv.append(*turn("The nightly job timeout is now 90 minutes."))
    await grow(conv, 8, start=3)
    await conv.compact(budget=8_000, policy=CompactionPolicy(head_items=2, tail_turns=1), summariser=None)
    hits = await conv.recall("nightly job timeout")
    assert "90 minutes" in hits[0].snippet
    assert not hits[0].superseded
    assert await conv.recall("ZEBRA-4471") == []  # only values in the query: no statement to match, no error
    old = [h for h in hits if "40 minutes" in h.snippet]
    assert old
    assert old[0].superseded


def test_render_groups_by_kind() -> None:
    state = merge([], [*_fact(1, "I prefer tabs over spaces."), *_fact(2, "Never touch the vendor folder.")])
    assert render(state).splitlines()[1].startswith("- [rule]")


async def test_a_stateless_responses_call_with_the_whole_history_folds(tmp_path: Path) -> None:
    config = ServerConfig(db=str(tmp_path / "s.db"))
    recording = RecordingModel(context_window=6_000)
    async with serving(config, registry=ServerFixtureRegistry(config, recording)) as served:
        items: list[dict[str, Any]] = []
        for n in range(40):
            items.append({"role": "user", "content": f"question {n}: " + "q" * 1_000})
            items.append({"role": "assistant", "content": "a" * 1_000})
        items.append({"role": "user", "content": "the newest question"})
        body = {"model": "recording", "input": items, "store": False}
        response = await served.http.post("/v1/responses", json=body)
        assert response.status_code == 200, response.text
        assert max(recording.windows) <= 6_000 - min(1_024, 6_000 // 4)
        assert recording.texts[-1] == "the newest question"


@pytest.mark.parametrize("summary", [None, "quote"])
async def test_a_summary_never_quotes_a_superseded_statement_as_current(
    sqlite_store: Store, summary: str | None
) -> None:
    conv = await Conversation.create(sqlite_store)
    await conv.append(*turn("We are fixing the exporter today."))
    await conv.append(*turn("The staging database listens on port 5433."))
    await conv.append(*turn("Heads up: the staging database moved to port 6432."))
    await grow(conv, 8)

    def quoting(window: Window) -> str:  # a model that copies the folded lines, old values included
        return "## Identifiers\n" + "\n".join(ln for ln in window_text(window).splitlines() if "port" in ln)

    model = None if summary is None else ScriptedModel([quoting])
    await conv.compact(budget=10_000, policy=POLICY, summariser=model)
    shown = window_text(conv.window())
    assert "moved to port 6432" in shown
    assert "5433" not in shown
    hits = await conv.recall("staging database port 5433")
    assert any("5433" in hit.snippet for hit in hits)  # still in the log and in recall


@pytest.mark.parametrize("run", ["a@", "x", "a/", "1,", "a.b-"])
def test_a_long_unbroken_run_is_scanned_once_not_once_per_character(run: str) -> None:
    """A pasted blob (base64, a minified line) is one 200 KB token: each identifier alternative starts only where its
    stretch of characters starts, so the scan is linear (tried at every position it was quadratic: hours here)."""
    blob = run * (200_000 // len(run))
    found = identifiers(f"deploy {blob} then check src/app.py at v1.2.3")
    assert {"src/app.py", "v1.2.3"} <= set(found)
    assert classify(f"never wait more than {'1,' * 200}5 seconds") == "constraint"
