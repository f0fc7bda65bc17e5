"""Cross-tenant security: tenant B, holding its own key, guesses or reuses tenant A's ids and learns nothing.

Every route is enumerated from the app's OpenAPI document: a route that takes an id in its path is probed with A's
ids by B, and the refusal must be byte for byte the refusal of an id that never existed (same status, headers and
body but for the id itself), so there is no existence oracle. Routes that name another object in their body or
headers (`conversation`, `previous_response_id`, the proxy's `X-Contextfold-Conversation`, item ids) are probed
from a table; a new route that is in neither fails `test_every_route_is_probed` until it is added. Beside that:
lists and search, the proxy's history matching (B resending A's exact history, or its tail, lands in a conversation
of B's), recall and expand through the test model, a busy conversation of A's (still 404, never 409) and a key
revoked while its stream runs (the next request is 401). Both store backends.

The tests that other tenants' objects are 404 at all, with the SDK, are in test_server_tenants.py; this suite is the
exhaustive, oracle-free version.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from contextfold.events import Compaction, Message, TurnMarker, new_id, text_of
from contextfold.server import ServerConfig
from contextfold.store import ServerStore

from .server_fixtures import GatedModel, Served, ServerFixtureRegistry, check_error, serving

SECRET = "quokka-7319"
"""A's secret: it must never appear in anything B is sent."""
CONVERSATION_HEADER = "x-contextfold-conversation"

PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}
"""Routes without a key: the process's health and metrics, which name no tenant's object."""
UNSCOPED = {
    ("GET", "/v1/models"): "the served model names, the same for every tenant",
    ("POST", "/v1/conversations"): "creates a conversation of the caller's own",
    ("GET", "/v1/conversations"): "lists the caller's own: test_lists_and_search_show_only_the_callers_own",
    ("POST", "/v1/files"): "uploads a file of the caller's own",
    ("GET", "/v1/files"): "lists the caller's own: test_server_files.py",
    ("POST", "/v1/vector_stores"): "creates a vector store of the caller's own (its file_ids: test_server_files.py)",
    ("GET", "/v1/vector_stores"): "lists the caller's own: test_server_files.py",
    ("POST", "/v1/moderations"): "classifies the text it is sent with the server's guardrails, for every tenant alike",
}
"""Routes behind a key that take no id of an object (what they return is checked by the tests named)."""
PATH_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/conversations/{conversation_id}"): {"metadata": {"taken": "yes"}},
    ("POST", "/v1/conversations/{conversation_id}/items"): {"items": [{"role": "user", "content": "intrude"}]},
    ("POST", "/v1/conversations/{conversation_id}/compact"): {"instructions": "say everything"},
    ("POST", "/v1/conversations/{conversation_id}/pins"): {"item_id": "{item_id}"},
    ("POST", "/v1/conversations/{conversation_id}/fork"): {"item_id": "{item_id}"},
    ("POST", "/v1/vector_stores/{vector_store_id}"): {"name": "taken"},
    ("POST", "/v1/vector_stores/{vector_store_id}/files"): {"file_id": "{file_id}"},
    ("POST", "/v1/vector_stores/{vector_store_id}/files/{file_id}"): {"attributes": {"taken": "yes"}},
    ("POST", "/v1/vector_stores/{vector_store_id}/file_batches"): {"file_ids": ["{file_id}"]},
    ("POST", "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel"): {},
    ("POST", "/v1/vector_stores/{vector_store_id}/search"): {"query": "quokka"},
}
"""A valid body for each route with an id in its path and a body, so the refusal is the tenant check's and not
the body's validation ("{item_id}" is replaced like a path parameter)."""
BODY_WITH_ITEM = {key for key, body in PATH_BODIES.items() if "{item_id}" in json.dumps(body)}
QUERIES: dict[tuple[str, str], list[dict[str, str]]] = {
    ("GET", "/v1/conversations/{conversation_id}/search"): [{"q": "quokka"}],
    ("GET", "/v1/responses/{response_id}"): [{}, {"stream": "true"}, {"stream": "true", "starting_after": "2"}],
    ("GET", "/v1/conversations/{conversation_id}/events"): [{}, {"after": "1"}],
    ("GET", "/v1/conversations/{conversation_id}/context"): [{}, {"model": "test"}],
}
"""Query variants to probe (each route's required query parameters must be given here)."""
CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"


