"""`contextfold` subcommands. Exit codes: 0 success, 1 a failure (a failed check, a store or model error), 2 a usage
or input error (a bad option, an unknown key id, a configuration the server refuses to start with)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from .._errors import ContextfoldError, UserError
from . import _admin, _chat, _conversations, _demo, _keys, _serve
from ._simulate import SimulationOptions, simulate


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contextfold",
        description="Append-only conversation logs with budget-safe compaction for LLM agents.",
    )
    parser.add_argument("--version", action="version", version=f"contextfold {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sim = commands.add_parser(
        "simulate",
        help="run a long scripted agent session through the engine and report what compaction did",
        description=(
            "Runs a scripted agent session (turns with parallel tool calls and large outputs) through the engine, "
            "with no model key and no network, on the store given by --db, then prints what the model saw."
        ),
    )
    sim.add_argument("--db", default="contextfold.db", help="SQLite file or postgresql:// URL (default: %(default)s)")
    sim.add_argument("--turns", type=int, default=300, help="turns to run (default: %(default)s)")
    sim.add_argument("--window", type=int, default=16_000, help="context window in tokens (default: %(default)s)")
    sim.add_argument("--seed", type=int, default=7, help="seed for the scripted tool outputs (default: %(default)s)")
    sim.set_defaults(handler=_simulate)
    _serve.add_parser(commands)
    _demo.add_parser(commands)
    _chat.add_parser(commands)
    _conversations.add_parser(commands)
    _keys.add_parser(commands)
    _admin.add_parser(commands)  # migrate, doctor
    return parser


def _simulate(args: argparse.Namespace) -> int:
    options = SimulationOptions(db=args.db, turns=args.turns, window=args.window, seed=args.seed)
    report = asyncio.run(simulate(options))
    print(report.table())
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UserError as exc:
        print(f"contextfold: {exc}", file=sys.stderr)
        return 2
    except ContextfoldError as exc:
        print(f"contextfold: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("contextfold: interrupted", file=sys.stderr)
        return 130
