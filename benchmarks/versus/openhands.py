"""`versus openhands`: rebuilding and loading a conversation's view, contextfold beside the OpenHands SDK.

One neutral log per size and kind (`_neutral.py`: 1k, 10k and 100k events, with and without condensations; 1k and
10k with `--quick`) is written once and read by both systems, each in a process of its own (`_in_contextfold.py`
with this interpreter, `_in_openhands.py` in the SDK's Python 3.12 environment), which turns it into its own event
types and measures:
- rebuild: the view from the decoded events in memory (`View.replay` / `View.from_events`), median of REBUILDS;
- cold load: a freshly opened store to a view (`Conversation.load` on SQLite / `ConversationState.create` on the
  SDK's file-based event store, which reads the events and rebuilds the view), median of LOADS;
- memory: the process's resident memory grown by decoding the log, and by one cold load, per event of the log.
Each script runs three times per log, each a fresh process (`build`, `load`, `measure`), so memory one step freed
and the allocator kept cannot hide what the next allocates. Each store is built once through its own API and cached
beside the neutral log in `benchmarks/results/versus/`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .._report import Table
from .._stores import _SCHEMA_DIGEST, progress
from . import _neutral, _venv

REBUILDS = 7
"""Rebuilds in memory per log (cheap; the median of several evens out the first run's allocation and GC)."""
LOADS = 3
RUNS = (str(REBUILDS), str(LOADS))
LOG = ["events", "condensations"]
ROOT = Path(__file__).resolve().parents[2]
OPENHANDS_STORE_VERSION = 1
"""Bump when `_in_openhands.py` changes what it stores, so cached stores are built again."""


def _result(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(command[:3])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return result


async def _pair(events: int, condensations: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    log = await _neutral.write(events, condensations)
    stem = log.stem.removeprefix("neutral-")
    ours_store = log.with_name(f"contextfold-{stem}-m{_SCHEMA_DIGEST}.db")
    ours_command = [sys.executable, "-m", "benchmarks.versus._in_contextfold"]
    python = _venv.ensure(_venv.OPENHANDS)
    theirs_command = [str(python), str(Path(__file__).with_name("_in_openhands.py"))]
    theirs_store = log.with_name(f"openhands-{stem}-o{OPENHANDS_STORE_VERSION}")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "OPENHANDS_SUPPRESS_BANNER": "1"}
    env.pop("PYTHONPATH", None)  # nothing of this repository's environment in theirs
    ours: dict[str, Any] = {}
    theirs: dict[str, Any] = {}
    for mode in ("build", "load", "measure"):  # each in a fresh process: see `_in_contextfold.measure`
        ours |= _result([*ours_command, mode, str(log), str(ours_store), *RUNS])
        theirs |= _result([*theirs_command, mode, str(log), str(theirs_store), *RUNS], env)
    return ours, theirs


def _versus(measure: str, unit: str = "ms") -> list[str]:
    """Column names: contextfold's figure, OpenHands', and how far ahead contextfold is."""
    unit = f" {unit}" if unit else ""
    return [f"{measure}: contextfold{unit}", f"{measure}: OpenHands{unit}", f"{measure}: ahead by"]


def _ratio(ours: float, theirs: float) -> str:
    return "—" if ours <= 0 else f"x{theirs / ours:.1f}"


async def run(quick: bool) -> list[Table]:
    sizes = (1_000, 10_000) if quick else (1_000, 10_000, 100_000)
    times = Table(
        f"versus OpenHands SDK: rebuild (median of {REBUILDS}) and cold load (median of {LOADS}) of one view",
        [*LOG, *_versus("rebuild"), *_versus("cold load"), "load = replay"],
    )
    memory = Table(
        "versus OpenHands SDK: memory and store per event of the log",
        [
            *LOG,
            *_versus("decoded log", "B/event"),
            *_versus("after cold load", "B/event"),
            *_versus("store", "B/event")[:2],
            *_versus("events stored", "")[:2],
            *_versus("view items", "")[:2],
        ],
    )
    files = (0.0, 0.0)
    for events in sizes:
        for condensations in (True, False):
            progress(f"versus openhands: {events:,} events, {'with' if condensations else 'no'} condensations")
            ours, theirs = await _pair(events, condensations)
            label = "yes" if condensations else "no"
            times.add(
                events,
                label,
                round(ours["rebuild_ms"], 2),
                round(theirs["rebuild_ms"], 2),
                _ratio(ours["rebuild_ms"], theirs["rebuild_ms"]),
                round(ours["cold_ms"], 2),
                round(theirs["cold_ms"], 2),
                _ratio(ours["cold_ms"], theirs["cold_ms"]),
                "✓" if ours["load_equals_replay"] else "✗ differs",
            )
            per = {
                key: (ours[key] / events, theirs[key] / events) for key in ("log_bytes", "load_bytes", "store_bytes")
            }
            memory.add(
                events,
                label,
                round(per["log_bytes"][0]),
                round(per["log_bytes"][1]),
                _ratio(*per["log_bytes"]),
                round(per["load_bytes"][0]),
                round(per["load_bytes"][1]),
                _ratio(*per["load_bytes"]),
                round(per["store_bytes"][0]),
                round(per["store_bytes"][1]),
                ours["events_stored"],
                theirs["events_stored"],
                ours["cold_view_items"],
                theirs["cold_view_items"],
            )
            files = (ours["store_file_bytes"] / events, theirs["store_file_bytes"] / events)
            await asyncio.sleep(0)
    times.notes.append(
        f"Installed: {_venv.installed(_venv.OPENHANDS)}. The same neutral log (benchmarks/_workload.py's agent "
        f"turns; condensations as contextfold's default policy makes them for a {_neutral.BUDGET:,}-token budget: "
        "masking, then the deterministic digest) is read by each system in its own process and turned into its own "
        "event types. Rebuild: the view from the decoded events in memory (`View.replay` / `View.from_events`). "
        "Cold load: a newly opened store to a view (`Conversation.load` on SQLite, which reads from the newest "
        "compaction on / `ConversationState.create` on the SDK's file-based event store, which reads every event "
        "file and runs `rebuild_view`); files stay in the OS page cache for both. 'ahead by' = OpenHands' figure "
        "over contextfold's."
    )
    memory.notes.append(
        "Memory: growth of the process's resident set (after a garbage collection) while decoding the whole log, "
        "and during one cold load, each in a fresh process, divided by the events of the neutral log. Store: disk "
        "blocks allocated (SQLite after a WAL checkpoint, with its full-text index for recall; the SDK's event "
        "files, one per event, and its base state). The SDK stores no usage events (it keeps totals in its base "
        "state) and no separate reasoning events (reasoning rides on the next agent event); its view keeps whole "
        "the tool outputs contextfold masks, and the items of interrupted turns, which contextfold's view drops."
    )
    memory.notes.append(
        f"Store by file size rather than blocks ({sizes[-1]:,} events, no condensations): contextfold "
        f"{files[0]:,.0f} B/event, the SDK "
        f"{files[1]:,.0f} B/event. The SDK's JSON files are smaller than contextfold's database, which also holds "
        "a full-text index of everything (for recall) and the checkpoints; the SDK's files take whole disk blocks."
    )
    return [times, memory]
