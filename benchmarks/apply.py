"""`apply`: the cost of folding one event into a view, on a realistic log held in memory.

The logs come from `_workload` (stamped as a store hands them back). `View.replay` over the whole log is timed
several times and the median divided by the number of events; one more, instrumented pass times every event on its
own to show where the time goes by event type (that pass carries ~0.1 µs of timer overhead per event).
"""

from __future__ import annotations

import time
from collections import defaultdict
from functools import partial

from contextfold import View
from contextfold.events import AnyEvent, TurnMarker

from ._report import Table, median, target, timed
from ._stores import Context
from ._workload import Workload

TARGET_US = 5.0
RUNS = 7


def _by_type(events: list[AnyEvent]) -> dict[str, tuple[int, float]]:
    view, clock = View(), time.perf_counter
    spent: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for event in events:
        started = clock()
        view.apply(event)
        kind = event.type_name()
        if isinstance(event, TurnMarker) and event.status in ("failed", "interrupted"):
            kind += f" ({event.status})"
        spent[kind] += clock() - started
        count[kind] += 1
    return {name: (count[name], spent[name]) for name in count}


async def run(ctx: Context) -> list[Table]:
    size = 50_000 if ctx.quick else 200_000
    summary = Table(
        f"apply: View.apply per event, in memory ({size:,}-event logs, median of {RUNS} replays)",
        ["log", "events", "turns", "compactions", "view items at end", "µs/event", "best µs/event", "target"],
    )
    breakdown = Table(
        "apply: where the time goes, by event type (one instrumented replay)",
        ["log", "event type", "events", "share of events", "mean µs", "share of time"],
    )
    for compactions in (True, False):
        workload = Workload(seed=1, compactions=compactions)
        events = await workload.take(size)
        name = "with compactions" if compactions else "no compactions"
        times = timed(partial(View.replay, events), RUNS)
        per_event = median(times) / len(events) * 1e6
        summary.add(
            name,
            len(events),
            workload.turns,
            workload.compaction_count,
            len(workload.view.items),
            per_event,
            min(times) / len(events) * 1e6,
            target(per_event, TARGET_US, "µs"),
        )
        types = _by_type(events)
        total = sum(spent for _, spent in types.values())
        for kind, (count, spent) in sorted(types.items(), key=lambda item: -item[1][1]):
            breakdown.add(name, kind, count, f"{count / len(events):.1%}", spent / count * 1e6, f"{spent / total:.1%}")
    summary.notes.append(
        "Turns carry 0-4 parallel tool batches (1-4 calls, outputs 0.5-4 KB), a usage event per model request; "
        "1% of turns are interrupted. Compactions: `compact(trigger='auto')` with the default policy, a 128k-token "
        "budget and no summariser (masking, then the deterministic digest)."
    )
    return [summary, breakdown]