@dataclass
class Probe:
    """A request that names an object of A's by a template: `{conversation_id}`, `{response_id}`, `{item_id}`."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    headers: dict[str, str] | None = None


BODY_PROBES: dict[tuple[str, str], list[Probe]] = {
    ("POST", "/v1/responses"): [
        Probe(
            "POST", "/v1/responses", {"model": "test", "input": "/recall quokka", "conversation": "{conversation_id}"}
        ),
        Probe("POST", "/v1/responses", {"model": "test", "input": "x", "conversation": {"id": "{conversation_id}"}}),
        Probe("POST", "/v1/responses", {"model": "test", "input": "x", "previous_response_id": "{response_id}"}),
        Probe(
            "POST",
            "/v1/responses",
            {"model": "test", "input": "x", "previous_response_id": "{response_id}", "background": True},
        ),
        Probe(
            "POST",
            "/v1/responses",
            {"model": "test", "input": "x", "previous_response_id": "{response_id}", "stream": True},
        ),
        Probe(
            "POST",
            "/v1/responses",
            {"model": "test", "input": "x", "conversation": "{conversation_id}", "store": False, "stream": True},
        ),
    ],
    ("POST", "/v1/responses/compact"): [
        Probe("POST", "/v1/responses/compact", {"model": "test", "conversation": "{conversation_id}"}),
        Probe("POST", "/v1/responses/compact", {"model": "test", "previous_response_id": "{response_id}"}),
    ],
    ("POST", "/v1/responses/input_tokens"): [
        Probe("POST", "/v1/responses/input_tokens", {"model": "test", "conversation": "{conversation_id}"}),
        Probe("POST", "/v1/responses/input_tokens", {"model": "test", "previous_response_id": "{response_id}"}),
    ],
    ("POST", CHAT): [
        Probe(
            "POST",
            CHAT,
            {"model": "test", "messages": [{"role": "user", "content": "what was said?"}]},
            {CONVERSATION_HEADER: "{conversation_id}"},
        ),
    ],
    ("POST", MESSAGES): [
        Probe(
            "POST",
            MESSAGES,
            {"model": "test", "max_tokens": 50, "messages": [{"role": "user", "content": "what was said?"}]},
            {CONVERSATION_HEADER: "{conversation_id}"},
        ),
    ],
}
"""Routes that name an object of another tenant's in their body or headers."""


@dataclass
class World:
    a: Served
    b: Served
    anonymous: Served
    a_key_id: str
    conversation: str
    """A's conversation: the secret is in its folded history."""
    item: str
    """The id of A's message holding the secret."""
    compaction: str
    response: str
    """A's last stored response (on `conversation`)."""
    mine: str
    """B's own conversation, folded too (so recall and expand are offered to its model)."""
    file: str = ""
    """A's file (holding the secret), in A's vector store `vector_store`, added by the batch `batch`."""
    vector_store: str = ""
    batch: str = ""

    def ids(self) -> dict[str, str]:
        return {
            "conversation_id": self.conversation,
            "response_id": self.response,
            "item_id": self.item,
            "file_id": self.file,
            "vector_store_id": self.vector_store,
            "batch_id": self.batch,
        }


def fake_ids(world: World) -> dict[str, str]:
    """Ids that never existed, each as long as A's, so a refusal of either is the same number of bytes."""
    item_prefix = world.item.rsplit("_", 1)[0]
    return {
        "conversation_id": new_id("conv"),
        "response_id": new_id("resp"),
        "item_id": new_id(item_prefix),
        "file_id": new_id("file"),
        "vector_store_id": new_id("vs"),
        "batch_id": new_id("vsfb"),
    }


