"""The slash commands of `contextfold chat`, and the status line it prints after each answer.

Each command is a function `(Chat, argument) -> bool` (False when it failed); `COMMANDS` maps the names to them and
to the help text `/help` prints. The numbers all come from `GET /v1/conversations/{id}/context`, so the chat shows
what the server will send next, not a client-side guess.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from ._chat_client import ChatServer
from ._chat_turn import ChatState, Ui
from ._output import table
from ._words import counted


@dataclass(frozen=True, slots=True)
class Chat:
    """Everything a command works with."""

    server: ChatServer
    state: ChatState
    ui: Ui


Command = Callable[[Chat, str], bool]


# --- the status line ------------------------------------------------------------------------------------------------


def status_line(context: dict[str, Any]) -> str:
    """One line: tokens in the view of the budget (and the window), utilisation, compactions, the conversation."""
    tokens, budget, window = context["tokens"]["total"], context["budget"], context["context_window"]
    utilisation = context["utilisation"]
    count = context["totals"]["compactions"]
    return (
        f"{tokens:,} / {budget:,} tokens (window {window:,}) · "
        f"{'-' if utilisation is None else f'{utilisation:.0f}%'} · "
        f"{counted(count, 'compaction')} · {context['conversation_id']}"
    )


def compaction_text(compaction: dict[str, Any]) -> str:
    """What one compaction did: `summary (auto), 1,461 → 451 tokens`."""
    text = f"{compaction['strategy']} ({compaction['trigger']}), {compaction['tokens_before']:,} → "
    text += f"{compaction['tokens_after']:,} tokens"
    return text + (f"; error: {compaction['error']}" if compaction.get("error") else "")


def report_status(chat: Chat) -> None:
    """After an answer (or a /compact): say whether compactions ran since the last time, then the status line."""
    context = chat.server.context(chat.state.conversation_id, chat.state.model)
    count = context["totals"]["compactions"]
    new = count - chat.state.compactions
    chat.state.compactions = count
    latest = context.get("latest_compaction")
    if new > 0 and latest:
        many = f"{counted(new, 'compaction')}; the last: " if new > 1 else ""
        chat.ui.note(f"compacted: {many}{compaction_text(latest)}")
    chat.ui.note(status_line(context))


# --- commands -------------------------------------------------------------------------------------------------------


_TOTALS = ("total", "estimated")
"""Keys of the context's `tokens` that are not categories."""


def status(chat: Chat, argument: str) -> bool:
    """/status: the view in detail."""
    del argument
    context = chat.server.context(chat.state.conversation_id, chat.state.model)
    chat.state.compactions = context["totals"]["compactions"]
    tokens, totals, policy = context["tokens"], context["totals"], context["compaction"]
    latest = context.get("latest_compaction")
    categories = ", ".join(
        f"{name.replace('_', ' ')} {value:,}" for name, value in tokens.items() if value and name not in _TOTALS
    )
    folded = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in context["folded"]) or "nothing"
    rows = [
        ("conversation", context["conversation_id"]),
        ("model", context["model"]),
        ("view", f"{tokens['total']:,} tokens: {categories or 'empty'}"),
        ("budget", f"{context['budget']:,} of a {context['context_window']:,} window "
                   f"({context['reserved_output_tokens']:,} kept for the answer)"),
        ("utilisation", "-" if context["utilisation"] is None else f"{context['utilisation']:.1f}%"),
        ("compacts", f"at {policy['trigger_tokens']:,} tokens, down to about {policy['target_tokens']:,}"),
        ("compactions", f"{totals['compactions']}" + (f"; the last: {compaction_text(latest)}" if latest else "")),
        ("items in view", f"{context['items_in_view']} ({len(context['pinned'])} pinned, "
                          f"{len(context['masked'])} masked)"),
        ("folded (seqs)", folded),
        ("log", f"{counted(context['events'], 'event')}; {counted(totals['requests'], 'model request')}, "
                f"{totals['input_tokens']:,} tokens in, {totals['output_tokens']:,} out"),
    ]  # fmt: skip
    chat.ui.out.print(_fields(rows))
    return True


def compact(chat: Chat, argument: str) -> bool:
    """/compact [INSTRUCTIONS]: compact now, the instructions steering the summary."""
    body: dict[str, Any] = {"instructions": argument or None, "model": chat.state.model}
    result = chat.server.post(f"/conversations/{chat.state.conversation_id}/compact", body)
    chat.state.compactions += bool(result["compacted"])  # said here, so the status line after need not say it
    if result["compacted"]:
        chat.ui.say(
            f"compacted: {result['strategy']}, {result['tokens_before']:,} → {result['tokens_after']:,} tokens, "
            f"{result['messages_before']} → {counted(result['messages_after'], 'message')}"
        )
    else:
        reason = result.get("error") or "the view holds nothing that can be folded yet"
        chat.ui.say(f"nothing compacted: {reason}")
    report_status(chat)
    return bool(result["compacted"] or not result.get("error"))


