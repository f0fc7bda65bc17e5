"""Counts agree with their nouns in everything the CLI prints: "1 event", never "1 events"."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contextfold import Conversation
from contextfold.cli._chat_commands import status_line
from contextfold.cli._words import counted
from contextfold.events import user
from contextfold.store import open_server_store

from .test_cli_conversations import run


@given(st.integers(0, 10**9))
def test_a_count_takes_the_singular_only_for_one(n: int) -> None:
    assert counted(n, "event") == f"{n:,} event" + ("" if n == 1 else "s")
    assert counted(n, "summary", "summaries").endswith("summary" if n == 1 else "summaries")


def _one_event(db: str) -> str:
    async def make() -> str:
        store = await open_server_store(db)
        try:
            conversation = await Conversation.create(store)
            await conversation.append(user("just one"))
            return conversation.id
        finally:
            await store.close()

    return asyncio.run(make())


def test_a_log_of_one_event_is_one_event_in_show_export_and_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, file = str(tmp_path / "one.db"), tmp_path / "one.jsonl"
    conversation = _one_event(db)
    code, out, _ = run(capsys, "conversations", "show", conversation, "--db", db)
    assert code == 0
    assert f"{conversation} (1 event)" in " ".join(out.split())  # the title wraps to the table's width
    code, _, err = run(capsys, "conversations", "export", conversation, "--db", db, "-o", str(file))
    assert code == 0
    assert "wrote 1 event to" in err
    code, _, err = run(capsys, "conversations", "import", str(file), "--new-id", "--db", str(tmp_path / "two.db"))
    assert code == 0
    assert "imported 1 event as" in err


def test_the_chat_status_line_says_one_compaction() -> None:
    context = {
        "tokens": {"total": 1_200},
        "budget": 3_000,
        "context_window": 4_096,
        "utilisation": 40.0,
        "totals": {"compactions": 1},
        "conversation_id": "conv_x",
    }
    assert "· 1 compaction ·" in status_line(context)
    assert "· 2 compactions ·" in status_line({**context, "totals": {"compactions": 2}})
