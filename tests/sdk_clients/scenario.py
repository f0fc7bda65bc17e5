"""The session every SDK test runs, shared by the client scripts (which run in the SDK venv) and the tests.

Turn 0 plants a fact, the turns between give coding tasks that take two client tool calls each (the fake upstream,
`tests/fakes/coding_model.py`, asks for `read_file` then `run_tests`), and the last turn asks for the fact, long
after it has been folded out of an 8k window: the model finds it with the server's recall tool.
"""

from __future__ import annotations

FACT_VALUE = "ZEBRA-42"
FACT_PROMPT = f"Remember this for later: the deploy code is {FACT_VALUE}."
QUESTION = "question: what is the deploy code?"
TOOL_OUTPUT_LINES = 24


def task_prompt(turn: int) -> str:
    return f"task {turn} (2 steps): fix module {turn} and run its tests"


def marker(name: str, task: int, step: int) -> str:
    """A string only this call's output holds: the tests look for it in what the upstream was sent."""
    return f"[{name}-{task}-{step}]"


def tool_output(name: str, path: str, task: int, step: int) -> str:
    """About 1.5 KB: enough that forty turns of them are far past an 8k window."""
    lines = [f"{marker(name, task, step)} {name} {path}"]
    lines += [
        f"line {n}: def handler_{task}_{n}(request): return respond(request, status=200)"
        for n in range(TOOL_OUTPUT_LINES)
    ]
    return "\n".join(lines)
