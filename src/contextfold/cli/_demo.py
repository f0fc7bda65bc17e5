"""`contextfold demo`: a long agent session against the built-in model through a real server, then what it cost.

The server runs in this process, on a background thread (uvicorn on 127.0.0.1, its own event loop), and the demo
talks to it over HTTP with the official `openai` SDK, exactly as an agent on another machine would. A thread rather
than a `contextfold serve` subprocess: it starts in a fraction of the time, a failure to start is an exception
here rather than a log to scrape, and Ctrl-C or an error stops it in a `finally` with nothing left running.

The numbers come from the server's own record of the session (`/usage` and `/events`), not from the demo's
counting: what the inspector shows is what the table says.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from .._errors import ConfigurationError, ContextfoldError, InvalidRequestError
from ..events import ITEM_TYPES, AnyEvent, Compaction, Message, Reasoning, ToolCall, Usage
from ._demo_agent import FACTS, RECALL_TURNS, Agent, Played, Script
from ._words import counted

if TYPE_CHECKING:
    import httpx2
    import uvicorn

MIN_TURNS = 1
MIN_WINDOW = 4_096


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="run a long agent session through a real server, with no key and no network, and report on it",
        description=(
            "Starts the server on 127.0.0.1 with the built-in `test` model and runs a scripted coding agent against "
            "it through the OpenAI SDK: every turn calls one to three tools whose outputs are 1-30 KB, early turns "
            "plant facts in those outputs, and the last turns ask for them back once they have been folded away. "
            "Then it prints what compaction did and what it saved, and the inspector URL of the session."
        ),
    )
    demo.add_argument(
        "--turns",
        type=int,
        default=300,
        help=f"agent turns to run; from {RECALL_TURNS} on, facts are recalled (default: %(default)s)",
    )
    demo.add_argument(
        "--db", default="contextfold-demo.db", help="SQLite file the server keeps the session in (default: %(default)s)"
    )
    demo.add_argument("--port", type=int, default=0, help="port to serve on; 0 picks a free one (default: %(default)s)")
    demo.add_argument(
        "--context-window",
        type=int,
        default=32_768,
        help=f"the test model's context window in tokens, at least {MIN_WINDOW} (default: %(default)s)",
    )
    demo.add_argument("--seed", type=int, default=7, help="seed of the scripted tool outputs (default: %(default)s)")
    demo.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the server up after the report so the inspector URL works, until Ctrl-C "
        "(default: when stdout is a terminal)",
    )
    demo.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    demo.set_defaults(handler=demo_command)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    turns: int = 300
    db: str = "contextfold-demo.db"
    port: int = 0
    context_window: int = 32_768
    seed: int = 7
    wait: bool = False
    json: bool = False

    def __post_init__(self) -> None:
        if self.turns < MIN_TURNS:
            raise InvalidRequestError(
                f"--turns must be at least {MIN_TURNS}, got {self.turns} (from {RECALL_TURNS} turns on, facts are "
                f"planted early and recalled over folded history in the last {len(FACTS)})"
            )
        if self.context_window < MIN_WINDOW:
            raise InvalidRequestError(
                f"--context-window must be at least {MIN_WINDOW} tokens, got {self.context_window}"
            )
        if not 0 <= self.port <= 65_535:
            raise InvalidRequestError(f"--port must be from 0 (any free port) to 65535, got {self.port}")
        if not self.db.strip():
            raise InvalidRequestError("--db must name a SQLite file, such as contextfold-demo.db")


def demo_command(args: argparse.Namespace) -> int:
    wait = sys.stdout.isatty() if args.wait is None else args.wait
    options = DemoOptions(args.turns, args.db, args.port, args.context_window, args.seed, wait, args.json)
    return run_demo(options)


def run_demo(options: DemoOptions) -> int:
    """Run the demo; 0 when every request was answered within the budget and every fact recalled."""
    from ._output import stderr

    _check_store(options.db)
    listener = _listen(options.port)
    with _serving(options, listener) as url:
        stderr().print(f"Serving the demo at {url}/v1 (database {options.db}, model test).", markup=False)
        report = drive(url, options)
        page = f"/ui/#/c/{report.conversation_id}"
        # A URL only while something answers at it: without --wait the server stops before anyone could open it.
        print_report(report, f"{url}{page}" if options.wait else None, page, as_json=options.json)
        if options.wait:
            stderr().print("The server is still up so the inspector works: press Ctrl-C to stop it.", markup=False)
            _wait_for_interrupt()
    if not options.wait:
        reopen = f"contextfold serve --db {shlex.quote(options.db)}"
        stderr().print(
            f"The server has stopped. Reopen the session with `{reopen}`; its inspector shows it at {page} "
            "(with the window it ran with, whatever the new server's flags).",
            markup=False,
            soft_wrap=True,
        )
    if report.problems:
        raise ContextfoldError("the demo failed: " + "; ".join(report.problems))
    return 0


def _check_store(db: str) -> None:
    """Open (and migrate) the database once here, so a bad --db is a clear error before anything starts."""
    from ..store import open_server_store

    async def check() -> int:
        store = await open_server_store(db)
        try:
            return await store.keys.active()
        finally:
            await store.close()

    try:
        keys = asyncio.run(check())
    except Exception as exc:  # any failure to open it (sqlite3, psycopg, a newer schema) is the user's --db to fix
        raise ConfigurationError(
            f"cannot open --db {db!r}: {exc}; give a SQLite file in a directory that exists and is writable"
        ) from None
    if keys:
        raise ConfigurationError(
            f"--db {db!r} has API keys, so its server would refuse the demo's requests; use another --db file"
        )


def _listen(port: int) -> socket.socket:
    """The server's socket, bound here so that port 0 names the free port the OS picked before serving starts."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", port))
    except OSError as exc:
        listener.close()
        raise ConfigurationError(
            f"cannot listen on 127.0.0.1:{port}: {exc.strerror}; choose another --port, or 0 for a free one"
        ) from None
    return listener


