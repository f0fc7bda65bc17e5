"""`contextfold chat`: talk to a running `contextfold serve` from the terminal, and watch the context window.

Each line is a user message, sent with the Responses API (`conversation=`, streamed); the answer prints as it
arrives, then one dim line says what the view holds against its budget, so compaction can be seen at work. Slash
commands reach contextfold's extensions: /compact, /status, /pin, /unpin, /search, /clear (see `_chat_commands`).

On a terminal the prompt has line editing and history (readline). When stdin is not a terminal, lines are read as
they come with no prompt, so `printf 'hi\\n/status\\n' | contextfold chat` is a script: answers and the results of
commands on stdout, notes and errors on stderr, and exit code 1 if any line failed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._chat_client import ChatServer
    from ._chat_commands import Chat
    from ._chat_turn import ChatState

DEFAULT_URL = "http://127.0.0.1:8400"
PROMPT = "> "


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chat = commands.add_parser(
        "chat",
        help="chat with a running server: streamed answers, the context window after each, /compact, /pin, /search",
        description=(
            "Chats with a running `contextfold serve` (start one first; its built-in `test` model needs no key). "
            "Each line is a message; the answer streams, then a status line shows the view's tokens against the "
            "budget, and any compaction the turn ran. /help lists the commands. Ctrl-C stops an answer; at the "
            "prompt, it quits (as do /quit and Ctrl-D). With stdin not a terminal, lines are read without a prompt "
            "and the exit code is 1 if any of them failed."
        ),
    )
    chat.add_argument("--url", help=f"the server's address (default: $CONTEXTFOLD_URL, else {DEFAULT_URL})")
    chat.add_argument(
        "--api-key",
        help="the server's API key (default: $CONTEXTFOLD_API_KEY; a loopback server without keys needs none)",
    )
    chat.add_argument("--model", metavar="NAME", help="the model that answers (default: the server's default model)")
    chat.add_argument("--conversation", metavar="ID", help="resume this conversation (default: start a new one)")
    chat.add_argument("--instructions", metavar="TEXT", help="instructions (a system prompt) sent with every message")
    chat.set_defaults(handler=chat_command)


def chat_command(args: argparse.Namespace) -> int:
    # Imported here, not at the top: the other commands should not load the openai SDK.
    from ._chat_client import ChatServer
    from ._chat_commands import Chat
    from ._chat_turn import Ui
    from ._output import stderr, stdout

    url = args.url or os.environ.get("CONTEXTFOLD_URL") or DEFAULT_URL
    key = args.api_key or os.environ.get("CONTEXTFOLD_API_KEY") or None
    interactive = sys.stdin.isatty()
    with ChatServer(url, key) as server:
        chat = Chat(server, _start(server, args), Ui(stdout(), stderr()))
        if interactive:
            how = "resumed" if args.conversation else "new"
            chat.ui.note(f"conversation {chat.state.conversation_id} ({how}) on {server.url}; /help lists the commands")
        failures = _loop(chat, _lines(interactive))
    return 1 if failures and not interactive else 0


def _start(server: ChatServer, args: argparse.Namespace) -> ChatState:
    """The conversation to chat in, checked against the server before the first prompt: a server that is not there
    exits 1, a refused key, an unknown conversation or model exit 2."""
    from .._errors import AuthenticationError, InvalidRequestError, NotFoundError
    from ._chat_client import ServerError, unanswered_calls
    from ._chat_turn import ChatState

    created: str | None = None
    try:
        if args.conversation:
            state = ChatState(args.conversation, args.model, args.instructions)
            state.unanswered = unanswered_calls(server.recent_items(args.conversation))
        else:
            created = server.create_conversation()
            state = ChatState(created, args.model, args.instructions)
        context = server.context(state.conversation_id, args.model)  # also checks --model
    except ServerError as exc:
        if created is not None:  # not a conversation anyone will use
            with contextlib.suppress(ServerError):
                server.delete(f"/conversations/{created}")
        if exc.status == 401:
            raise AuthenticationError(str(exc)) from exc
        if exc.status == 404:
            raise NotFoundError(str(exc)) from exc
        if exc.status == 400:
            raise InvalidRequestError(str(exc)) from exc
        raise
    state.compactions = context["totals"]["compactions"]
    return state


def _lines(interactive: bool) -> Iterator[str]:
    """The user's lines: from a prompt with line editing on a terminal, else from stdin as they come."""
    if interactive:
        with contextlib.suppress(ImportError):  # not on every platform; input() works without it
            import readline  # noqa: F401  (importing it gives input() line editing and history)
        while True:
            try:
                yield input(PROMPT)
            except EOFError:
                print()
                return
    else:
        yield from (line.rstrip("\r\n") for line in iter(sys.stdin.readline, ""))


def _loop(chat: Chat, lines: Iterator[str]) -> int:
    """Handle each line until /quit or the end of input; the number of lines that failed."""
    from ._chat_client import ServerError
    from ._chat_commands import QUIT

    failures = 0
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if line.split()[0] in QUIT:
            break
        try:
            ok = _handle(chat, line)
        except ServerError as exc:
            chat.ui.error(str(exc))
            ok = False
        except KeyboardInterrupt:  # during a command: stop it, not the chat (at the prompt, Ctrl-C quits)
            chat.ui.note("(interrupted)")
            ok = False
        failures += not ok
    return failures


def _handle(chat: Chat, line: str) -> bool:
    from ._chat_commands import COMMANDS, MODEL_COMMANDS

    if line.startswith("//"):
        return _turn(chat, line[1:])
    if line.startswith("/"):
        name, *argument = line.split(maxsplit=1)
        if name in COMMANDS:
            command = COMMANDS[name][0]
            return command(chat, argument[0] if argument else "")
        if name not in MODEL_COMMANDS:
            chat.ui.error(f"unknown command {name}: /help lists the commands (/{line} sends the line to the model)")
            return False
    return _turn(chat, line)


def _turn(chat: Chat, text: str) -> bool:
    from ._chat_commands import report_status
    from ._chat_turn import run_turn

    result = run_turn(chat.server, chat.state, text, chat.ui)
    if result.streamed:
        report_status(chat)
    return result.ok
