"""Remote MCP tools in Responses, against real MCP servers (the `mcp` package's own server classes) on loopback,
over streamable HTTP and SSE: the listing (once per conversation), calls with output or error, timeouts and
refused connections as call errors, approvals, headers never stored; and the same tools for a library agent."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contextfold import Agent
from contextfold.events import ToolResult
from contextfold.models import ModelProfile, ModelResponse, ScriptedModel, ToolCallRequest
from contextfold.runtime import StepStarted
from contextfold.runtime._mcp import McpServer, list_tools, mcp_tools
from contextfold.server import ServerConfig
from contextfold.store import Store

from .fakes.mcp_server import mcp_server
from .server_fixtures import Served, check_error, serving

SECRET = "Bearer sk-mcp-very-secret"


@pytest.fixture(params=["streamable", "sse"])
def mcp_url(request: pytest.FixtureRequest) -> Iterator[str]:
    with mcp_server(request.param) as url:
        yield url


def mcp(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "kb", "server_url": url, "require_approval": "never", **extra}


async def test_tools_are_listed_once_called_and_their_results_reach_the_model(served: Served, mcp_url: str) -> None:
    tool = mcp(mcp_url, headers={"authorization": SECRET})
    first = await served.respond(input='/tool mcp__kb__lookup {"key": "heron"}', tools=[tool])
    kinds = [item["type"] for item in first["output"]]
    assert kinds == ["mcp_list_tools", "mcp_call", "message"]
    listing, call = first["output"][0], first["output"][1]
    assert {"add", "lookup", "fail", "slow", "whoami"} <= {t["name"] for t in listing["tools"]}
    assert (call["server_label"], call["name"], call["status"]) == ("kb", "lookup", "completed")
    assert call["output"] == "The launch code for project heron is 7741."
    assert "7741" in first["output"][2]["content"][0]["text"]
    assert first["tools"][0]["headers"] is None

    conversation = first["conversation"]["id"]
    second = await served.respond(input="/tool mcp__kb__whoami {}", tools=[tool], conversation=conversation)
    assert [i["type"] for i in second["output"]] == ["mcp_call", "message"]  # the listing is not repeated
    assert second["output"][0]["output"] == f"an authorization header of {len(SECRET)} characters"  # it got them
    changed = mcp(mcp_url, headers={"authorization": SECRET}, allowed_tools=["add"])
    third = await served.respond(
        input='/tool mcp__kb__add {"a": 2, "b": 3}', tools=[changed], conversation=conversation
    )
    assert [i["type"] for i in third["output"]] == ["mcp_list_tools", "mcp_call", "message"]
    assert [t["name"] for t in third["output"][0]["tools"]] == ["add"]
    assert third["output"][1]["output"] == "5"

    # ...and nothing else has them: not the log, the response records, the items or the inspector
    log = json.dumps([str(e) for e in await served.store.read(conversation)])
    records = json.dumps([r.data for r in await served.store.responses.for_conversation(conversation)])
    items = json.dumps(await served.get(f"/v1/conversations/{conversation}/items", order="asc"))
    inspected = json.dumps(await served.get(f"/v1/conversations/{conversation}/events"))
    for shown in (log, records, items, inspected, json.dumps(third)):
        assert "sk-mcp-very-secret" not in shown


async def test_tool_errors_and_refused_connections_are_errors_the_model_reads(served: Served, mcp_url: str) -> None:
    failed = await served.respond(input='/tool mcp__kb__fail {"message": "no such project"}', tools=[mcp(mcp_url)])
    call = failed["output"][1]
    assert call["type"] == "mcp_call"
    assert call["error"]["type"] == "mcp_tool_execution_error"
    assert failed["status"] == "completed"  # the model read the error and answered

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    refused = await served.respond(
        input="/tool mcp__gone__add {}", tools=[{**mcp(f"http://127.0.0.1:{closed}/mcp"), "server_label": "gone"}]
    )
    listing = refused["output"][0]
    assert listing["type"] == "mcp_list_tools"
    assert "cannot list the tools of MCP server 'gone'" in listing["error"]
    assert refused["status"] == "completed"


async def test_a_call_over_the_timeout_is_an_error_the_model_reads(tmp_path: Path, mcp_url: str) -> None:
    async with serving(ServerConfig(db=str(tmp_path / "s.db"), mcp_timeout=0.5)) as served:
        timed = await served.respond(input='/tool mcp__kb__slow {"seconds": 5}', tools=[mcp(mcp_url)])
        call = timed["output"][1]
        assert call["type"] == "mcp_call"
        assert "timed out after 0.5s" in call["output"]
        assert call["error"]["type"] == "mcp_tool_execution_error"
        assert timed["status"] == "completed"


async def test_a_call_that_needs_approval_ends_the_response_until_approved(served: Served, mcp_url: str) -> None:
    tool = {"type": "mcp", "server_label": "kb", "server_url": mcp_url}  # OpenAI's default: approve every call
    asked = await served.respond(input='/tool mcp__kb__add {"a": 20, "b": 22}', tools=[tool])
    request = asked["output"][-1]
    assert request["type"] == "mcp_approval_request"
    assert (request["name"], json.loads(request["arguments"])) == ("add", {"a": 20, "b": 22})
    approved = await served.respond(
        input=[{"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}],
        tools=[tool],
        previous_response_id=asked["id"],
    )
    assert "42" in approved["output"][-1]["content"][0]["text"]
    items = await served.get(f"/v1/conversations/{asked['conversation']['id']}/items", order="asc")
    calls = [i for i in items["data"] if i["type"] == "mcp_call"]
    assert [(c["name"], c["output"]) for c in calls] == [("add", "42")]

    again = await served.respond(
        input='/tool mcp__kb__add {"a": 1, "b": 1}', tools=[tool], previous_response_id=approved["id"]
    )
    declined = await served.respond(
        input=[{"type": "mcp_approval_response", "approval_request_id": again["output"][-1]["id"], "approve": False}],
        tools=[tool],
        previous_response_id=again["id"],
    )
    assert "declined" in declined["output"][-1]["content"][0]["text"]
    reply = await served.http.post(
        "/v1/responses",
        json={
            "model": "test",
            "input": [{"type": "mcp_approval_response", "approval_request_id": "ev_nope", "approve": True}],
            "tools": [tool],
            "previous_response_id": declined["id"],
        },
    )
    check_error(reply, 400, param="input[0].approval_request_id")
    waiting = await served.respond(input='/tool mcp__kb__add {"a": 1, "b": 1}', tools=[tool])
    moved_on = await served.http.post(
        "/v1/responses",
        json={"model": "test", "input": "never mind", "tools": [tool], "previous_response_id": waiting["id"]},
    )
    assert "mcp_approval_response" in check_error(moved_on, 400, param="input")


async def test_streamed_mcp_events(served: Served, mcp_url: str) -> None:
    events = await served.stream(input='/tool mcp__kb__add {"a": 1, "b": 2}', tools=[mcp(mcp_url)])
    kinds = [e["type"] for e in events]
    for expected in (
        "response.mcp_list_tools.in_progress",
        "response.mcp_list_tools.completed",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
    ):
        assert expected in kinds, kinds
    assert kinds.index("response.mcp_list_tools.completed") < kinds.index("response.mcp_call.in_progress")


async def test_bad_mcp_tools_are_400s_naming_the_field(served: Served) -> None:
    for tool, param in (
        ({"type": "mcp", "server_label": "kb"}, "tools[0].server_url"),
        ({"type": "mcp", "server_label": "k b", "server_url": "http://127.0.0.1:1/mcp"}, "tools[0].server_label"),
        ({"type": "mcp", "server_label": "kb", "server_url": "ftp://x"}, "tools[0].server_url"),
        ({"type": "mcp", "server_label": "kb", "server_url": "http://x", "require_approval": "maybe"}, None),
    ):
        reply = await served.http.post("/v1/responses", json={"model": "test", "input": "hi", "tools": [tool]})
        check_error(reply, 400, param=param)


async def test_a_library_agent_uses_an_mcp_servers_tools(sqlite_store: Store, mcp_url: str) -> None:
    server = McpServer("kb", mcp_url, timeout=0.5)
    tools = mcp_tools(server, await list_tools(server))
    lookup = ToolCallRequest(call_id="c1", name="mcp__kb__lookup", arguments='{"key": "heron"}')
    slow = ToolCallRequest(call_id="c2", name="mcp__kb__slow", arguments='{"seconds": 5}')
    profile = ModelProfile(context_window=16_000, max_output_tokens=1_000)
    model = ScriptedModel([ModelResponse(tool_calls=[lookup, slow]), "The code is 7741."], profile=profile)
    session = await Agent(model, store=sqlite_store, tools=tools).create_session()
    events = [e async for e in session.stream("what is the launch code?")]
    (step,) = [e for e in events if isinstance(e, StepStarted) and e.step_type == "tool_execution"]
    assert (step.metadata["server_side"], step.metadata["tool_type"]) == (True, "mcp")
    window, _ = model.calls[-1]
    outputs = {i.call_id: i for i in window.items if isinstance(i, ToolResult)}
    assert "7741" in outputs["c1"].output
    assert outputs["c2"].is_error
    assert "timed out after 0.5s" in outputs["c2"].output