@contextlib.contextmanager
def _serving(options: DemoOptions, listener: socket.socket) -> Iterator[str]:
    """The server running on `listener` on a background thread; its base URL. Stopped on the way out, however."""
    import uvicorn

    from ..server import create_app, load_config

    port: int = listener.getsockname()[1]
    given = {"host": "127.0.0.1", "port": port, "db": options.db, "context_window": options.context_window}
    config = load_config({**given, "model": "test"}, env={})  # no environment or file: the demo is the same anywhere
    settings = uvicorn.Config(
        create_app(config), log_config=None, log_level="warning", access_log=False, lifespan="on", ws="none"
    )
    server = uvicorn.Server(settings)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="contextfold-demo", daemon=True)
    thread.start()
    try:
        _until_started(server, thread)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)  # a server that will not stop is a daemon thread: it ends with the process
        listener.close()


def _until_started(server: uvicorn.Server, thread: threading.Thread) -> None:
    while not server.started:
        if not thread.is_alive():
            raise ContextfoldError("the demo's server did not start; its log above says why")
        time.sleep(0.02)


def _wait_for_interrupt() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)


# --- the session and its report -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Report:
    """The session as the server recorded it."""

    conversation_id: str
    turns: int
    requests: int
    compactions: dict[str, int]
    peak_tokens: int
    budget: int
    context_window: int
    billed_tokens: int
    """Input tokens of the model requests: the sum of the Usage events the server logged."""
    events: int
    logged_tokens: int
    """The tokens of every item in the log: what one request sending the whole history would take."""
    summariser_tokens: int
    """Input tokens of the summariser's requests (each compaction with a summary records its own usage)."""
    full_history_tokens: int
    recall_hits: int
    seconds: float
    problems: tuple[str, ...]

    @property
    def saved(self) -> float:
        spent = self.billed_tokens + self.summariser_tokens
        return 1 - spent / self.full_history_tokens if self.full_history_tokens else 0.0

    def rows(self) -> list[tuple[str, str]]:
        strategies = ", ".join(f"{name} {count}" for name, count in sorted(self.compactions.items()))
        mean = self.billed_tokens // self.requests if self.requests else 0
        peak = self.peak_tokens
        return [
            ("conversation", self.conversation_id),
            ("turns", f"{self.turns:,}"),
            ("model requests", f"{self.requests:,}"),
            ("log", f"{counted(self.events, 'event')}, {counted(self.logged_tokens, 'token')} of items"),
            ("compactions", f"{sum(self.compactions.values()):,}" + (f" ({strategies})" if strategies else "")),
            ("context window", f"{self.context_window:,} tokens, of which {self.budget:,} the budget"),
            (
                "peak utilisation",
                f"{peak / self.budget:.0%} of the budget, {peak / self.context_window:.0%} of the window",
            ),
            ("mean input per request", f"{mean:,} tokens"),
            ("input tokens billed", f"{self.billed_tokens:,} + {self.summariser_tokens:,} for summaries"),
            ("full history every time", f"{self.full_history_tokens:,}"),
            ("saved", f"{self.saved:.0%}"),
            (
                "recall hits",
                f"{self.recall_hits}/{len(FACTS)}"
                if self.turns >= RECALL_TURNS
                else f"not tried (from {RECALL_TURNS} turns on, when history is folded)",
            ),
            ("time taken", f"{self.seconds:.1f} s"),
        ]


