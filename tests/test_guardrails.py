"""Guardrails through a real `contextfold serve` and the official SDK: a rule list (no model), a fake OpenAI
moderation upstream and a fake Llama Guard classifier model, both on loopback; input and output checks, the blocked
turn in the log and out of the view, and `POST /v1/moderations`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types import ModerationTextInputParam

from contextfold._errors import ConfigurationError
from contextfold.server._config import load_config

from .fakes._server import FakeServer, Reply, Request
from .fakes.fake_openai import chat_answer
from .processes import Replica

REFUSAL = "That is off limits here."


def _moderation(request: Request) -> Reply:
    """An OpenAI moderation endpoint that flags any text mentioning 'attack'."""
    results = []
    for text in request.json["input"]:
        hit = "attack" in text
        results.append(
            {
                "flagged": hit,
                "categories": {"violence": hit, "harassment": False},
                "category_scores": {"violence": 0.97 if hit else 0.01, "harassment": 0.0},
            }
        )
    return Reply(json={"id": "modr-fake", "model": "omni-moderation-latest", "results": results})


def _classifier(request: Request) -> object:
    """A Llama Guard: 'unsafe' and its category for a prompt about explosives, else 'safe'."""
    prompt = request.json["messages"][-1]["content"]
    assert "<BEGIN CONVERSATION>" in prompt
    conversation = prompt.split("<BEGIN CONVERSATION>")[1]
    return chat_answer("unsafe\nS9" if "explosive" in conversation else "safe")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Replica, FakeServer, FakeServer]]:
    with FakeServer() as moderation, FakeServer() as classifier:
        moderation.handler = _moderation
        classifier.handler = _classifier  # type: ignore[assignment]
        config = tmp_path / "server.toml"
        config.write_text(
            f"""
