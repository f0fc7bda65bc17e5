"""`contextfold chat` against a real `contextfold serve` process (the built-in `test` model, a 2,000-token window so
a few `/long 300` answers compact): the command run in-process with its stdin replaced, and as a subprocess fed by
a pipe. Every number the chat prints is checked against the server's own `GET .../context`."""

from __future__ import annotations

import contextlib
import io
import os
import pty
import re
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import FunctionToolParam, ResponseFunctionToolCall, ResponseOutputItemDoneEvent
from rich.console import Console

from contextfold.cli import main
from contextfold.cli._chat_turn import NO_TOOLS, Ui, _Printer

from .processes import Replica, _free_port

STATUS = re.compile(
    r"^([\d,]+) / ([\d,]+) tokens \(window ([\d,]+)\) · (\S+)% · (\d+) compactions? · (conv_\w+)$", re.M
)
COMPACTED = re.compile(r"^compacted: (\w+) \((\w+)\), ([\d,]+) → ([\d,]+) tokens$", re.M)


@dataclass(frozen=True, slots=True)
class Run:
    code: int
    out: str
    err: str

    def statuses(self) -> list[tuple[int, int, int, str, int, str]]:
        return [(_n(t), _n(b), _n(w), u, int(c), conv) for t, b, w, u, c, conv in STATUS.findall(self.err)]