async def fold_history(served: Served, secret: str) -> tuple[str, dict[str, Any]]:
    """A conversation whose second message holds `secret` and is folded away by a compaction; its last response."""
    conversation = (await served.post("/v1/conversations", json={"metadata": {"owner": secret}}))["id"]
    last: dict[str, Any] = {}
    for text in ["hello", f"the secret is {secret}", *["/long 40"] * 6]:
        last = await served.respond(input=text, conversation=conversation)
    compacted = await served.post(f"/v1/conversations/{conversation}/compact", json={})
    assert compacted["compacted"], compacted
    return conversation, last


@pytest.fixture
async def world(store: ServerStore) -> AsyncIterator[World]:
    config = ServerConfig(db="unused: the store is given")
    async with serving(config, store=store, registry=ServerFixtureRegistry(config, GatedModel())) as served:
        a_secret, a_key = await store.keys.create("acme", "ci")
        b_secret, _ = await store.keys.create("globex")
        a, b = await served.as_key(a_secret), await served.as_key(b_secret)
        conversation, response = await fold_history(a, SECRET)
        mine, _ = await fold_history(b, "heron-8")
        events = await store.read(conversation)
        item = next(e.id for e in events if isinstance(e, Message) and SECRET in text_of(e))
        compaction = next(e.id for e in events if isinstance(e, Compaction))
        uploaded = await a.client.files.create(
            file=("secret.md", f"the secret is {SECRET}".encode()), purpose="assistants"
        )
        vector_store = await a.client.vector_stores.create(name="a's")
        batch = await a.client.vector_stores.file_batches.create_and_poll(
            vector_store_id=vector_store.id, file_ids=[uploaded.id], poll_interval_ms=20
        )
        yield World(
            a,
            b,
            served,
            a_key.id,
            conversation,
            item,
            compaction,
            response["id"],
            mine,
            uploaded.id,
            vector_store.id,
            batch.id,
        )


def fill(template: Any, ids: dict[str, str]) -> Any:
    """`template` (a string, or JSON) with its `{name}` placeholders replaced by `ids`."""
    text = json.dumps(template)
    for name, value in ids.items():
        text = text.replace("{" + name + "}", value)
    return json.loads(text)


async def send(client: Served, probe: Probe, ids: dict[str, str], params: dict[str, str] | None = None) -> Any:
    return await client.http.request(
        probe.method,
        fill(probe.path, ids),
        json=fill(probe.body, ids) if probe.body is not None else None,
        headers=fill(probe.headers, ids) if probe.headers else None,
        params=params,
    )


def assert_same_refusal(real: httpx.Response, fake: httpx.Response, real_ids: list[str], fake_ids: list[str]) -> None:
    """Both refused with 404, identical but for the ids (and A's secret nowhere)."""
    assert real.status_code == 404, (real.request.url, real.text)
    assert fake.status_code == 404, (fake.request.url, fake.text)
    blind_real, blind_fake = real.text, fake.text
    for mine, theirs in zip(real_ids, fake_ids, strict=True):
        blind_real, blind_fake = blind_real.replace(mine, "<id>"), blind_fake.replace(theirs, "<id>")
    assert blind_real == blind_fake, (real.request.url, real.text, fake.text)
    assert dict(real.headers) == dict(fake.headers), (real.request.url, real.headers, fake.headers)
    assert SECRET not in real.text


def operations(served: Served) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) of every route in the app's OpenAPI document."""
    document = served.app.openapi()
    return [(m.upper(), path, op) for path, ops in document["paths"].items() for m, op in ops.items()]


def path_params(op: dict[str, Any]) -> list[str]:
    return [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]


async def snapshot(world: World) -> list[Any]:
    """Everything of A's that B's probes could have changed, read by A."""
    a, c = world.a, f"/v1/conversations/{world.conversation}"
    return [
        await a.get(c),
        await a.get(f"{c}/items", limit=100, order="asc"),
        await a.get(f"{c}/events", limit=1000),
        await a.get(f"{c}/context"),
        await a.get(f"/v1/responses/{world.response}"),
        (await a.store.conversations.get(world.conversation)).head,
        [x["id"] for x in (await a.get("/v1/conversations"))["data"]],
        await a.get(f"/v1/files/{world.file}"),
        await a.get(f"/v1/vector_stores/{world.vector_store}"),
        await a.get(f"/v1/vector_stores/{world.vector_store}/files/{world.file}"),
        await a.get(f"/v1/vector_stores/{world.vector_store}/file_batches/{world.batch}"),
    ]


