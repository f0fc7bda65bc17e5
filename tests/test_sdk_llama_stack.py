"""llama-stack-client 0.7 (unmodified, Python 3.12, in the SDK venv) on its own `LlamaStackClient` against a real
`contextfold serve` in front of an 8k-window fake upstream: `Agent` and `AsyncAgent`, streamed and not, two
sessions, client tools in multi-step loops, 40 turns with a planted fact; and every event and object it reads
validated with its own models.
"""

from __future__ import annotations

import pytest

from .sdk_clients.scenario import FACT_VALUE
from .sdk_harness import Stack, check_session, run_client, stack

__all__ = ["stack"]

TURNS = 40


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "stream"), [("sync", True), ("sync", False), ("async", True)])
def test_a_llama_stack_agent_runs_far_past_the_window(stack: Stack, mode: str, stream: bool) -> None:
    report = run_client(stack, "llama_client.py", mode=mode, turns=TURNS, stream=stream)
    if "sdk_bug" in report:
        # llama-stack-client 0.7.5's AsyncAgent reads its AsyncStream with a plain `for` (and awaits an
        # `initialize` it never defines): it cannot finish a turn against any server. The failure must be inside
        # the SDK, after our server answered; once the SDK is fixed this runs the whole session.
        assert "llama_stack_client" in report["in"], report
        assert all(r.status == 200 for r in stack.upstream.requests), "the server's side must have worked"
        pytest.xfail(f"llama-stack-client's AsyncAgent is broken in the SDK itself: {report['sdk_bug']}")
    check_session(stack, report, turns=TURNS)
    hello, asked = report["others"]
    assert hello.strip()
    assert FACT_VALUE not in asked  # the other session never saw the fact: sessions are separate conversations
    if stream:
        for kinds in report["kinds"]:
            assert kinds[0] == "turn_started"
            assert kinds[-1] == "turn_completed"
        tool_turn = report["kinds"][1]
        assert tool_turn.count("step_started") == tool_turn.count("step_completed") >= 3  # inference, tools, ...


def test_every_event_and_object_parses_with_llama_stack_models(stack: Stack) -> None:
    report = run_client(stack, "llama_client.py", mode="contract")
    assert report["unknown"] == []
    assert {
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.content_part.done",
        "response.output_item.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.completed",
    } <= set(report["checked"])
    assert report["items"] > 0
