"""`contextfold conversations list|show|context|compact|search`, run as a user would, on a store with a real session.

The session has every state an event can be in: items in view, masked by a compaction, folded by a summary, of a
failed and an interrupted turn, erased by a deletion, and markers. Export and import are in test_cli_conversations_io.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from contextfold import CompactionPolicy, Conversation
from contextfold.cli import main
from contextfold.events import ConfigChange, Message, TurnStatus, Usage
from contextfold.server._testmodel import TestModel
from contextfold.store import open_server_store

from .scenario import turn


async def _session(db: str) -> str:
    store = await open_server_store(db)
    try:
        info = await store.conversations.create(metadata={"project": "demo"}, tenant="default")
        conv = await Conversation.load(store, info.id)
        await conv.append(ConfigChange(system_prompt="You fix bugs."))
        for i in range(10):
            status: TurnStatus = "failed" if i == 3 else "interrupted" if i == 5 else "completed"
            output = f"traceback line {i} " * 150
            await conv.append(*turn(f"step {i}: fix bug ISSUE-{i}", batches=[2], output=output, status=status))
            estimate = conv.view.estimated_tokens
            await conv.append(
                Usage(model="test", input_tokens=estimate + 7, output_tokens=5, estimated_input_tokens=estimate)
            )
        await conv.pin(next(iter(conv.view.items.values())).id)
        await conv.compact(budget=6000, summariser=TestModel())  # a summary folds the older turns
        for i in range(10, 16):
            await conv.append(*turn(f"step {i}: fix bug ISSUE-{i}", batches=[1], output=f"log output {i} " * 150))
        # masking alone brings the view under the target: an automatic compaction masks old tool outputs
        await conv.fit(
            budget=int(conv.view.tokens / 0.85), summariser=TestModel(), policy=CompactionPolicy(tail_turns=1)
        )
        # an item in view (deleting a folded one would erase the summary that covers it, too)
        answer = [e for e in conv.view.items.values() if isinstance(e, Message) and e.role == "assistant"]
        await conv.delete(answer[-1].id)
        return info.id
    finally:
        await store.close()


async def _plain(db: str) -> str:
    store = await open_server_store(db)
    try:
        conv = await Conversation.create(store)
        for i in range(8):
            await conv.append(*turn(f"step {i}", batches=[2], output=f"output {i} " * 300))
        return conv.id
    finally:
        await store.close()


def session(db: str) -> str:
    """A stored session with compactions (summary and mask), a pin, a deletion, a failed and an interrupted turn."""
    return asyncio.run(_session(db))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The exit code, stdout and stderr of `contextfold ARGV`, without the padding rich puts at line ends."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, re.sub(r" +$", "", out, flags=re.M), re.sub(r" +$", "", err, flags=re.M)


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wide terminal, so each table row is one line to match (a narrow one is tested on its own)."""
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "cf.db")


