"""The grammar scans as they were before they were made resumable (`view/_scan.py`): the reference that the
resumed scans must match exactly, violation for violation (tests/test_send_path_incremental.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from contextfold.events import Item, ToolCall, ToolResult


def reference_items(items: Sequence[Item]) -> list[str]:
    """Violations of tool-call pairing in the items themselves."""
    out: list[str] = []
    calls: dict[str, ToolCall] = {}
    answered: set[str] = set()
    reported: set[str] = set()
    batches: set[str] = set()
    open_batch: str | None = None
    pending: list[str] = []  # unanswered calls of the open batch
    last: Item | None = None
    for item in items:
        if isinstance(item, ToolResult):
            if item.call_id not in calls:
                out.append(f"tool result seq {item.seq} answers call_id {item.call_id!r}, which has no earlier call")
            elif item.call_id in answered:
                out.append(f"call_id {item.call_id!r} is answered twice (again by seq {item.seq})")
            else:
                answered.add(item.call_id)
                if item.call_id in pending:
                    pending.remove(item.call_id)
        else:
            continuing = isinstance(item, ToolCall) and isinstance(last, ToolCall) and last.batch_id == item.batch_id
            if pending and not continuing:
                out.append(
                    f"batch {open_batch!r} is not fully answered before seq {item.seq}: "
                    f"calls {pending} have no result yet"
                )
                reported.update(pending)
                pending = []
            if isinstance(item, ToolCall):
                if item.call_id in calls:
                    out.append(f"call_id {item.call_id!r} is used by two calls (again at seq {item.seq})")
                calls[item.call_id] = item
                if not continuing:
                    if item.batch_id in batches:
                        out.append(f"calls of batch {item.batch_id!r} are not contiguous (seq {item.seq})")
                    batches.add(item.batch_id)
                    open_batch = item.batch_id
                pending.append(item.call_id)
        last = item
    out.extend(
        f"tool call {cid!r} (seq {call.seq}) has no result"
        for cid, call in calls.items()
        if cid not in answered and cid not in reported
    )
    return out


def reference_chat(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    out: list[str] = []
    ids: set[str] = set()
    calls: dict[str, bool] = {}  # tool_call ids of the closest assistant message with tool_calls -> answered
    calls_at = -1
    closed = True  # whether that message's unanswered calls were already reported
    in_run = False  # the previous message is that assistant message or one of its tool messages
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            cid = message.get("tool_call_id")
            if calls_at < 0:
                out.append(f"messages[{i}]: tool message {cid!r} has no earlier assistant message with tool_calls")
            elif cid not in calls:
                out.append(
                    f"messages[{i}]: tool message {cid!r} answers no tool_call of the closest preceding "
                    f"assistant message with tool_calls (messages[{calls_at}])"
                )
            elif calls[cid]:
                out.append(f"messages[{i}]: tool_call {cid!r} is answered twice")
            else:
                calls[cid] = True
            if calls_at >= 0 and not in_run:
                out.append(f"messages[{i}]: tool message {cid!r} does not directly follow its assistant message")
            continue
        if role not in ("system", "developer", "user", "assistant"):
            out.append(f"messages[{i}]: unknown role {role!r}")
        if not closed:
            _ref_unanswered(out, calls, calls_at, f"before messages[{i}]")
            closed = True
        in_run = False
        tool_calls = message.get("tool_calls")
        if role == "assistant" and tool_calls:
            calls = {}
            for call in tool_calls:
                cid = call.get("id")
                if cid in ids:
                    out.append(f"messages[{i}]: tool_call id {cid!r} is used twice")
                ids.add(cid)
                calls[cid] = False
            calls_at, closed, in_run = i, False, True
        elif role == "assistant" and not message.get("content"):
            out.append(f"messages[{i}]: assistant message has neither content nor tool_calls")
    if not closed:
        _ref_unanswered(out, calls, calls_at, "at the end of the messages")
    return out


def _ref_unanswered(out: list[str], calls: Mapping[str, bool], at: int, where: str) -> None:
    missing = [cid for cid, done in calls.items() if not done]
    if missing:
        out.append(f"messages[{at}]: tool_calls {missing} are not answered by tool messages {where}")
