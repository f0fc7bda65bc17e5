"""An openai-agents session against a contextfold server, run in the SDK venv (`tests/sdk_clients/README.md`).

    python agents_client.py '{"base_url": "http://127.0.0.1:PORT/v1", "mode": "conversations", "turns": 40,
                           "stream": true, "model": "gpt-4.1"}'

Modes: `conversations` (OpenAIConversationsSession: the whole history as input, the output written back with
`conversations.items.create`), `conversation_id`, `previous_response_id`, `compaction` and `compaction_input`
(OpenAIResponsesCompactionSession over a SQLiteSession, which calls `responses.compact` with the previous response
id, or, with `store` off, statelessly with the whole history as input). Every turn goes through
`Runner.run`, or `Runner.run_streamed` when `stream` is set. Prints one JSON report on stdout.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from agents import Agent, ModelSettings, Runner, function_tool, set_default_openai_api, set_tracing_disabled
from agents.memory import OpenAIConversationsSession, OpenAIResponsesCompactionSession, SQLiteSession
from agents.models.openai_responses import OpenAIResponsesModel
from openai import AsyncOpenAI

from scenario import FACT_PROMPT, QUESTION, task_prompt, tool_output

ran: list[str] = []


def read_file(path: str, task: int, step: int, steps: int) -> str:
    """Read a file of the project.

    Args:
        path: The file to read.
        task: The task this is for.
        step: The step of the task.
        steps: How many steps the task has.
    """
    ran.append(f"read_file:{task}:{step}")
    return tool_output("read_file", path, task, step)


def run_tests(path: str, task: int, step: int, steps: int) -> str:
    """Run a test file.

    Args:
        path: The test file.
        task: The task this is for.
        step: The step of the task.
        steps: How many steps the task has.
    """
    ran.append(f"run_tests:{task}:{step}")
    return tool_output("run_tests", path, task, step)


async def main(options: dict[str, Any]) -> dict[str, Any]:
    set_tracing_disabled(True)  # nothing leaves the machine
    set_default_openai_api("responses")
    client = AsyncOpenAI(base_url=options["base_url"], api_key="unused", max_retries=0)
    model = OpenAIResponsesModel(model=options["model"], openai_client=client)
    tools = [function_tool(read_file), function_tool(run_tests)]
    mode, stream = options["mode"], bool(options.get("stream"))
    settings = ModelSettings(store=False) if mode == "compaction_input" else ModelSettings()
    agent = Agent(
        name="coder", instructions="You are a careful coding agent.", model=model, tools=tools, model_settings=settings
    )
    session: Any = None
    conversation_id: str | None = None
    if mode == "conversations":
        session = OpenAIConversationsSession(openai_client=client)
    elif mode in ("compaction", "compaction_input"):  # compact by previous_response_id, or (store off) by input
        session = OpenAIResponsesCompactionSession(
            "compacting",
            SQLiteSession("compacting"),
            client=client,
            model=options["model"],
            compaction_mode="input" if mode == "compaction_input" else "auto",
        )
    elif mode == "conversation_id":
        conversation_id = (await client.conversations.create()).id
    previous: str | None = None
    answers: list[str] = []
    orders: list[bool] = []
    event_types: set[str] = set()
    turns = int(options["turns"])
    for turn in range(turns):
        prompt = FACT_PROMPT if turn == 0 else QUESTION if turn == turns - 1 else task_prompt(turn)
        kwargs: dict[str, Any] = {}
        if session is not None:
            kwargs["session"] = session
        if conversation_id is not None:
            kwargs["conversation_id"] = conversation_id
        if mode == "previous_response_id" and previous is not None:
            kwargs["previous_response_id"] = previous
        if stream:
            result: Any = Runner.run_streamed(agent, prompt, **kwargs)
            numbers: list[int] = []
            async for event in result.stream_events():
                if event.type == "raw_response_event":
                    event_types.add(event.data.type)
                    numbers.append(event.data.sequence_number)
                    if event.data.type == "response.created":
                        numbers = [event.data.sequence_number]  # each response numbers its events from 0
                    elif numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
                        orders.append(False)
            orders.append(True)
        else:
            result = await Runner.run(agent, prompt, **kwargs)
        answers.append(str(result.final_output))
        previous = result.last_response_id
    return {
        "turns": turns,
        "answers": answers,
        "ran": ran,
        "in_order": all(orders),
        "event_types": sorted(event_types),
        "conversation": conversation_id or (await session._get_session_id() if mode == "conversations" else None),
    }


if __name__ == "__main__":
    report = asyncio.run(main(json.loads(sys.argv[1])))
    print(json.dumps(report))
