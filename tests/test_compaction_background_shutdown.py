"""Issue 19: a real `contextfold serve` process stopped with SIGTERM while a compaction off the request path is
planning (its summary request stalls at the upstream). The process ends cleanly within the grace, the compaction is
dropped with nothing written, and the log is whole: its shape and the view's invariants hold, a fresh load sees no
open turn, `contextfold doctor` passes on the file, and the next server takes a turn on it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from contextfold.cli import main
from contextfold.events import Compaction
from contextfold.store import SQLiteStore

from .fakes.faulty_upstream import MODEL, FaultyUpstream
from .processes import Replica
from .reliability_fixtures import check_log, check_views

WINDOW = 6_000
"""Budget 4,500 (a quarter kept for the answer): the background band is 3,150 to 3,600 tokens, each turn ~200."""
WORDS = "the deploy log shows the config parser rejecting the default value again " * 10


def _config(tmp_path: Path, upstream: FaultyUpstream) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(
        f'model = "{MODEL}"\ncompact_target = 0.2\nshutdown_grace = 5\n'
        f'[[models]]\nname = "{MODEL}"\nprovider = "openai-chat"\nbase_url = "{upstream.url}"\n'
        f'api_key = "unused"\ncontext_window = {WINDOW}\n'
    )
    return path


def _until_planning(http: httpx.Client, upstream: FaultyUpstream, conversation: str) -> None:
    """Turns until one leaves the view in the band and its compaction's summary request reaches the upstream."""
    for _ in range(40):
        reply = http.post("/v1/responses", json={"model": MODEL, "conversation": conversation, "input": WORDS})
        assert reply.status_code == 200, reply.text
        assert "compaction" not in {item["type"] for item in reply.json()["output"]}  # never inline, never waited
        context = http.get(f"/v1/conversations/{conversation}/context").json()
        if context["tokens"]["estimated"] > context["background_compaction"]["soft_tokens"]:
            break
    else:
        pytest.fail("the view never passed the soft threshold")
    for _ in range(500):
        if any(call.summary for call in upstream.calls):
            return
        time.sleep(0.02)
    pytest.fail("no background compaction started")


def test_sigterm_mid_compaction_writes_nothing_and_the_log_stays_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "server.db")
    with FaultyUpstream(summaries="stall") as upstream:
        replica = Replica(db, tmp_path / "server.log", "--config", str(_config(tmp_path, upstream)))
        try:
            replica.wait_ready()
            with httpx.Client(base_url=replica.url, timeout=60) as http:
                conversation = http.post("/v1/conversations", json={}).json()["id"]
                _until_planning(http, upstream, conversation)
                head = http.get(f"/v1/conversations/{conversation}/context").json()["events"]
                assert 'contextfold_background_compactions_total{outcome="committed"}' not in http.get("/metrics").text
            replica.process.send_signal(signal.SIGTERM)
            try:
                code = replica.process.wait(timeout=30)  # the grace is 5 s: the planning is dropped, not awaited
            except subprocess.TimeoutExpired:
                pytest.fail(f"the server did not stop on SIGTERM:\n{replica.output()}")
        finally:
            replica.stop()
    assert code == 0, replica.output()
    assert "Traceback" not in replica.output()
    events = asyncio.run(_check(db, conversation))
    assert events[-1].seq == head  # the compaction wrote nothing
    assert not [e for e in events if isinstance(e, Compaction)]
    capsys.readouterr()
    assert main(["doctor", "--db", db]) == 0, capsys.readouterr()

    # the next server takes a turn on the same file
    with FaultyUpstream() as upstream:
        replica = Replica(db, tmp_path / "again.log", "--config", str(_config(tmp_path, upstream)))
        try:
            replica.wait_ready()
            with httpx.Client(base_url=replica.url, timeout=60) as http:
                body: dict[str, Any] = {"model": MODEL, "conversation": conversation, "input": "and now?"}
                reply = http.post("/v1/responses", json=body)
                assert reply.status_code == 200, reply.text
        finally:
            assert replica.stop() == 0
    assert "Traceback" not in replica.output()


async def _check(db: str, conversation: str) -> list[Any]:
    store = await SQLiteStore.open(db)
    try:
        events = await store.read(conversation)
        status = check_log(events)
        assert set(status.values()) == {"completed"}, status
        view = (await check_views(store, conversation)).view
        assert not view.open_turns
        return list(events)
    finally:
        await store.close()
