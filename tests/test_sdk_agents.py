"""openai-agents (unmodified, in the SDK venv) against a real `contextfold serve` in front of an 8k-window fake
upstream: every way the SDK keeps a conversation, each for 40 turns with a planted fact and two client tools.

- `OpenAIConversationsSession`: stateless full-history requests, the output written back to a conversation
  (compaction items included), matched to the history they extend and folded incrementally;
- `conversation_id=` and `previous_response_id`: server-side history;
- `OpenAIResponsesCompactionSession` (over a SQLiteSession): `responses.compact` (by previous response, or with
  `store` off statelessly by input) replaces the session's items, and the next full-history request continues the
  compacted conversation.
"""

from __future__ import annotations

import pytest

from .sdk_harness import Stack, check_session, run_client, stack

__all__ = ["stack"]

TURNS = 40


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "stream"),
    [
        ("conversations", True),
        ("conversation_id", False),
        ("previous_response_id", True),
        ("compaction", False),
        ("compaction_input", True),
    ],
)
def test_an_agents_session_runs_far_past_the_window(stack: Stack, mode: str, stream: bool) -> None:
    report = run_client(stack, "agents_client.py", mode=mode, turns=TURNS, stream=stream)
    check_session(stack, report, turns=TURNS)
    if mode.startswith("compaction"):  # the session compacted through the server, and went on from the result
        assert "POST /v1/responses/compact 200" in stack.server.output()
    if stream:
        assert report["in_order"]
        assert {"response.created", "response.output_item.added", "response.completed"} <= set(report["event_types"])