[[models]]
name = "guarded"
provider = "test"
guardrails = ["policy"]
[[models]]
name = "echo-checked"
provider = "test"
guardrails = ["answers"]
[[models]]
name = "llama-guard"
provider = "openai-chat"
base_url = "{classifier.url}/v1"
api_key = "unused"
context_window = 8192
[[guardrails]]
name = "policy"
type = "rules"
terms = ["nightingale"]
patterns = ['(?i)\\bpassword\\s*[:=]']
message = "{REFUSAL}"
[[guardrails]]
name = "answers"
type = "rules"
stages = ["output"]
terms = ["secret"]
[[guardrails]]
name = "omni"
type = "moderation"
base_url = "{moderation.url}/v1"
model = "omni-moderation-latest"
api_key = "sk-fake"
[[guardrails]]
name = "guard"
type = "classifier"
model = "llama-guard"
stages = ["input"]
"""
        )
        replica = Replica(str(tmp_path / "served.db"), tmp_path / "replica.log", "--config", str(config))
        try:
            replica.wait_ready()
            yield replica, moderation, classifier
        finally:
            replica.stop()


def test_a_blocked_input_is_answered_with_the_refusal_kept_in_the_log_and_out_of_the_view(
    served: tuple[Replica, FakeServer, FakeServer],
) -> None:
    replica, _, _ = served
    with openai.OpenAI(base_url=f"{replica.url}/v1", api_key="unused", max_retries=0) as client:
        first = client.responses.create(model="guarded", input="my name is Ada")
        blocked = client.responses.create(
            model="guarded", input="tell me about Nightingale", previous_response_id=first.id
        )
        assert blocked.status == "completed"
        assert blocked.output_text == REFUSAL
        also = client.responses.create(model="guarded", input="my PASSWORD: hunter2", previous_response_id=blocked.id)
        assert also.output_text == REFUSAL
        after = client.responses.create(model="guarded", input="who am I?", previous_response_id=also.id)
        # the model saw the first turn and this input, never the blocked ones (nor their refusals)
        assert "I saw 3 items" in after.output_text
        assert after.conversation is not None
        conversation = after.conversation.id
        items = client.conversations.items.list(conversation, order="asc")
        texts = [part.text for item in items.data for part in getattr(item, "content", [])]
        assert "tell me about Nightingale" in texts
        assert REFUSAL in texts
    events = httpx.get(f"{replica.url}/v1/conversations/{conversation}/events").json()["data"]
    markers = [e for e in events if e["type"] == "turn" and e.get("status") == "blocked"]
    assert len(markers) == 2
    assert "guardrail 'policy'" in markers[0]["reason"]


def test_an_output_check_replaces_the_answer_before_any_of_it_is_streamed(
    served: tuple[Replica, FakeServer, FakeServer],
) -> None:
    replica, _, _ = served
    with openai.OpenAI(base_url=f"{replica.url}/v1", api_key="unused", max_retries=0) as client:
        with client.responses.stream(model="echo-checked", input="say the secret word") as stream:
            deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
            final = stream.get_final_response()
        assert "secret" not in "".join(deltas)  # the echo was held back, then dropped
        assert final.status == "completed"
        assert final.output_text == "I'm sorry, but I can't help with that."
        fine = client.responses.create(model="echo-checked", input="say hello", previous_response_id=final.id)
        assert 'You said: "say hello"' in fine.output_text
        assert "I saw 1 item," in fine.output_text


def test_request_guardrails_in_llama_stacks_shape_use_the_moderation_upstream_and_the_classifier(
    served: tuple[Replica, FakeServer, FakeServer],
) -> None:
    replica, moderation, classifier = served
    with openai.OpenAI(base_url=f"{replica.url}/v1", api_key="unused", max_retries=0) as client:
        plain = client.responses.create(model="test", input="plan an attack")  # no guardrails sent: unaffected
        assert "plan an attack" in plain.output_text
        assert not moderation.requests
        flagged = client.responses.create(model="test", input="plan an attack", extra_body={"guardrails": ["omni"]})
        assert flagged.output_text == "I'm sorry, but I can't help with that."
        assert moderation.requests[-1].headers["authorization"] == "Bearer sk-fake"
        assert moderation.requests[-1].json["model"] == "omni-moderation-latest"
        classified = client.responses.create(
            model="test", input="how do I make an explosive", extra_body={"guardrails": [{"type": "guard"}]}
        )
        assert classified.output_text == "I'm sorry, but I can't help with that."
        passed = client.responses.create(
            model="test", input="how do I bake bread", extra_body={"guardrails": [{"type": "guard"}, "omni"]}
        )
        assert "bake bread" in passed.output_text
        assert len([r for r in classifier.requests if r.method == "POST"]) == 2
        with pytest.raises(openai.BadRequestError, match="unknown guardrail 'nope'"):
            client.responses.create(model="test", input="hi", extra_body={"guardrails": ["nope"]})


def test_moderations_create_is_answered_by_each_backend(served: tuple[Replica, FakeServer, FakeServer]) -> None:
    replica, _, _ = served
    with openai.OpenAI(base_url=f"{replica.url}/v1", api_key="unused", max_retries=0) as client:
        rules = client.moderations.create(input=["a fine day", "the nightingale file"])
        assert rules.model == "policy"  # the first configured guardrail answers when none is named
        assert [r.flagged for r in rules.results] == [False, True]
        assert rules.results[0].categories.violence is False
        assert rules.results[1].category_scores.violence == 0.0
        upstream = client.moderations.create(model="omni", input="an attack at dawn")
        assert upstream.results[0].flagged
        assert upstream.results[0].categories.violence
        assert upstream.results[0].category_scores.violence == pytest.approx(0.97)
        part: ModerationTextInputParam = {"type": "text", "text": "an explosive recipe"}
        guard = client.moderations.create(model="guard", input=[part])
        assert guard.results[0].flagged
        assert guard.results[0].categories.illicit_violent
        assert guard.results[0].model_dump(by_alias=True)["categories"]["S9"] is True
        with pytest.raises(openai.BadRequestError, match="unknown guardrail"):
            client.moderations.create(model="omni-moderation-latest", input="x")


def test_guardrail_tables_are_checked_at_start_up(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[[models]]\nname = "m"\nprovider = "test"\nguardrails = ["missing"]\n')
    with pytest.raises(ConfigurationError, match="guardrail 'missing'"):
        load_config(config_file=config, env={})
    config.write_text('[[guardrails]]\nname = "r"\ntype = "rules"\npatterns = ["("]\n')
    with pytest.raises(ConfigurationError, match="not a regular expression"):
        load_config(config_file=config, env={})
    config.write_text('[[guardrails]]\nname = "c"\ntype = "classifier"\n')
    with pytest.raises(ConfigurationError, match="needs model"):
        load_config(config_file=config, env={})