async def test_every_route_is_probed_and_needs_a_key(world: World) -> None:
    """A route added without a tenant check, or without a probe here, fails this test."""
    for method, path, op in operations(world.a):
        key = (method, path)
        if key in PUBLIC:
            reply = await world.anonymous.http.request(method, path)
            assert reply.status_code == 200, (key, reply.text)
            assert SECRET not in reply.text
            assert world.conversation not in reply.text
            continue
        assert path_params(op) or key in UNSCOPED or key in BODY_PROBES, f"{method} {path}: add a probe"
        if "requestBody" in op and path_params(op):
            assert key in PATH_BODIES, f"{method} {path}: add a valid body to PATH_BODIES"
        required = {p["name"] for p in op.get("parameters", []) if p["in"] == "query" and p.get("required")}
        assert all(required <= set(q) for q in QUERIES.get(key, [{}])), f"{method} {path}: add {required} to QUERIES"
        # without a key: 401, the same for A's ids and ids that never existed
        probe = Probe(method, path, PATH_BODIES.get(key, {}) if "requestBody" in op or method == "POST" else None)
        real = await send(world.anonymous, probe, world.ids())
        fake = await send(world.anonymous, probe, fake_ids(world))
        if path != MESSAGES:  # (the Anthropic route answers in Anthropic's shape: checked by the fixtures' hook)
            check_error(real, 401, code="invalid_api_key")
        assert real.status_code == fake.status_code == 401, (key, real.text)
        assert real.json() == fake.json()


async def test_another_tenants_ids_are_refused_as_if_they_never_existed(world: World) -> None:
    before = await snapshot(world)
    real_ids, fake = world.ids(), fake_ids(world)
    probed = 0
    for method, path, op in operations(world.a):
        key = (method, path)
        params = path_params(op)
        probes = [Probe(method, path, PATH_BODIES.get(key))] if params else BODY_PROBES.get(key, [])
        for probe in probes:
            for query in QUERIES.get(key, [{}]):
                used = [
                    name for name in real_ids if "{" + name + "}" in json.dumps([probe.path, probe.body, probe.headers])
                ]
                by_b = await send(world.b, probe, real_ids, query)
                missing = await send(world.b, probe, fake, query)
                assert_same_refusal(by_b, missing, [real_ids[n] for n in used], [fake[n] for n in used])
                # the owner asking for an id that never existed is refused in the same words
                assert_same_refusal(await send(world.a, probe, fake, query), missing, [], [])
                probed += 1
        if "item_id" in params or key in BODY_WITH_ITEM:
            # A's item inside B's own conversation is as missing as an item that never existed
            probe = Probe(method, path, PATH_BODIES.get(key))
            inside = {**real_ids, "conversation_id": world.mine}
            by_b = await send(world.b, probe, inside)
            missing = await send(world.b, probe, {**fake, "conversation_id": world.mine})
            assert_same_refusal(by_b, missing, [world.item], [fake["item_id"]])
            probed += 1
    assert probed >= 35, probed  # (a sanity check that the enumeration found the routes)
    assert await snapshot(world) == before  # nothing of A's changed, whatever B sent
    metrics = (await world.anonymous.http.get("/metrics")).text
    assert world.conversation not in metrics  # routes are labelled by their template
    assert world.response not in metrics


async def test_item_references_to_another_tenants_items_are_unknown(world: World) -> None:
    for item in (world.item, world.compaction):
        made_up = new_id(item.rsplit("_", 1)[0])
        for extra in ({}, {"conversation": world.mine}):
            replies = []
            for target in (item, made_up):
                given = [{"type": "item_reference", "id": target}, {"role": "user", "content": "x"}]
                replies.append(
                    await world.b.http.post("/v1/responses", json={"model": "test", "input": given, **extra})
                )
            real, fake = replies
            check_error(real, 400, param="input[0].id")
            assert real.text.replace(item, "<id>") == fake.text.replace(made_up, "<id>")


