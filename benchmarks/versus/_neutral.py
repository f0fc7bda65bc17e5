"""One synthetic agent log as neutral JSON lines, so contextfold and the OpenHands SDK load the same conversation.

The log comes from `benchmarks/_workload.py` (the generator every other section uses: turns with parallel tool
batches, outputs of 0.5-4 KB, usage reports, 1% interrupted turns; compactions as `Conversation.fit` makes them).
Each event becomes one JSON object with a `kind` and plain fields; each system turns those into its own event types
inside its own process (`_in_contextfold.py`, `_in_openhands.py`).

A compaction is where the two systems' vocabularies differ, so its record carries both descriptions of one change:
- `forgotten` (event ids that leave the view), `summary` (the new summary, or null when it did not change) and
  `summary_offset` (how many of the view's items precede the summary): what an OpenHands `Condensation` records;
- `checkpoint`: what a contextfold `Compaction` records (what the view keeps, masks and covers, by log position).
Tool results a compaction masks have no OpenHands counterpart; they stay whole in its view.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from contextfold import View
from contextfold.events import (
    AnyEvent,
    Compaction,
    ConfigChange,
    Message,
    Reasoning,
    TextPart,
    ToolCall,
    ToolResult,
    TurnMarker,
    Usage,
)

from .._stores import RESULTS, WORKLOAD_VERSION
from .._workload import Workload

NEUTRAL_VERSION = 1
"""Bump when the neutral format changes, so cached logs are written again."""
BUDGET = 32_000
"""The context budget of the logs with condensations: small enough that a 1,000-event log already compacts."""
DIR = RESULTS / "versus"
_ENVELOPE = ("id", "seq", "turn_id", "created_at", "tokens")


def path(events: int, condensations: bool) -> Path:
    key = f"{events}-{'c' if condensations else 'n'}-s1-b{BUDGET}-w{WORKLOAD_VERSION}-v{NEUTRAL_VERSION}"
    return DIR / f"neutral-{key}.jsonl"


async def write(events: int, condensations: bool) -> Path:
    """The neutral log of `events` events, written once and cached; its path."""
    target = path(events, condensations)
    if target.exists():
        return target
    DIR.mkdir(parents=True, exist_ok=True)
    workload = Workload(seed=1, compactions=condensations, budget=BUDGET)
    view = View()  # a replica, to see what each compaction removes from the view
    scratch = target.with_suffix(".partial")
    with scratch.open("w") as out:
        done = 0
        while done < events:
            batch = await workload.take(min(10_000, events - done))
            done += len(batch)
            for event in batch:
                before = dict(view.items)
                view.apply(event)
                out.write(json.dumps(_record(event, before, view), separators=(",", ":")) + "\n")
    scratch.replace(target)
    return target


def read(log: Path) -> Iterator[dict[str, Any]]:
    with log.open() as lines:
        for line in lines:
            yield json.loads(line)


def _record(event: AnyEvent, before: dict[int, Any], after: View) -> dict[str, Any]:
    envelope: dict[str, Any] = {"id": event.id, "at": event.created_at, "tokens": event.tokens, "turn": event.turn_id}
    match event:
        case Message(role=role, content=content):
            text = "".join(part.text for part in content if isinstance(part, TextPart))
            return {"kind": "message", **envelope, "role": role, "text": text}
        case ToolCall():
            fields = {"call_id": event.call_id, "name": event.name, "arguments": event.arguments}
            return {"kind": "tool_call", **envelope, **fields, "batch": event.batch_id}
        case ToolResult():
            output = {"call_id": event.call_id, "output": event.output, "summary": event.summary}
            return {"kind": "tool_result", **envelope, **output, "is_error": event.is_error}
        case Reasoning():
            return {"kind": "reasoning", **envelope, "provider": event.provider, "data": event.data}
        case TurnMarker():
            return {"kind": "turn", **envelope, "status": event.status, "reason": event.reason}
        case Usage():
            reported = {"input_tokens": event.input_tokens, "output_tokens": event.output_tokens}
            estimated = {"estimated_input_tokens": event.estimated_input_tokens}
            return {"kind": "usage", **envelope, "model": event.model, **reported, **estimated}
        case ConfigChange():
            tools = msgspec.to_builtins(event.tools) if isinstance(event.tools, list) else []
            prompt = event.system_prompt if isinstance(event.system_prompt, str) else None
            return {"kind": "system", **envelope, "text": prompt, "tools": tools}
        case Compaction():
            forgotten = [item.id for seq, item in before.items() if seq not in after.items]
            split = after.split_seq()
            checkpoint = {k: v for k, v in msgspec.to_builtins(event).items() if k not in (*_ENVELOPE, "type")}
            return {
                "kind": "condensation",
                **envelope,
                "forgotten": forgotten,
                "summary": event.summary,
                "summary_offset": sum(1 for seq in after.items if seq <= split),
                "masked": [after.items[seq].id for seq in event.masked if seq in after.items],
                "checkpoint": checkpoint,
            }
    raise TypeError(f"the workload wrote an event the neutral log has no kind for: {type(event).__name__}")
