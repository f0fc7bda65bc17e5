"""llama-stack-client's `Agent` / `AsyncAgent` on its own `LlamaStackClient` against a contextfold server, run in the
SDK venv (Python >= 3.12; `tests/sdk_harness.py`).

    python llama_client.py '{"root": "http://127.0.0.1:PORT", "mode": "sync", "turns": 40, "stream": true,
                             "model": "gpt-4.1"}'

Modes: `sync` (Agent) and `async` (AsyncAgent), each with a second session interleaved with the first (they must
not see each other's history), streamed or not; `contract`: the raw events of a streamed response and the objects
the agent reads, validated with llama-stack-client's own models, each event by the model its `type` names. Prints
one JSON report on stdout.
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
import typing
from typing import Any

import httpx
from llama_stack_client import AsyncLlamaStackClient, LlamaStackClient
from llama_stack_client.lib.agents.agent import Agent, AsyncAgent
from llama_stack_client.lib.agents.client_tool import client_tool
from llama_stack_client.types import ResponseObject, response_object_stream

from scenario import FACT_PROMPT, QUESTION, task_prompt, tool_output

INSTRUCTIONS = "You are a careful coding agent."
ran: list[str] = []


def read_file(path: str, task: int, step: int, steps: int) -> str:
    """Read a file of the project.

    :param path: the file to read
    :param task: the task this is for
    :param step: the step of the task
    :param steps: how many steps the task has
    """
    ran.append(f"read_file:{task}:{step}")
    return tool_output("read_file", path, task, step)


def run_tests(path: str, task: int, step: int, steps: int) -> str:
    """Run a test file.

    :param path: the test file
    :param task: the task this is for
    :param step: the step of the task
    :param steps: how many steps the task has
    """
    ran.append(f"run_tests:{task}:{step}")
    return tool_output("run_tests", path, task, step)


TOOLS = [client_tool(read_file), client_tool(run_tests)]


class PatchedAsyncAgent(AsyncAgent):  # type: ignore[misc]
    """llama-stack-client 0.7.5's AsyncAgent awaits `self.initialize()`, which it never defines (AttributeError on
    the first turn, against any server). A user's subclass supplies it; the package itself is unmodified."""

    async def initialize(self) -> None:
        return None


def prompt_of(turn: int, turns: int) -> str:
    return FACT_PROMPT if turn == 0 else QUESTION if turn == turns - 1 else task_prompt(turn)


def answer_of(result: Any, stream: bool) -> tuple[str, list[str]]:
    """The turn's final text and the kinds of the agent's events (a stream), from what create_turn returned."""
    if not stream:
        return result.output_text, []
    kinds: list[str] = []
    final = ""
    for chunk in result:
        kinds.append(chunk.event.event_type)
        if chunk.event.event_type == "turn_failed":
            raise RuntimeError(f"turn failed: {chunk.event}")
        if chunk.event.event_type == "turn_completed":
            final = chunk.event.final_text
    return final, kinds


def run_sync(options: dict[str, Any]) -> dict[str, Any]:
    client = LlamaStackClient(base_url=options["root"], max_retries=0)
    agent = Agent(client, model=options["model"], instructions=INSTRUCTIONS, tools=TOOLS)
    main, other = agent.create_session("main"), agent.create_session("other")
    stream, turns = bool(options["stream"]), int(options["turns"])
    answers, others, kinds = [], [], []
    for turn in range(turns):
        prompt = [{"role": "user", "content": prompt_of(turn, turns)}]
        text, seen = answer_of(agent.create_turn(prompt, session_id=main, stream=stream), stream)
        answers.append(text)
        kinds.append(seen)
        if turn in (1, turns - 1):  # the other session, between the first one's turns
            asked = [{"role": "user", "content": QUESTION if turn > 1 else "Hello from the other session."}]
            others.append(answer_of(agent.create_turn(asked, session_id=other, stream=stream), stream)[0])
    return {"answers": answers, "others": others, "ran": ran, "kinds": kinds, "sessions": [main, other]}


