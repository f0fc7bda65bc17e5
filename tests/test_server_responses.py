"""`/v1/responses` end to end through the official `openai` SDK and raw HTTP: create (every parameter), retrieve,
delete, input items, function tools, built-in tools as mcp_call items, compaction (automatic, by threshold,
disabled, manual through `/responses/compact`), input token counts. Every body is checked with the SDK's models."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import openai
import pytest

from contextfold.models import ModelSettings
from contextfold.server import ServerConfig

from .server_fixtures import (
    SDK_LOOKUP,
    GatedModel,
    RecordingModel,
    Served,
    ServerFixtureRegistry,
    check_compacted,
    check_error,
    check_items_page,
    check_response,
    check_stream,
    function_tool,
    items_of,
    parse_sse,
    said,
    serving,
    text_of_stream,
)

LOOKUP = function_tool("lookup")


async def test_the_sdk_creates_retrieves_lists_input_and_deletes(served: Served) -> None:
    client = served.client
    created = await client.responses.create(
        model="test",
        input="hello there",
        instructions="Be brief.",
        metadata={"ticket": "T-1"},
        temperature=0.5,
        top_p=0.9,
        max_output_tokens=500,
    )
    assert created.status == "completed"
    assert created.object == "response"
    assert 'You said: "hello there"' in created.output_text
    assert created.instructions == "Be brief."
    assert created.metadata == {"ticket": "T-1"}
    assert (created.temperature, created.top_p, created.max_output_tokens) == (0.5, 0.9, 500)
    assert created.usage is not None
    assert created.usage.input_tokens > 0
    assert created.usage.output_tokens > 0
    assert created.usage.total_tokens == created.usage.input_tokens + created.usage.output_tokens

    fetched = await client.responses.retrieve(created.id)
    assert fetched.model_dump() == created.model_dump()
    inputs = await client.responses.input_items.list(created.id)
    assert [(i.type, getattr(i, "role", None)) for i in inputs.data] == [("message", "user")]
    check_items_page(await served.get(f"/v1/responses/{created.id}/input_items"), of="response")
    many = await served.respond(input=[{"role": "user", "content": f"part {n}"} for n in range(5)])
    page = await served.get(f"/v1/responses/{many['id']}/input_items", limit=2, order="asc")
    check_items_page(page, of="response")
    assert [i["content"][0]["text"] for i in page["data"]] == ["part 0", "part 1"]
    assert page["has_more"] is True
    walked = [i.id async for i in client.responses.input_items.list(many["id"], limit=2)]
    assert len(walked) == 5  # the SDK pages through them all, newest first

    await client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(created.id)
    check_error(await served.http.get(f"/v1/responses/{created.id}/input_items"), 404, code="not_found")


async def test_sampling_and_tool_settings_reach_the_model(tmp_path: Path) -> None:
    config = ServerConfig(db=str(tmp_path / "s.db"))
    model = RecordingModel()
    async with serving(config, registry=ServerFixtureRegistry(config, model)) as served:
        chosen = ModelSettings(
            max_output_tokens=123, temperature=0.3, top_p=0.7, tool_choice="required", parallel_tool_calls=False
        )
        await served.respond(
            model="recording",
            input="hi",
            tools=[LOOKUP],
            **{k: v for k, v in dataclasses.asdict(chosen).items() if v is not None},
        )
    assert model.settings == [chosen]


async def test_previous_response_id_continues_and_an_older_one_branches(served: Served) -> None:
    first = await served.respond(input="my name is Ada")
    second = await served.respond(input="what is my name?", previous_response_id=first["id"])
    assert "I saw 3 items" in said(second)  # the first exchange, then this question
    assert second["previous_response_id"] == first["id"]
    assert second["conversation"] == first["conversation"]
    third = await served.respond(input="and again?", previous_response_id=second["id"])
    assert "I saw 5 items" in said(third)
    # continuing from `first` again branches: the branch sees first's exchange only, and the original is untouched
    branch = await served.respond(input="a different path", previous_response_id=first["id"])
    assert "I saw 3 items" in said(branch)
    assert branch["conversation"]["id"] != first["conversation"]["id"]
    after = await served.respond(input="back on the main line", previous_response_id=third["id"])
    assert "I saw 7 items" in said(after)


async def test_conversation_and_previous_response_id_together_are_refused(served: Served) -> None:
    first = await served.respond(input="hi")
    reply = await served.http.post(
        "/v1/responses",
        json={
            "model": "test",
            "input": "x",
            "conversation": first["conversation"]["id"],
            "previous_response_id": first["id"],
        },
    )
    check_error(reply, 400, param="previous_response_id")


async def test_a_function_call_ends_the_response_and_its_output_continues_it(served: Served) -> None:
    client = served.client
    conversation = await client.conversations.create()
    called = await client.responses.create(
        model="test",
        input='/tool lookup {"q": "paris"}',
        conversation=conversation.id,
        tools=[SDK_LOOKUP],
        tool_choice="auto",
        parallel_tool_calls=False,
    )
    assert [item.type for item in called.output] == ["function_call"]
    call = called.output[0]
    assert call.type == "function_call"
    assert call.name == "lookup"
    assert json.loads(call.arguments) == {"q": "paris"}
    assert called.parallel_tool_calls is False
    assert called.tool_choice == "auto"
    assert [t.name for t in called.tools if t.type == "function"] == ["lookup"]

    # anything but the call's output is refused while the call is unanswered
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.create(model="test", input="never mind", conversation=conversation.id)
    assert call.call_id in str(refused.value)

    answered = await client.responses.create(
        model="test",
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Paris is in France"}],
        conversation=conversation.id,
        tools=[SDK_LOOKUP],
    )
    assert answered.output_text == "lookup returned: Paris is in France."
    items = await client.conversations.items.list(conversation.id, order="asc")
    assert [i.type for i in items.data] == ["message", "function_call", "function_call_output", "message"]


async def test_parallel_calls_and_a_named_tool_choice(served: Served) -> None:
    both = await served.respond(
        input='/tool lookup {"q": "a"}\n/tool lookup {"q": "b"}', tools=[LOOKUP], tool_choice="required"
    )
    calls = [i for i in both["output"] if i["type"] == "function_call"]
    assert [json.loads(c["arguments"])["q"] for c in calls] == ["a", "b"]
    assert len({c["call_id"] for c in calls}) == 2
    outputs = [
        {"type": "function_call_output", "call_id": c["call_id"], "output": f"got {n}"} for n, c in enumerate(calls)
    ]
    done = await served.respond(input=outputs, previous_response_id=both["id"], tools=[LOOKUP])
    assert said(done) == "lookup returned: got 0; lookup returned: got 1."

    named = {"type": "function", "name": "lookup"}
    chosen = await served.respond(input='/tool lookup {"q": "x"}', tools=[LOOKUP], tool_choice=named)
    assert chosen["tool_choice"] == named
    other = function_tool("other")
    reply = await served.http.post(
        "/v1/responses", json={"model": "test", "input": "x", "tools": [LOOKUP, other], "tool_choice": named}
    )
    check_error(reply, 400, param="tool_choice")


async def test_store_false_keeps_nothing(served: Served) -> None:
    response = await served.respond(input="forget me", store=False)
    assert response["store"] is False
    assert response["status"] == "completed"
    check_error(await served.http.get(f"/v1/responses/{response['id']}"), 404, code="not_found")
    listed = await served.get("/v1/conversations")
    assert listed["data"] == []


async def test_max_output_tokens_cuts_the_answer_as_incomplete(served: Served) -> None:
    response = await served.respond(input="/long 2000", max_output_tokens=50)
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert 0 < len(said(response)) <= 50 * 5  # ~4 characters a token


async def test_compact_endpoint_answers_the_view_and_its_output_loses_nothing(served: Served) -> None:
    conversation = (await served.post("/v1/conversations", json={}))["id"]
    await served.respond(input="hello", conversation=conversation)
    await served.respond(input="remember ticket ABC-123", conversation=conversation)
    await served.turns(conversation, 6, words=60)
    body = await served.post("/v1/responses/compact", json={"model": "test", "conversation": conversation})
    assert check_compacted(body).object == "response.compaction"
    (compaction,) = [item for item in body["output"] if item["type"] == "compaction"]
    assert "ABC-123" in compaction["encrypted_content"]
    kinds = [item["type"] for item in body["output"]]
    assert kinds[2] == "compaction"  # after the head (the first exchange), before the verbatim tail
    assert "message" in kinds[3:]
    context = await served.get(f"/v1/conversations/{conversation}/context")
    assert context["totals"]["compactions"] == 1

    # the output given back as the input of a new, stateless response is the whole view: nothing is lost
    follow = await served.respond(input=[*body["output"], {"role": "user", "content": "the ticket?"}], store=False)
    assert f"I saw {context['items_in_view'] + 2} items" in said(follow)  # the view, its summary, the question

    # the SDK's own call, on a stateless input; one too small to fold comes back whole, assistant turns too
    sdk = await served.client.responses.compact(
        model="test", input=[{"role": "user", "content": f"note {n}: " + "word " * 80} for n in range(30)]
    )
    assert [item.type for item in sdk.output].count("compaction") == 1
    small = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    body = await served.post("/v1/responses/compact", json={"model": "test", "input": small})
    check_compacted(body)
    assert [(i["role"], i["content"][0]["text"]) for i in body["output"]] == [("user", "hi"), ("assistant", "hello")]
    listed = await served.get("/v1/conversations")
    assert [c["id"] for c in listed["data"]] == [conversation]  # a stateless compaction leaves nothing behind


async def test_input_tokens_counts_what_the_request_would_add(served: Served) -> None:
    counted = await served.client.responses.input_tokens.count(model="test", input="how many tokens is this?")
    assert counted.object == "response.input_tokens"
    assert counted.input_tokens > 0
    more = await served.client.responses.input_tokens.count(
        model="test",
        input="how many tokens is this?",
        instructions="Be brief. " * 50,
        tools=[SDK_LOOKUP],
    )
    assert more.input_tokens > counted.input_tokens + 50
    first = await served.respond(input="hello " * 100)
    continued = await served.client.responses.input_tokens.count(
        model="test", input="next", previous_response_id=first["id"]
    )
    assert continued.input_tokens > 100


# --- streaming ----------------------------------------------------------------------------------------------------


async def test_a_streamed_answer_is_openai_events_in_order(served: Served) -> None:
    events = await served.stream(input="stream me", instructions="Be brief.")
    kinds = [e["type"] for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert kinds.count("response.output_text.delta") > 1
    final = events[-1]["response"]
    assert text_of_stream(events) == said(final)
    assert 'You said: "stream me"' in said(final)
    assert events[0]["response"]["status"] == "in_progress"
    assert final["status"] == "completed"
    assert await served.get(f"/v1/responses/{final['id']}") == final

    # the SDK reads the same stream, and its accumulating helper agrees with the final response
    seen = [event.type async for event in await served.client.responses.create(model="test", input="hi", stream=True)]
    assert seen[0] == "response.created"
    assert seen[-1] == "response.completed"
    async with served.client.responses.stream(model="test", input="hello again") as stream:
        async for _ in stream:
            pass
        helper = await stream.get_final_response()
    assert 'You said: "hello again"' in helper.output_text


async def test_a_streamed_function_call(served: Served) -> None:
    events = await served.stream(input='/tool lookup {"q": "paris"}', tools=[LOOKUP])
    kinds = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" in kinds
    (call,) = items_of(events, "function_call")
    streamed = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    assert json.loads(streamed) == json.loads(call["arguments"]) == {"q": "paris"}
    assert events[-1]["response"]["output"] == [call]


async def test_builtin_tools_run_on_the_server_as_mcp_calls(served: Served) -> None:
    conversation = (await served.post("/v1/conversations", json={}))["id"]
    await served.respond(input="hello", conversation=conversation)  # the head: never folded
    await served.respond(input="the vault code is otter-77", conversation=conversation)
    await served.turns(conversation, 6, words=40)  # past the verbatim tail of 4 turns
    await served.post(f"/v1/conversations/{conversation}/compact", json={})
    recalled = await served.respond(input="/recall otter", conversation=conversation)
    assert [item["type"] for item in recalled["output"]] == ["mcp_call", "message"]
    call = recalled["output"][0]
    assert (call["server_label"], call["name"], call["status"]) == ("contextfold", "recall", "completed")
    assert "otter-77" in call["output"]
    assert said(recalled).startswith("recall returned:")

    events = await served.stream(input="/recall vault", conversation=conversation)
    order = [
        "response.output_item.added",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.output_item.done",
    ]
    assert list(dict.fromkeys(e["type"] for e in events if e["type"] in order)) == order
    (mcp,) = items_of(events, "mcp_call")
    assert "otter-77" in mcp["output"]
    assert events[-1]["response"]["output"][0] == mcp
    # a built-in call that fails: mcp_call.failed, and the item streamed is the item stored
    events = await served.stream(input='/tool expand {"id": "ev_nope"}', conversation=conversation)
    assert "response.mcp_call.failed" in [e["type"] for e in events]
    (failed,) = items_of(events, "mcp_call")
    assert failed["error"]["type"] == "mcp_tool_execution_error"
    stored = await served.get(f"/v1/conversations/{conversation}/items/{failed['id']}")
    assert events[-1]["response"]["output"][0] == failed == stored
    # the client never answers them: the next response goes on without a function_call_output
    await served.respond(input="thanks", conversation=conversation)


async def test_a_turn_that_compacts_streams_the_compaction_item(served: Served) -> None:
    conversation = (await served.post("/v1/conversations", json={}))["id"]
    setting = [{"type": "compaction", "compact_threshold": 800}]
    compacting: list[dict[str, Any]] = []
    for _ in range(12):
        events = await served.stream(input="/long 100", conversation=conversation, context_management=setting)
        if any(e["type"] == "response.compaction.compacting" for e in events):
            compacting = events
            break
    assert compacting, "no turn compacted"
    kinds = [e["type"] for e in compacting]
    at = kinds.index("response.compaction.compacting")
    assert kinds[at + 1 : at + 3] == ["response.output_item.added", "response.output_item.done"]
    item = compacting[at + 1]["item"]
    assert item["type"] == "compaction"
    assert item["id"] == compacting[at]["item_id"]
    assert compacting[-1]["response"]["output"][0]["type"] == "compaction"


async def test_an_upstream_failure_mid_stream_is_response_failed(served: Served) -> None:
    events = await served.stream(input="/fail 500 upstream fell over")
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "server_error"
    assert "upstream fell over" in failed["error"]["message"]
    assert (await served.get(f"/v1/responses/{failed['id']}"))["status"] == "failed"


async def test_a_finished_stream_resumes_after_any_sequence_number(tmp_path: Path) -> None:
    config = ServerConfig(db=str(tmp_path / "s.db"))
    async with serving(config) as served:
        events = await served.stream(input='/tool lookup {"q": 1}', tools=[LOOKUP])
        response_id = events[-1]["response"]["id"]
        for after in (-1, 0, 3, len(events) - 2):
            reply = await served.http.get(
                f"/v1/responses/{response_id}", params={"stream": "true", "starting_after": after}
            )
            assert parse_sse(reply.text) == events[after + 1 :]
    async with serving(config) as restarted:  # not buffered here: rebuilt from the stored response
        reply = await restarted.http.get(f"/v1/responses/{response_id}", params={"stream": "true"})
        rebuilt = check_stream(parse_sse(reply.text))
        assert rebuilt[-1]["response"] == events[-1]["response"]
        assert items_of(rebuilt, "function_call") == items_of(events, "function_call")
        reply = await restarted.http.get(f"/v1/responses/{response_id}", params={"stream": "true", "starting_after": 4})
        assert check_stream(parse_sse(reply.text), first=5) == rebuilt[5:]


async def test_a_live_stream_resumes_where_the_client_left_it(tmp_path: Path) -> None:
    config = ServerConfig(db=str(tmp_path / "s.db"))
    gated = GatedModel()
    async with serving(config, registry=ServerFixtureRegistry(config, gated)) as served:
        conversation = (await served.post("/v1/conversations", json={}))["id"]
        body = {"model": "gated", "input": "slowly", "conversation": conversation, "stream": True}
        original = asyncio.create_task(served.http.post("/v1/responses", json=body))
        await gated.entered.wait()
        (record,) = await served.store.responses.for_conversation(conversation)
        running = check_response(await served.get(f"/v1/responses/{record.id}"))
        assert running.status == "in_progress"
        assert running.output == []  # its input is not its output
        inputs = await served.get(f"/v1/responses/{record.id}/input_items")
        assert [item["content"][0]["text"] for item in inputs["data"]] == ["slowly"]
        resumed = asyncio.create_task(
            served.http.get(f"/v1/responses/{record.id}", params={"stream": "true", "starting_after": 0})
        )
        await asyncio.sleep(0)  # let the resumed request reach the live buffer before the answer
        gated.gate.set()
        events = check_stream(parse_sse((await original).text))
        assert parse_sse((await resumed).text) == events[1:]
        assert events[-1]["response"]["id"] == record.id