def _n(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    folder = tmp_path_factory.mktemp("chat")
    replica = Replica(str(folder / "chat.db"), folder / "server.log", "--context-window", "2000")
    try:
        replica.wait_ready()
        yield replica
    finally:
        replica.stop()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CONTEXTFOLD_"):
            monkeypatch.delenv(name)


@pytest.fixture
def chat(server: Replica, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    """Run `contextfold chat` in-process with these lines as its (piped) stdin."""

    def run(*lines: str, args: Sequence[str] = (), url: str | None = None) -> Run:
        monkeypatch.setattr(sys, "stdin", io.StringIO("".join(f"{line}\n" for line in lines)))
        code = main(["chat", "--url", url or server.url, *args])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def api(server: Replica, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/v1{path}", params=params)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


# --- answers and the status line ------------------------------------------------------------------------------------


def test_an_answer_streams_and_the_status_line_matches_the_context(chat: Callable[..., Run], server: Replica) -> None:
    run = chat("hello there", "and again")
    assert run.code == 0
    assert 'You said: "hello there". I saw 1 item,' in run.out
    assert 'You said: "and again". I saw 3 items' in run.out
    first, second = run.statuses()
    conversation = second[5]
    assert first[5] == conversation
    context = api(server, f"/conversations/{conversation}/context")
    tokens, budget, window, utilisation, compactions, _ = second
    assert (tokens, budget, window) == (context["tokens"]["total"], context["budget"], context["context_window"])
    assert utilisation == f"{context['utilisation']:.0f}"
    assert compactions == context["totals"]["compactions"] == 0
    assert first[0] < second[0]  # the view grew by a turn


def test_long_answers_compact_and_the_chat_says_so(chat: Callable[..., Run], server: Replica) -> None:
    run = chat(*["/long 300"] * 6, "/status")
    assert run.code == 0
    assert "(compacting the conversation…)" in run.err
    strategy, trigger, before, after = COMPACTED.findall(run.err)[0]
    assert trigger == "auto"
    statuses = run.statuses()
    assert statuses[0][4] == 0
    assert statuses[-1][4] == 1
    context = api(server, f"/conversations/{statuses[-1][5]}/context")
    latest = context["latest_compaction"]
    assert (strategy, _n(before), _n(after)) == (latest["strategy"], latest["tokens_before"], latest["tokens_after"])
    assert re.search(rf"compactions\s+1; the last: {strategy} \(auto\), {before} → {after} tokens", run.out)
    assert re.search(rf"view\s+{context['tokens']['total']:,} tokens: summary", run.out)


def test_compact_then_status_shows_the_manual_compaction(chat: Callable[..., Run], server: Replica) -> None:
    run = chat(*["/long 300"] * 4, "/compact keep the numbers", "/status")
    assert run.code == 0
    found = re.search(r"^compacted: (\w+), ([\d,]+) → ([\d,]+) tokens", run.out, re.M)
    assert found is not None
    strategy, before, after = found.groups()
    assert re.search(rf"compactions\s+1; the last: {strategy} \(manual\), {before} → {after} tokens", run.out)
    assert not COMPACTED.search(run.err)  # said once, on stdout, not again as a note
    last = run.statuses()[-1]
    assert last[0] == _n(after)
    assert last[4] == 1


def test_compact_with_nothing_to_fold_says_so(chat: Callable[..., Run]) -> None:
    run = chat("hi", "/compact")
    assert run.code == 0
    assert "nothing compacted" in run.out


# --- pins, search -----------------------------------------------------------------------------------------------------


def test_pin_takes_the_newest_message_and_unpin_releases_it(chat: Callable[..., Run], server: Replica) -> None:
    run = chat("remember the code word TANGO-7", "/pin")
    assert run.code == 0
    found = re.search(r'^pinned (ev_\w+) \(assistant: "You said: ', run.out, re.M)
    assert found is not None
    item_id = found.group(1)
    conversation = run.statuses()[-1][5]
    events = api(server, f"/conversations/{conversation}/events")
    seq = next(e["seq"] for e in events["data"] if e["id"] == item_id)
    assert events["pinned"] == [seq]

    run = chat(f"/unpin {item_id}", args=["--conversation", conversation])
    assert run.code == 0
    assert f"unpinned {item_id}" in run.out
    assert api(server, f"/conversations/{conversation}/events")["pinned"] == []


def test_pinning_an_unknown_item_prints_the_error_and_goes_on(chat: Callable[..., Run]) -> None:
    run = chat("/pin ev_nope", "/pin", "/unpin", "/search", "/status")
    assert run.code == 1  # piped: a line failed
    assert "error: conversation 'conv_" in run.err
    assert "has no item 'ev_nope' (HTTP 404, not_found)" in run.err
    assert "error: there is no message to pin yet" in run.err
    assert "error: /unpin needs the item's id" in run.err
    assert "error: /search needs words" in run.err
    assert re.search(r"^conversation\s+conv_\w+", run.out, re.M)  # /status still ran


def test_search_finds_a_folded_item(chat: Callable[..., Run], server: Replica) -> None:
    lines = ["hi", "/long 300", "the deploy key is ZEBRA-99", *["/long 300"] * 5]  # the first turn stays (the head)
    run = chat(*lines, "/search ZEBRA", "/search xylophone")
    assert run.code == 0
    conversation = run.statuses()[-1][5]
    hits = api(server, f"/conversations/{conversation}/search", q="ZEBRA")["data"]
    assert hits
    assert "folded items matching 'ZEBRA'" in run.out
    assert hits[0]["item_id"] in run.out
    events = api(server, f"/conversations/{conversation}/events")["data"]
    assert next(e for e in events if e["id"] == hits[0]["item_id"])["state"] == "folded"
    assert "no folded item matches 'xylophone'" in run.out


# --- conversations ----------------------------------------------------------------------------------------------------


def test_clear_starts_a_new_conversation_and_keeps_the_old_one(chat: Callable[..., Run], server: Replica) -> None:
    run = chat("first words", "/clear", "second words")
    assert run.code == 0
    (first, *_), (second, *_) = (s[5:] for s in run.statuses())
    assert first != second
    assert f"new conversation {second}; the previous one, {first}, stays in the log" in run.out
    assert 'You said: "second words". I saw 1 item,' in run.out
    kept = api(server, f"/conversations/{first}/items", order="asc")["data"]
    assert kept[0]["content"][0]["text"] == "first words"


def test_resuming_answers_the_tool_calls_left_pending(chat: Callable[..., Run], server: Replica) -> None:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as client:
        conversation = client.conversations.create().id
        tool: FunctionToolParam = {"type": "function", "name": "lookup", "parameters": {}, "strict": False}
        made = client.responses.create(model="test", conversation=conversation, input="/tool lookup {}", tools=[tool])
        assert made.output[0].type == "function_call"
    run = chat("hello after the call", args=["--conversation", conversation])
    assert run.code == 0
    assert "answering the model's 1 pending tool call" in run.err
    assert 'You said: "hello after the call"' in run.out
    items = api(server, f"/conversations/{conversation}/items", order="asc")["data"]
    assert [i["type"] for i in items][-4:] == ["function_call", "function_call_output", "message", "message"]
    assert items[-3]["output"] == NO_TOOLS


def test_a_function_call_in_the_stream_is_shown_and_answered_next_time() -> None:
    err = io.StringIO()
    printer = _Printer(Ui(Console(file=io.StringIO()), Console(file=err, width=200)))
    call = ResponseFunctionToolCall(type="function_call", call_id="call_1", name="weather", arguments='{"city":"Oslo"}')
    printer.show(
        ResponseOutputItemDoneEvent(type="response.output_item.done", item=call, output_index=0, sequence_number=4)
    )
    assert printer.calls == ["call_1"]
    assert 'the model called weather({"city": "Oslo"}): this chat has no tools, so it was not run' in err.getvalue()


# --- errors -----------------------------------------------------------------------------------------------------------


def test_unknown_commands_get_a_hint_and_double_slash_sends_the_line(chat: Callable[..., Run]) -> None:
    run = chat("/frobnicate now", "//frobnicate now", "/help")
    assert run.code == 1
    assert "error: unknown command /frobnicate: /help lists the commands" in run.err
    assert 'You said: "/frobnicate now"' in run.out
    assert "/compact [INSTRUCTIONS]" in run.out


def test_an_upstream_failure_prints_its_message_and_the_chat_goes_on(chat: Callable[..., Run]) -> None:
    run = chat("/fail 503", "still here?", "/quit", "never sent")
    assert run.code == 1
    assert "error: upstream test failed: test answered 503: failure asked for with /fail 503" in run.err
    assert 'You said: "still here?"' in run.out
    assert "never sent" not in run.out


def test_a_view_over_the_budget_is_refused_and_the_chat_goes_on(chat: Callable[..., Run]) -> None:
    run = chat("hi", "/status", args=["--instructions", "word " * 3_000])
    assert run.code == 1
    assert "over the" in run.err
    assert "budget" in run.err
    assert re.search(r"^view\s+[\d,]+ tokens: instructions", run.out, re.M)


def test_an_unreachable_server_exits_1_and_says_to_start_one(
    chat: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    run = chat("hi", url=url)
    assert run.code == 1
    assert f"contextfold: cannot reach a contextfold server at {url}: start one with `contextfold serve`" in run.err
    monkeypatch.setenv("CONTEXTFOLD_URL", url)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
    assert main(["chat"]) == 1


def test_an_unknown_conversation_or_model_exits_2(chat: Callable[..., Run], server: Replica) -> None:
    before = len(api(server, "/conversations", limit=100)["data"])
    run = chat("hi", args=["--conversation", "conv_nope"])
    assert run.code == 2
    assert "contextfold: conversation 'conv_nope' not found (HTTP 404, not_found)" in run.err
    run = chat("hi", args=["--model", "no-such-model"])
    assert run.code == 2
    assert "no-such-model" in run.err
    assert len(api(server, "/conversations", limit=100)["data"]) == before  # nothing left behind


def test_ctrl_c_during_an_answer_stops_it_not_the_chat(
    chat: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(self: Ui, delta: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Ui, "text", interrupt)
    run = chat("/long 200", "/status")
    assert run.code == 1
    assert "(answer stopped: the server marks the turn interrupted)" in run.err
    assert re.search(r"^conversation\s+conv_\w+", run.out, re.M)


# --- API keys ---------------------------------------------------------------------------------------------------------


def test_api_keys_missing_refused_and_revoked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "keys.db"
    assert main(["keys", "create", "--tenant", "acme", "--db", str(db)]) == 0
    fields = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    replica = Replica(str(db), tmp_path / "server.log")
    try:
        replica.wait_ready()
        monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
        assert main(["chat", "--url", replica.url]) == 2
        assert "(no API key given: pass --api-key or set CONTEXTFOLD_API_KEY)" in capsys.readouterr().err

        class RevokingStdin:
            """Piped lines; reading the second one revokes the key first, so that line meets a 401."""

            def __init__(self, text: str) -> None:
                self.lines = io.StringIO(text)
                self.reads = 0

            def isatty(self) -> bool:
                return False

            def readline(self) -> str:
                self.reads += 1
                if self.reads == 2:
                    assert main(["keys", "revoke", fields["id"], "--db", str(db)]) == 0
                return self.lines.readline()

        monkeypatch.setenv("CONTEXTFOLD_API_KEY", fields["secret"])
        monkeypatch.setattr(sys, "stdin", RevokingStdin("hi\nhello\n/status\n"))
        assert main(["chat", "--url", replica.url]) == 1
        captured = capsys.readouterr()
        assert 'You said: "hi"' in captured.out
        assert captured.err.count("invalid or revoked API key (HTTP 401, invalid_api_key)") == 2  # hello, /status
    finally:
        replica.stop()


# --- as a process -----------------------------------------------------------------------------------------------------


def test_a_pipe_drives_the_chat_as_a_script(server: Replica) -> None:
    command = [sys.executable, "-m", "contextfold", "chat", "--url", server.url]
    done = subprocess.run(command, input="hi\n/status\n", capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('You said: "hi"')
    assert re.search(r"^budget\s+1,500 of a 2,000 window", done.stdout, re.M)
    assert STATUS.search(done.stderr)
    assert ">" not in done.stderr  # no prompt when stdin is not a terminal


def test_ctrl_c_at_the_prompt_exits_130(server: Replica) -> None:
    """On a terminal, where the prompt shows the chat is waiting (a pipe cannot tell when an answer has ended)."""
    command = [sys.executable, "-m", "contextfold", "chat", "--url", server.url]
    controller, terminal = pty.openpty()
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    process = subprocess.Popen(command, stdin=terminal, stdout=terminal, stderr=terminal, env=env)
    os.close(terminal)
    try:
        _read_until(controller, "\n> ")
        os.write(controller, b"hi\n")
        _read_until(controller, "\n> ")  # answered, and waiting at the prompt again
        for _ in range(60):  # a SIGINT just before readline's select() waits for the next one (a CPython race)
            process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=1)
                break
        assert process.wait(timeout=60) == 130
        assert "contextfold: interrupted" in _read_until(controller, "interrupted")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)


def test_on_a_terminal_the_chat_prompts_and_ctrl_d_quits(server: Replica) -> None:
    command = [sys.executable, "-m", "contextfold", "chat", "--url", server.url]
    controller, terminal = pty.openpty()
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    process = subprocess.Popen(command, stdin=terminal, stdout=terminal, stderr=terminal, env=env)
    os.close(terminal)
    try:
        seen = _read_until(controller, "\n> ")  # the prompt, after the banner
        assert re.search(r"conversation conv_\w+ \(new\) on http://127\.0\.0\.1:\d+", seen)
        os.write(controller, b"hi\n")
        seen = _read_until(controller, "\n> ")  # the prompt again, after the answer and the status line
        assert 'You said: "hi"' in seen
        assert STATUS.search(seen.replace("\r", ""))
        os.write(controller, b"\x04")  # Ctrl-D at the prompt
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)


def _read_until(fd: int, wanted: str) -> str:
    """What the terminal shows until `wanted` appears (a hung chat fails the test instead of hanging it)."""
    seen = ""
    while wanted not in seen:
        ready, _, _ = select.select([fd], [], [], 60)
        if not ready:
            pytest.fail(f"the chat never printed {wanted!r}; it printed:\n{seen}")
        seen += os.read(fd, 4096).decode(errors="replace")
    return seen