async def run_async(options: dict[str, Any]) -> dict[str, Any]:
    client = AsyncLlamaStackClient(base_url=options["root"], max_retries=0)
    agent = AsyncAgent(client, model=options["model"], instructions=INSTRUCTIONS, tools=TOOLS)
    if not hasattr(agent, "initialize"):
        agent = PatchedAsyncAgent(client, model=options["model"], instructions=INSTRUCTIONS, tools=TOOLS)
    main, other = await agent.create_session("main"), await agent.create_session("other")
    stream, turns = bool(options["stream"]), int(options["turns"])
    answers, others, kinds = [], [], []

    async def turn_of(session: str, text: str) -> tuple[str, list[str]]:
        prompt = [{"role": "user", "content": text}]
        result = await agent.create_turn(prompt, session_id=session, stream=stream)
        if not stream:
            return result.output_text, []
        seen: list[str] = []
        final = ""
        async for chunk in result:
            seen.append(chunk.event.event_type)
            if chunk.event.event_type == "turn_failed":
                raise RuntimeError(f"turn failed: {chunk.event}")
            if chunk.event.event_type == "turn_completed":
                final = chunk.event.final_text
        return final, seen

    for turn in range(turns):
        text, seen = await turn_of(main, prompt_of(turn, turns))
        answers.append(text)
        kinds.append(seen)
        if turn in (1, turns - 1):
            others.append((await turn_of(other, QUESTION if turn > 1 else "Hello from the other session."))[0])
    return {"answers": answers, "others": others, "ran": ran, "kinds": kinds, "sessions": [main, other]}


def _stream_models() -> dict[str, Any]:
    """Each stream event model of the SDK by the `type` it declares."""
    models: dict[str, Any] = {}
    for name in dir(response_object_stream):
        model = getattr(response_object_stream, name)
        fields = getattr(model, "model_fields", None)
        if not name.startswith("OpenAIResponseObjectStream") or not fields or "type" not in fields:
            continue
        for literal in _literals(fields["type"].annotation):
            models[literal] = model
    return models


def _literals(annotation: Any) -> list[str]:
    """The strings of a `Literal[...]`, also inside `Optional[...]`."""
    if isinstance(annotation, str):
        return [annotation]
    return [value for arg in typing.get_args(annotation) for value in _literals(arg)]


def run_contract(options: dict[str, Any]) -> dict[str, Any]:
    """A streamed answer, a tool call and its answer, read raw: every event must validate with the SDK's model
    for its type, and the final responses with `ResponseObject`."""
    models = _stream_models()
    client = LlamaStackClient(base_url=options["root"], max_retries=0)
    conversation = client.conversations.create().id
    tools = [tool.get_tool_definition() for tool in TOOLS]
    checked: list[str] = []
    missing: list[str] = []
    inputs: list[Any] = [
        [{"role": "user", "content": "Hello."}],
        [{"role": "user", "content": task_prompt(1)}],
    ]
    with httpx.Client(base_url=options["root"], timeout=60) as http:
        for given in inputs:
            body = {"model": options["model"], "input": given, "conversation": conversation, "tools": tools}
            events = _sse(http.post("/v1/responses", json={**body, "stream": True}))
            for event in events:
                model = models.get(event["type"])
                if model is None:
                    missing.append(event["type"])
                    continue
                model.model_validate(event)  # raises on a missing or mistyped field
                checked.append(event["type"])
            final = events[-1]["response"]
            ResponseObject.model_validate(final)
            calls = [item for item in final["output"] if item["type"] == "function_call"]
            if calls:  # answer the call, as the agent would, and read that response too
                outputs = [{"type": "function_call_output", "call_id": c["call_id"], "output": "ok"} for c in calls]
                reply = http.post("/v1/responses", json={**body, "input": outputs})
                reply.raise_for_status()
                ResponseObject.model_validate(reply.json())
                ResponseObject.model_validate(http.get(f"/v1/responses/{final['id']}").json())
    listed = client.conversations.items.list(conversation_id=conversation)
    return {"checked": sorted(set(checked)), "unknown": sorted(set(missing)), "items": len(list(listed))}


def _sse(reply: httpx.Response) -> list[dict[str, Any]]:
    reply.raise_for_status()
    return [json.loads(line[5:]) for line in reply.text.splitlines() if line.startswith("data:")]


if __name__ == "__main__":
    given = json.loads(sys.argv[1])
    if given["mode"] == "contract":
        report = run_contract(given)
    elif given["mode"] == "async":
        try:
            report = asyncio.run(run_async(given))
        except (AttributeError, TypeError) as error:  # an SDK bug (see PatchedAsyncAgent), not the server's answer
            frames = traceback.extract_tb(error.__traceback__)
            report = {"sdk_bug": f"{type(error).__name__}: {error}", "in": frames[-1].filename, "ran": ran}
    else:
        report = run_sync(given)
    print(json.dumps(report))
