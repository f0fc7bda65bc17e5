"""An upstream that never answers, against a real `contextfold serve` process (issue 14, item 7): the turn fails
within its upstream's deadlines with the conversation released and the failed turn marked, and the next turn is
answered; a non-streamed client that leaves ends its turn; SIGTERM stops the server within its grace period while
a turn hangs.

The upstream is `FaultyUpstream` on loopback: a `stall` sends nothing at all, for longer than any bound here
(two minutes), and the route's SDK timeout is longer still, so only the deadlines can end a turn early. The waits
below are safety nets for a hung test, far longer than the deadlines under test, never timings.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from contextfold.models import RetryPolicy
from contextfold.store import open_server_store

from .fakes.faulty_upstream import MODEL, FaultyUpstream
from .processes import Replica
from .reliability_fixtures import ROUTES, WINDOW, RouteClient, check_log, eventually

SDK_TIMEOUT = 100.0
"""The route's per-read timeout: longer than every wait here, so a turn ended early was ended by a deadline."""
SAFETY = 60.0


def serve(tmp_path: Path, upstream: FaultyUpstream, **settings: float) -> Replica:
    """A server process whose default model is the `faulty` route, with `settings` as top-level config keys."""
    config = tmp_path / "server.toml"
    keys = "".join(f"{key} = {value}\n" for key, value in settings.items())
    config.write_text(
        f'model = "{MODEL}"\n{keys}'
        f'[[models]]\nname = "{MODEL}"\nprovider = "openai-chat"\nbase_url = "{upstream.url}"\n'
        f'api_key = "unused"\ncontext_window = {WINDOW}\noptions = {{ timeout = {SDK_TIMEOUT} }}\n'
    )
    replica = Replica(str(tmp_path / "s.db"), tmp_path / "server.log", "--config", str(config))
    replica.wait_ready()
    return replica


@pytest.fixture
def upstream() -> Iterator[FaultyUpstream]:
    with FaultyUpstream() as fake:
        yield fake


async def statuses(db: Path, conversation: str) -> list[str]:
    """The conversation's turns as its log records them, in order."""
    store = await open_server_store(str(db))
    try:
        return list(check_log(await store.read(conversation)).values())
    finally:
        await store.close()


@pytest.mark.parametrize("way", ROUTES)
async def test_a_turn_on_a_silent_upstream_fails_at_its_deadline_and_the_next_is_answered(
    tmp_path: Path, upstream: FaultyUpstream, way: str
) -> None:
    replica = serve(tmp_path, upstream, first_byte_timeout=60, turn_timeout=1.5)
    try:
        async with httpx.AsyncClient(base_url=replica.url, timeout=SAFETY) as http:
            client = RouteClient(http, way)
            conversation = await client.start()
            upstream.script("stuck", "stall")
            outcome = await client.turn("stuck here")
            assert outcome.kind == "timeout", outcome
            assert outcome.status == 504 or outcome.streamed_error, outcome
            assert "turn_timeout" in outcome.message
            # The deadline passed during the first attempt: nothing was retried after it.
            assert len(upstream.calls_for("stuck")) == 1
            answered = await client.turn("and the next question")  # no 409: the conversation was released
            assert answered.text is not None, answered
        assert await statuses(tmp_path / "s.db", conversation) == ["completed", "failed", "completed"]
    finally:
        replica.stop()


async def test_first_byte_timeouts_are_retried_while_the_turn_has_time(
    tmp_path: Path, upstream: FaultyUpstream
) -> None:
    replica = serve(tmp_path, upstream, first_byte_timeout=0.5, turn_timeout=SAFETY)
    try:
        async with httpx.AsyncClient(base_url=replica.url, timeout=SAFETY) as http:
            upstream.script("twice", "stall", "stall", "ok")
            reply = await http.post("/v1/responses", json={"input": "twice silent, then an answer"})
            assert reply.status_code == 200, reply.text
            assert [c.fault for c in upstream.calls_for("twice")] == ["stall", "stall", "ok"]
            upstream.script("never", "stall")
            reply = await http.post("/v1/responses", json={"input": "never a byte"})
            assert reply.status_code == 504, reply.text
            assert "first_byte_timeout" in reply.json()["error"]["message"]
            assert len(upstream.calls_for("never")) == RetryPolicy().attempts
    finally:
        replica.stop()


async def test_a_non_streamed_client_that_leaves_ends_its_turn(tmp_path: Path, upstream: FaultyUpstream) -> None:
    replica = serve(tmp_path, upstream, first_byte_timeout=SAFETY * 2, turn_timeout=SAFETY * 2)
    try:
        async with httpx.AsyncClient(base_url=replica.url, timeout=SAFETY) as http:
            conversation = (await http.post("/v1/conversations", json={})).json()["id"]
            upstream.script("stuck", "stall")
            body = {"input": "stuck here", "conversation": conversation}
            with pytest.raises(httpx.ReadTimeout):
                await http.post("/v1/responses", json=body, timeout=1.0)
            await _until_marked(tmp_path / "s.db", conversation, ["interrupted"])
            reply = await http.post("/v1/responses", json={"input": "are you there?", "conversation": conversation})
            assert reply.status_code == 200, reply.text
        assert await statuses(tmp_path / "s.db", conversation) == ["interrupted", "completed"]
    finally:
        replica.stop()


async def _until_marked(db: Path, conversation: str, expected: list[str]) -> None:
    for _ in range(int(SAFETY / 0.1)):
        if await statuses(db, conversation) == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the turns of {conversation} never became {expected}: {await statuses(db, conversation)}")


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "non-streamed"])
async def test_sigterm_stops_the_server_within_its_grace_period_while_a_turn_hangs(
    tmp_path: Path, upstream: FaultyUpstream, stream: bool
) -> None:
    grace = 1
    replica = serve(tmp_path, upstream, first_byte_timeout=SAFETY * 2, turn_timeout=SAFETY * 2, shutdown_grace=grace)
    try:
        async with httpx.AsyncClient(base_url=replica.url, timeout=SAFETY) as http:
            conversation = (await http.post("/v1/conversations", json={})).json()["id"]
        upstream.script("stuck", "stall")
        body = {"input": "stuck here", "conversation": conversation, "stream": stream}
        hanging = threading.Thread(target=_post_and_ignore, args=(replica.url, body), daemon=True)
        hanging.start()
        await eventually(lambda: len(upstream.calls_for("stuck")) == 1, "the turn reached the upstream")
        replica.process.send_signal(signal.SIGTERM)
        try:
            replica.process.wait(timeout=grace + 30)  # a net: the stall lasts two minutes, the SDK timeout longer
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not stop on SIGTERM while a turn hung:\n{replica.output()}")
        assert await statuses(tmp_path / "s.db", conversation) == ["interrupted"]  # marked on the way out
    finally:
        replica.stop()


def _post_and_ignore(url: str, body: dict[str, object]) -> None:
    """A client that waits for as long as it takes (the server going away ends it)."""
    try:
        with httpx.Client(base_url=url, timeout=SAFETY * 2) as http:
            http.post("/v1/responses", json=body)
    except httpx.HTTPError:
        pass
