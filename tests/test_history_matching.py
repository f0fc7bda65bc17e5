"""Hardened history matching (issue 14 items 1 and 2) on the proxy, and the same matching for stateless Responses
requests (issue 18): a history is spliced onto a stored log only where the log says the same; otherwise it forks or
starts a conversation of its own, and nothing the client sent is dropped.

In-process, with the official `openai` SDK and the built-in `test` model.
"""

from __future__ import annotations

from typing import Any

from contextfold.events import Message, ToolResult, text_of

from .fakes.mcp_server import mcp_server
from .server_fixtures import Served, check_error
from .test_proxy import CONVERSATION, ChatClient
from .test_server_file_search import RESULTS, knowledge_base


async def _texts(served: Served, conversation: str, role: str = "user") -> list[str]:
    return [text_of(e) for e in await served.store.read(conversation) if isinstance(e, Message) and e.role == role]


async def test_a_history_sharing_only_its_last_two_messages_is_never_spliced_on(served: Served) -> None:
    first = ChatClient(served, system=None)
    await first.say("my secret plan is X-1")
    first.messages.append({"role": "user", "content": "thanks"})
    generic = await first.send()
    stored = first.conversations[-1]

    # another client: its own first message, then the same "thanks" and the same generic reply, then a question
    other: list[dict[str, Any]] = [
        {"role": "user", "content": "my own question"},
        {"role": "user", "content": "thanks"},
        generic,
        {"role": "user", "content": "and now?"},
    ]
    raw = await served.client.chat.completions.with_raw_response.create(model="test", messages=other)  # type: ignore[arg-type]
    conversation = raw.headers[CONVERSATION]
    assert conversation != stored
    assert await _texts(served, conversation) == ["my own question", "thanks", "and now?"]  # nothing dropped
    assert await _texts(served, stored) == ["my secret plan is X-1", "thanks"]  # nothing merged in


async def test_a_trimmed_history_still_continues_its_conversation(served: Served) -> None:
    client = ChatClient(served, system=None)
    for n in range(4):
        await client.say(f"message {n}")
    conversation = client.conversations[-1]
    client.messages = client.messages[-3:]
    await client.say("message 4")
    assert client.conversations[-1] == conversation
    assert await _texts(served, conversation) == [f"message {n}" for n in range(5)]


