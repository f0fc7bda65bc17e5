"""The whole compaction policy as a setting: globally and per model (config file, flags, environment), per request
(`context_management`, refused with a 400 naming the field when out of its limits), shown by `GET .../context` and
`contextfold doctor`, and the library's deterministic-only compactor. Against a real `contextfold serve` process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from contextfold import (
    Agent,
    AgentOptions,
    CompactionPolicy,
    Conversation,
    InvalidRequestError,
    ScriptedModel,
    open_store,
)
from contextfold._errors import ConfigurationError
from contextfold.cli import main
from contextfold.events import Compaction
from contextfold.server._config import load_config
from contextfold.store import Store

from .processes import Replica
from .test_compaction import BUDGET, grow

CONFIG = """
context_window = 2000
compact_tail_turns = 3
compact_summariser_timeout = 30
compact_summary_max_tokens = 200

[[models]]
name = "plain"
provider = "test"
context_window = 2000
[models.compaction]
summariser = "none"
masking = false
tail_turns = 1
head_items = 0
threshold = 0.7
target = 0.3

[[models]]
name = "helped"
provider = "test"
context_window = 2000
[models.compaction]
summariser = "plain"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    folder = tmp_path_factory.mktemp("settings")
    (folder / "server.toml").write_text(CONFIG)
    replica = Replica(str(folder / "s.db"), folder / "log", "--config", str(folder / "server.toml"))
    try:
        replica.wait_ready()
        yield replica
    finally:
        replica.stop()