def test_list_shows_the_newest_first_with_their_size_and_context_use(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    older = session(db)
    newer = session(db)
    code, out, _ = run(capsys, "conversations", "list", "--db", db)
    assert code == 0
    assert out.index(newer) < out.index(older)
    assert re.search(
        rf"^{newer} +default +\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d +project=demo +\d+ +[\d,]+ +[\d.]+ +2$", out, re.M
    )

    code, out, _ = run(capsys, "conversations", "list", "--db", db, "--json", "--limit", "1")
    (row,) = json.loads(out)
    assert (row["id"], row["tenant"], row["metadata"]) == (newer, "default", {"project": "demo"})
    assert row["compactions"] == 2
    assert row["events"] > 100
    assert 0 < row["utilisation"] < 100
    assert row["tokens"] > 0


def test_list_keeps_ids_and_numbers_whole_on_a_narrow_terminal(
    db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conv = session(db)
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "conversations", "list", "--db", db)
    assert code == 0
    assert re.search(rf"^{conv} ", out, re.M)


def test_list_without_a_known_window_still_lists(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conv = session(db)
    config = tmp_path / "cf.toml"
    config.write_text('model = "mystery"\nupstream = "http://127.0.0.1:9/v1"\n')  # nothing listens on port 9
    code, out, err = run(capsys, "conversations", "list", "--db", db, "--config", str(config))
    assert code == 0
    assert re.search(rf"^{conv} +default .* - +2$", out, re.M)
    assert "utilisation not shown: the default model's window is unknown" in err


def test_list_filters_by_tenant_and_says_when_there_is_nothing(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    session(db)
    code, out, err = run(capsys, "conversations", "list", "--db", db, "--tenant", "acme")
    assert (code, out) == (0, "")
    assert "no conversations of tenant 'acme'" in err
    assert json.loads(run(capsys, "conversations", "list", "--db", db, "--tenant", "acme", "--json")[1]) == []


def test_show_prints_the_newest_events_with_their_state_in_the_view(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    conv = session(db)
    code, out, err = run(capsys, "conversations", "show", conv, "--db", db)
    assert code == 0
    lines = [line for line in out.splitlines() if re.match(r"^ *\d+ ", line)]
    assert len(lines) == 50
    assert "--all shows every one" in err
    assert re.search(r"compaction +marker +mask \(auto\): [\d,]+ → [\d,]+ tokens", out)

    code, out, err = run(capsys, "conversations", "show", conv, "--db", db, "--all")
    assert (code, err) == (0, "")
    assert re.search(r"^ +1 +config +marker +instructions: You fix bugs\.$", out, re.M)
    assert re.search(r"^ +3 +message +in_view +user: step 0: fix bug ISSUE-0$", out, re.M)  # pinned
    assert re.search(r"message +failed +user: step 3: fix bug ISSUE-3", out)
    assert re.search(r"message +folded +user: step 1: fix bug ISSUE-1", out)
    assert re.search(r"message +erased +\(erased\)", out)
    assert re.search(r"tool_result +masked +log output", out)
    assert re.search(r"compaction +marker +summary \(manual\)", out)


def test_show_json_is_the_inspectors_events_for_the_whole_log(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    conv = session(db)
    code, out, _ = run(capsys, "conversations", "show", conv, "--db", db, "--all", "--json")
    assert code == 0
    shown = json.loads(out)
    assert (shown["conversation_id"], shown["pinned"]) == (conv, [3])
    assert [event["seq"] for event in shown["data"]] == list(range(1, shown["head"] + 1))
    states = Counter(event["state"] for event in shown["data"])
    assert set(states) == {"in_view", "masked", "folded", "failed", "erased", "marker"}
    interrupted = [e for e in shown["data"] if e["type"] == "message" and "ISSUE-5" in str(e["content"])]
    assert interrupted[0]["state"] == "failed"


def test_context_reports_the_window_by_category_against_the_budget(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    conv = session(db)
    code, out, _ = run(capsys, "conversations", "context", conv, "--db", db, "--json")
    assert code == 0
    report = json.loads(out)
    assert (report["model"], report["context_window"]) == ("test", 16_384)
    assert report["budget"] == 16_384 - 1_024
    assert report["tokens"]["masked_tool_outputs"] > 0
    assert report["tokens"]["summary"] > 0
    assert report["totals"]["compactions"] == 2

    code, out, _ = run(capsys, "conversations", "context", conv, "--db", db)
    assert code == 0
    assert re.search(r"^masked tool outputs +[\d,]+$", out, re.M)
    assert re.search(r"^total +[\d,]+$", out, re.M)
    assert "window 16,384, 1,024 reserved for output: budget 15,360" in out
    assert "compaction at 12,288 tokens (trigger), down to 7,680 (target); 2 so far" in out
    assert re.search(r"^summary \(seq \d+\):\n## ", out, re.M)


def test_context_against_another_model_uses_its_window(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conv = session(db)
    config = tmp_path / "cf.toml"
    config.write_text('[[models]]\nname = "small"\nprovider = "test"\ncontext_window = 8000\n')
    code, out, _ = run(
        capsys, "conversations", "context", conv, "--db", db, "--config", str(config), "--model", "small", "--json"
    )
    assert code == 0
    assert json.loads(out)["context_window"] == 8000


def test_compact_folds_the_view_and_prints_tokens_before_and_after(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    conv = asyncio.run(_plain(db))  # eight turns in full: a summary has plenty to fold
    code, out, err = run(capsys, "conversations", "compact", conv, "--db", db, "--instructions", "keep the bug ids")
    assert code == 0, err
    match = re.search(r"^summary: ([\d,]+) → ([\d,]+) tokens, \d+ → \d+ items \(ev_\w+\)$", out, re.M)
    assert match is not None
    before, after = (int(n.replace(",", "")) for n in match.groups())
    assert after < before
    shown = json.loads(run(capsys, "conversations", "show", conv, "--db", db, "--json")[1])
    last = shown["data"][-1]
    assert (last["type"], last["trigger"], last["instructions"]) == ("compaction", "manual", "keep the bug ids")


def test_compact_exits_1_when_the_summariser_fails(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conv = session(db)
    config = tmp_path / "cf.toml"
    config.write_text(
        '[[models]]\nname = "down"\nprovider = "openai-chat"\nbase_url = "http://127.0.0.1:9/v1"\n'
        'api_key = "k"\ncontext_window = 16000\n'
    )
    code, out, err = run(
        capsys, "conversations", "compact", conv, "--db", db, "--config", str(config), "--model", "down"
    )
    assert code == 1
    assert out.startswith("fallback: ")
    assert "the summariser failed" in err


def test_search_finds_what_is_folded_out_of_the_view(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    conv = session(db)
    code, out, _ = run(capsys, "conversations", "search", conv, "traceback", "--db", db)
    assert code == 0
    assert re.search(r"^ *\d+ +tool_result +[\d.]+ +traceback line \d", out, re.M)

    code, out, _ = run(capsys, "conversations", "search", conv, "traceback", "--db", db, "--json", "--limit", "2")
    hits = json.loads(out)
    assert [hit["type"] for hit in hits] == ["tool_result", "tool_result"]

    code, out, err = run(capsys, "conversations", "search", conv, "nowhere-to-be-found", "--db", db)
    assert (code, out) == (0, "")
    assert "nothing folded out of the view matches" in err


@pytest.mark.parametrize("action", ["show", "context", "compact", "search", "export"])
def test_an_unknown_id_exits_2_and_says_where_the_ids_are(
    action: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["words"] if action == "search" else []
    code, out, err = run(capsys, "conversations", action, "conv_nope", *extra, "--db", db)
    assert (code, out) == (2, "")
    assert "no conversation 'conv_nope' in this store; `contextfold conversations list` shows the ids" in err


def test_usage_mistakes_exit_2(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["conversations", "search", "conv_x", "q", "--limit", "51", "--db", db])
    assert exited.value.code == 2
    assert "from 1 to 50" in capsys.readouterr().err
    conv = session(db)
    code, _, err = run(capsys, "conversations", "search", conv, "!!!", "--db", db)
    assert code == 2
    assert "no words to look for" in err


def test_a_busy_conversation_is_not_compacted_under_a_running_turn(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    conv = session(db)

    async def hold() -> None:
        store = await open_server_store(db)
        try:
            assert await store.leases.acquire(conv, "a-server", ttl=60)
        finally:
            await store.close()

    asyncio.run(hold())
    code, _, err = run(capsys, "conversations", "compact", conv, "--db", db)
    assert code == 2
    assert "busy" in err or "running" in err
