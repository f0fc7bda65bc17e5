"""Upstream faults on every route: each turn ends in a retry that succeeds or in a clear error to the client, and the
log after it has lost and duplicated nothing.

The server runs in-process against `FaultyUpstream` on a real loopback socket, through the `faulty` route (an
OpenAI Chat Completions upstream, with a 1 s timeout). Retries are the adapters' own (`StreamingModel`), with short
backoffs (`FAST_RETRIES`). Each fault is tried on each route twice: once then answered (`recovers`), and every time
(`persists`). What the client must be told, as docs/server.md "Errors" says:

    500, reset before any byte   retried; persisting: 502 upstream_error, with the upstream's message
    429 with Retry-After         retried after it; persisting: 429 rate_limit_exceeded, with a Retry-After
    timeout before any byte      retried; persisting: 504 upstream_timeout
    context-length refusal       compacted and tried once more; persisting: 400 context_length_exceeded
    cut mid-answer (reset, stall), malformed JSON, an empty stream
                                 never retried once output reached the client; 502 (504 for the stall)

A streamed route that has already sent output reports the error inside its stream instead (`response.failed`, a
Chat `error` chunk, an Anthropic `error` event); before any output, the proxy routes still answer an HTTP error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from contextfold.events import Message, text_of
from contextfold.server import ServerConfig

from .fakes.faulty_upstream import FaultyUpstream
from .reliability_fixtures import ROUTES, FastRetries, Outcome, RouteClient, check_log, check_views, route
from .server_fixtures import Served, serving

RECOVERED = ("500", "429", "stall", "reset-early", "context")
"""Faults a retry gets past (when the upstream then answers)."""
ERRORS = {
    "500": "upstream",
    "429": "rate",
    "stall": "timeout",
    "reset-early": "upstream",
    "context": "context",
    "stall-mid": "timeout",
    "reset": "upstream",
    "malformed": "upstream",
    "empty": "upstream",
}
STATUSES = {"upstream": 502, "timeout": 504, "rate": 429, "context": 400}
MID_ANSWER = ("stall-mid", "reset", "malformed")
"""Faults that come after part of the answer was streamed."""


@pytest.fixture
def upstream() -> Iterator[FaultyUpstream]:
    with FaultyUpstream() as fake:
        yield fake


@pytest.fixture
async def faulty(tmp_path: Path, upstream: FaultyUpstream) -> AsyncIterator[Served]:
    config = ServerConfig(db=str(tmp_path / "s.db"), routes=(route(upstream, timeout=1.0),))
    registry = FastRetries(config)
    try:
        async with serving(config, registry=registry) as served:
            # Raw HTTP without the fixtures' reply checks: those validate Anthropic streams with the SDK's event
            # types, which leave out the `error` event a failed stream ends with.
            raw = httpx.AsyncClient(transport=httpx.ASGITransport(app=served.app), base_url="http://test")
            async with raw:
                yield dataclasses.replace(served, http=raw)
    finally:
        await registry.close()  # a registry passed in is the caller's to close


@pytest.mark.parametrize("fault", ERRORS)
@pytest.mark.parametrize("way", ROUTES)
async def test_a_fault_once_is_retried_or_a_clear_error(
    faulty: Served, upstream: FaultyUpstream, way: str, fault: str
) -> None:
    await _fault(faulty, upstream, way, fault, persists=False)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ERRORS)
@pytest.mark.parametrize("way", ROUTES)
async def test_a_persisting_fault_is_a_clear_error(
    faulty: Served, upstream: FaultyUpstream, way: str, fault: str
) -> None:
    await _fault(faulty, upstream, way, fault, persists=True)


async def _fault(served: Served, upstream: FaultyUpstream, way: str, fault: str, *, persists: bool) -> None:
    client = RouteClient(served.http, way)
    conversation = await client.start()
    # history to fold, for the compaction a context-length refusal calls for
    for n in range(12 if fault == "context" else 1):
        await client.turn(f"turn {n} before the fault: " + " ".join(f"word{k}" for k in range(300)))
    before = await served.store.read(conversation)
    tag = f"fault-{fault}-{way}"
    upstream.script(tag, fault) if persists else upstream.script(tag, fault, "ok")

    outcome = await client.turn(f"please answer {tag}")

    recovered = fault in RECOVERED and not persists
    attempts = [c.fault for c in upstream.calls_for(tag)]
    if recovered:
        assert outcome.text == f"answer to please answer {tag}", outcome
        assert attempts == [fault, "ok"]  # one retry (a context refusal: after a compaction)
    else:
        _check_error(outcome, fault, way)
        if fault in RECOVERED:  # retried until the attempts ran out (a context refusal: once, after compacting)
            assert len(attempts) == (2 if fault == "context" else 3), attempts
        else:
            assert attempts == [fault], "a failure after output reached the client is never retried"

    events = await served.store.read(conversation)
    assert events[: len(before)] == before, "nothing stored before the fault changed"
    status = check_log(events)
    said = [e for e in events if isinstance(e, Message) and e.role == "user" and tag in text_of(e)]
    assert len(said) == 1, "the input stored once, however often it was sent upstream"
    answers = [e for e in events if isinstance(e, Message) and e.role == "assistant" and e.turn_id == said[0].turn_id]
    if recovered:
        assert status[said[0].turn_id or ""] == "completed"
        assert [text_of(a) for a in answers] == [outcome.text]
    else:
        assert status[said[0].turn_id or ""] == "failed"
        assert answers == [], "no part of a failed answer is stored"
    await check_views(served.store, conversation)

    # the conversation goes on: the next turn is answered, and sees the failed input once at most
    upstream.script(f"{tag}-next", "ok")
    follow = await client.turn(f"and then {tag}-next")
    assert follow.text == f"answer to and then {tag}-next", follow
    (sent,) = upstream.calls_for(f"{tag}-next")
    mentions = [m for m in sent.body["messages"] if m["role"] == "user" and f"please answer {tag}" in str(m["content"])]
    # a proxy client resends the message it got no answer to; the Responses API has it only in the failed turn
    expected = 1 if recovered or not way.startswith("responses") else 0
    assert len(mentions) == expected, sent.body["messages"]
    check_log(await served.store.read(conversation))
    await check_views(served.store, conversation)


def _check_error(outcome: Outcome, fault: str, way: str) -> None:
    kind = ERRORS[fault]
    assert outcome.kind == kind, outcome
    assert "Traceback" not in outcome.message
    if kind != "context":
        assert "upstream" in outcome.message, outcome.message  # it says whose failure it was
    assert not outcome.message.rstrip().endswith(":"), f"the message names no cause: {outcome.message!r}"
    in_stream = way == "responses-stream" or (way.endswith("-stream") and fault in MID_ANSWER)
    if in_stream:
        assert outcome.streamed_error, outcome
        assert outcome.status == 200
    else:
        assert outcome.status == STATUSES[kind], outcome
    if kind == "rate" and not in_stream:
        assert outcome.retry_after is not None, "a 429 says when to retry"
