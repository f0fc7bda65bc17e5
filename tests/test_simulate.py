"""The long scripted session (the README's main job) through the runtime: 300 turns with tool calls and large tool
outputs in a 16k-token window, checked against the log it leaves."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from contextfold import Conversation, open_store
from contextfold.cli._simulate import SimulationOptions, simulate
from contextfold.compaction import CompactionPolicy
from contextfold.events import Compaction, ToolResult, Usage
from contextfold.runtime._builtin import builtin_tools
from contextfold.view._tokens import tools_tokens


async def test_a_300_turn_session_stays_in_budget_compacts_by_policy_and_recalls(tmp_path: Path) -> None:
    options = SimulationOptions(db=str(tmp_path / "sim.db"), turns=300, window=16_000)
    report = await simulate(options)
    budget = options.window - options.reserved_output
    policy = CompactionPolicy()
    assert report.recall_found
    assert report.requests == report.grammar_checks == 600
    assert 0 < report.peak_utilisation <= 1.0
    assert report.over_threshold < report.requests // 20

    store = await open_store(options.db)
    try:
        log = await store.read(report.conversation_id)
    finally:
        await store.close()
    sent = [e.input_tokens for e in log if isinstance(e, Usage)]
    assert len(sent) == 600
    assert max(sent) <= budget  # every window sent was inside the budget
    compactions = [e for e in log if isinstance(e, Compaction)]
    assert len(compactions) > 50
    # The built-in tools' schemas, offered once history was folded, take their share of the budget.
    builtins = tools_tokens([t.spec for t in builtin_tools(cast(Conversation, None), expand_tokens=1)])
    for event in compactions:
        assert event.trigger == "auto"
        assert event.tokens_before > policy.threshold * (budget - builtins)  # only when the policy said so
        assert event.tokens_after <= budget
    summaries = [e for e in compactions if e.strategy == "summary"]
    assert summaries
    assert all(e.error is None for e in summaries)
    assert sum(e.tokens_after <= policy.target * budget for e in compactions) > len(compactions) // 2
    outputs = [e for e in log if isinstance(e, ToolResult)]
    assert len(outputs) > 300
    assert max(len(e.output) for e in outputs) > 3_000