async def test_the_header_matches_a_conversation_made_through_responses(served: Served) -> None:
    created = await served.post("/v1/conversations", json={})
    answer = await served.respond(input="u1", conversation=created["id"])
    a1 = answer["output"][0]["content"][0]["text"]
    history = [
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": a1},
        {"role": "user", "content": "u2"},
    ]
    reply = await served.http.post(
        "/v1/chat/completions", json={"model": "test", "messages": history}, headers={CONVERSATION: created["id"]}
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers[CONVERSATION] == created["id"]
    assert await _texts(served, created["id"]) == ["u1", "u2"]  # not u1, u1, u2: the model saw the history once


async def test_an_edited_message_under_the_header_forks(served: Served) -> None:
    client = ChatClient(served, system=None)
    await client.say("first")
    await client.say("second")
    conversation = client.conversations[-1]
    edited = [*client.messages[:2], {"role": "user", "content": "second, edited"}]
    reply = await served.http.post(
        "/v1/chat/completions", json={"model": "test", "messages": edited}, headers={CONVERSATION: conversation}
    )
    assert reply.status_code == 200, reply.text
    branch = reply.headers[CONVERSATION]
    assert branch != conversation
    assert await _texts(served, branch) == ["first", "second, edited"]
    assert await _texts(served, conversation) == ["first", "second"]  # the original is kept as it was


async def test_the_header_with_only_new_messages_appends_them(served: Served) -> None:
    client = ChatClient(served, system=None)
    await client.say("first")
    conversation = client.conversations[-1]
    body = {"model": "test", "messages": [{"role": "user", "content": "next"}]}
    reply = await served.http.post("/v1/chat/completions", json=body, headers={CONVERSATION: conversation})
    assert reply.headers[CONVERSATION] == conversation
    assert await _texts(served, conversation) == ["first", "next"]


# --- stateless Responses --------------------------------------------------------------------------------------


async def _stateless_turns(served: Served, count: int, *, store: bool) -> tuple[list[dict[str, Any]], set[str]]:
    history: list[dict[str, Any]] = []
    conversations: set[str] = set()
    for n in range(count):
        history.append({"role": "user", "content": f"note {n}: " + "word " * 30})
        response = await served.respond(input=history, store=store)
        history += response["output"]
        if response["conversation"]:
            conversations.add(response["conversation"]["id"])
    return history, conversations


async def test_a_stateless_full_history_is_appended_to_once(served: Served) -> None:
    history, conversations = await _stateless_turns(served, 6, store=True)
    (conversation,) = conversations
    assert await _texts(served, conversation) == [f"note {n}: " + "word " * 30 for n in range(6)]
    # the SDK's round trip of the items (ids, statuses, annotations as it serialises them) matches as well
    given: Any = [*history, {"role": "user", "content": "end"}]
    response = await served.client.responses.create(model="test", input=given)
    assert response.conversation is not None
    assert response.conversation.id == conversation


async def test_a_stateless_history_with_store_false_is_matched_and_nothing_is_listed(served: Served) -> None:
    _, conversations = await _stateless_turns(served, 5, store=False)
    assert conversations == set()
    assert (await served.get("/v1/conversations"))["data"] == []
    stored = await served.store.conversations.list(limit=10)
    assert len(stored) == 1  # one log, folded into incrementally
    assert len(await _texts(served, stored[0].id)) == 5


async def test_a_stateless_history_that_diverges_forks(served: Served) -> None:
    history, (conversation,) = await _stateless_turns(served, 3, store=True)
    edited = [*history[:2], {"role": "user", "content": "another second note"}]
    response = await served.respond(input=edited)
    branch = response["conversation"]["id"]
    assert branch != conversation
    assert (await _texts(served, branch))[-1] == "another second note"
    assert len(await _texts(served, conversation)) == 3


async def test_compaction_items_can_be_written_to_a_conversation(served: Served) -> None:
    source = (await served.post("/v1/conversations", json={}))["id"]
    await served.respond(input="remember ticket ABC-123", conversation=source)
    await served.turns(source, 6, words=60)
    body = await served.post("/v1/responses/compact", json={"model": "test", "conversation": source})
    compaction = next(item for item in body["output"] if item["type"] == "compaction")
    target = (await served.post("/v1/conversations", json={}))["id"]
    added = await served.post(f"/v1/conversations/{target}/items", json={"items": [compaction]})
    assert [item["type"] for item in added["data"]] == ["compaction"]
    assert added["data"][0]["encrypted_content"] == compaction["encrypted_content"]  # the same summary
    # written back to its own conversation, it is already there: nothing is added
    again = await served.post(f"/v1/conversations/{source}/items", json={"items": [compaction]})
    assert again["data"] == []
    reference = await served.http.post(
        f"/v1/conversations/{target}/items", json={"items": [{"type": "item_reference", "id": "x"}]}
    )
    check_error(reference, 400, param="items[0]")


async def test_a_first_stateless_request_with_a_long_history_folds(served: Served) -> None:
    history: list[dict[str, Any]] = []
    for n in range(40):
        history += [
            {"role": "user", "content": f"note {n}: " + "word " * 300},
            {"role": "assistant", "content": f"noted {n}"},
        ]
    history.append({"role": "user", "content": "what was note 3?"})
    response = await served.respond(input=history)  # 81 messages, far past the test model's 16k window
    assert response["status"] == "completed"
    # and the next request extends it incrementally
    follow = await served.respond(input=[*history, *response["output"], {"role": "user", "content": "thanks"}])
    assert follow["conversation"]["id"] == response["conversation"]["id"]


async def test_every_item_the_server_outputs_can_be_given_back(served: Served) -> None:
    """Messages, function calls and outputs, built-in mcp calls, compactions: written to a conversation, and sent
    back as a stateless input, each means what it meant."""
    source = (await served.post("/v1/conversations", json={}))["id"]
    await served.respond(input="hello", conversation=source)
    await served.respond(input="the vault code is otter-77", conversation=source)
    lookup = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}
    called = await served.respond(input='/tool lookup {"q": "x"}', conversation=source, tools=[lookup])
    (call,) = [item for item in called["output"] if item["type"] == "function_call"]
    answer = {"type": "function_call_output", "call_id": call["call_id"], "output": "found x"}
    await served.respond(input=[answer], conversation=source, tools=[lookup])
    await served.turns(source, 6, words=40)
    await served.post(f"/v1/conversations/{source}/compact", json={})
    await served.respond(input="/recall otter", conversation=source)
    items = (await served.get(f"/v1/conversations/{source}/items", order="asc", limit=100))["data"]
    assert {"message", "function_call", "function_call_output", "mcp_call"} <= {item["type"] for item in items}
    view = await served.post("/v1/responses/compact", json={"model": "test", "conversation": source})
    compaction = next(item for item in view["output"] if item["type"] == "compaction")

    target = (await served.post("/v1/conversations", json={}))["id"]
    given = [*items, compaction]
    for start in range(0, len(given), 20):  # as openai-agents writes them: 20 at a time
        await served.post(f"/v1/conversations/{target}/items", json={"items": given[start : start + 20]})
    written = (await served.get(f"/v1/conversations/{target}/items", order="asc", limit=100))["data"]
    assert [item["type"] for item in written] == [item["type"] for item in given]

    follow = await served.respond(input=[*given, {"role": "user", "content": "go on"}], store=False)
    assert follow["status"] == "completed"


