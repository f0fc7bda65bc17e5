"""Background responses through the official SDK against real `contextfold serve` processes: on SQLite, and as two
replicas of one PostgreSQL, where the replica that did not run the turn answers the poll, the cancel and the
resume from the database alone. The upstream is a fake Chat Completions server on loopback that holds its answer
until the test lets it go, so the turn is reliably still running when it is polled, cancelled or resumed."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from .fakes._server import FakeServer, Request
from .fakes.fake_openai import chat_answer
from .processes import Replica

ANSWER = "the long job is done"


class Upstream:
    """Answers at once, unless the prompt says `slow` (then once `release` is set) or `hang` (at teardown)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.teardown = threading.Event()
        self.waiting = threading.Semaphore(0)

    def __call__(self, request: Request) -> Any:
        prompt = str(request.json["messages"])
        if "slow" in prompt or "hang" in prompt:
            self.waiting.release()
            (self.release if "slow" in prompt else self.teardown).wait(60)
        return chat_answer(ANSWER)

    def wait_called(self) -> None:
        assert self.waiting.acquire(timeout=30), "the upstream was never asked"


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[Upstream, Path]]:
    fake = Upstream()
    with FakeServer() as server:
        server.handler = fake
        config = tmp_path / "server.toml"
        config.write_text(
            f'lease_ttl = 1\n[[models]]\nname = "slowpoke"\nprovider = "openai-chat"\n'
            f'base_url = "{server.url}/v1"\napi_key = "unused"\ncontext_window = 8192\n'
        )
        try:
            yield fake, config
        finally:
            fake.release.set()
            fake.teardown.set()


@contextlib.contextmanager
def serving(db: str, tmp_path: Path, config: Path, count: int = 1) -> Iterator[list[Replica]]:
    started = [Replica(db, tmp_path / f"r{n}-{time.monotonic_ns()}.log", "--config", str(config)) for n in range(count)]
    try:
        for replica in started:
            replica.wait_ready()
        yield started
    finally:
        for replica in started:
            replica.stop()


def client(replica: Replica) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{replica.url}/v1", api_key="unused", max_retries=0)


def settled(sdk: openai.OpenAI, response_id: str) -> Any:
    for _ in range(300):
        response = sdk.responses.retrieve(response_id)
        if response.status not in ("queued", "in_progress"):
            return response
        time.sleep(0.1)
    pytest.fail(f"response {response_id} never finished")


def turn_statuses(replica: Replica, conversation: str) -> list[str]:
    events = httpx.get(f"{replica.url}/v1/conversations/{conversation}/events").json()["data"]
    return [e["status"] for e in events if e["type"] == "turn"]


def test_a_background_response_answers_at_once_is_polled_and_survives_its_client(
    upstream: tuple[Upstream, Path], tmp_path: Path
) -> None:
    fake, config = upstream
    with serving(str(tmp_path / "bg.db"), tmp_path, config) as (replica,), client(replica) as sdk:
        started = sdk.responses.create(model="slowpoke", input="a slow job", background=True)
        assert started.status in ("queued", "in_progress")
        assert started.background is True
        fake.wait_called()
        assert sdk.responses.retrieve(started.id).status == "in_progress"
        fake.release.set()
        done = settled(sdk, started.id)
        assert done.status == "completed"
        assert done.output_text == ANSWER
        assert done.background is True
        with pytest.raises(openai.BadRequestError, match="store: true"):
            sdk.responses.create(model="slowpoke", input="x", background=True, store=False)
        with pytest.raises(openai.BadRequestError, match="only background responses can be cancelled"):
            sdk.responses.cancel(sdk.responses.create(model="test", input="quick").id)


def test_cancel_marks_the_turn_and_shows_nothing_of_it(upstream: tuple[Upstream, Path], tmp_path: Path) -> None:
    fake, config = upstream
    with serving(str(tmp_path / "bg.db"), tmp_path, config) as (replica,), client(replica) as sdk:
        started = sdk.responses.create(model="slowpoke", input="hang on", background=True)
        fake.wait_called()
        cancelled = sdk.responses.cancel(started.id)
        assert cancelled.status == "cancelled"
        assert cancelled.output == []
        assert started.conversation is not None
        assert turn_statuses(replica, started.conversation.id) == ["started", "interrupted"]
        assert sdk.responses.cancel(started.id).status == "cancelled"  # again: the same answer


