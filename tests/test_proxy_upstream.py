"""The proxy against real wire-format upstreams (loopback fake servers): whose key goes where, the client's own
parameters passed through to an upstream of its wire, and the byte-stable forwarded prefix."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from contextfold.server import ModelRoute, ServerConfig

from .fakes._server import FakeServer, Request, StreamReply
from .fakes.fake_openai import chat_answer
from .server_fixtures import Served, check_error, serving

CONVERSATION = "x-contextfold-conversation"


def _answer(request: Request) -> StreamReply:
    if request.path.endswith("/models"):
        raise AssertionError("no window lookups: the routes set their window")
    return chat_answer("fine", prompt=20, completion=2)


@pytest.fixture
def upstreams() -> Any:
    with FakeServer() as forwarding, FakeServer() as own:
        forwarding.handler = _answer
        own.handler = _answer
        yield forwarding, own


def _config(tmp_path: Path, forwarding: FakeServer, own: FakeServer) -> ServerConfig:
    routes = (
        ModelRoute("byok", "openai-chat", base_url=forwarding.url, context_window=8_000, auth="forward"),
        ModelRoute("house", "openai-chat", base_url=own.url, api_key="sk-house", context_window=8_000),
    )
    return ServerConfig(db=str(tmp_path / "s.db"), routes=routes)


@pytest.fixture
async def proxied(tmp_path: Path, upstreams: tuple[FakeServer, FakeServer]) -> AsyncIterator[Served]:
    async with serving(_config(tmp_path, *upstreams)) as served:
        yield served


def _chat(model: str, text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def test_a_forwarding_route_sends_the_clients_key_and_no_other_route_does(
    proxied: Served, upstreams: tuple[FakeServer, FakeServer]
) -> None:
    forwarding, own = upstreams
    mine = {"authorization": "Bearer sk-client-1"}
    assert (await proxied.http.post("/v1/chat/completions", json=_chat("byok"), headers=mine)).status_code == 200
    assert (await proxied.http.post("/v1/chat/completions", json=_chat("house"), headers=mine)).status_code == 200
    other = {"authorization": "Bearer sk-client-2"}
    assert (await proxied.http.post("/v1/chat/completions", json=_chat("byok", "x"), headers=other)).status_code == 200
    seen_forwarding = [r.headers.get("authorization") for r in forwarding.requests]
    seen_own = [r.headers.get("authorization") for r in own.requests]
    assert seen_forwarding == ["Bearer sk-client-1", "Bearer sk-client-2"]  # each request its own client's key
    assert seen_own == ["Bearer sk-house"]  # never the client's


async def test_a_forwarding_route_without_a_client_key_is_refused(proxied: Served) -> None:
    reply = await proxied.http.post("/v1/chat/completions", json=_chat("byok"))
    assert "Authorization" in check_error(reply, 401)


async def test_with_server_keys_the_contextfold_key_never_reaches_the_upstream(
    tmp_path: Path, upstreams: tuple[FakeServer, FakeServer]
) -> None:
    forwarding, _ = upstreams
    async with serving(_config(tmp_path, *upstreams)) as served:
        secret, _ = await served.store.keys.create("acme")
        # the contextfold key in Authorization: it would be forwarded, so the request is refused
        reply = await served.http.post(
            "/v1/chat/completions", json=_chat("byok"), headers={"authorization": f"Bearer {secret}"}
        )
        assert "X-Contextfold-Key" in check_error(reply, 401)
        headers = {"x-contextfold-key": secret, "authorization": "Bearer sk-upstream"}
        reply = await served.http.post("/v1/chat/completions", json=_chat("byok"), headers=headers)
        assert reply.status_code == 200, reply.text
        assert [r.headers.get("authorization") for r in forwarding.requests] == ["Bearer sk-upstream"]
        assert all(secret not in r.body.decode() and secret not in str(r.headers) for r in forwarding.requests)


async def test_the_clients_own_parameters_reach_an_upstream_of_its_wire(
    proxied: Served, upstreams: tuple[FakeServer, FakeServer]
) -> None:
    _, own = upstreams
    body = _chat("house", seed=7, stop=["END"], response_format={"type": "json_object"}, temperature=0.2)
    assert (await proxied.http.post("/v1/chat/completions", json=body)).status_code == 200
    sent = own.requests[-1].json
    assert (sent["seed"], sent["stop"], sent["response_format"], sent["temperature"]) == (
        7,
        ["END"],
        {"type": "json_object"},
        0.2,
    )
    assert sent["messages"][-1] == {"role": "user", "content": "hi"}


async def test_between_compactions_each_forwarded_request_extends_the_previous_one(
    proxied: Served, upstreams: tuple[FakeServer, FakeServer]
) -> None:
    _, own = upstreams
    messages: list[dict[str, Any]] = [{"role": "system", "content": "be brief"}]
    for n in range(6):
        messages.append({"role": "user", "content": f"question {n}"})
        reply = await proxied.http.post("/v1/chat/completions", json={"model": "house", "messages": messages})
        assert reply.status_code == 200, reply.text
        messages.append({"role": "assistant", "content": reply.json()["choices"][0]["message"]["content"]})
    sent = [r.json["messages"] for r in own.requests]
    for before, after in itertools.pairwise(sent):
        assert json.dumps(after[: len(before)]) == json.dumps(before)
        assert len(after) == len(before) + 2  # the answer and the new question, nothing else changed
