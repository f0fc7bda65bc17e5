"""Errors as OpenAI shapes them, `{"error": {"message", "type", "param", "code"}}`, with the right status: 400 naming
the bad field, 404, 409 for a busy conversation (or, with queue_turns, the second turn waiting its turn), 413 over
each limit, 429/502/504 from the upstream, and never a 500 for anything a client can send."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from contextfold.events import TurnMarker
from contextfold.models import ModelResponse, ModelSettings, error_for_status
from contextfold.server import Limits, ServerConfig
from contextfold.server._testmodel import TestModel
from contextfold.view import Window

from .server_fixtures import (
    GatedModel,
    Served,
    ServerFixtureRegistry,
    check_error,
    check_stream,
    function_tool,
    parse_sse,
    serving,
)


class RateLimited(TestModel):
    """An upstream that answers 429 with a Retry-After."""

    __test__ = False

    def answer(self, window: Window, settings: ModelSettings) -> ModelResponse:
        raise error_for_status("upstream", 429, "slow down", {"retry-after": "7"})


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": []}, "input"),
        ({"input": ""}, "input"),
        ({"input": 42}, "input"),
        ({"input": [{"type": "bogus"}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}, "input[0].content[0].text"),
        ({"input": "x", "temperature": "hot"}, "temperature"),
        ({"input": "x", "temperature": 3}, "temperature"),
        ({"input": "x", "top_p": 0}, "top_p"),
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "x", "truncation": "sometimes"}, "truncation"),
        ({"input": "x", "metadata": {f"k{n}": "v" for n in range(17)}}, "metadata"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "x", "tools": [function_tool("recall")]}, "tools[0].name"),
        ({"input": "x", "tool_choice": "sometimes"}, "tool_choice"),
        ({"input": "x", "background": True, "store": False}, "store"),  # background needs a stored response
        ({"input": "x", "model": ""}, "model"),
        ({"input": "x", "model": "no-such-model"}, "model"),
        ({"input": "x", "context_management": [{"type": "other"}]}, "context_management[0].type"),
        ({"input": [{"type": "function_call_output", "call_id": "call_x", "output": "y"}]}, None),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(served: Served, body: dict[str, Any], param: str | None) -> None:
    reply = await served.http.post("/v1/responses", json={"model": "test", **body})
    check_error(reply, 400, param=param)


async def test_a_refused_input_leaves_the_conversation_as_it_was(served: Served) -> None:
    plain, calling = [(await served.post("/v1/conversations", json={}))["id"] for _ in range(2)]
    await served.respond(input="hello", conversation=plain)
    await served.respond(input='/tool lookup {"q": 1}', conversation=calling, tools=[function_tool()])
    before = {c: await served.store.read(c) for c in (plain, calling)}
    compaction = {"type": "compaction", "encrypted_content": "what happened elsewhere"}
    question = {"role": "user", "content": "and?"}
    refused: list[tuple[str, dict[str, Any], str]] = [
        (plain, {"input": [compaction]}, "input"),  # nothing for the model after the summary
        (plain, {"input": [compaction, {"type": "item_reference", "id": "ev_nope"}, question]}, "input[1].id"),
        (plain, {"input": [compaction, question], "max_output_tokens": 1_000_000}, "max_output_tokens"),
        (calling, {"input": [compaction, question]}, "input"),  # the call of the previous response is unanswered
    ]
    for conversation, body, param in refused:
        reply = await served.http.post("/v1/responses", json={"model": "test", "conversation": conversation, **body})
        check_error(reply, 400, param=param)
    assert {c: await served.store.read(c) for c in (plain, calling)} == before


async def test_malformed_json_unknown_routes_and_missing_objects(served: Served) -> None:
    reply = await served.http.post("/v1/responses", content=b"{not json", headers={"content-type": "application/json"})
    check_error(reply, 400, code="invalid_json")
    check_error(await served.http.get("/v1/nowhere"), 404, code="not_found")
    check_error(await served.http.put("/v1/responses"), 405, code="method_not_allowed")
    check_error(await served.http.get("/v1/responses/resp_missing"), 404, code="not_found")
    check_error(await served.http.get("/v1/conversations/conv_missing"), 404, code="not_found")
    reply = await served.http.post("/v1/responses", json={"model": "test", "input": "x", "conversation": "conv_nope"})
    check_error(reply, 404, code="not_found", param="conversation")
    reply = await served.http.post("/v1/responses", json={"model": "test", "input": "x", "previous_response_id": "r"})
    check_error(reply, 404, code="not_found", param="previous_response_id")
    first = await served.respond(input="hello")
    reply = await served.http.get(f"/v1/responses/{first['id']}/input_items", params={"after": "item_nope"})
    check_error(reply, 400, param="after")
    both = {"model": "test", "conversation": first["conversation"]["id"], "previous_response_id": first["id"]}
    for path in ("/v1/responses", "/v1/responses/compact", "/v1/responses/input_tokens"):
        check_error(await served.http.post(path, json={**both, "input": "x"}), 400, param="previous_response_id")
        reply = await served.http.post(path, json={"model": "test", "input": "x", "previous_response_id": "resp_x"})
        check_error(reply, 404, param="previous_response_id")
    with pytest.raises(openai.NotFoundError) as missing:
        await served.client.conversations.retrieve("conv_missing")
    assert "conv_missing" in str(missing.value)


@pytest.mark.parametrize(
    ("command", "status", "code"),
    [
        ("/fail 500", 502, "upstream_error"),
        ("/fail 504", 504, "upstream_timeout"),
        ("/fail 503", 502, "upstream_error"),
        ("/fail 429", 429, "rate_limit_exceeded"),
        ("/fail 401", 502, "upstream"),
        ("/fail 400 context length exceeded", 400, "context_length_exceeded"),
    ],
)
async def test_upstream_failures_keep_their_meaning(served: Served, command: str, status: int, code: str) -> None:
    reply = await served.http.post("/v1/responses", json={"model": "test", "input": command})
    message = check_error(reply, status, code=code)
    assert command.split()[1] in message  # the upstream's own words
    (conversation,) = (await served.get("/v1/conversations"))["data"]
    (record,) = await served.store.responses.for_conversation(conversation["id"])
    assert record.status == "failed"  # kept, and retrievable, as OpenAI keeps a failed response


async def test_a_rate_limit_passes_on_the_upstreams_retry_after(tmp_path: Path) -> None:
    config = ServerConfig(db=str(tmp_path / "s.db"))
    async with serving(config, registry=ServerFixtureRegistry(config, RateLimited("limited"))) as served:
        reply = await served.http.post("/v1/responses", json={"model": "limited", "input": "hi"})
        check_error(reply, 429, code="rate_limit_exceeded")
        assert reply.headers["retry-after"] == "7"
        with pytest.raises(openai.RateLimitError):
            await served.client.responses.create(model="limited", input="hi")


async def test_a_second_turn_on_a_busy_conversation_is_409(tmp_path: Path) -> None:
    config = ServerConfig(db=str(tmp_path / "s.db"))
    gated = GatedModel()
    async with serving(config, registry=ServerFixtureRegistry(config, gated)) as served:
        conversation = (await served.post("/v1/conversations", json={}))["id"]
        body = {"model": "gated", "conversation": conversation}
        first = asyncio.create_task(served.http.post("/v1/responses", json={**body, "input": "first"}))
        await gated.entered.wait()
        for stream in (False, True):
            reply = await served.http.post("/v1/responses", json={**body, "input": "second", "stream": stream})
            check_error(reply, 409, code="conversation_busy")
        reply = await served.http.post(
            f"/v1/conversations/{conversation}/items", json={"items": [{"role": "user", "content": "x"}]}
        )
        check_error(reply, 409, code="conversation_busy")
        gated.gate.set()
        assert (await first).status_code == 200
        assert gated.order == ["first"]
        await served.respond(model="gated", input="third", conversation=conversation)  # free again


async def test_with_queue_turns_the_second_turn_waits_and_both_succeed_in_order(tmp_path: Path) -> None:
    config = ServerConfig(db=str(tmp_path / "s.db"), queue_turns=True)
    gated = GatedModel()
    async with serving(config, registry=ServerFixtureRegistry(config, gated)) as served:
        conversation = (await served.post("/v1/conversations", json={}))["id"]
        body = {"model": "gated", "conversation": conversation}
        first = asyncio.create_task(served.http.post("/v1/responses", json={**body, "input": "first"}))
        await gated.entered.wait()
        second = asyncio.create_task(served.http.post("/v1/responses", json={**body, "input": "second"}))
        locks = served.state.locks
        for _ in range(10_000):  # until the second request waits on the conversation
            await asyncio.sleep(0)
            if locks._local[conversation].users == 2:
                break
        assert locks._local[conversation].users == 2
        gated.gate.set()
        replies = [await first, await second]
        assert [r.status_code for r in replies] == [200, 200]
        assert gated.order == ["first", "second"]
        assert "I saw 3 items" in replies[1].json()["output"][0]["content"][0]["text"]


@pytest.mark.parametrize("queue_turns", [False, True])
async def test_two_continuations_of_one_response_at_once_are_two_branches(tmp_path: Path, queue_turns: bool) -> None:
    config = ServerConfig(db=str(tmp_path / "s.db"), queue_turns=queue_turns)
    gated = GatedModel()
    async with serving(config, registry=ServerFixtureRegistry(config, gated)) as served:
        root = await served.respond(input="root")
        sent = [
            served.http.post(
                "/v1/responses", json={"model": "gated", "input": text, "previous_response_id": root["id"]}
            )
            for text in ("branch A", "branch B")
        ]
        both = [asyncio.create_task(request) for request in sent]  # neither has appended when the other looks
        await gated.entered.wait()
        gated.gate.set()
        replies = [await reply for reply in both]
        assert [r.status_code for r in replies] == [200, 200], [r.text for r in replies]
        for reply in replies:
            assert "I saw 3 items" in reply.json()["output"][0]["content"][0]["text"]  # root's exchange, then its own
        assert len({r.json()["conversation"]["id"] for r in replies}) == 2


async def test_limits_are_413_naming_the_limit(tmp_path: Path) -> None:
    limits = Limits(max_body_bytes=4_000, max_items_per_request=3, max_tool_output_bytes=100, max_instructions_bytes=50)
    async with serving(ServerConfig(db=str(tmp_path / "s.db"), limits=limits)) as served:
        reply = await served.http.post("/v1/responses", json={"model": "test", "input": "x" * 5_000})
        assert "max_body_bytes" in check_error(reply, 413, code="payload_too_large")

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"model": "test", "input": "'
            for _ in range(10):
                yield b"x" * 1_000
            yield b'"}'

        reply = await served.http.post("/v1/responses", content=chunked(), headers={"content-type": "application/json"})
        check_error(reply, 413, code="payload_too_large")
        items = [{"role": "user", "content": f"m{n}"} for n in range(4)]
        check_error(await served.http.post("/v1/responses", json={"model": "test", "input": items}), 413, param="input")
        reply = await served.http.post("/v1/conversations", json={"items": items})
        check_error(reply, 413, param="items")
        reply = await served.http.post("/v1/responses", json={"model": "test", "input": "x", "instructions": "y" * 60})
        check_error(reply, 413, param="instructions")

        called = await served.respond(input="/tool lookup {}", tools=[function_tool()])
        output = {"type": "function_call_output", "call_id": called["output"][0]["call_id"], "output": "z" * 200}
        body = {"model": "test", "input": [output], "previous_response_id": called["id"], "tools": [function_tool()]}
        check_error(await served.http.post("/v1/responses", json=body), 413, param="input[0].output")


async def test_a_client_that_goes_away_mid_stream_cancels_its_turn(tmp_path: Path) -> None:
    config = ServerConfig(db=str(tmp_path / "s.db"))
    gated = GatedModel()
    async with serving(config, registry=ServerFixtureRegistry(config, gated)) as served:
        conversation = (await served.post("/v1/conversations", json={}))["id"]
        body = json.dumps({"model": "gated", "input": "then I leave", "conversation": conversation, "stream": True})
        messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        messages.put_nowait({"type": "http.request", "body": body.encode(), "more_body": False})
        sent: list[MutableMapping[str, Any]] = []

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/responses",
            "raw_path": b"/v1/responses",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 5000),
            "server": ("test", 80),
        }
        request = asyncio.create_task(served.app(scope, messages.get, send))
        await gated.entered.wait()
        messages.put_nowait({"type": "http.disconnect"})  # the client hangs up while the model thinks
        await request
        assert sent[0]["status"] == 200
        assert gated.order == []  # the model's answer never came

        (record,) = await served.store.responses.for_conversation(conversation)
        # resuming the stream (what a client that lost its connection does) gets its end, not an endless wait
        resumed = await served.http.get(f"/v1/responses/{record.id}", params={"stream": "true", "starting_after": 1})
        (last,) = check_stream(parse_sse(resumed.text), first=2)
        assert last["type"] == "response.failed"
        assert last["response"]["status"] == "cancelled"
        assert (await served.get(f"/v1/responses/{record.id}"))["status"] == "cancelled"
        markers = [e for e in await served.store.read(conversation) if isinstance(e, TurnMarker)]
        assert [m.status for m in markers] == ["started", "interrupted"]
        gated.gate.set()  # the conversation is free again, and the interrupted turn is not in its view
        answer = await served.respond(model="gated", input="I am back", conversation=conversation)
        assert "I saw 1 item," in answer["output"][0]["content"][0]["text"]


# --- never a 500 for anything a client can send --------------------------------------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_keys = st.sampled_from(
    [
        "type",
        "role",
        "content",
        "text",
        "call_id",
        "output",
        "id",
        "name",
        "arguments",
        "server_label",
        "encrypted_content",
        "summary",
        "image_url",
        "file_id",
        "file_data",
    ]
)
_values = (
    st.sampled_from(
        [
            "message",
            "user",
            "assistant",
            "function_call",
            "function_call_output",
            "compaction",
            "item_reference",
            "mcp_call",
            "reasoning",
            "input_text",
            "input_image",
            "input_file",
            "contextfold",
            "summary_text",
        ]
    )
    | _json
)
_item = st.dictionaries(_keys, _values | st.lists(st.dictionaries(_keys, _values, max_size=3), max_size=2), max_size=5)
_bodies = st.fixed_dictionaries(
    {"model": st.just("test")},
    optional={
        "input": st.text(max_size=5) | st.lists(_item, max_size=4) | _json,
        "instructions": _json,
        "tools": st.lists(st.dictionaries(_keys | st.just("parameters"), _values, max_size=4), max_size=2) | _json,
        "tool_choice": _json,
        "metadata": _json,
        "conversation": _json,
        "previous_response_id": _json,
        "store": _json,
        "context_management": _json,
        "max_output_tokens": _json,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies, items=st.lists(_item, max_size=4))
@example(body={"model": "test", "input": "hi", "tools": [{"type": {}}]}, items=[])  # a tool type that is no string
async def test_nothing_a_client_sends_is_a_500(served: Served, body: dict[str, Any], items: list[Any]) -> None:
    for path, sent in (
        ("/v1/responses", body),
        ("/v1/conversations", {"items": items}),
        ("/v1/responses/input_tokens", body),
        ("/v1/responses/compact", body),
    ):
        reply = await served.http.post(path, json=sent)
        assert reply.status_code < 500, (path, sent, reply.text)
        if reply.status_code >= 400:
            check_error(reply, reply.status_code)


@pytest.mark.parametrize("model", [None, ""])
async def test_moderating_without_guardrails_is_a_400_naming_model(served: Served, model: str | None) -> None:
    body = {"input": "hi"} | ({} if model is None else {"model": model})
    reply = await served.http.post("/v1/moderations", json=body)
    message = check_error(reply, 400, param="model")
    assert "guardrail" in message