async def test_lists_and_search_show_only_the_callers_own(world: World) -> None:
    listed = await world.b.get("/v1/conversations", limit=100)
    ids = [c["id"] for c in listed["data"]]
    assert world.conversation not in ids
    assert ids
    assert {(await world.b.store.conversations.get(i)).tenant for i in ids} == {"globex"}
    for order in ("asc", "desc"):
        real = await world.b.http.get("/v1/conversations", params={"after": world.conversation, "order": order})
        fake_id = new_id("conv")
        fake = await world.b.http.get("/v1/conversations", params={"after": fake_id, "order": order})
        assert_same_refusal(real, fake, [world.conversation], [fake_id])
    for words in ("quokka", SECRET, "secret"):
        hits = await world.b.get(f"/v1/conversations/{world.mine}/search", q=words)
        assert SECRET not in json.dumps(hits)
    assert (await world.a.get(f"/v1/conversations/{world.conversation}/search", q="quokka"))["data"]  # A finds it
    for path in ("items", "events", "usage", "context"):
        assert SECRET not in (await world.b.http.get(f"/v1/conversations/{world.mine}/{path}")).text


async def test_recall_and_expand_never_reach_another_tenant(world: World) -> None:
    recalled = await world.b.respond(input="/recall quokka 7319 secret", conversation=world.mine)
    call = recalled["output"][0]
    assert call["type"] == "mcp_call"
    assert call["name"] == "recall"
    assert SECRET not in json.dumps(recalled)
    # expand by A's event and compaction ids: refused as ids that never existed
    for real in (world.item, world.compaction):
        made_up = new_id(real.rsplit("_", 1)[0])
        outputs = []
        for target in (real, made_up):
            arguments = json.dumps({"id": target})
            answer = await world.b.respond(input=f"/tool expand {arguments}", conversation=world.mine)
            call = answer["output"][0]
            assert (call["type"], call["name"], call.get("error") is not None) == ("mcp_call", "expand", True), call
            outputs.append(call["output"].replace(target, "<id>"))
            assert SECRET not in json.dumps(answer)
        assert outputs[0] == outputs[1]
    # and A's own recall does find it (the probe above was a real one)
    own = await world.a.respond(input="/recall quokka", conversation=world.conversation)
    assert SECRET in own["output"][0]["output"]


