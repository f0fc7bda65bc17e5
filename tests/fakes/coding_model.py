"""The mind of the fake coding model, apart from any wire format: what it sees, how it counts, what it answers.

A prompt in either wire (OpenAI Chat Completions, Anthropic Messages) reduces to a `Prompt`: the instructions, the
offered tools' names, and a flat list of items (texts, tool calls, tool results) in the order the model reads them.
`decide` answers it as a tiny coding agent would, deterministically, from what is in the prompt and nothing else:

- a user message "task N (K steps): ..." -> a call of `read_file` (then `run_tests`, alternating), K rounds in all,
  then "done with task N". The call's arguments carry the task and step, so the next round needs only the newest
  call and its result, which a compacting proxy always keeps;
- a user message "question: what is the <name>?" -> "The <name> is <value>." when "the <name> is <value>" is
  anywhere in the prompt; else a `recall` call (when offered) with the name as query; a recall result that holds the
  value is answered from, one that names events but not the value leads to `expand` of the first (when offered);
  otherwise "I do not know the <name>.".

Every answer holds at most one call, and its id is `call_0`: ids count from 0 in each response (as llama.cpp and
vLLM number them), so the same id comes back in every request and a proxy must not rely on ids being unique.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from contextfold.compaction import SUMMARY_PROMPT

FACT_NAME = "deploy code"
CLIENT_TOOLS = ("read_file", "run_tests")
RECALL = "recall"
EXPAND = "expand"
CHARS_PER_TOKEN = 4

TASK = re.compile(r"task (\d+)(?: \((\d+) steps?\))?:", re.IGNORECASE)
QUESTION = re.compile(r"question: what is the (.+?)\?", re.IGNORECASE)
_EVENT_ID = re.compile(r"^\[([^,\]\s]+), ", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Text:
    role: str
    """user or assistant."""
    text: str


@dataclass(frozen=True, slots=True)
class Call:
    call_id: str
    name: str
    arguments: str
    """JSON text."""


@dataclass(frozen=True, slots=True)
class Result:
    call_id: str
    output: str


PromptItem = Text | Call | Result


@dataclass(frozen=True, slots=True)
class Prompt:
    system: str
    """Every system/developer instruction, joined by blank lines."""
    items: tuple[PromptItem, ...]
    tools: tuple[str, ...]
    """Names of the tools offered."""
    tool_chars: int = 0
    """Characters of the tools' names, descriptions and JSON schemas (they cost tokens too)."""

    @property
    def tokens(self) -> int:
        """The fake's token count: ceil(characters / 4) of instructions, texts, call names and arguments, tool
        outputs and tool schemas. Deterministic, so a test can predict it."""
        chars = len(self.system) + self.tool_chars + sum(_chars(item) for item in self.items)
        return math.ceil(chars / CHARS_PER_TOKEN)

    @property
    def is_summary_request(self) -> bool:
        """Sent by contextfold's summariser: its prompt is the instructions."""
        return SUMMARY_PROMPT in self.system

    def texts(self) -> list[str]:
        """Everything readable in the prompt, instructions first."""
        out = [self.system]
        for item in self.items:
            out.append(
                item.text if isinstance(item, Text) else item.arguments if isinstance(item, Call) else item.output
            )
        return out


def _chars(item: PromptItem) -> int:
    if isinstance(item, Text):
        return len(item.text)
    if isinstance(item, Call):
        return len(item.name) + len(item.arguments)
    return len(item.output)


def tokens_of_text(text: str) -> int:
    """Output tokens by the same rule (at least 1: a model says something, if only its stop)."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


@dataclass(frozen=True, slots=True)
class Answer:
    text: str = ""
    call: Call | None = None


def decide(prompt: Prompt) -> Answer:
    """The agent's answer to a (non-summary) prompt, from its newest item."""
    if not prompt.items:
        return Answer("There is nothing to answer.")
    last = prompt.items[-1]
    if isinstance(last, Result):
        return _after_result(prompt, last, len(prompt.items) - 1)
    if isinstance(last, Text) and last.role == "user":
        return _after_user(prompt, last.text)
    return Answer("Waiting for the next task.")