def test_a_streamed_background_response_resumes_after_a_disconnect(
    upstream: tuple[Upstream, Path], tmp_path: Path
) -> None:
    fake, config = upstream
    with serving(str(tmp_path / "bg.db"), tmp_path, config) as (replica,), client(replica) as sdk:
        stream = sdk.responses.create(model="slowpoke", input="a slow stream", background=True, stream=True)
        seen = [next(iter(stream)), next(iter(stream))]
        stream.close()  # the client goes; the turn does not
        response_id = seen[0].response.id  # type: ignore[union-attr]
        fake.wait_called()
        fake.release.set()
        rest = list(sdk.responses.retrieve(response_id, stream=True, starting_after=seen[-1].sequence_number))
        numbers = [e.sequence_number for e in [*seen, *rest]]
        assert numbers == list(range(len(numbers)))
        assert rest[-1].type == "response.completed"
        assert "".join(e.delta for e in rest if e.type == "response.output_text.delta") == ANSWER


def test_a_stopped_server_fails_its_background_responses(upstream: tuple[Upstream, Path], tmp_path: Path) -> None:
    fake, config = upstream
    db = str(tmp_path / "bg.db")
    with serving(db, tmp_path, config) as (first,), client(first) as sdk:
        started = sdk.responses.create(model="slowpoke", input="hang on", background=True)
        fake.wait_called()
        first.stop()
    with serving(db, tmp_path, config) as (second,), client(second) as sdk:
        failed = sdk.responses.retrieve(started.id)
        assert failed.status == "failed"
        assert failed.error is not None
        assert "server stopped" in failed.error.message


def test_a_crashed_replicas_background_response_fails_once_its_lease_lapses(
    upstream: tuple[Upstream, Path], tmp_path: Path
) -> None:
    fake, config = upstream
    db = str(tmp_path / "bg.db")
    with serving(db, tmp_path, config) as (first,), client(first) as sdk:
        started = sdk.responses.create(model="slowpoke", input="hang on", background=True)
        fake.wait_called()
        first.process.kill()
        first.process.wait()
    with serving(db, tmp_path, config) as (second,), client(second) as sdk:
        assert settled(sdk, started.id).status == "failed"  # never in_progress forever


def test_any_postgres_replica_polls_cancels_and_resumes_what_another_runs(
    upstream: tuple[Upstream, Path], tmp_path: Path, pg_url: str
) -> None:
    fake, config = upstream
    with serving(pg_url, tmp_path, config, count=2) as (runner, other), client(runner) as a, client(other) as b:
        stream = a.responses.create(model="slowpoke", input="a slow stream", background=True, stream=True)
        seen = [next(iter(stream)), next(iter(stream))]
        stream.close()
        response_id = seen[0].response.id  # type: ignore[union-attr]
        fake.wait_called()
        assert b.responses.retrieve(response_id).status == "in_progress"  # from the database: b never ran it
        resumed = b.responses.retrieve(response_id, stream=True, starting_after=seen[-1].sequence_number)
        fake.release.set()
        rest = list(resumed)
        assert [e.sequence_number for e in [*seen, *rest]] == list(range(len(seen) + len(rest)))
        assert "".join(e.delta for e in rest if e.type == "response.output_text.delta") == ANSWER
        assert settled(b, response_id).output_text == ANSWER

        hanging = a.responses.create(model="slowpoke", input="hang on", background=True)
        fake.wait_called()
        cancelled = b.responses.cancel(hanging.id)  # runner learns of it from the database
        assert cancelled.status == "cancelled"
        assert a.responses.retrieve(hanging.id).status == "cancelled"
        assert hanging.conversation is not None
        assert turn_statuses(runner, hanging.conversation.id)[-1] == "interrupted"
