"""`contextfold demo`: the default 300-turn session through a real server, its numbers checked against the store it
left behind, the inspector served from that store afterwards, loopback only; and the mistakes a user can make."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contextfold.cli import main
from contextfold.cli._demo import full_history_tokens
from contextfold.cli._demo_agent import FACTS, MAX_OUTPUT, MIN_OUTPUT, Script
from contextfold.events import AnyEvent, Compaction, Message, ToolCall, ToolResult, TurnMarker, Usage, text_of
from contextfold.store import open_server_store

from .processes import Replica


def _stored(db: Path, conversation: str) -> list[AnyEvent]:
    async def read() -> list[AnyEvent]:
        store = await open_server_store(str(db))
        try:
            return await store.read(conversation)
        finally:
            await store.close()

    return asyncio.run(read())


@contextlib.contextmanager
def recording_connections() -> Iterator[list[str]]:
    """Every host this process connects to or looks up, while a proxy in the environment points off the machine
    (the demo must not use it)."""
    seen: list[str] = []
    connect, lookup = socket.socket.connect, socket.getaddrinfo

    def recorded_connect(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            seen.append(str(address[0]))
        connect(sock, address)

    def recorded_lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(host))
        return lookup(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            patch.setenv(name, "http://203.0.113.9:3128")
        patch.setattr(socket.socket, "connect", recorded_connect)
        patch.setattr(socket, "getaddrinfo", recorded_lookup)
        yield seen


@pytest.mark.slow
def test_the_default_session_matches_the_store_and_reopens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "demo.db"
    with recording_connections() as contacted:
        assert main(["demo", "--db", str(db), "--no-wait", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    conversation = report["conversation_id"]

    assert report["turns"] == 300
    assert report["problems"] == []
    assert report["recall_hits"] == len(FACTS)
    assert report["peak_tokens"] <= report["budget"] < report["context_window"] == 32_768
    log = _stored(db, conversation)
    usage = [e for e in log if isinstance(e, Usage)]
    assert report["requests"] == len(usage)
    assert report["billed_tokens"] == sum(u.input_tokens for u in usage)
    assert report["peak_tokens"] == max(u.input_tokens for u in usage)
    compactions = [e for e in log if isinstance(e, Compaction)]
    assert report["compactions"] == dict(Counter(c.strategy for c in compactions))
    assert len(compactions) >= 10
    assert report["summariser_tokens"] == sum(c.usage.input_tokens for c in compactions if c.usage)
    assert report["full_history_tokens"] == full_history_tokens(log)
    assert report["billed_tokens"] < report["full_history_tokens"]
    assert report["saved"] > 0.5
    asked = [e for e in log if isinstance(e, Message) and e.role == "user"]
    assert len(asked) == 300  # one user message a turn; the tool outputs came as function_call_output items
    assert all(m.status == "completed" for m in log if isinstance(m, TurnMarker) and m.status != "started")
    recalls = {e.call_id for e in log if isinstance(e, ToolCall) and e.name == "recall"}
    outputs = [len(e.output) for e in log if isinstance(e, ToolResult) and e.call_id not in recalls]
    assert min(outputs) >= MIN_OUTPUT - 100
    assert max(outputs) <= MAX_OUTPUT
    for fact in FACTS:  # planted in an early turn's output, and the last turns' answers carry it
        assert any(fact.line in e.output for e in log[:100] if isinstance(e, ToolResult))
        assert any(fact.value in text_of(e) for e in log[-40:] if isinstance(e, Message) and e.role == "assistant")

    assert report["inspector_url"] is None  # the demo's server has stopped: no URL names it
    assert report["inspector_path"] == f"/ui/#/c/{conversation}"
    assert f"contextfold serve --db {db}" in captured.err
    assert "300/300" in captured.err  # the progress bar
    assert contacted
    assert set(contacted) <= {"127.0.0.1", "localhost"}

    replica = Replica(str(db), tmp_path / "serve.log")
    try:
        replica.wait_ready()
        page = httpx.get(f"{replica.url}/ui/")
        assert page.status_code == 200
        assert "<html" in page.text.lower()
        reopened = httpx.get(f"{replica.url}/v1/conversations/{conversation}/usage").json()
        assert len(reopened["requests"]) == report["requests"]
    finally:
        assert replica.stop() == 0


def test_a_session_too_short_to_fold_runs_and_says_recall_was_not_tried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--db", str(tmp_path / "d.db"), "--turns", "5", "--no-wait"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"turns +5\b", out)
    assert re.search(r"recall hits +not tried \(from 20 turns on", out)


def test_a_short_session_prints_a_table_and_how_to_reopen_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--db", str(tmp_path / "d.db"), "--turns", "30", "--no-wait"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    for row in ("turns", "model requests", "compactions", "peak utilisation", "input tokens billed", "saved"):
        assert row in out
    assert re.search(rf"recall hits +{len(FACTS)}/{len(FACTS)}", out)
    assert "http" not in captured.out  # the server has stopped: no URL, only how to reopen it and the page
    assert "contextfold serve --db" in captured.err
    assert "/ui/#/c/conv_" in captured.err


def test_piped_the_demo_prints_no_url_and_a_reopened_server_shows_the_window_it_ran_with(tmp_path: Path) -> None:
    """The demo as `contextfold demo | tee`, in a real process: stdout not a terminal, so it does not wait, and the
    server it stopped is named nowhere. Reopened with `contextfold serve --db` (a default window half the demo's),
    the session is measured against the window it ran with, in `/usage`, `/context` and `conversations context`."""
    db = tmp_path / "demo.db"
    argv = [sys.executable, "-m", "contextfold", "demo", "--turns", "20", "--db", str(db)]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, check=False)
    assert run.returncode == 0, run.stderr
    assert "http" not in run.stdout
    assert "recall hits" in run.stdout
    conversation = re.findall(r"conv_[0-9a-f]+", run.stdout)[0]
    assert f"contextfold serve --db {db}" in run.stderr
    ran = re.search(r"context window +([\d,]+) tokens, of which ([\d,]+) the budget", run.stdout)
    assert ran is not None
    window, budget = (int(n.replace(",", "")) for n in ran.groups())
    assert window == 32_768

    replica = Replica(str(db), tmp_path / "serve.log")  # no --context-window: the test model's default, 16,384
    try:
        replica.wait_ready()
        usage = httpx.get(f"{replica.url}/v1/conversations/{conversation}/usage").json()
        context = httpx.get(f"{replica.url}/v1/conversations/{conversation}/context").json()
    finally:
        assert replica.stop() == 0
    assert usage["context_window"] == context["context_window"] == window
    assert usage["budget"] == context["budget"] == budget
    assert max(r["input_tokens"] for r in usage["requests"]) <= budget  # none drawn over the line
    assert context["utilisation"] <= 100
    cli = subprocess.run(
        [sys.executable, "-m", "contextfold", "conversations", "context", conversation, "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert f"window {window:,}" in cli.stdout
    assert f"budget {budget:,}" in cli.stdout


def test_a_recall_that_finds_nothing_fails_the_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a window so wide that nothing is ever folded: the model is never offered recall, so no fact comes back
    argv = ["demo", "--db", str(tmp_path / "d.db"), "--turns", "20", "--context-window", "400000", "--no-wait"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "0/4" in captured.out
    assert "contextfold: the demo failed: recall missed TANGERINE-4471" in captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--turns", "0"], "--turns must be at least 1, got 0"),
        (["--context-window", "1000"], "--context-window must be at least 4096 tokens, got 1000"),
        (["--port", "70000"], "--port must be from 0 (any free port) to 65535, got 70000"),
        (["--db", "/nonexistent/dir/demo.db"], "cannot open --db '/nonexistent/dir/demo.db': unable to open"),
    ],
)
def test_bad_options_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--no-wait", *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_file_that_is_not_a_database_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "notes.txt"
    db.write_text("these are notes, not a database\n" * 100)
    assert main(["demo", "--db", str(db), "--no-wait"]) == 2
    assert "file is not a database" in capsys.readouterr().err


def test_a_database_with_api_keys_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "keys.db")
    assert main(["keys", "create", "--tenant", "acme", "--db", db]) == 0
    assert main(["demo", "--db", db, "--no-wait"]) == 2
    assert "has API keys" in capsys.readouterr().err


def test_a_port_in_use_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["demo", "--db", str(tmp_path / "d.db"), "--port", str(port), "--no-wait"]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_wait_keeps_the_inspector_up_until_ctrl_c(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Ctrl-C must raise KeyboardInterrupt in the child even if this process was started with SIGINT ignored
    code = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from contextfold.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    argv = ["demo", "--db", str(tmp_path / "d.db"), "--turns", "20", "--port", str(port), "--wait"]
    child = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert child.stdout is not None
        lines = iter(child.stdout.readline, b"")
        url = next(line for line in lines if b"inspector" in line).decode().split()[-1]
        assert url.startswith(f"http://127.0.0.1:{port}/ui/#/c/conv_")
        assert httpx.get(url.split("#")[0]).status_code == 200  # served while the demo waits
        conversation = url.rsplit("/", 1)[1]
        assert httpx.get(f"http://127.0.0.1:{port}/v1/conversations/{conversation}/context").status_code == 200
        child.send_signal(2)
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz")


def test_full_history_counts_every_item_before_each_request() -> None:
    log: list[AnyEvent] = [
        Message(role="user", content=[], tokens=10),
        ToolCall(call_id="c", name="grep", arguments="{}", batch_id="b", tokens=3),  # the first request's answer
        Usage(model="test", input_tokens=15, output_tokens=1),  # 5 of instructions and tools, 10 of items
        ToolResult(call_id="c", output="x", tokens=20),
        Message(role="assistant", content=[], tokens=4),  # the second request's answer
        Usage(model="test", input_tokens=20, output_tokens=1),  # what a compacted view took
    ]
    assert full_history_tokens(log) == 15 + (5 + 10 + 3 + 20)
    assert full_history_tokens([]) == 0


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(),
    turns=st.integers(20, 2_000),
    budget=st.integers(3_072, 400_000),
    picked=st.lists(st.integers(0, 10_000), min_size=1, max_size=6),
)
def test_the_script_is_seeded_sized_and_plants_facts_only_where_it_says(
    seed: int, turns: int, budget: int, picked: list[int]
) -> None:
    script = Script(turns, seed, budget)
    numbers = {n % turns for n in picked} | {1, 2, 3, 4}
    words = {word for fact in FACTS for word in re.findall("[a-z]{3,}", f"{fact.words} {fact.value}".lower())}
    for number in sorted(numbers):
        turn = script.turn(number)
        assert turn == Script(turns, seed, budget).turn(number)
        if number >= turns - len(FACTS):
            assert turn.recall == FACTS[number - (turns - len(FACTS))]
            assert turn.message == f"/recall {turn.recall.words}"
            continue
        assert 1 <= len(turn.calls) <= 3
        assert turn.message.count("/tool ") == len(turn.calls)
        outputs = [script.output(turn, i) for i in range(len(turn.calls))]
        assert outputs == [script.output(turn, i) for i in range(len(turn.calls))]
        assert sum(len(o) for o in outputs) <= max(script.per_turn, len(outputs) * MIN_OUTPUT)
        for call, output in zip(turn.calls, outputs, strict=True):
            assert MIN_OUTPUT - 100 <= len(output) <= min(MAX_OUTPUT, call.size)
            if call.fact is None:
                assert not words & set(re.findall("[a-z]+", output.lower()))
            else:
                assert call.fact.line in output
                assert output.splitlines()[0] != call.fact.line
        planted = [call.fact for call in turn.calls if call.fact is not None]
        assert planted == ([FACTS[number - 1]] if 1 <= number <= len(FACTS) else [])
