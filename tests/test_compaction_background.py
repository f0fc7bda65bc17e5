"""Compaction off the request path (issue 19): a turn that leaves the view past the soft threshold is compacted
after it ends, a turn racing the compaction wins (the compaction loses the head check), shutdown writes nothing
half, and what happened is counted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contextfold import BusyError, InvalidRequestError, Store
from contextfold._conversation import Conversation
from contextfold.compaction import CompactionPolicy
from contextfold.events import Compaction
from contextfold.models import ModelResponse, ModelSettings
from contextfold.runtime import Agent, Session, StepCompleted
from contextfold.server._compaction import CompactionSettings, request_policy
from contextfold.server._locks import ConversationLocks
from contextfold.store import SQLiteStore
from contextfold.view import Window

from .processes import Replica
from .test_runtime_turns import make_agent

POLICY = CompactionPolicy(threshold=0.8, target=0.2, soft_threshold=0.3)
"""Budget 15,000 (a 16k window less 1,000 for the answer): in the background past 4,500 tokens, inline past 12,000."""
WORDS = "the deploy log shows the config parser rejecting the default value again " * 40  # ~700 tokens


class GatedSummariser:
    """A summariser that answers once `gate` is set: the background compaction is planning until then."""

    name = "gated-summariser"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls = 0

    async def request(self, window: Window, settings: ModelSettings) -> ModelResponse:
        self.calls += 1
        await self.gate.wait()
        return ModelResponse(text="## Goal\nfix the config parser")


def _agent(store: Store, summariser: object | None = None, **options: Any) -> Agent:
    answers = [ModelResponse(text="noted", input_tokens=10, output_tokens=2)] * 50
    if summariser is not None:
        options["summariser"] = summariser
    options.setdefault("background_compaction", True)
    return make_agent(store, answers, policy=POLICY, **options)


async def _past_soft(session: Session) -> int:
    """Turns until one ends past the soft threshold; returns the head it ended at."""
    for _ in range(30):
        result = await session.turn(WORDS)
        assert not [s for s in result.steps if s.step_type == "compaction"]  # never inline under the trigger
        if session.compactor.stats.scheduled:
            return session.conversation.head
    raise AssertionError("the view never passed the soft threshold")


def test_the_soft_threshold_defaults_below_the_trigger_and_is_checked() -> None:
    assert CompactionPolicy().soft == pytest.approx(0.7)
    assert CompactionPolicy(threshold=0.3, target=0.2).soft == pytest.approx(0.25)
    with pytest.raises(InvalidRequestError, match="soft_threshold"):
        CompactionPolicy(soft_threshold=0.9)
    with pytest.raises(InvalidRequestError, match="soft_threshold"):
        CompactionPolicy(soft_threshold=0.4)


async def test_a_turn_past_the_soft_threshold_is_compacted_after_it_ends(sqlite_store: Store) -> None:
    session = await _agent(sqlite_store).create_session()
    head = await _past_soft(session)
    before = session.conversation.view.estimated_tokens
    await session.compactor.wait(session.id)
    stats = session.compactor.stats
    assert (stats.committed, stats.discarded, stats.failed) == (1, 0, 0)
    log = await sqlite_store.read(session.id)
    assert isinstance(log[-1], Compaction)
    assert log[-1].based_on_head == head
    assert session.conversation.view.estimated_tokens < before
    reloaded = await Conversation.load(sqlite_store, session.id)
    assert reloaded.view.state() == session.conversation.view.state()
    # the next turn runs on the compacted view, and the built-in tools are offered
    result = await session.turn("and now?")
    assert result.final_text == "noted"


async def test_background_compaction_can_be_turned_off(sqlite_store: Store) -> None:
    session = await _agent(sqlite_store, background_compaction=False).create_session()
    for _ in range(8):
        await session.turn(WORDS)
    assert session.compactor.stats.scheduled == 0
    assert not [e for e in await sqlite_store.read(session.id) if isinstance(e, Compaction)]


async def test_a_turn_racing_the_compaction_wins_and_the_compaction_plans_once_more(sqlite_store: Store) -> None:
    summariser = GatedSummariser()
    session = await _agent(sqlite_store, summariser).create_session()
    await _past_soft(session)
    await asyncio.sleep(0)
    assert session.compactor.running(session.id)  # planning, waiting on the summariser
    raced = await session.turn("a question while it plans")  # not held up
    assert raced.final_text == "noted"
    head = session.conversation.head
    summariser.gate.set()
    await session.compactor.wait(session.id)
    stats = session.compactor.stats
    assert (stats.recomputed, stats.committed, stats.discarded) == (1, 1, 0)
    compactions = [e for e in await sqlite_store.read(session.id) if isinstance(e, Compaction)]
    assert [c.based_on_head for c in compactions] == [head]  # the stale plan was never appended
    reloaded = await Conversation.load(sqlite_store, session.id)
    assert reloaded.view.state() == session.conversation.view.state()


async def test_a_compaction_that_finds_a_turn_running_is_dropped(sqlite_store: Store) -> None:
    summariser = GatedSummariser()
    session = await _agent(sqlite_store, summariser).create_session()
    await _past_soft(session)
    head = session.conversation.head
    running = asyncio.ensure_future(session.turn("a long question"))
    await asyncio.sleep(0)  # the turn holds the session now
    summariser.gate.set()
    await session.compactor.wait(session.id)  # its commit finds the turn holding the session
    assert session.compactor.stats.discarded == 1
    await running
    assert not [e for e in await sqlite_store.read(session.id) if isinstance(e, Compaction) and e.based_on_head == head]


async def test_closing_mid_compaction_writes_nothing(sqlite_store: Store) -> None:
    summariser = GatedSummariser()
    session = await _agent(sqlite_store, summariser).create_session()
    head = await _past_soft(session)
    for _ in range(1_000):  # until the background compaction is waiting on the summariser
        if summariser.calls:
            break
        await asyncio.sleep(0)
    assert summariser.calls == 1
    await session.close()
    assert session.compactor.stats.cancelled == 1
    assert (await sqlite_store.conversations.get(session.id)).head == head
    assert not [e for e in await sqlite_store.read(session.id) if isinstance(e, Compaction)]
    session.compactor.after_turn(session._setup())  # closed: schedules nothing
    assert not session.compactor.running(session.id)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["turn", "release", "yield"]), min_size=1, max_size=8))
async def test_any_interleaving_of_turns_and_a_compaction_keeps_the_log_valid(
    tmp_path_factory: pytest.TempPathFactory, plan: list[str]
) -> None:
    store = await SQLiteStore.open(str(tmp_path_factory.mktemp("interleave") / "log.db"))
    try:
        summariser = GatedSummariser()
        session = await _agent(store, summariser).create_session()
        await _past_soft(session)
        for step in plan:
            if step == "turn":
                result = await session.turn("more")
                assert not [s for s in result.steps if isinstance(s, StepCompleted) and s.step_type == "compaction"]
            elif step == "release":
                summariser.gate.set()
            else:
                await asyncio.sleep(0)
        summariser.gate.set()
        await session.compactor.wait(session.id)
        stats = session.compactor.stats
        assert stats.failed == 0
        assert stats.committed <= stats.scheduled
        log = await store.read(session.id)
        assert [e.seq for e in log] == list(range(1, len(log) + 1))
        for event in log:  # every compaction was computed at the head it was appended after
            if isinstance(event, Compaction):
                assert event.based_on_head == event.seq - 1
        reloaded = await Conversation.load(store, session.id)
        assert reloaded.view.state() == session.conversation.view.state()
        await session.close()
    finally:
        await store.close()


def test_a_server_process_compacts_after_the_answer_not_inside_a_request(tmp_path: Path) -> None:
    replica = Replica(
        str(tmp_path / "server.db"),
        tmp_path / "server.log",
        *("--context-window", "6000", "--compact-summariser", "none", "--compact-target", "0.2"),
        *("--compact-background", "true"),
    )
    try:
        replica.wait_ready()
        with httpx.Client(base_url=replica.url, timeout=60) as http:
            conversation = http.post("/v1/conversations", json={}).json()["id"]
            context: dict[str, Any] = {}
            soft = http.get(f"/v1/conversations/{conversation}/context").json()["background_compaction"]["soft_tokens"]
            for _ in range(40):
                reply = http.post(
                    "/v1/responses", json={"model": "test", "conversation": conversation, "input": WORDS[:600]}
                )
                assert reply.status_code == 200, reply.text
                assert "compaction" not in {item["type"] for item in reply.json()["output"]}  # never inline
                for _ in range(600):  # a turn past the soft threshold: its compaction lands after the answer
                    context = http.get(f"/v1/conversations/{conversation}/context").json()
                    if context["totals"]["compactions"] or context["tokens"]["estimated"] <= soft:
                        break
                    time.sleep(0.05)
                if context["totals"]["compactions"]:
                    break
            assert context["totals"]["compactions"] == 1
            assert context["utilisation"] < 100 * context["compaction"]["threshold"]
            metrics = http.get("/metrics").text
            assert 'contextfold_background_compactions_total{outcome="committed"} 1.0' in metrics
            assert context["latest_compaction"]["strategy"] in ("summary", "fallback", "mask")
            after = http.post("/v1/responses", json={"model": "test", "conversation": conversation, "input": "next"})
            assert after.status_code == 200
        assert replica.stop() == 0
    finally:
        replica.stop()
    assert "Traceback" not in replica.output()


async def test_a_view_an_answer_leaves_past_the_trigger_is_compacted_inline_by_the_next_turn(
    sqlite_store: Store,
) -> None:
    # one answer takes the view from under the soft threshold to past the trigger: the band is jumped over
    noted = ModelResponse(text="noted", input_tokens=10, output_tokens=2)
    answers = [noted] * 4 + [ModelResponse(text=WORDS * 30, input_tokens=10, output_tokens=11_000)] + [noted] * 4
    session = await make_agent(sqlite_store, answers, policy=POLICY).create_session()
    for _ in range(4):
        await session.turn(WORDS)
    assert session.conversation.view.estimated_tokens < POLICY.soft * 15_000
    await session.turn("tell me everything")
    assert session.conversation.view.estimated_tokens > POLICY.threshold * 15_000
    assert session.compactor.stats.scheduled == 0  # nothing races the next turn
    result = await session.turn("and now?")
    assert result.steps[0].step_type == "compaction"  # the next turn reports it
    assert session.compactor.stats.scheduled == 0
    await session.close()


def test_a_request_that_states_its_threshold_compacts_inline_only() -> None:
    settings = CompactionSettings()
    assert request_policy(settings, None, 15_000).policy.background
    assert request_policy(settings, [{"type": "compaction", "tail_turns": 2}], 15_000).policy.background
    for entry in ({"compact_threshold": 800}, {"threshold": 0.6}):
        assert not request_policy(settings, [{"type": "compaction", **entry}], 15_000).policy.background


class _SlowRelease:
    """Leases in memory whose release waits for `gate` while `slow` (a store round trip in flight)."""

    def __init__(self) -> None:
        self.owners: dict[str, str] = {}
        self.gate = asyncio.Event()
        self.releasing = asyncio.Event()
        self.slow = False

    async def acquire(self, conversation_id: str, owner: str, ttl: float) -> bool:
        return self.owners.setdefault(conversation_id, owner) == owner

    async def take(self, conversation_id: str, owner: str, ttl: float) -> int | None:
        return 0 if await self.acquire(conversation_id, owner, ttl) else None

    async def renew(self, conversation_id: str, owner: str, ttl: float) -> bool:
        return self.owners.get(conversation_id) == owner

    async def release(self, conversation_id: str, owner: str) -> None:
        if self.slow:
            self.releasing.set()
            await self.gate.wait()
        if self.owners.get(conversation_id) == owner:
            del self.owners[conversation_id]


async def test_a_turn_arriving_while_a_compaction_gives_its_lease_back_waits_for_it() -> None:
    leases = _SlowRelease()
    locks = ConversationLocks(leases, ttl=30, queue=False)

    async def commit() -> None:
        async with locks.hold("conv", queue=False, brief=True):
            leases.slow = True

    committing = asyncio.ensure_future(commit())
    await leases.releasing.wait()  # the commit is done, its lease on its way back
    turn = asyncio.ensure_future(_turn(locks))
    await asyncio.sleep(0)
    assert not turn.done()  # waiting, not refused with 409
    leases.slow = False
    leases.gate.set()
    await committing
    assert await turn == 0
    with pytest.raises(BusyError):  # a turn still refuses a turn
        async with locks.hold("conv"), locks.hold("conv"):
            pass


async def _turn(locks: ConversationLocks) -> int:
    async with locks.hold("conv") as head:
        return head
