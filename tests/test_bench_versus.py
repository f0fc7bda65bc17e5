"""The side-by-side benchmarks' own logic: the neutral log carries the conversation whole, the counts are right.

No timings here: only that what the benchmarks compare is the same conversation, and that the correctness row
counts what it says it counts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks._workload import Workload
from benchmarks.versus import _drive, _in_contextfold, _neutral

from contextfold import View


async def test_the_neutral_log_rebuilds_the_generated_conversation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_neutral, "DIR", tmp_path)
    log = await _neutral.write(600, condensations=True)
    records = list(_neutral.read(log))
    events = [_in_contextfold.event(record, seq) for seq, record in enumerate(records, 1)]

    generated = await Workload(seed=1, compactions=True, budget=_neutral.BUDGET).take(600)
    assert View.replay(events).state() == View.replay(generated).state()
    condensations = [r for r in records if r["kind"] == "condensation"]
    assert condensations, "a 600-event log at this budget compacts"
    assert any(r["forgotten"] for r in condensations), "some condensation removes items from the view"
    assert await _neutral.write(600, condensations=True) == log  # cached, not written again


def test_a_question_counts_as_whole_only_when_its_own_answer_follows_it() -> None:
    texts = [
        ("user", "q1"),
        ("user", "q2"),
        ("assistant", "answer to: q2"),
        ("assistant", "answer to: q1"),
    ]
    assert not _drive._answered_in_place(texts, "q1")
    assert _drive._answered_in_place(texts, "q2")
