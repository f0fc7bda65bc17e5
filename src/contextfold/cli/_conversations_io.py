"""`contextfold conversations export` and `import`: a conversation's log as JSON Lines, one event per line.

Each line is one event exactly as the codec stores it (`events.encode`), so an export is the log itself, erased
content and all: importing it into another store and exporting it again gives the same lines. Sequence numbers,
event ids, timestamps and token counts travel as they are; `--new-id` imports a copy beside the original, which
needs new event ids too (they are unique across a store), as a fork does.

The conversation's metadata is not in the file. It is not part of the log (it changes without an event), and a
header record would break "one event per line" for every tool that reads the file as a plain event stream; `import
--metadata KEY=VALUE` sets it, and `conversations list --json` shows it for a script that wants to carry it over.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ._local import conversation, run_action
from ._output import progress, stderr, stdout
from ._words import counted

if TYPE_CHECKING:
    from ..events import AnyEvent
    from ..server._state import ServerState
    from ..store import ConversationInfo, Store

_PAGE = 1_000
"""Events read from the store at a time while exporting (a log is never held whole in memory)."""


def add_parsers(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = actions.add_parser(
        "export",
        help="write the log as JSON Lines, one event per line",
        description="Writes every event of the conversation's log, oldest first, one JSON object per line, exactly "
        "as the store holds it. `conversations import` reads it back.",
    )
    export.add_argument("conversation_id", metavar="ID", help="the conversation's id, as `conversations list` shows")
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout (-)")
    export.set_defaults(handler=run_action(_export))

    imported = actions.add_parser(
        "import",
        help="create a conversation from an export, with the same id, seqs, timestamps and tokens",
        description="Checks every line first (nothing is written if one is wrong), then creates the conversation "
        "under the id in the file and appends the events in one transaction. Prints the conversation's id.",
    )
    imported.add_argument("file", metavar="FILE", help="a file written by `conversations export`, or - for stdin")
    imported.add_argument(
        "--new-id",
        action="store_true",
        help="import as a new conversation with fresh conversation and event ids (a copy beside the original)",
    )
    imported.add_argument(
        "--tenant",
        default="default",
        help="the tenant that owns it (default: %(default)s, the tenant of a server without API keys)",
    )
    imported.add_argument(
        "--metadata",
        action="append",
        type=_pair,
        default=[],
        metavar="KEY=VALUE",
        help="metadata to give the conversation (repeat for several keys); exports carry none",
    )
    imported.set_defaults(handler=run_action(_import))


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


# --- export --------------------------------------------------------------------------------------------------


async def _export(state: ServerState, args: argparse.Namespace) -> int:
    info = await conversation(state.store, args.conversation_id)
    if args.output in (None, "-"):
        sys.stdout.flush()
        try:
            await write_log(state.store, info, sys.stdout.buffer, show_progress=False)
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # `export ID | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail
        return 0
    target = Path(args.output)
    partial = target.with_name(target.name + ".part")  # never leave a half-written FILE behind
    try:
        with partial.open("wb") as sink:
            await write_log(state.store, info, sink, show_progress=info.head > _PAGE)
        partial.replace(target)
    except OSError as exc:
        from .._errors import InvalidRequestError

        raise InvalidRequestError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    stderr().print(f"wrote {counted(info.head, 'event')} to {args.output}")
    return 0


async def write_log(store: Store, info: ConversationInfo, sink: IO[bytes], *, show_progress: bool) -> None:
    """Write the log up to `info.head`, a page at a time (events appended meanwhile are left for the next export)."""
    from ..events import encode

    bar = progress() if show_progress else None
    with bar or contextlib.nullcontext():
        task = bar.add_task("exporting", total=info.head, status="events") if bar else None
        after = 0
        while after < info.head:
            page = [e for e in await store.read(info.id, after=after, limit=_PAGE) if e.seq <= info.head]
            if not page:
                break
            sink.write(b"".join(encode(event) + b"\n" for event in page))
            after = page[-1].seq
            if bar is not None and task is not None:
                bar.update(task, completed=after)


# --- import --------------------------------------------------------------------------------------------------


async def _import(state: ServerState, args: argparse.Namespace) -> int:
    from .._errors import InvalidEventError, InvalidRequestError
    from ..events import new_id
    from ..server._fork import copy_event

    events = parse_log(_lines(args.file), args.file, state.store)
    source = events[0].conversation_id if events else ""
    if not source and not args.new_id:
        raise InvalidRequestError(f"{_name(args.file)} holds no conversation id (no events); pass --new-id")
    # Event ids are unique across a store, so a copy beside the original gets new ones, as a fork does.
    fresh = {event.id: new_id() for event in events} if args.new_id else {}
    appended = [copy_event(event, fresh) for event in events] if args.new_id else events
    target = new_id("conv") if args.new_id else source
    try:
        info = await state.store.conversations.create(target, dict(args.metadata), tenant=args.tenant)
    except InvalidRequestError as exc:
        if "already exists" not in str(exc):
            raise
        raise InvalidRequestError(
            f"conversation {target!r} already exists in this store; pass --new-id to import a copy beside it"
        ) from None
    try:
        if appended:
            await state.store.append(info.id, appended, 0)
    except BaseException as exc:
        await state.store.conversations.delete(info.id)  # the conversation without its events is not an import
        if isinstance(exc, InvalidEventError):
            raise InvalidEventError(f"{exc}; if these events are in this store already, pass --new-id") from None
        raise
    stdout().out(info.id, highlight=False)
    stderr().print(f"imported {counted(len(events), 'event')} as {info.id} (tenant {args.tenant})")
    return 0


def parse_log(lines: Iterable[bytes], source: str, store: Store) -> list[AnyEvent]:
    """The events of an export, each checked as the store and the conversation would check it when appended.

    Each event is decoded, checked against the store's rules (its seq follows, a deletion erases only earlier
    events...) and against the view folded from the lines before it, as `Conversation.append` checks it (a tool
    result answers an open call, a pin names an item in view, a compaction keeps the instructions and pins). A line
    that fails raises `InvalidRequestError` naming its number: nothing is imported then.
    """
    from .._conversation import Conversation
    from .._errors import InvalidRequestError, UserError
    from ..events import decode
    from ..store import ConversationInfo
    from ..store._common import prepare
    from ..view import TokenEstimator, View

    events: list[AnyEvent] = []
    lines_of: dict[str, int] = {}
    folded = Conversation(store, ConversationInfo("", 0.0, 0, 0), View(), estimator=TokenEstimator(), model=None)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = decode(line)
            if event.seq != len(events) + 1:
                raise InvalidRequestError(
                    f"seq {event.seq}, expected {len(events) + 1}: an export is a whole log, numbered from 1"
                )
            if events and event.conversation_id != events[0].conversation_id:
                raise InvalidRequestError(
                    f"conversation {event.conversation_id!r}, but line {lines_of[events[0].id]} says "
                    f"{events[0].conversation_id!r}: a file holds one conversation"
                )
            if event.id in lines_of:
                raise InvalidRequestError(f"event id {event.id!r} is on line {lines_of[event.id]} too")
            prepare(event.conversation_id, [event], event.seq - 1)
            folded.check([event])
        except UserError as exc:
            raise InvalidRequestError(f"{_name(source)} line {number}: {exc}") from None
        folded.view.apply(event)
        events.append(event)
        lines_of[event.id] = number
    return events


def _lines(file: str) -> list[bytes]:
    from .._errors import InvalidRequestError

    if file == "-":
        return sys.stdin.buffer.read().splitlines()
    try:
        return Path(file).read_bytes().splitlines()
    except OSError as exc:
        raise InvalidRequestError(f"cannot read {file}: {exc.strerror or exc}") from None


def _name(file: str) -> str:
    return "stdin" if file == "-" else file