def _post(server: Replica, path: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    reply = httpx.post(f"{server.url}/v1{path}", json=body, timeout=60)
    assert reply.status_code == status, reply.text
    data: dict[str, Any] = reply.json()
    return data


def _context(server: Replica, conversation: str, model: str | None = None) -> dict[str, Any]:
    params = {"model": model} if model else {}
    data: dict[str, Any] = httpx.get(f"{server.url}/v1/conversations/{conversation}/context", params=params).json()
    return data


def _compact_until(server: Replica, model: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    conversation = _post(server, "/conversations", {})["id"]
    for _ in range(12):
        _post(
            server, "/responses", {"model": model, "conversation": conversation, "input": "/long 200", **(extra or {})}
        )
        context = _context(server, conversation, model)
        if context["totals"]["compactions"]:
            return context
    pytest.fail("no compaction in a 2,000-token window")


# --- configuration ------------------------------------------------------------------------------------------------


def test_the_policy_comes_from_the_file_flags_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(CONFIG)
    config = load_config({"compact_masking": "off"}, env={"CONTEXTFOLD_COMPACT_HEAD_ITEMS": "5"}, config_file=path)
    server = config.compaction
    assert (server.tail_turns, server.head_items, server.masking) == (3, 5, False)
    assert (server.summariser, server.summariser_timeout, server.summary_max_tokens) == ("self", 30.0, 200)
    plain = config.compaction_for(config.routes[0])
    assert (plain.summariser, plain.masking, plain.tail_turns, plain.head_items) == ("none", False, 1, 0)
    assert (plain.threshold, plain.target, plain.summariser_timeout) == (0.7, 0.3, 30.0)
    policy = plain.policy()
    assert isinstance(policy, CompactionPolicy)
    assert (policy.masking, policy.tail_turns, policy.summary_max_tokens) == (False, 1, 200)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("tail_turn = 2", "unknown key server.toml:models[0].compaction.tail_turn; known: threshold, target"),
        ("tail_turns = 0", "tail_turns must be a positive integer, got 0 (from server.toml:models[0].compaction"),
        ("masking = 'sometimes'", "masking must be true or false"),
        ("target = 0.9", "the compaction target 0.9 of model 'm' must be below its threshold 0.8"),
        (
            "summariser = 'gpt-9'",
            "the summariser 'gpt-9' of model 'm' is not served: use self, none, or one of test, m",
        ),
    ],
)
def test_a_bad_model_setting_is_refused_naming_it(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "server.toml"
    path.write_text(f'[[models]]\nname = "m"\nprovider = "test"\n[models.compaction]\n{table}\n')
    with pytest.raises(ConfigurationError) as raised:
        load_config({}, env={}, config_file=path)
    assert message in str(raised.value).replace(str(tmp_path) + "/", "")


# --- what is in force ---------------------------------------------------------------------------------------------


def test_the_context_report_shows_the_policy_in_force(server: Replica) -> None:
    conversation = _post(server, "/conversations", {})["id"]
    context = _context(server, conversation)
    served = context["compaction"]
    assert served == {
        "threshold": 0.8,
        "target": 0.5,
        "trigger_tokens": int(0.8 * context["budget"]),
        "target_tokens": int(0.5 * context["budget"]),
        "tail_turns": 3,
        "head_items": 2,
        "masking": True,
        "summariser": "test",
        "summariser_timeout": 30.0,
        "summary_max_tokens": 200,
    }
    plain = _context(server, conversation, "plain")["compaction"]
    assert (plain["summariser"], plain["masking"], plain["tail_turns"], plain["threshold"]) == ("none", False, 1, 0.7)


def test_a_model_without_a_summariser_compacts_deterministically(server: Replica) -> None:
    context = _compact_until(server, "plain")
    latest = context["latest_compaction"]
    assert latest["strategy"] == "fallback"
    assert latest["tokens_after"] < latest["tokens_before"]
    served = _compact_until(server, "test")
    assert served["latest_compaction"]["strategy"] == "summary"


async def test_another_served_model_can_write_the_summaries(server: Replica) -> None:
    context = _compact_until(server, "helped")
    assert context["compaction"]["summariser"] == "plain"
    assert context["latest_compaction"]["strategy"] == "summary"
    store = await open_store(str(Path(server.log).parent / "s.db"))
    try:
        events = await store.read(context["conversation_id"])
    finally:
        await store.close()
    (compaction,) = [e for e in events if isinstance(e, Compaction)][-1:]
    assert compaction.model == "plain"  # the route's upstream name: the summariser's, not the serving model's


def test_the_doctor_shows_the_policy_of_each_model(server: Replica, capsys: pytest.CaptureFixture[str]) -> None:
    config = Path(server.log).parent / "server.toml"
    capsys.readouterr()
    main(["doctor", "--db", str(Path(server.log).parent / "doctor.db"), "--config", str(config), "--json"])
    checks = {c["check"]: c for c in json.loads(capsys.readouterr().out)}
    assert "verbatim: first 0 items, last 1 turns; masking off; summariser none" in checks["compaction plain"]["detail"]
    assert "summariser test (timeout 30s, summary up to 200 tokens)" in checks["compaction test"]["detail"]


# --- per request ----------------------------------------------------------------------------------------------------


def test_a_request_may_ask_for_deterministic_compaction(server: Replica) -> None:
    setting = {"context_management": [{"type": "compaction", "summariser": "none", "tail_turns": 1}]}
    context = _compact_until(server, "test", setting)
    assert context["latest_compaction"]["strategy"] == "fallback"


@pytest.mark.parametrize(
    ("entry", "param"),
    [
        ({"tail_turns": 0}, "context_management[0].tail_turns"),
        ({"tail_turns": 1000}, "context_management[0].tail_turns"),
        ({"head_items": -1}, "context_management[0].head_items"),
        ({"threshold": 1.5}, "context_management[0].threshold"),
        ({"target": 0}, "context_management[0].target"),
        ({"summariser": "gpt-9"}, "context_management[0].summariser"),
        ({"summariser_timeout": 31}, "context_management[0].summariser_timeout"),
        ({"summary_max_tokens": 201}, "context_management[0].summary_max_tokens"),
        ({"compact_threshold": 10_000_000}, "context_management[0].compact_threshold"),
        ({"compact_threshold": 500, "threshold": 0.5}, "context_management[0].threshold"),
        ({"threshold": 0.4, "target": 0.45}, "context_management"),
    ],
)
def test_an_override_out_of_its_limits_is_a_400_naming_the_field(
    server: Replica, entry: dict[str, Any], param: str
) -> None:
    conversation = _post(server, "/conversations", {})["id"]
    body = {"conversation": conversation, "input": "hi", "context_management": [{"type": "compaction", **entry}]}
    error = _post(server, "/responses", body, status=400)["error"]
    assert error["param"] == param
    assert param.split(".")[-1] in error["message"]
    items = httpx.get(f"{server.url}/v1/conversations/{conversation}/items").json()["data"]
    assert items == []  # nothing half-written


# --- the library ----------------------------------------------------------------------------------------------------


async def test_the_library_agent_can_compact_deterministically(tmp_path: Path) -> None:
    model = ScriptedModel(["answer " * 60] * 30)
    store = await open_store(str(tmp_path / "a.db"))
    try:
        options = AgentOptions(compactor="deterministic", max_output_tokens=200, context_window=1_500)
        agent = Agent(model, store=store, options=options)
        session = await agent.create_session()
        for n in range(12):
            await session.turn(f"question {n} " + "words " * 40)
        compactions = [e for e in await store.read(session.id) if isinstance(e, Compaction)]
        assert compactions
        assert all(c.model is None and c.usage is None for c in compactions)  # no model call for a summary
        assert len(model.calls) == 12  # the turns only
    finally:
        await store.close()


async def test_masking_off_leaves_tool_outputs_for_the_summary(sqlite_store: Store) -> None:
    strategies = {}
    for masking in (True, False):
        conversation = await Conversation.create(sqlite_store)
        await grow(conversation, 9, tool_summary="read 2 KB of a.py; it defines main()")
        model = ScriptedModel(["Goal: fix main()."])
        policy = CompactionPolicy(masking=masking)
        result = await conversation.fit(budget=BUDGET, policy=policy, summariser=model)
        strategies[masking] = (result.strategy, len(model.calls))
    assert strategies[True] == ("mask", 0)  # masking alone sufficed
    assert strategies[False] == ("summary", 1)  # without it, the summary folds the outputs whole


def test_a_deterministic_compactor_takes_no_summariser() -> None:
    with pytest.raises(InvalidRequestError, match="exclude each other"):
        AgentOptions(compactor="deterministic", summariser=ScriptedModel([]))