def chat_body(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": "test", "messages": messages}


def messages_body(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": "test", "max_tokens": 200, "messages": messages}


def answer_of(route: str, body: dict[str, Any]) -> str:
    text: str = body["choices"][0]["message"]["content"] if route == CHAT else body["content"][0]["text"]
    return text


@pytest.mark.parametrize("route", [CHAT, MESSAGES])
async def test_the_proxy_never_matches_another_tenants_history(world: World, route: str) -> None:
    make = chat_body if route == CHAT else messages_body
    history: list[dict[str, Any]] = [{"role": "user", "content": f"remember the code word {SECRET}"}]
    conversations = []
    for question in ("and the second step?", "and the third?"):
        reply = await world.a.http.post(route, json=make(history))
        assert reply.status_code == 200, reply.text
        conversations.append(reply.headers[CONVERSATION_HEADER])
        history += [
            {"role": "assistant", "content": answer_of(route, reply.json())},
            {"role": "user", "content": question},
        ]
    assert len(set(conversations)) == 1
    theirs = conversations[0]
    head = (await world.a.store.conversations.get(theirs)).head
    # B sends A's exact history, then only its tail (the tail anchor), then names A's conversation
    for sent in (history, history[-3:]):
        reply = await world.b.http.post(route, json=make(sent))
        assert reply.status_code == 200, reply.text
        landed = reply.headers[CONVERSATION_HEADER]
        assert landed != theirs
        info = await world.b.store.conversations.get(landed)
        assert info.tenant == "globex"
        stored = " ".join(text_of(e) for e in await world.b.store.read(landed) if isinstance(e, Message))
        assert (SECRET in stored) == (sent is history)  # only what B itself sent
    fake = new_id("conv")
    real = await world.b.http.post(route, json=make(history), headers={CONVERSATION_HEADER: theirs})
    missing = await world.b.http.post(route, json=make(history), headers={CONVERSATION_HEADER: fake})
    assert_same_refusal(real, missing, [theirs], [fake])
    assert (await world.a.store.conversations.get(theirs)).head == head  # nothing of B's reached A's conversation
    # and A, resending its history, still continues its own conversation
    reply = await world.a.http.post(route, json=make(history))
    assert reply.headers[CONVERSATION_HEADER] == theirs


async def test_the_proxy_recall_never_reaches_another_tenant(world: World) -> None:
    messages: list[dict[str, Any]] = []
    conversation = ""
    for text in ["hello", "a note about herons", *["/long 60"] * 6]:
        messages.append({"role": "user", "content": text})
        reply = await world.b.http.post(CHAT, json=chat_body(messages))
        conversation = reply.headers[CONVERSATION_HEADER]
        messages.append({"role": "assistant", "content": answer_of(CHAT, reply.json())})
    await world.b.post(f"/v1/conversations/{conversation}/compact", json={})
    messages.append({"role": "user", "content": "/recall quokka secret herons"})
    reply = await world.b.http.post(CHAT, json=chat_body(messages))
    assert reply.status_code == 200, reply.text
    said = answer_of(CHAT, reply.json())
    assert "recall returned" in said, said  # the recall ran, on B's conversation only
    assert SECRET not in reply.text
    assert SECRET not in json.dumps([str(e) for e in await world.b.store.read(reply.headers[CONVERSATION_HEADER])])


def gated_model(world: World) -> GatedModel:
    """The model `gated` of the world's server: it holds every answer until its gate is set."""
    registry = world.a.state.registry
    assert isinstance(registry, ServerFixtureRegistry)
    model = registry.extra["gated"]
    assert isinstance(model, GatedModel)
    return model


async def test_a_busy_conversation_of_another_tenant_is_404_not_409(world: World) -> None:
    model = gated_model(world)
    held = asyncio.create_task(
        world.a.http.post("/v1/responses", json={"model": "gated", "input": "hold", "conversation": world.conversation})
    )
    await model.entered.wait()
    fake = new_id("conv")
    for body in ({"input": "x"}, {"input": "x", "stream": True}):
        real = await world.b.http.post(
            "/v1/responses", json={"model": "test", "conversation": world.conversation, **body}
        )
        missing = await world.b.http.post("/v1/responses", json={"model": "test", "conversation": fake, **body})
        assert_same_refusal(real, missing, [world.conversation], [fake])
    check_error(  # the owner is told it is busy
        await world.a.http.post(
            "/v1/responses", json={"model": "test", "input": "x", "conversation": world.conversation}
        ),
        409,
        code="conversation_busy",
    )
    model.gate.set()
    assert (await held).status_code == 200


async def test_a_key_revoked_mid_stream_is_refused_from_the_next_request(world: World) -> None:
    model = gated_model(world)
    body = {"model": "gated", "input": "a long answer please", "conversation": world.conversation, "stream": True}
    streaming = asyncio.create_task(world.a.http.post("/v1/responses", json=body))
    await model.entered.wait()  # the stream has started: its turn waits on the model
    await world.a.store.keys.revoke(world.a_key_id)
    for method, path in (("GET", f"/v1/conversations/{world.conversation}"), ("GET", "/v1/conversations")):
        check_error(await world.a.http.request(method, path), 401, code="invalid_api_key")
    check_error(await world.a.http.post("/v1/responses", json={"model": "test", "input": "x"}), 401)
    model.gate.set()
    finished = await streaming
    # the stream that was running may finish (it was authorised when it started) or stop; it ends cleanly
    assert finished.status_code == 200
    last = finished.text.strip().split("\n\n")[-1]
    assert any(kind in last for kind in ("response.completed", "response.failed", "response.incomplete")), last
    events = await world.a.store.read(world.conversation)
    ends = [e.status for e in events if isinstance(e, TurnMarker) and e.status != "started"]
    assert ends[-1] in ("completed", "interrupted", "failed")
    check_error(await world.a.http.get(f"/v1/conversations/{world.conversation}"), 401, code="invalid_api_key")
    assert (await world.b.get(f"/v1/conversations/{world.mine}"))["id"] == world.mine  # B's key is untouched