async def test_hosted_tool_items_are_given_back_and_written_to_a_conversation(served: Served) -> None:
    """file_search and remote MCP items (a real MCP server on loopback): a client that keeps its own history sends
    them back, approvals included, and the turns go on in one conversation; written to a conversation they mean
    the same (the listing adds nothing for the model; a declined approval is the call's result)."""
    store_id = await knowledge_base(served.client)
    with mcp_server("streamable") as url:
        tools: Any = [
            {"type": "file_search", "vector_store_ids": [store_id]},
            {"type": "mcp", "server_label": "kb", "server_url": url, "require_approval": "never"},
            {"type": "mcp", "server_label": "ask", "server_url": url},  # every call waits for an approval
        ]
        history: list[Any] = [{"role": "user", "content": '/tool file_search {"queries": ["heron launch code"]}'}]
        searched = await served.respond(input=history, tools=tools, include=RESULTS)
        assert searched["status"] == "completed"
        conversation = searched["conversation"]["id"]
        history += [*searched["output"], {"role": "user", "content": '/tool mcp__kb__lookup {"key": "heron"}'}]
        looked = await served.respond(input=history, tools=tools, include=RESULTS)
        assert looked["conversation"]["id"] == conversation  # matched: the items sent back are the stored ones
        assert [i["type"] for i in looked["output"]] == ["mcp_call", "message"]
        history += [*looked["output"], {"role": "user", "content": '/tool mcp__ask__add {"a": 20, "b": 22}'}]
        asked = await served.respond(input=history, tools=tools, include=RESULTS)
        request = asked["output"][-1]
        assert request["type"] == "mcp_approval_request"
        history += asked["output"]
        approve = {"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}
        approved = await served.respond(input=[*history, approve], tools=tools, include=RESULTS)
        assert approved["conversation"]["id"] == conversation
        assert "42" in approved["output"][-1]["content"][0]["text"]
        # without the results the items still match the stored history (which has them)
        plain = await served.respond(input=history[:1], tools=tools)
        assert plain["output"][0].get("results") is None
        again = await served.respond(input=[*history[:1], *plain["output"], {"role": "user", "content": "thanks"}])
        assert again["conversation"]["id"] == plain["conversation"]["id"]
    kinds = {i.get("type", "message") for i in history}
    assert {"file_search_call", "mcp_list_tools", "mcp_call", "mcp_approval_request"} <= kinds

    # written to a conversation: every item but the listing is stored, and renders to the model as the log's own
    target = (await served.post("/v1/conversations", json={}))["id"]
    refused = await served.http.post(f"/v1/conversations/{target}/items", json={"items": [*history, approve]})
    check_error(refused, 400, param=f"items[{len(history)}]")  # an approved call runs on a response only
    assert (await served.get(f"/v1/conversations/{target}/items"))["data"] == []  # nothing half-written
    decline = {**approve, "approve": False}
    await served.post(f"/v1/conversations/{target}/items", json={"items": [*history, decline]})
    written = (await served.get(f"/v1/conversations/{target}/items", order="asc", limit=100))["data"]
    expected = [k for k in (i.get("type", "message") for i in history) if k != "mcp_list_tools"]
    assert [i["type"] for i in written] == [t.replace("mcp_approval_request", "mcp_call") for t in expected]
    assert "declined" in written[-1]["output"]
    log = await served.store.read(target)
    results = [e.output for e in log if isinstance(e, ToolResult)]
    assert "7741" in results[0]  # the search's results, as the tool gave them to the model
    assert results[1] == "The launch code for project heron is 7741."
    follow = await served.respond(input="what is the launch code?", conversation=target)
    assert follow["status"] == "completed"
