"""contextfold's side of the `versus openhands` measurements, in a process of its own like the SDK's side.

    python -m benchmarks.versus._in_contextfold build|load|measure NEUTRAL_LOG STORE_DB REBUILDS LOADS

Reads the neutral log (see `_neutral.py`) into contextfold events and prints one JSON object with the same keys as
`_in_openhands.py`. `build`: the SQLite store, built once (cached at STORE_DB). `load`: memory one cold load holds.
`measure`: memory the decoded log holds, `View.replay` over it (median of REBUILDS) and cold loads (median of LOADS:
`Conversation.load` on a store opened just before, which reads the newest compaction, what it kept and what
followed, a checkpoint); the cold load's view is compared with the full replay.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from contextfold import Conversation, View
from contextfold.events import (
    AnyEvent,
    Compaction,
    ConfigChange,
    Message,
    Reasoning,
    TextPart,
    ToolCall,
    ToolResult,
    ToolSpec,
    TurnMarker,
    Usage,
)
from contextfold.store import SQLiteStore

from .._stores import sqlite_size
from ._neutral import read

CONVERSATION = "conv_versus"
BATCH = 10_000


def event(record: dict[str, Any], seq: int) -> AnyEvent:
    """One neutral record as the contextfold event it stands for, stamped as the store would hand it back."""
    kind = record["kind"]
    envelope: dict[str, Any] = {
        "id": record["id"],
        "seq": seq,
        "turn_id": record["turn"],
        "created_at": record["at"],
        "tokens": record["tokens"],
        "conversation_id": CONVERSATION,
    }
    if kind == "message":
        return Message(role=record["role"], content=[TextPart(record["text"])], **envelope)
    if kind == "tool_call":
        fields = {"call_id": record["call_id"], "name": record["name"], "arguments": record["arguments"]}
        return ToolCall(batch_id=record["batch"], **fields, **envelope)
    if kind == "tool_result":
        fields = {"call_id": record["call_id"], "output": record["output"], "summary": record["summary"]}
        return ToolResult(is_error=record["is_error"], **fields, **envelope)
    if kind == "reasoning":
        return Reasoning(provider=record["provider"], data=record["data"], **envelope)
    if kind == "turn":
        return TurnMarker(status=record["status"], reason=record["reason"], **envelope)
    if kind == "usage":
        reported = {"input_tokens": record["input_tokens"], "output_tokens": record["output_tokens"]}
        estimated = record["estimated_input_tokens"]
        return Usage(model=record["model"], estimated_input_tokens=estimated, **reported, **envelope)
    if kind == "system":
        tools = [msgspec.convert(tool, ToolSpec) for tool in record["tools"]]
        return ConfigChange(system_prompt=record["text"], tools=tools, **envelope)
    if kind == "condensation":
        return msgspec.convert({**record["checkpoint"], **envelope}, Compaction)
    raise ValueError(f"unknown neutral record kind {kind!r}")


def _rss() -> int:
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _build(events: list[AnyEvent], store_path: Path) -> float:
    scratch = store_path.with_name(store_path.name + ".building")
    for leftover in scratch.parent.glob(scratch.name + "*"):
        leftover.unlink()
    started = time.perf_counter()
    store = await SQLiteStore.open(scratch)
    try:
        await store.conversations.create(CONVERSATION)
        for start in range(0, len(events), BATCH):
            await store.append(CONVERSATION, events[start : start + BATCH], start)
    finally:
        await store.close()
    scratch.replace(store_path)
    return time.perf_counter() - started


async def measure(mode: str, log: Path, store_path: Path, rebuilds: int, loads: int) -> dict[str, Any]:
    """One of three steps, each in a fresh process so one's memory does not hide another's (see `openhands.py`)."""
    if mode == "build":  # only called when the store is not built yet
        events = _decode(log)
        return {"events_stored": len(events), "build_s": await _build(events, store_path)}
    if mode == "load":
        store = await SQLiteStore.open(store_path)
        before = _rss()
        conversation = await Conversation.load(store, CONVERSATION)
        result = {"load_bytes": _rss() - before, "cold_view_items": len(conversation.view.items)}
        await store.close()
        return result
    before = _rss()
    events = _decode(log)
    log_bytes = _rss() - before
    rebuild = []
    for _ in range(rebuilds):
        gc.collect()
        started = time.perf_counter()
        view = View.replay(events)
        rebuild.append(time.perf_counter() - started)
    reference, view_items = view.state(), len(view.items)
    del view, events
    cold, same = [], True
    for _ in range(loads):
        gc.collect()
        store = await SQLiteStore.open(store_path)
        started = time.perf_counter()
        conversation = await Conversation.load(store, CONVERSATION)
        cold.append(time.perf_counter() - started)
        same = same and conversation.view.state() == reference
        await store.close()
        del conversation
    return {
        "rebuild_ms": statistics.median(rebuild) * 1000,
        "cold_ms": statistics.median(cold) * 1000,
        "log_bytes": log_bytes,
        "view_items": view_items,
        "store_bytes": _allocated(store_path),
        "store_file_bytes": sqlite_size(store_path),
        "load_equals_replay": same,
    }


def _allocated(store_path: Path) -> int:
    """Bytes the database takes on disk (allocated blocks), once its WAL is checkpointed into it."""
    sqlite_size(store_path)
    return sum(p.stat().st_blocks * 512 for p in store_path.parent.glob(store_path.name + "*"))


def _decode(log: Path) -> list[AnyEvent]:
    return [event(record, seq) for seq, record in enumerate(read(log), 1)]


if __name__ == "__main__":
    mode, log, store_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    rebuilds, loads = int(sys.argv[4]), int(sys.argv[5])
    if mode == "build" and store_path.exists():
        result: dict[str, Any] = {"events_stored": sum(1 for _ in read(log)), "build_s": None}
    else:
        result = asyncio.run(measure(mode, log, store_path, rebuilds, loads))
    print("RESULT " + json.dumps(result), flush=True)
