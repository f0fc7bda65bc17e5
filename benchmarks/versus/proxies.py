"""`versus proxies`: contextfold's proxy beside the compaction proxies users pick instead and the floor, on the same
growing Chat Completions history, interleaved request by request (see `benchmarks/_interleave.py`).

Every system is its own process on loopback in front of the same zero-latency fake upstream: the floor
pass-through, `contextfold serve` on SQLite, and each peer from its own Python 3.12 environment with its compaction
held off (`_peers.py`). Rows: added p50/p95 over the upstream alone at ~22, ~244 and ~422 KB histories, as a
multiple of the floor's, and by how much contextfold is ahead of each peer; plus whether each one really streams
(the upstream holds its answer's end back; see `_interleave.streams`).
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path

from .._interleave import DIRECT, FLOOR, Target, added, chat_history, size_windows, streaming_cell, streams
from .._processes import floor_process, serving, upstream_process
from .._report import Table
from .._stores import progress
from ..proxy import SIZES, latency_table, shape
from . import _peers, _venv

CONTEXTFOLD = "contextfold"


async def run(quick: bool) -> list[Table]:
    count, padding, width = shape(quick)
    for env, _ in _peers.PEERS.values():
        _venv.ensure(env)  # built before anything is timed
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="contextfold-versus-")))
        upstream = stack.enter_context(upstream_process())
        floor = stack.enter_context(floor_process(upstream))
        ours = stack.enter_context(serving(str(scratch / "contextfold.db"), upstream))
        targets = [
            Target(DIRECT, upstream),
            Target(FLOOR, floor.url + "/v1", floor.pid),
            Target(CONTEXTFOLD, ours.url + "/v1", ours.pid),
        ]
        for name, (_, launch) in _peers.PEERS.items():
            workdir = scratch / name.replace(" ", "-")
            workdir.mkdir()
            progress(f"versus proxies: starting {name}")
            proc = stack.enter_context(launch(workdir, upstream))
            targets.append(Target(name, proc.url + "/v1", proc.pid))
        progress(f"versus proxies: {count:,} requests interleaved over {len(targets)} systems")
        history = await chat_history(targets, count, padding)
        streamed = {t.name: await streams(t) for t in targets[1:]}
    systems = [t.name for t in targets[1:]]
    table = latency_table(
        "versus proxies: time added to a streamed Chat Completions request, the same history through each",
        history,
        systems,
        width,
        targets=[CONTEXTFOLD],
    )
    table.notes.append(
        "contextfold runs as shipped with a 32,000-token window (it compacts as the history grows); the peers with "
        "their compaction held off. Installed: "
        + "; ".join(_venv.installed(env) for env, _ in _peers.PEERS.values())
        + "."
    )
    ahead = Table(
        "versus proxies: contextfold ahead of each peer (the peer's added time over contextfold's), and who streams",
        ["system", *[f"{kb} KB p50 / p95" for kb in SIZES], "streams"],
    )
    windows = size_windows(history.sizes, SIZES, width)
    for name in [s for s in systems if s != CONTEXTFOLD]:
        cells = []
        for start, end in windows:
            peer, mine = added(history, name, start, end), added(history, CONTEXTFOLD, start, end)
            cells.append(f"{_ahead(peer.p50, mine.p50)} / {_ahead(peer.p95, mine.p95)}")
        ahead.add(name, *cells, streaming_cell(streamed[name]))
    ahead.notes.append("✓ where contextfold adds less than the peer; the floor's row shows what is left to gain.")
    return [table, ahead]


def _ahead(peer: float, mine: float) -> str:
    if mine <= 0:
        return "—"
    return f"x{peer / mine:.1f} {'✓' if peer > mine else '✗'}"
