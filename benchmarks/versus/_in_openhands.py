"""Runs inside the OpenHands SDK's Python 3.12 environment: its side of the `versus openhands` measurements.

    <venv>/bin/python benchmarks/versus/_in_openhands.py build|load|measure NEUTRAL_LOG STORE_DIR REBUILDS LOADS

Reads the neutral log (see `_neutral.py`), turns every record into the SDK's own event types, and prints one JSON
object (on a line starting `RESULT `). `build`: the file-based event store, built once through `ConversationState`
and `EventLog.append` (cached in STORE_DIR). `load`: memory one cold load holds. `measure`: memory the decoded log
holds, `View.from_events` over it (median of REBUILDS) and cold loads (median of LOADS: `ConversationState.create`
on the directory, which reads the events and rebuilds the view with `rebuild_view`).

How the records map: messages are `MessageEvent`s; tool calls `ActionEvent`s (no executable action: the log is
replayed, not run) and results `ObservationEvent`s; reasoning rides on the next agent event, as the SDK stores it;
turn starts and ends are the `execution_status` state updates the SDK writes around each run, an interrupted turn an
`InterruptEvent`; usage reports are not events in the SDK (it keeps running totals in its base state), so they are
left out; a condensation is a `Condensation` naming the events it forgets, with its summary and offset.

Nothing here imports contextfold or the benchmarks package: this environment has neither.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

# litellm (imported by the SDK) fetches a model price list over the network at import unless told to use its own
# copy; without network its retry thread can also deadlock the import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENHANDS_SUPPRESS_BANNER", "1")
# Run as a script, this file's folder comes first on the path, and its `openhands.py` would shadow the SDK.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from openhands.sdk import LLM, Agent  # type: ignore[import-not-found]  # noqa: E402
from openhands.sdk.context.view import View  # type: ignore[import-not-found]  # noqa: E402
from openhands.sdk.conversation.state import ConversationState  # type: ignore[import-not-found]  # noqa: E402
from openhands.sdk.event import (  # type: ignore[import-not-found]  # noqa: E402
    ActionEvent,
    Condensation,
    ConversationStateUpdateEvent,
    InterruptEvent,
    MessageEvent,
    ObservationEvent,
    SystemPromptEvent,
)
from openhands.sdk.llm import (  # type: ignore[import-not-found]  # noqa: E402
    Message,
    MessageToolCall,
    ReasoningItemModel,
    TextContent,
)
from openhands.sdk.tool.schema import Observation  # type: ignore[import-not-found]  # noqa: E402
from openhands.sdk.workspace import LocalWorkspace  # type: ignore[import-not-found]  # noqa: E402

CONVERSATION = uuid.UUID(int=7)


class ToolOutput(Observation):  # type: ignore[misc]
    """A tool's text output, as any of the SDK's tools would return it."""


def _id(neutral_id: str) -> str:
    # The file store accepts only hexadecimal ids (it parses them out of file names).
    return str(uuid.uuid5(uuid.NAMESPACE_OID, neutral_id))


class Converter:
    """Neutral records to SDK events, in order (a tool result needs its call's name and event id)."""

    def __init__(self) -> None:
        self.calls: dict[str, tuple[str, str]] = {}
        self.reasoning: ReasoningItemModel | None = None
        self.summary_id: str | None = None

    def event(self, record: dict[str, Any]) -> Any | None:
        kind, eid = record["kind"], _id(record["id"])
        if kind == "system":
            return SystemPromptEvent(id=eid, system_prompt=TextContent(text=record["text"] or ""), tools=[])
        if kind == "message":
            if record["role"] == "user":
                message = Message(role="user", content=[TextContent(text=record["text"])])
                return MessageEvent(id=eid, source="user", llm_message=message)
            reasoning, self.reasoning = self.reasoning, None
            text = [TextContent(text=record["text"])]
            message = Message(role="assistant", content=text, responses_reasoning_item=reasoning)
            return MessageEvent(id=eid, source="agent", llm_message=message)
        if kind == "reasoning":
            self.reasoning = ReasoningItemModel(id=record["id"], **record["data"])
            return None
        if kind == "tool_call":
            self.calls[record["call_id"]] = (record["name"], eid)
            call = MessageToolCall(
                id=record["call_id"], name=record["name"], arguments=record["arguments"], origin="completion"
            )
            reasoning, self.reasoning = self.reasoning, None
            return ActionEvent(
                id=eid,
                thought=[],
                tool_name=record["name"],
                tool_call_id=record["call_id"],
                tool_call=call,
                llm_response_id=record["batch"],
                responses_reasoning_item=reasoning,
            )
        if kind == "tool_result":
            name, action_id = self.calls.pop(record["call_id"])
            output = ToolOutput(content=[TextContent(text=record["output"])], is_error=record["is_error"])
            return ObservationEvent(
                id=eid, tool_name=name, tool_call_id=record["call_id"], action_id=action_id, observation=output
            )
        if kind == "turn":
            if record["status"] == "interrupted":
                return InterruptEvent(id=eid)
            status = {"started": "running", "completed": "finished"}.get(record["status"], "error")
            return ConversationStateUpdateEvent(id=eid, key="execution_status", value=status)
        if kind == "usage":
            return None
        if kind == "condensation":
            forgotten = {_id(i) for i in record["forgotten"]}
            summary = record["summary"]
            if summary is not None and self.summary_id is not None:
                forgotten.add(self.summary_id)  # the new summary replaces the old one
            if summary is not None:
                self.summary_id = f"{eid}-summary"
            return Condensation(
                id=eid,
                forgotten_event_ids=forgotten,
                summary=summary,
                summary_offset=None if summary is None else 1 + record["summary_offset"],  # after the system prompt
                llm_response_id=eid,
            )
        raise ValueError(f"unknown neutral record kind {kind!r}")


def _rss() -> int:
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _decode(log: Path) -> list[Any]:
    converter, events = Converter(), []
    with log.open() as lines:
        for line in lines:
            event = converter.event(json.loads(line))
            if event is not None:
                events.append(event)
    return events


def _build(events: list[Any], store: Path) -> float:
    """The SDK's file store for the log, through its own API; seconds taken."""
    scratch = store.with_name(store.name + ".building")
    shutil.rmtree(scratch, ignore_errors=True)
    started = time.perf_counter()
    agent = Agent(llm=LLM(model="openai/bench", api_key="bench", usage_id="bench"), tools=[])
    state = ConversationState.create(
        id=CONVERSATION, agent=agent, workspace=LocalWorkspace(working_dir=str(scratch)), persistence_dir=str(scratch)
    )
    # Building is not measured: skip the fsync of every event file (the files written are the same).
    fsync, os.fsync = os.fsync, lambda fd: None
    try:
        for event in events:
            state.events.append(event)
    finally:
        os.fsync = fsync
    scratch.replace(store)
    return time.perf_counter() - started


def _load(store: Path) -> Any:
    return ConversationState.create(
        id=CONVERSATION, agent=None, workspace=LocalWorkspace(working_dir=str(store)), persistence_dir=str(store)
    )


def measure(mode: str, log: Path, store: Path, rebuilds: int, loads: int) -> dict[str, Any]:
    """One of three steps, each in a fresh process so one's memory does not hide another's (see `openhands.py`)."""
    if mode == "build" and store.exists():
        with log.open() as lines:  # what `Converter` keeps, without building the events
            kept = sum(json.loads(line)["kind"] not in ("usage", "reasoning") for line in lines)
        return {"events_stored": kept, "build_s": None}
    if mode == "build":
        events = _decode(log)
        return {"events_stored": len(events), "build_s": _build(events, store)}
    if mode == "load":
        before = _rss()
        state = _load(store)
        return {"load_bytes": _rss() - before, "cold_view_items": len(state.view.events)}
    before = _rss()
    events = _decode(log)
    log_bytes = _rss() - before
    rebuild = []
    for _ in range(rebuilds):
        gc.collect()
        started = time.perf_counter()
        view = View.from_events(events)
        rebuild.append(time.perf_counter() - started)
    view_items = len(view.events)
    del view, events
    cold = []
    for _ in range(loads):
        gc.collect()
        started = time.perf_counter()
        state = _load(store)
        cold.append(time.perf_counter() - started)
        del state
    return {
        "rebuild_ms": statistics.median(rebuild) * 1000,
        "cold_ms": statistics.median(cold) * 1000,
        "log_bytes": log_bytes,
        "view_items": view_items,
        "store_bytes": sum(f.stat().st_blocks * 512 for f in store.rglob("*") if f.is_file()),  # allocated
        "store_file_bytes": sum(f.stat().st_size for f in store.rglob("*") if f.is_file()),
    }


if __name__ == "__main__":
    result = measure(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    print("RESULT " + json.dumps(result), flush=True)  # the SDK logs to stdout too