def _after_user(prompt: Prompt, text: str) -> Answer:
    text = text.strip()
    if task := TASK.match(text):
        number, steps = int(task.group(1)), int(task.group(2) or 1)
        return _step(number, 0, steps)
    if question := QUESTION.match(text):
        return _answer_or_recall(prompt, question.group(1))
    return Answer("Noted.")


def _after_result(prompt: Prompt, result: Result, position: int) -> Answer:
    call = _call_of(prompt, result.call_id, position)
    if call is None:
        return Answer(f"I got a result for {result.call_id}, but I never made that call.")
    if call.name in CLIENT_TOOLS:
        try:
            arguments = json.loads(call.arguments)
            number, step, steps = int(arguments["task"]), int(arguments["step"]), int(arguments["steps"])
        except (ValueError, KeyError, TypeError):
            return Answer(f"I lost track of the task: {call.name} was called with {call.arguments}.")
        return _step(number, step + 1, steps)
    name = _question(prompt)
    if name is None:
        return Answer(f"I read the {call.name} result.")
    value = find_fact(name, result.output) or find_fact(name, *prompt.texts())
    if value is not None:
        return Answer(f"The {name} is {value}.")
    ids = _EVENT_ID.findall(result.output)
    if call.name == RECALL and ids and EXPAND in prompt.tools:
        return Answer(call=Call("call_0", EXPAND, json.dumps({"id": ids[0]})))
    return Answer(f"I do not know the {name}.")


def _step(number: int, step: int, steps: int) -> Answer:
    """Round `step` of a task of `steps` rounds: read a file on even rounds, run the tests on odd ones."""
    if step >= steps:
        return Answer(f"done with task {number}")
    name = CLIENT_TOOLS[step % 2]
    path = f"src/app/module_{number:03d}.py" if name == "read_file" else f"tests/test_module_{number:03d}.py"
    arguments = json.dumps({"path": path, "task": number, "step": step, "steps": steps})
    return Answer(call=Call("call_0", name, arguments))


def _answer_or_recall(prompt: Prompt, name: str) -> Answer:
    value = find_fact(name, *prompt.texts())
    if value is not None:
        return Answer(f"The {name} is {value}.")
    if RECALL in prompt.tools:
        return Answer(call=Call("call_0", RECALL, json.dumps({"query": name})))
    return Answer(f"I do not know the {name}.")


def _call_of(prompt: Prompt, call_id: str, position: int) -> Call | None:
    """The call the result at `position` answers: the nearest earlier call with its id (ids repeat)."""
    for item in reversed(prompt.items[:position]):
        if isinstance(item, Call) and item.call_id == call_id:
            return item
    return None


def _question(prompt: Prompt) -> str | None:
    """The fact asked for by the newest user question, if any."""
    for item in reversed(prompt.items):
        if isinstance(item, Text) and item.role == "user" and (question := QUESTION.match(item.text.strip())):
            return question.group(1)
    return None


def find_fact(name: str, *texts: str) -> str | None:
    """The value in the first "the <name> is <value>" of `texts`, if any."""
    pattern = re.compile(rf"\bthe {re.escape(name)} is ([A-Za-z0-9][A-Za-z0-9_-]*)", re.IGNORECASE)
    for text in texts:
        if found := pattern.search(text):
            return found.group(1)
    return None


# --- summaries ---------------------------------------------------------------------------------------------------

HUGE_SUMMARY_CHARS = 100_000


def summary_text(prompt: Prompt, mode: str) -> str:
    """The summary a summary request gets: "short" (sections naming the tasks seen, never the facts, so a question
    about a folded fact needs recall), "huge" (100k characters), or "empty"."""
    if mode == "empty":
        return ""
    if mode == "huge":
        line = "## Current state\nStill summarising the earlier work in far too much detail.\n"
        return (line * (HUGE_SUMMARY_CHARS // len(line) + 1))[:HUGE_SUMMARY_CHARS]
    tasks = sorted({int(n) for text in prompt.texts()[1:] for n in re.findall(r"\btask (\d+)", text)})
    seen = f"tasks {tasks[0]} to {tasks[-1]}" if len(tasks) > 1 else f"task {tasks[0]}" if tasks else "no task yet"
    return (
        "## Goal\nFinish the coding tasks the user gives, one at a time.\n"
        f"## Current state\nWorked on {seen}: read the modules and ran their tests.\n"
        "## Lookup hints\nRecall a task number or a file path for the details."
    )