def drive(url: str, options: DemoOptions) -> Report:
    """Play the whole script against the server at `url`, with a progress bar, and report on the session."""
    import httpx2
    import openai

    from ._output import progress

    started = time.perf_counter()
    # trust_env off: a proxy set in the environment must not see (or break) a session on loopback
    sdk = openai.DefaultHttpxClient(trust_env=False)
    with (
        openai.OpenAI(base_url=f"{url}/v1", api_key="demo", http_client=sdk, max_retries=0, timeout=300) as client,
        httpx2.Client(base_url=url, trust_env=False, timeout=300) as http,
    ):
        try:
            conversation = client.conversations.create(metadata={"demo": f"{options.turns} turns, seed {options.seed}"})
            budget: int = _get(http, f"/v1/conversations/{conversation.id}/usage")["budget"]
            script = Script(options.turns, options.seed, budget)
            agent = Agent(client, conversation.id, script)
            played: list[Played] = []
            with progress() as bar:
                task = bar.add_task("turns", total=options.turns, status="")
                for number in range(options.turns):
                    played.append(agent.play(script.turn(number)))
                    now = _get(http, f"/v1/conversations/{conversation.id}/context")
                    compactions = counted(now["totals"]["compactions"], "compaction")
                    status = f"{now['utilisation']:.0f}% of the budget, {compactions}"
                    bar.update(task, advance=1, status=status)
            return measure(http, conversation.id, played, time.perf_counter() - started)
        except (openai.APIConnectionError, httpx2.TransportError) as exc:
            raise ContextfoldError(f"the demo's server stopped answering: {exc}") from None


def measure(http: httpx2.Client, conversation: str, played: Sequence[Played], seconds: float) -> Report:
    usage = _get(http, f"/v1/conversations/{conversation}/usage")
    tokens = [request["input_tokens"] for request in usage["requests"]]
    events = _events(http, conversation)
    peak, budget = max(tokens, default=0), usage["budget"]
    problems = [p.problem for p in played if p.problem]
    if len(problems) > 3:
        problems[3:] = [f"{counted(len(problems) - 3, 'more turn')} failed"]
    if peak > budget:
        problems.append(f"a request took {peak:,} tokens, over the {budget:,}-token budget")
    problems += [
        f"recall missed {p.turn.recall.value}: {p.answer[:200]!r}" for p in played if p.turn.recall and not p.hit
    ]
    return Report(
        conversation_id=conversation,
        turns=len(played),
        requests=len(tokens),
        compactions=dict(Counter(c["strategy"] for c in usage["compactions"])),
        peak_tokens=peak,
        budget=budget,
        context_window=usage["context_window"],
        billed_tokens=sum(tokens),
        events=len(events),
        logged_tokens=sum(e.tokens for e in events if isinstance(e, ITEM_TYPES)),
        summariser_tokens=sum(e.usage.input_tokens for e in events if isinstance(e, Compaction) and e.usage),
        full_history_tokens=full_history_tokens(events),
        recall_hits=sum(p.hit for p in played),
        seconds=seconds,
        problems=tuple(problems),
    )


def full_history_tokens(events: Sequence[AnyEvent]) -> int:
    """What the model requests would have taken had every one sent the whole log: per request, the instructions and
    tools (as the first request, with nothing folded yet, reported them) and every item logged before it.

    A request's own answer is logged just before its Usage event, in the same append, so the run of answer items
    (assistant messages, tool calls, reasoning) right before a Usage is not part of that request's input."""
    total = logged = answer = 0
    overhead: int | None = None
    for event in events:
        if isinstance(event, Usage):
            sent = logged - answer
            overhead = event.input_tokens - sent if overhead is None else overhead
            total += overhead + sent
            answer = 0
        elif isinstance(event, ITEM_TYPES):
            logged += event.tokens
            answering = isinstance(event, ToolCall | Reasoning) or (
                isinstance(event, Message) and event.role == "assistant"
            )
            answer = answer + event.tokens if answering else 0
        else:
            answer = 0
    return total


def print_report(report: Report, inspector: str | None, page: str, *, as_json: bool) -> None:
    """The report on stdout; `inspector` is the URL of the session in a server still running, if one is."""
    from ._output import stdout, table

    out = stdout()
    if as_json:
        data = {**asdict(report), "seconds": round(report.seconds, 2), "saved": round(report.saved, 4)}
        data["inspector_url"] = inspector
        data["inspector_path"] = page
        out.out(json.dumps(data, indent=2), highlight=False)
        return
    out.print(table(("", ""), report.rows(), title="contextfold demo"))
    if inspector is not None:
        out.print(f"Explore the session in the inspector: {inspector}", markup=False, soft_wrap=True)


class _Page(msgspec.Struct):
    data: list[AnyEvent]
    has_more: bool
    last_seq: int


def _events(http: httpx2.Client, conversation: str) -> list[AnyEvent]:
    """The whole log, as the server's /events pages give it (each event decoded by the one codec's types)."""
    events: list[AnyEvent] = []
    after = 0
    while True:
        reply = http.get(f"/v1/conversations/{conversation}/events", params={"after": after, "limit": 1_000})
        page = msgspec.json.decode(_checked(reply).content, type=_Page)
        events += page.data
        if not page.has_more:
            return events
        after = page.last_seq


def _get(http: httpx2.Client, path: str) -> Any:
    return _checked(http.get(path)).json()


def _checked(reply: httpx2.Response) -> httpx2.Response:
    if reply.is_error:
        raise ContextfoldError(f"the demo's server answered {reply.status_code} to {reply.url.path}: {reply.text}")
    return reply
