"""Tenants: an API key names its tenant, and one tenant's conversations and responses do not exist for another
(every read, write, search, recall, context, items, responses, input items, fork and pin answers 404). A missing,
invalid or revoked key is 401; a server without keys serves everyone as tenant "default"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from contextfold.server import ServerConfig

from .server_fixtures import Served, check_error, function_tool, serving


@dataclass
class Tenants:
    acme: Served
    globex: Served
    anonymous: Served
    """No key at all."""
    acme_key_id: str


@pytest.fixture
async def tenants(tmp_path: Path) -> AsyncIterator[Tenants]:
    async with serving(ServerConfig(db=str(tmp_path / "s.db"))) as served:
        acme_secret, acme_key = await served.store.keys.create("acme", "ci")
        globex_secret, _ = await served.store.keys.create("globex")
        yield Tenants(await served.as_key(acme_secret), await served.as_key(globex_secret), served, acme_key.id)


async def folded(served: Served, secret: str) -> tuple[str, dict[str, Any]]:
    """A conversation of this tenant whose second turn (holding `secret`) is folded away; and its last response."""
    conversation = (await served.post("/v1/conversations", json={"metadata": {"owner": secret}}))["id"]
    last: dict[str, Any] = {}
    for text in ["hello", f"the secret is {secret}", *["/long 40"] * 6]:
        last = await served.respond(input=text, conversation=conversation)
    await served.post(f"/v1/conversations/{conversation}/compact", json={})
    return conversation, last


async def test_without_keys_everyone_is_the_default_tenant(served: Served) -> None:
    response = await served.respond(input="hi")
    info = await served.store.conversations.get(response["conversation"]["id"])
    assert info.tenant == "default"


async def test_missing_invalid_and_revoked_keys_are_401(tenants: Tenants) -> None:
    check_error(await tenants.anonymous.http.get("/v1/conversations"), 401, code="invalid_api_key")
    wrong = await tenants.acme.as_key("cf-not-a-real-key")
    check_error(await wrong.http.post("/v1/responses", json={"model": "test", "input": "x"}), 401)
    with pytest.raises(openai.AuthenticationError):
        await wrong.client.responses.create(model="test", input="x")
    created = await tenants.acme.client.conversations.create()  # the SDK sends the key as a bearer token
    assert created.object == "conversation"
    await tenants.acme.store.keys.revoke(tenants.acme_key_id)
    check_error(await tenants.acme.http.get(f"/v1/conversations/{created.id}"), 401, code="invalid_api_key")
    assert (await tenants.globex.get("/v1/conversations"))["data"] == []  # other keys still work


async def test_a_key_created_while_serving_switches_authentication_on(served: Served) -> None:
    await served.get("/v1/conversations")
    secret, _ = await served.store.keys.create("late")
    check_error(await served.http.get("/v1/conversations"), 401)
    keyed = await served.as_key(secret)
    assert (await keyed.get("/v1/conversations"))["data"] == []


async def test_another_tenants_objects_are_404_everywhere(tenants: Tenants) -> None:
    acme, globex = tenants.acme, tenants.globex
    conversation, response = await folded(acme, "kiwi-17")
    item = (await acme.get(f"/v1/conversations/{conversation}/items", limit=1))["data"][0]["id"]
    c, r = f"/v1/conversations/{conversation}", f"/v1/responses/{response['id']}"
    probes: list[tuple[str, str, Any]] = [
        ("GET", c, None),
        ("POST", c, {"metadata": {"x": "y"}}),
        ("DELETE", c, None),
        ("GET", f"{c}/items", None),
        ("POST", f"{c}/items", {"items": [{"role": "user", "content": "intrude"}]}),
        ("GET", f"{c}/items/{item}", None),
        ("DELETE", f"{c}/items/{item}", None),
        ("GET", f"{c}/context", None),
        ("POST", f"{c}/compact", {}),
        ("POST", f"{c}/pins", {"item_id": item}),
        ("DELETE", f"{c}/pins/{item}", None),
        ("GET", f"{c}/search?q=kiwi", None),
        ("POST", f"{c}/fork", {}),
        ("GET", r, None),
        ("GET", f"{r}?stream=true", None),
        ("DELETE", r, None),
        ("GET", f"{r}/input_items", None),
        ("POST", "/v1/responses", {"model": "test", "input": "/recall kiwi", "conversation": conversation}),
        ("POST", "/v1/responses", {"model": "test", "input": "x", "previous_response_id": response["id"]}),
        (
            "POST",
            "/v1/responses",
            {"model": "test", "input": "x", "previous_response_id": response["id"], "stream": True},
        ),
        ("POST", "/v1/responses/compact", {"model": "test", "conversation": conversation}),
        ("POST", "/v1/responses/compact", {"model": "test", "previous_response_id": response["id"]}),
        ("POST", "/v1/responses/input_tokens", {"model": "test", "conversation": conversation}),
        ("POST", "/v1/responses/input_tokens", {"model": "test", "previous_response_id": response["id"]}),
    ]
    for method, path, body in probes:
        reply = await globex.http.request(method, path, json=body)
        message = check_error(reply, 404, code="not_found")
        assert "kiwi-17" not in reply.text, (method, path, message)
    assert (await globex.get("/v1/conversations"))["data"] == []
    with pytest.raises(openai.NotFoundError):
        await globex.client.conversations.items.list(conversation)

    # nothing changed for the owner
    assert (await acme.get(c))["metadata"] == {"owner": "kiwi-17"}
    assert (await acme.get(f"{c}/context"))["totals"]["compactions"] == 1
    assert [x["id"] for x in (await acme.get("/v1/conversations"))["data"]] == [conversation]
    hits = await acme.get(f"{c}/search", q="kiwi")
    assert "kiwi-17" in hits["data"][0]["snippet"]


async def test_recall_and_search_never_cross_tenants(tenants: Tenants) -> None:
    await folded(tenants.acme, "walrus-5")
    theirs, _ = await folded(tenants.globex, "heron-8")
    hits = await tenants.globex.get(f"/v1/conversations/{theirs}/search", q="walrus")
    assert hits["data"] == []
    recalled = await tenants.globex.respond(input="/recall walrus secret", conversation=theirs)
    call = recalled["output"][0]
    assert call["type"] == "mcp_call"
    assert call["status"] == "completed"
    assert "walrus-5" not in call["output"]
    assert (
        "heron-8" in (await tenants.globex.respond(input="/recall heron", conversation=theirs))["output"][0]["output"]
    )


async def test_same_ids_for_both_tenants_are_their_own(tenants: Tenants) -> None:
    tools = [function_tool()]
    mine = await tenants.acme.respond(input='/tool lookup {"q": 1}', tools=tools)
    other = await tenants.globex.http.post(
        "/v1/responses",
        json={
            "model": "test",
            "input": [{"type": "function_call_output", "call_id": mine["output"][0]["call_id"], "output": "x"}],
            "previous_response_id": mine["id"],
            "tools": tools,
        },
    )
    check_error(other, 404, param="previous_response_id")
    item = mine["output"][0]["id"]
    ref = {"model": "test", "input": [{"type": "item_reference", "id": item}, {"role": "user", "content": "x"}]}
    reply = await tenants.globex.http.post("/v1/responses", json=ref)
    check_error(reply, 400, param="input[0].id")  # an item of another tenant is no item of this conversation
