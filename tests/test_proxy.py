"""The compaction proxy on the Chat Completions route: matching a client's resent history to its conversation,
appending only what is new, branching, trimming, the conversation header, tools, hidden recall and the errors.

The client is the official `openai` SDK; the model is the built-in `test` model (or a recording one), so these run
in-process. The upstream wire, auth and the long scripted sessions are in test_proxy_upstream.py and
test_proxy_agent.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest

from contextfold.events import ConfigChange, Message, ToolCall, ToolResult, TurnMarker, text_of
from contextfold.server import ServerConfig

from .server_fixtures import RecordingModel, Served, ServerFixtureRegistry, check_error, serving

CONVERSATION = "x-contextfold-conversation"


class ChatClient:
    """A client that keeps its own history and resends all of it, as coding agents do."""

    def __init__(self, served: Served, *, system: str | None = "You are terse.", model: str = "test") -> None:
        self.served = served
        self.model = model
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        self.conversations: list[str] = []

    async def say(self, text: str, **options: Any) -> dict[str, Any]:
        self.messages.append({"role": "user", "content": text})
        return await self.send(**options)

    async def send(self, **options: Any) -> dict[str, Any]:
        raw = await self.served.client.chat.completions.with_raw_response.create(
            model=self.model, messages=cast(Any, self.messages), **options
        )
        self.conversations.append(raw.headers[CONVERSATION])
        message = raw.parse().choices[0].message
        echoed: dict[str, Any] = {"role": "assistant", "content": message.content}
        if message.tool_calls:
            echoed["tool_calls"] = [call.model_dump(exclude_none=True) for call in message.tool_calls]
        self.messages.append(echoed)
        return echoed


async def _log(served: Served, conversation: str) -> list[Any]:
    return await served.store.read(conversation)


def _user_texts(events: list[Any]) -> list[str]:
    return [text_of(e) for e in events if isinstance(e, Message) and e.role == "user"]


async def test_a_client_resending_its_history_stays_in_one_conversation(served: Served) -> None:
    client = ChatClient(served)
    for n in range(4):
        answer = await client.say(f"message {n}")
        assert answer["content"]
    assert len(set(client.conversations)) == 1
    events = await _log(served, client.conversations[0])
    # each message is stored once, however often the client resent it
    assert _user_texts(events) == [f"message {n}" for n in range(4)]
    assert [e.system_prompt for e in events if isinstance(e, ConfigChange)] == ["You are terse."]
    assert sum(isinstance(e, TurnMarker) and e.status == "completed" for e in events) == 4


async def test_the_same_message_spelled_differently_still_matches(served: Served) -> None:
    client = ChatClient(served)
    await client.say("first")
    # the SDK's echo rewritten: content as a list of text parts, tool-less fields spelled out, keys reordered
    client.messages[1] = {"content": [{"type": "text", "text": "first"}], "role": "user", "name": "me"}
    client.messages[-1] = {"content": client.messages[-1]["content"], "role": "assistant", "refusal": None}
    await client.say("second")
    assert len(set(client.conversations)) == 1
    assert _user_texts(await _log(served, client.conversations[0])) == ["first", "second"]


async def test_a_new_history_is_a_new_conversation_even_with_the_same_first_message(served: Served) -> None:
    one, two = ChatClient(served), ChatClient(served)
    await one.say("hello")
    await two.say("hello")
    await one.say("again")
    await two.say("again")
    assert one.conversations[0] != two.conversations[0]
    assert len(set(one.conversations)) == 1
    assert len(set(two.conversations)) == 1


async def test_regenerating_an_answer_branches_and_keeps_the_original(served: Served) -> None:
    client = ChatClient(served)
    await client.say("one")
    await client.say("two")
    original = client.conversations[-1]
    # the client drops the last answer and its question, and asks something else instead
    client.messages = client.messages[:-2]
    await client.say("two, differently")
    branch = client.conversations[-1]
    assert branch != original
    assert _user_texts(await _log(served, original)) == ["one", "two"]
    assert _user_texts(await _log(served, branch)) == ["one", "two, differently"]
    info = await served.store.conversations.get(branch)
    assert info.metadata["forked_from"] == original
    # and the branch is continued from then on
    await client.say("three")
    assert client.conversations[-1] == branch


async def test_a_client_that_trims_its_own_history_loses_nothing(served: Served) -> None:
    client = ChatClient(served)
    for n in range(5):
        await client.say(f"message {n}")
    conversation = client.conversations[-1]
    client.messages = [client.messages[0], *client.messages[-3:]]  # system, then only the last exchange and a half
    await client.say("message 5")
    assert client.conversations[-1] == conversation
    assert _user_texts(await _log(served, conversation)) == [f"message {n}" for n in range(6)]


async def test_a_retry_after_a_failed_turn_continues_the_same_conversation(served: Served) -> None:
    client = ChatClient(served)
    await client.say("hello")
    client.messages.append({"role": "user", "content": "/fail 503 upstream down"})
    reply = await served.http.post("/v1/chat/completions", json={"model": "test", "messages": client.messages})
    check_error(reply, 502)
    client.messages[-1] = {"role": "user", "content": "hello again"}
    await client.send()
    assert len(set(client.conversations)) == 1
    events = await _log(served, client.conversations[0])
    assert [e.status for e in events if isinstance(e, TurnMarker) and e.status != "started"] == [
        "completed",
        "failed",
        "completed",
    ]


async def test_the_conversation_header_names_the_conversation(served: Served) -> None:
    created = await served.post("/v1/conversations", json={})
    body = {"model": "test", "messages": [{"role": "user", "content": "into a known conversation"}]}
    reply = await served.http.post("/v1/chat/completions", json=body, headers={CONVERSATION: created["id"]})
    assert reply.status_code == 200, reply.text
    assert reply.headers[CONVERSATION] == created["id"]
    assert _user_texts(await _log(served, created["id"])) == ["into a known conversation"]
    missing = await served.http.post("/v1/chat/completions", json=body, headers={CONVERSATION: "conv_nope"})
    assert "conv_nope" in check_error(missing, 404, param=CONVERSATION)


async def test_client_tools_reach_the_client_and_their_results_come_back(served: Served) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    client = ChatClient(served)
    answer = await client.say('/tool get_weather {"city": "Oslo"}', tools=tools)
    (call,) = answer["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    client.messages.append({"role": "tool", "tool_call_id": call["id"], "content": "rain, 7 degrees"})
    final = await client.send(tools=tools)
    assert "rain, 7 degrees" in final["content"]
    events = await _log(served, client.conversations[0])
    (stored_call,) = [e for e in events if isinstance(e, ToolCall)]
    (result,) = [e for e in events if isinstance(e, ToolResult)]
    assert (stored_call.call_id, result.call_id, result.output) == (call["id"], call["id"], "rain, 7 degrees")
    assert len(set(client.conversations)) == 1


async def test_unanswered_and_unknown_tool_calls_are_refused_and_change_nothing(served: Served) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    client = ChatClient(served)
    await client.say('/tool lookup {"q": "x"}', tools=tools)
    conversation = client.conversations[0]
    head = (await served.store.conversations.get(conversation)).head
    skipped = [*client.messages, {"role": "user", "content": "never mind"}]
    reply = await served.http.post("/v1/chat/completions", json={"model": "test", "messages": skipped})
    assert "no result" in check_error(reply, 400)
    stranger = [
        *client.messages[:-1],
        {"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "call_unknown", "content": "?"},
    ]
    reply = await served.http.post("/v1/chat/completions", json={"model": "test", "messages": stranger})
    check_error(reply, 400)
    assert (await served.store.conversations.get(conversation)).head == head


async def test_hidden_recall_is_run_by_the_proxy_and_never_shown(tmp_path: Path) -> None:
    config = ServerConfig(db=str(tmp_path / "s.db"), context_window=2_048)
    async with serving(config) as served:
        client = ChatClient(served)
        await client.say("the launch code is ZEBRA-4471, remember it")
        for _ in range(12):  # enough to fold the first message away
            await client.say("/long 120")
        conversation = client.conversations[-1]
        info = await served.store.conversations.get(conversation)
        assert info.checkpoint, "the history should have been compacted"
        answer = await client.say("/recall ZEBRA-4471")
        assert "ZEBRA-4471" in answer["content"]  # the model saw the recall result...
        assert "tool_calls" not in answer  # ...and the client never saw the call
        events = await _log(served, conversation)
        recalls = [e for e in events if isinstance(e, ToolCall) and e.name == "recall"]
        assert recalls, "the recall call is in the log"
        # and the client's echo of that answer still matches next time
        await client.say("thanks")
        assert client.conversations[-1] == conversation


async def test_the_upstream_gets_the_view_not_the_history(tmp_path: Path) -> None:
    config = ServerConfig(db=str(tmp_path / "s.db"))
    recording = RecordingModel(context_window=3_000)
    async with serving(config, registry=ServerFixtureRegistry(config, recording)) as served:
        client = ChatClient(served, model="recording")
        for _ in range(20):
            await client.say("/long 150")
        sent = json.dumps(client.messages)
        budget = 3_000 - min(1_024, 3_000 // 4)
        assert len(sent) / 4 > budget, "the client's history alone is over the budget"
        assert max(recording.windows) <= budget
        context = await served.get(f"/v1/conversations/{client.conversations[-1]}/context")
        assert context["totals"]["compactions"] >= 1, context
        assert context["latest_compaction"]["tokens_after"] < context["latest_compaction"]["tokens_before"]


async def test_the_context_of_a_proxied_conversation_is_inspectable(served: Served) -> None:
    client = ChatClient(served)
    await client.say("hello")
    context = await served.get(f"/v1/conversations/{client.conversations[0]}/context")
    assert context["conversation_id"] == client.conversations[0]
    assert context["tokens"]["instructions"] > 0
    assert context["tokens"]["messages"] > 0
    listed = await served.get("/v1/conversations")
    assert client.conversations[0] in [c["id"] for c in listed["data"]]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "test"}, "messages"),
        ({"model": "test", "messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "test", "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ],
)
async def test_bad_requests_name_what_is_wrong(served: Served, body: dict[str, Any], param: str) -> None:
    reply = await served.http.post("/v1/chat/completions", json=body)
    check_error(reply, 400, param=param)


async def test_a_body_that_is_not_json_is_refused(served: Served) -> None:
    reply = await served.http.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert "JSON" in check_error(reply, 400)


async def test_a_message_too_big_for_the_window_is_a_clear_400(tmp_path: Path) -> None:
    async with serving(ServerConfig(db=str(tmp_path / "s.db"), context_window=2_048)) as served:
        huge = "word " * 20_000
        reply = await served.http.post(
            "/v1/chat/completions", json={"model": "test", "messages": [{"role": "user", "content": huge}]}
        )
        check_error(reply, 400, code="context_length_exceeded")


async def test_a_streamed_answer_is_the_same_answer_and_matches_next_time(served: Served) -> None:
    client = ChatClient(served)
    await client.say("first")
    client.messages.append({"role": "user", "content": "/long 30"})
    stream = await served.client.chat.completions.create(
        model="test", messages=cast(Any, client.messages), stream=True, stream_options={"include_usage": True}
    )
    pieces, usage = [], None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert len(pieces) > 1
    assert usage is not None
    assert usage.prompt_tokens > 0
    client.messages.append({"role": "assistant", "content": "".join(pieces)})
    await client.say("third")
    assert len(set(client.conversations)) == 1
    assert _user_texts(await _log(served, client.conversations[0])) == ["first", "/long 30", "third"]


async def test_a_failure_mid_stream_ends_the_stream_with_an_error(served: Served) -> None:
    body = {"model": "test", "stream": True, "messages": [{"role": "user", "content": "/fail 503 down"}]}
    reply = await served.http.post("/v1/chat/completions", json=body)
    # nothing was streamed before the failure: the status is the error's
    check_error(reply, 502)


async def test_the_messages_route_answers_errors_in_anthropics_shape(served: Served) -> None:
    from .server_fixtures import check_anthropic_error

    reply = await served.http.post("/v1/messages", json={"model": "test", "messages": []})
    assert "max_tokens" in check_anthropic_error(reply, 400, kind="invalid_request_error")
    body = {"model": "nope", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    reply = await served.http.post("/v1/messages", json=body)
    assert "nope" in check_anthropic_error(reply, 400, kind="invalid_request_error")
    reply = await served.http.post("/v1/messages", content=b"[", headers={"content-type": "application/json"})
    check_anthropic_error(reply, 400, kind="invalid_request_error")


async def test_the_messages_route_serves_anthropic_clients(served: Served) -> None:
    import anthropic

    client = anthropic.AsyncAnthropic(
        base_url="http://test", api_key="unused", http_client=served.client._client, max_retries=0
    )
    history: list[dict[str, Any]] = [{"role": "user", "content": "hello there"}]
    first = await client.messages.create(model="test", max_tokens=200, messages=cast(Any, history))
    history += [{"role": "assistant", "content": first.model_dump()["content"]}, {"role": "user", "content": "more"}]
    async with client.messages.stream(model="test", max_tokens=200, messages=cast(Any, history)) as stream:
        second = await stream.get_final_message()
    assert first.content
    assert second.content
    listed = await served.get("/v1/conversations")
    (proxied,) = [c for c in listed["data"] if c["metadata"].get("source") == "anthropic"]
    assert _user_texts(await _log(served, proxied["id"])) == ["hello there", "more"]
