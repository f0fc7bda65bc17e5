"""`contextfold conversations`: list, inspect, compact, search, export and import the logs in a store.

These commands open the store themselves (`--db`, `--config`, as `serve` would), so they work with or without a
server running: the store orders appends across processes, and `compact` holds the conversation's turn lease as a
server does, so it never runs beside a turn. What they print comes from the server's own code: `show` is the
inspector's `/events`, `context`, `compact` and `search` are the `/v1/conversations/{id}/...` extensions, called in
process (see `_local`), so the command line and the HTTP API cannot disagree. Export and import live in
`_conversations_io`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._local import conversation, run_action
from ._output import Cell, stderr, stdout, table
from ._words import counted

if TYPE_CHECKING:
    from ..server._registry import ResolvedModel
    from ..server._state import ServerState

SHOWN = 50
"""Events `show` prints without --all: the newest ones."""
_PAGE = 1_000
"""Events asked of the inspector's `/events` at a time (its largest page)."""
_TEXT = 100
"""Characters of an event's text `show` prints on its line."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from . import _conversations_io

    group = commands.add_parser(
        "conversations",
        help="list, inspect, compact, search, export and import the conversations in a store",
        description="Works on the store directly (the --db or --config that `serve` would use), with or without a "
        "server running beside it. IDs are the conversation ids (conv_...) that `conversations list` shows.",
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="the newest conversations, with their size and context use")
    listing.add_argument("--tenant", help="only this tenant's conversations (default: every tenant's)")
    listing.add_argument("--limit", type=_positive, default=20, help="how many to list (default: %(default)s)")
    _json(listing)
    listing.set_defaults(handler=run_action(_list))

    show = actions.add_parser(
        "show",
        help="the log's timeline: one line per event, with how it stands in the view now",
        description="One line per event: seq, kind, its state in the view now (in_view, masked, folded, failed, "
        f"erased, or marker for events that are not items) and a short text. The newest {SHOWN} unless --all.",
    )
    _conversation_id(show)
    show.add_argument("--all", action="store_true", help=f"every event, not only the newest {SHOWN}")
    _json(show)
    show.set_defaults(handler=run_action(_show))

    context = actions.add_parser(
        "context",
        help="what the next request would send: tokens by category against the budget",
        description="The window as the next model request would send it: tokens by category, the context window, "
        "the budget (the window less the output reserved), utilisation, the compaction trigger and target, and "
        "the summary in force. The same report as GET /v1/conversations/{id}/context.",
    )
    _conversation_id(context)
    _model(context, "the model whose window to measure against")
    _json(context)
    context.set_defaults(handler=run_action(_context))

    compact = actions.add_parser(
        "compact",
        help="compact now, as POST /v1/conversations/{id}/compact does",
        description="Compacts the conversation now with the configured model as summariser (the default `test` "
        "model summarises offline). Exits 1 if the summariser failed (the compaction then used the offline "
        "digest), 2 if the conversation is busy with a turn.",
    )
    _conversation_id(compact)
    compact.add_argument("--instructions", help="what the summary should focus on or keep")
    _model(compact, "the model that summarises, and whose window sets the budget")
    compact.set_defaults(handler=run_action(_compact))

    search = actions.add_parser(
        "search",
        help="full-text search over what is folded out of the view",
        description="Searches the conversation's folded history (older items and masked tool outputs), as the "
        "`recall` tool and GET /v1/conversations/{id}/search do.",
    )
    _conversation_id(search)
    search.add_argument("query", metavar="QUERY", help="words to look for (any of them matches)")
    search.add_argument("--limit", type=_hits, default=10, help="most hits to show, 1 to 50 (default: %(default)s)")
    _json(search)
    search.set_defaults(handler=run_action(_search))

    _conversations_io.add_parsers(actions)
    for action in actions.choices.values():
        action.add_argument("--db", help="SQLite file or postgresql:// URL (default: as `serve` would use)")
        action.add_argument("--config", metavar="FILE", help="TOML config file to take the database and models from")


def _conversation_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("conversation_id", metavar="ID", help="the conversation's id, as `conversations list` shows")


def _model(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--model", help=f"{text} (default: the configured default model)")


def _json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _positive(text: str) -> int:
    return _bounded(text, 1, None)


def _hits(text: str) -> int:
    return _bounded(text, 1, 50)


def _bounded(text: str, low: int, high: int | None) -> int:
    try:
        number = int(text)
    except ValueError:
        number = low - 1
    if number < low or (high is not None and number > high):
        raise argparse.ArgumentTypeError(f"expected a whole number from {low}" + (f" to {high}" if high else " up"))
    return number


def print_json(data: object) -> None:
    stdout().out(json.dumps(data, indent=2, ensure_ascii=False), highlight=False)


def when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(timestamp))


def clip(text: str, limit: int = _TEXT) -> str:
    """The first line of `text`, at most `limit` characters, with "…" where something was cut."""
    lines = text.strip().splitlines()
    first = lines[0] if lines else ""
    if len(first) > limit:
        return first[: limit - 1] + "…"
    return first[: limit - 2] + " …" if len(lines) > 1 else first


# --- list ----------------------------------------------------------------------------------------------------


async def _list(state: ServerState, args: argparse.Namespace) -> int:
    from .._conversation import Conversation
    from .._errors import ContextfoldError
    from ..server.inspect._window import context_report, newest_request, recorded_lines, served_lines

    infos = await state.store.conversations.list(limit=args.limit, tenant=args.tenant, order="desc")
    default: list[ResolvedModel | None] = []  # the default model, resolved once, when a log recorded no window

    async def default_model() -> ResolvedModel | None:
        if not default:
            try:
                default.append(await state.registry.resolve(None))
            except ContextfoldError as exc:  # the list is still worth having without the budget
                stderr().print(f"utilisation not shown: the default model's window is unknown ({exc})")
                default.append(None)
        return default[0]

    rows: list[dict[str, Any]] = []
    for info in infos:
        loaded = await Conversation.load(state.store, info.id)
        lines = recorded_lines(await newest_request(state.store, info.id, loaded.view.head))
        if lines is None and (resolved := await default_model()) is not None:
            lines = served_lines(resolved, loaded.view.max_output_tokens)
        report = await context_report(loaded, lines, state.config, await default_model()) if lines else None
        rows.append(
            {
                "id": info.id,
                "tenant": info.tenant,
                "created_at": info.created_at,
                "metadata": info.metadata,
                "events": info.head,
                "tokens": loaded.view.tokens,
                "utilisation": report["utilisation"] if report else None,
                "compactions": loaded.view.totals.compactions,
            }
        )
    if args.json:
        print_json(rows)
    elif not rows:
        stderr().print("no conversations" + (f" of tenant {args.tenant!r}" if args.tenant is not None else ""))
    else:
        columns = ("id", "tenant", "created (UTC)", "metadata", "events", "tokens", "used %", "compactions")
        shown = table(columns, [_row(r) for r in rows])
        for i in (0, 4, 5, 6, 7):  # an id to copy and numbers to read stay whole on a narrow terminal
            shown.columns[i].no_wrap = True
        stdout().print(shown)
    return 0


def _row(r: Mapping[str, Any]) -> list[Cell]:
    created, metadata = when(r["created_at"]), _metadata(r["metadata"])
    return [
        r["id"],
        r["tenant"] or "-",
        created,
        metadata,
        r["events"],
        r["tokens"],
        r["utilisation"],
        r["compactions"],
    ]


def _metadata(metadata: Mapping[str, str]) -> str:
    return clip(", ".join(f"{key}={value}" for key, value in metadata.items()), 40) or "-"


# --- show ----------------------------------------------------------------------------------------------------


async def _show(state: ServerState, args: argparse.Namespace) -> int:
    from ..server.inspect._inspect import log_page

    info = await conversation(state.store, args.conversation_id)
    after = 0 if args.all else max(0, info.head - SHOWN)
    data: list[dict[str, Any]] = []
    pinned: list[int] | None = []
    while True:
        page = await log_page(state, info.tenant, info.id, after=after, limit=_PAGE)
        data += page["data"]
        pinned = page["pinned"] if page["pinned"] is not None else pinned
        if not page["has_more"] or not page["data"]:
            break
        after = page["last_seq"]
    if args.json:
        print_json({"conversation_id": info.id, "head": info.head, "pinned": pinned, "data": data})
        return 0
    if after and not args.all:
        stderr().print(f"the newest {len(data)} of {counted(info.head, 'event')}; --all shows every one")
    room = max(40, stdout().width - 32)  # what the seq, kind and state columns leave: one line per event
    rows = [[event["seq"], event["type"], event["state"], describe(event, room)] for event in data]
    stdout().print(table(("seq", "kind", "state", "text"), rows, title=f"{info.id} ({counted(info.head, 'event')})"))
    return 0


def describe(event: Mapping[str, Any], room: int = _TEXT) -> str:
    """One line of at most `room` characters saying what an event (as the codec's JSON) holds."""
    return clip(_what(event), room)


def _what(event: Mapping[str, Any]) -> str:
    kind = event["type"]
    if event.get("redacted"):
        return "(erased)"
    if kind == "message":
        text = "\n".join(part.get("text", f"[{part['type']}]") for part in event["content"])
        return f"{event['role']}: {clip(text)}"
    if kind == "tool_call":
        return f"{event['name']} {clip(event['arguments'])}"
    if kind == "tool_result":
        return ("error: " if event.get("is_error") else "") + clip(event["output"])
    if kind == "reasoning":
        return f"{event['provider']}: {clip(event.get('text') or '(opaque)')}"
    if kind == "turn":
        return str(event["status"]) + (f": {clip(event['reason'])}" if event.get("reason") else "")
    if kind == "config":
        return _config(event)
    if kind == "pin":
        return ("pin" if event.get("pinned", True) else "unpin") + f" seq {event['target']}"
    if kind == "deletion":
        return "erase seqs " + ", ".join(map(str, event["targets"]))
    if kind == "usage":
        return f"{event['model']}: {event['input_tokens']:,} in, {event['output_tokens']:,} out"
    if kind == "compaction":
        line = f"{event['strategy']} ({event['trigger']}): {event.get('tokens_before', 0):,} → "
        line += f"{event.get('tokens_after', 0):,} tokens"
        return line + (f"; {clip(event['error'], 60)}" if event.get("error") else "")
    return ""


def _config(event: Mapping[str, Any]) -> str:
    said = []
    if "system_prompt" in event:
        said.append(f"instructions: {clip(event['system_prompt'] or '(cleared)', 60)}")
    if "tools" in event:
        said.append(counted(len(event["tools"] or []), "tool"))
    if "max_output_tokens" in event:
        said.append(f"max output {event['max_output_tokens']}")
    return "; ".join(said)


# --- context, compact, search --------------------------------------------------------------------------------


async def _context(state: ServerState, args: argparse.Namespace) -> int:
    from ..server._operations import context

    info = await conversation(state.store, args.conversation_id)
    report = await context(state, info.tenant, info.id, args.model)
    if args.json:
        print_json(report)
        return 0
    tokens = report["tokens"]
    categories = [(name, count) for name, count in tokens.items() if name not in ("total", "estimated")]
    rows: list[list[Cell]] = [[name.replace("_", " "), count] for name, count in categories]
    if tokens["estimated"] != tokens["total"]:  # the model's last report corrected our estimate: show both
        rows.append(["estimated", tokens["estimated"]])
    rows.append(["total", tokens["total"]])
    out = stdout()
    out.print(table(("in the window", "tokens"), rows, title=f"{info.id} for model {report['model']}"))
    lines = report["compaction"]
    out.print(
        f"window {report['context_window']:,}, {report['reserved_output_tokens']:,} reserved for output: "
        f"budget {report['budget']:,}, {report['utilisation']}% used\n"
        f"compaction at {lines['trigger_tokens']:,} tokens (trigger), down to {lines['target_tokens']:,} (target); "
        f"{report['totals']['compactions']} so far",
        highlight=False,
    )
    summary = report["summary"]
    out.print(f"summary (seq {summary['seq']}):\n{summary['text']}" if summary else "no summary", highlight=False)
    return 0


async def _compact(state: ServerState, args: argparse.Namespace) -> int:
    from ..server._operations import compact, compaction_fields

    info = await conversation(state.store, args.conversation_id)
    result = compaction_fields(await compact(state, info.tenant, info.id, args.instructions, args.model))
    if not result["compacted"]:
        stdout().print(f"nothing to compact: the view holds {result['tokens_before']:,} tokens", highlight=False)
        return 0
    stdout().print(
        f"{result['strategy']}: {result['tokens_before']:,} → {result['tokens_after']:,} tokens, "
        f"{result['messages_before']} → {counted(result['messages_after'], 'item')} ({result['compaction_id']})",
        highlight=False,
    )
    if result["error"]:
        stderr().print(f"the summariser failed, so the offline digest stands in for its summary: {result['error']}")
        return 1
    return 0


async def _search(state: ServerState, args: argparse.Namespace) -> int:
    from ..server._operations import search

    info = await conversation(state.store, args.conversation_id)
    hits = await search(state, info.tenant, info.id, args.query, args.limit)
    if args.json:
        print_json(hits)
    elif not hits:
        stderr().print(f"nothing folded out of the view matches {args.query!r}")
    else:
        rows = [[hit["seq"], hit["type"], round(hit["score"], 2), clip(hit["snippet"])] for hit in hits]
        stdout().print(table(("seq", "type", "score", "snippet"), rows))
    return 0
