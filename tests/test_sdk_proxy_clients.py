"""The official `anthropic` and `openai` (Chat Completions) SDKs, unmodified, through the compaction proxy of a real
`contextfold serve` in front of an 8k-window fake upstream: clients that resend their whole history, 40 turns with
a planted fact and two client tools, streamed and not. The fact comes back through the proxy's hidden recall."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from .sdk_clients.scenario import FACT_PROMPT, QUESTION, task_prompt, tool_output
from .sdk_harness import MODEL, Stack, check_session, stack

__all__ = ["stack"]

TURNS = 40
INSTRUCTIONS = "You are a careful coding agent."
SCHEMA = {
    "type": "object",
    "properties": {"path": {"type": "string"}, "task": {"type": "integer"}, "step": {"type": "integer"}},
    "required": ["path", "task", "step"],
}
TOOL_NAMES = ("read_file", "run_tests")


def _run(name: str, arguments: str | dict[str, Any], ran: list[str]) -> str:
    given = json.loads(arguments) if isinstance(arguments, str) else arguments
    ran.append(f"{name}:{given['task']}:{given['step']}")
    return tool_output(name, given["path"], int(given["task"]), int(given["step"]))


def _prompt(turn: int) -> str:
    return FACT_PROMPT if turn == 0 else QUESTION if turn == TURNS - 1 else task_prompt(turn)


def _chat_session(stack: Stack, stream: bool) -> dict[str, Any]:
    client = openai.OpenAI(base_url=f"{stack.root}/v1", api_key="unused", max_retries=0)
    tools: Any = [{"type": "function", "function": {"name": n, "parameters": SCHEMA}} for n in TOOL_NAMES]
    messages: list[Any] = [{"role": "system", "content": INSTRUCTIONS}]
    answers: list[str] = []
    ran: list[str] = []
    for turn in range(TURNS):
        messages.append({"role": "user", "content": _prompt(turn)})
        while True:
            text = ""
            calls: dict[int, dict[str, str]] = {}
            if stream:
                for chunk in client.chat.completions.create(model=MODEL, messages=messages, tools=tools, stream=True):
                    for choice in chunk.choices:
                        text += choice.delta.content or ""
                        for delta in choice.delta.tool_calls or ():
                            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                            call["id"] = delta.id or call["id"]
                            if delta.function is not None:
                                call["name"] += delta.function.name or ""
                                call["arguments"] += delta.function.arguments or ""
            else:
                message = client.chat.completions.create(model=MODEL, messages=messages, tools=tools).choices[0].message
                text = message.content or ""
                for n, tool_call in enumerate(message.tool_calls or ()):
                    assert tool_call.type == "function"
                    calls[n] = {
                        "id": tool_call.id,
                        "name": tool_call.function.name,
                        "arguments": tool_call.function.arguments,
                    }
            echoed: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                echoed["tool_calls"] = [
                    {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                    for c in calls.values()
                ]
            messages.append(echoed)
            if not calls:
                answers.append(text)
                break
            for c in calls.values():
                messages.append(
                    {"role": "tool", "tool_call_id": c["id"], "content": _run(c["name"], c["arguments"], ran)}
                )
    return {"answers": answers, "ran": ran}


def _anthropic_session(stack: Stack, stream: bool) -> dict[str, Any]:
    client = anthropic.Anthropic(base_url=stack.root, api_key="unused", max_retries=0)
    tools: Any = [{"name": n, "description": f"{n} of the project", "input_schema": SCHEMA} for n in TOOL_NAMES]
    messages: list[Any] = []
    answers: list[str] = []
    ran: list[str] = []
    for turn in range(TURNS):
        messages.append({"role": "user", "content": _prompt(turn)})
        while True:
            options: Any = {"model": MODEL, "max_tokens": 1024, "system": INSTRUCTIONS, "messages": messages}
            if stream:
                with client.messages.stream(**options, tools=tools) as streamed:
                    reply = streamed.get_final_message()
            else:
                reply = client.messages.create(**options, tools=tools)
            blocks = [block.model_dump(exclude_none=True) for block in reply.content]
            messages.append({"role": "assistant", "content": blocks})
            uses = [block for block in reply.content if block.type == "tool_use"]
            if not uses:
                answers.append("".join(block.text for block in reply.content if block.type == "text"))
                break
            results = [
                {"type": "tool_result", "tool_use_id": use.id, "content": _run(use.name, dict(use.input), ran)}
                for use in uses
            ]
            messages.append({"role": "user", "content": results})
    return {"answers": answers, "ran": ran}


@pytest.mark.slow
@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("sdk", ["openai-chat", "anthropic"])
def test_a_client_resending_its_history_runs_far_past_the_window(stack: Stack, sdk: str, stream: bool) -> None:
    report = _chat_session(stack, stream) if sdk == "openai-chat" else _anthropic_session(stack, stream)
    check_session(stack, report, turns=TURNS)
