"""`python -m benchmarks.versus [--quick] [--only NAME] [--json PATH]`: contextfold beside what users would pick
instead, as markdown tables: the Llama Stack server, the OpenHands SDK's view and store, and four ways of keeping
a long agent session's context (the token economy), and the compaction proxies."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# `contextfold` and `benchmarks` import from the repository root, wherever this is started from.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks._report import Table
from benchmarks.versus import economy, llama_stack, openhands, proxies

SECTIONS: dict[str, Callable[[bool], Awaitable[list[Table]]]] = {
    "llama-stack": llama_stack.run,
    "openhands": openhands.run,
    "economy": economy.run,
    "proxies": proxies.run,
}


def _machine() -> dict[str, Any]:
    return {
        "date": datetime.date.today().isoformat(),
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    names = args.only or list(SECTIONS)
    machine = _machine()
    results: dict[str, Any] = {"quick": args.quick, "machine": machine, "sections": {}}
    print(f"# contextfold side by side{' (quick)' if args.quick else ''}\n")
    print(", ".join(f"{key}: {value}" for key, value in machine.items()) + "\n", flush=True)
    started = time.perf_counter()
    for name in names:
        section_started = time.perf_counter()
        tables = await SECTIONS[name](args.quick)
        for table in tables:
            print(table.markdown(), flush=True)
        seconds = time.perf_counter() - section_started
        print(f"_{name}: {seconds:.0f} s_\n", flush=True)
        results["sections"][name] = {"seconds": seconds, "tables": [t.as_json() for t in tables]}
    results["seconds"] = time.perf_counter() - started
    print(f"_total: {results['seconds']:.0f} s_")
    return results


def _sections(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown section {', '.join(unknown) or value!r}: pick from {', '.join(SECTIONS)}"
        )
    return names


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.versus", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller logs, fewer turns")
    parser.add_argument(
        "--only", type=_sections, metavar="NAME[,NAME]", help=f"run these sections: {', '.join(SECTIONS)}"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    results = asyncio.run(_main(args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