def pin(chat: Chat, argument: str) -> bool:
    """/pin [ITEM_ID]: pin an item (default: the newest message) so compaction keeps it verbatim."""
    item_id, about = argument.strip(), ""
    if not item_id:
        message = _newest_message(chat)
        if message is None:
            chat.ui.error("there is no message to pin yet; /pin ITEM_ID pins another item")
            return False
        item_id, about = message["id"], f" ({_describe(message)})"
    result = chat.server.post(f"/conversations/{chat.state.conversation_id}/pins", {"item_id": item_id})
    batch = len(result["targets"])
    more = f" with its batch ({batch} items)" if batch > 1 else ""
    chat.ui.say(f"pinned {item_id}{more}{about}")
    return True


def unpin(chat: Chat, argument: str) -> bool:
    """/unpin ITEM_ID: let compaction fold the item again."""
    item_id = argument.strip()
    if not item_id:
        chat.ui.error("/unpin needs the item's id (as /pin or /status printed it)")
        return False
    chat.server.delete(f"/conversations/{chat.state.conversation_id}/pins/{item_id}")
    chat.ui.say(f"unpinned {item_id}")
    return True


def search(chat: Chat, argument: str) -> bool:
    """/search WORDS: full-text search over what is folded out of the view."""
    words = argument.strip()
    if not words:
        chat.ui.error("/search needs words to look for")
        return False
    found = chat.server.get(f"/conversations/{chat.state.conversation_id}/search", q=words)["data"]
    if not found:
        chat.ui.say(f"no folded item matches {words!r}")
        return True
    rows = [(hit["item_id"], hit["seq"], hit["type"], " ".join(hit["snippet"].split())) for hit in found]
    chat.ui.out.print(table(("item", "seq", "type", "snippet"), rows, title=f"folded items matching {words!r}"))
    return True


def clear(chat: Chat, argument: str) -> bool:
    """/clear: start a new conversation; the old one stays in the log."""
    del argument
    old = chat.state.conversation_id
    chat.state.conversation_id = chat.server.create_conversation()
    chat.state.compactions = 0
    chat.state.unanswered = []
    chat.ui.say(
        f"new conversation {chat.state.conversation_id}; the previous one, {old}, stays in the log "
        f"(`contextfold chat --conversation {old}` resumes it)"
    )
    return True


def help_(chat: Chat, argument: str) -> bool:
    """/help: this list."""
    del argument
    rows = [(name + (f" {usage}" if usage else ""), text) for name, (_, usage, text) in COMMANDS.items()]
    rows.append(("/quit", "leave (also /exit, or Ctrl-D)"))
    rows.append(("//TEXT", "send TEXT starting with '/' to the model"))
    chat.ui.out.print(_fields(rows))
    chat.ui.say(
        "Anything else is sent to the model; so are the test model's /long N, /fail STATUS, /tool NAME {…} and "
        "/recall WORDS. Ctrl-C stops an answer; at the prompt, it quits."
    )
    return True


COMMANDS: dict[str, tuple[Command, str, str]] = {
    "/status": (status, "", "tokens in the view by category, budget, compactions, what is folded"),
    "/compact": (compact, "[INSTRUCTIONS]", "compact now; the instructions steer the summary"),
    "/pin": (pin, "[ITEM_ID]", "keep an item verbatim through compactions (default: the newest message)"),
    "/unpin": (unpin, "ITEM_ID", "let compaction fold a pinned item again"),
    "/search": (search, "WORDS", "search what is folded out of the view"),
    "/clear": (clear, "", "start a new conversation (the old one stays in the log)"),
    "/help": (help_, "", "this list"),
}
QUIT = ("/quit", "/exit")
MODEL_COMMANDS = ("/long", "/fail", "/tool", "/recall")
"""The built-in `test` model's scripting commands (server/_testmodel.py): sent to the model, not taken here."""


def _newest_message(chat: Chat) -> dict[str, Any] | None:
    items = chat.server.recent_items(chat.state.conversation_id)
    return next((item for item in items if item.get("type") == "message"), None)


def _describe(message: dict[str, Any]) -> str:
    text = " ".join(part.get("text", "") for part in message.get("content", []) if isinstance(part, dict))
    text = " ".join(text.split())
    shown = text if len(text) <= 60 else text[:59] + "…"
    return f'{message.get("role", "?")}: "{shown}"'


def _fields(rows: list[tuple[str, str]]) -> Table:
    """Name-value lines, aligned, no header."""
    shown = table(("", ""), rows)
    shown.show_header = False
    return shown
