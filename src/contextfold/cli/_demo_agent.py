"""The scripted agent `contextfold demo` plays: what it asks each turn, and the outputs of its tools.

Each turn asks the built-in `test` model to call one to three of the agent's function tools (`/tool NAME {json}`
lines, which the test model turns into parallel calls). The demo runs them locally: source files, test logs and
grep output of 1-30 KB, all drawn from a generator seeded by (seed, turn, call), so a seed gives the same session
byte for byte. Turns 1-4 each plant one fact in a tool output; the last four turns ask for them back with
`/recall WORDS`, which the server answers with its built-in recall tool, by then over history folded long before.

The generated text never uses a fact's words, so a recall can only find the fact where it was planted.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..view import DEFAULT_CHARS_PER_TOKEN

if TYPE_CHECKING:
    import openai
    from openai.types.responses import FunctionToolParam, Response, ResponseInputItemParam

MIN_OUTPUT = 1_024
MAX_OUTPUT = 30 * 1_024
TURN_SHARE = 0.5
"""The most a turn's tool outputs may take of the budget: what is left keeps the instructions, the summary and the
newest exchanges, so no single turn forces a request over the budget."""


@dataclass(frozen=True, slots=True)
class Fact:
    """Something planted early in a tool output and asked for at the end: a hit is an answer carrying `value`."""

    words: str
    value: str

    @property
    def line(self) -> str:
        return f"the {self.words} is {self.value}"


FACTS = (
    Fact("staging database password", "TANGERINE-4471"),
    Fact("release signing fingerprint", "KESTREL-19C2"),
    Fact("pager rota escalation contact", "HERON-5582"),
    Fact("billing export bucket", "LEDGER-9921"),
)
FIRST_FACT_TURN = 1
RECALL_TURNS = 20
"""The shortest session that plants and recalls the facts."""


def _tool(name: str, description: str, **properties: str) -> FunctionToolParam:
    schema = {key: {"type": "string", "description": text} for key, text in properties.items()}
    parameters: dict[str, object] = {"type": "object", "properties": schema, "required": list(properties)}
    return {"type": "function", "name": name, "description": description, "parameters": parameters, "strict": False}


TOOLS: list[FunctionToolParam] = [
    _tool("read_file", "Read a file of the repository.", path="The file's path from the repository root."),
    _tool("run_tests", "Run the tests of a module and show their log.", target="A test file or directory."),
    _tool("grep", "Search the repository for a pattern.", pattern="A regular expression.", path="Where to look."),
]
INSTRUCTIONS = (
    "You are a coding agent maintaining a Python service. Read code, run tests and search the repository with your "
    "tools; answer briefly. Use recall to find anything from earlier that is no longer in your context."
)


@dataclass(frozen=True, slots=True)
class Call:
    """One tool call a turn asks for, and the size of the output the demo will give it."""

    name: str
    arguments: dict[str, str]
    size: int
    fact: Fact | None = None

    @property
    def line(self) -> str:
        return f"/tool {self.name} {json.dumps(self.arguments)}"


@dataclass(frozen=True, slots=True)
class Turn:
    """A turn of the script: tool calls to make, or a fact to recall."""

    number: int
    calls: tuple[Call, ...] = ()
    recall: Fact | None = None

    @property
    def message(self) -> str:
        """The user message that makes the test model do it."""
        if self.recall is not None:
            return f"/recall {self.recall.words}"
        return "\n".join(call.line for call in self.calls)


def turn_chars(budget: int) -> int:
    """The most characters of tool output one turn may bring, for a budget of `budget` tokens."""
    return int(budget * TURN_SHARE * DEFAULT_CHARS_PER_TOKEN)


class Script:
    """The session as a function of (turns, seed, budget): every turn and every output, computed on demand."""

    def __init__(self, turns: int, seed: int, budget: int) -> None:
        self.turns = turns
        self.seed = seed
        self.per_turn = turn_chars(budget)
        # the facts are planted early and recalled once history has been folded: a shorter session folds too
        # little for recall to find anything (the model keeps it all in view), so it plants none
        self.facts = FACTS if turns >= RECALL_TURNS else ()

    @property
    def recall_turns(self) -> range:
        return range(self.turns - len(self.facts), self.turns)

    def turn(self, number: int) -> Turn:
        if number in self.recall_turns:
            return Turn(number, recall=self.facts[number - self.recall_turns.start])
        rng = random.Random(f"{self.seed}/{number}")
        count = rng.randint(1, 3)
        sizes = _fit([_size(rng) for _ in range(count)], self.per_turn)
        calls = [_call(rng, size) for size in sizes]
        planted = number - FIRST_FACT_TURN
        if 0 <= planted < len(self.facts):
            first = calls[0]
            calls[0] = Call(first.name, first.arguments, first.size, self.facts[planted])
        return Turn(number, calls=tuple(calls))

    def output(self, turn: Turn, index: int) -> str:
        """The output of the turn's `index`th call: the same for the same script, whatever ran before."""
        call = turn.calls[index]
        rng = random.Random(f"{self.seed}/{turn.number}/{index}")
        lines = _WRITERS[call.name](rng, call.arguments, call.size)
        if call.fact is None:
            return "\n".join(_cut(lines, call.size))
        planted = _FACT_LINES[call.name].format(fact=call.fact.line)
        kept = _cut(lines, call.size - len(planted) - 1)
        kept.insert(1 + len(kept) // 2, planted)  # mid-output, as a real detail is: never the line an answer quotes
        return "\n".join(kept)


def _size(rng: random.Random) -> int:
    """Mostly a few KB, now and then tens: a log-normal around 3 KB, within 1-30 KB."""
    return min(MAX_OUTPUT, max(MIN_OUTPUT, int(1_024 * rng.lognormvariate(1.1, 0.9))))


def _fit(sizes: list[int], limit: int) -> list[int]:
    """The sizes, shrunk together when their sum is over `limit`: each keeps 1 KB, and the room left over is
    shared in proportion to what each had above that."""
    above = sum(size - MIN_OUTPUT for size in sizes)
    if sum(sizes) <= limit or above == 0:
        return sizes
    room = max(0, limit - MIN_OUTPUT * len(sizes))
    return [MIN_OUTPUT + (size - MIN_OUTPUT) * room // above for size in sizes]


# --- playing it against the server -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Played:
    """What one turn came to: the model's last answer, or what went wrong."""

    turn: Turn
    answer: str = ""
    problem: str | None = None

    @property
    def hit(self) -> bool:
        """For a recall turn: the answer carries the fact."""
        return self.turn.recall is not None and self.turn.recall.value in self.answer


class Agent:
    """The agent's side of the session: each turn one response (the model's calls), the tools run here, and a
    second response with their outputs (the model's answer); a recall turn is one response, as the server runs
    the built-in recall itself."""

    def __init__(self, client: openai.OpenAI, conversation: str, script: Script) -> None:
        self.client = client
        self.conversation = conversation
        self.script = script

    def play(self, turn: Turn) -> Played:
        import openai

        try:
            return self._play(turn)
        except openai.APIStatusError as exc:  # the server answered with an error: the session goes on
            return Played(turn, problem=f"turn {turn.number}: HTTP {exc.status_code}: {exc.message}")

    def _play(self, turn: Turn) -> Played:
        first = self._respond(turn.message)
        if turn.recall is not None:
            return self._played(turn, first)
        calls = [item for item in first.output if item.type == "function_call"]
        planned = [call.name for call in turn.calls]
        if [call.name for call in calls] != planned:
            problem = f"turn {turn.number}: the model called {[c.name for c in calls]}, not {planned}: "
            return Played(turn, problem=problem + first.output_text[:200])
        outputs: list[ResponseInputItemParam] = [
            {"type": "function_call_output", "call_id": call.call_id, "output": self.script.output(turn, index)}
            for index, call in enumerate(calls)
        ]
        return self._played(turn, self._respond(outputs))

    def _respond(self, given: str | list[ResponseInputItemParam]) -> Response:
        return self.client.responses.create(
            model="test", conversation=self.conversation, input=given, instructions=INSTRUCTIONS, tools=TOOLS
        )

    def _played(self, turn: Turn, last: Response) -> Played:
        problem = None
        if last.status != "completed":
            problem = f"turn {turn.number}: the response ended {last.status}: {last.output_text[:200]}"
        return Played(turn, last.output_text, problem)


# --- the tools' outputs ---------------------------------------------------------------------------------------------
# Words are drawn from these lists only; none of them is a word of a fact.

_AREAS = ("scheduler", "router", "cache", "indexer", "mailer", "gateway", "ingest", "metrics", "session", "quota")
_PARTS = ("pool", "client", "worker", "limits", "retry", "codec", "store", "queue", "events", "config")
_VERBS = ("load", "parse", "merge", "flush", "resolve", "compute", "render", "check", "split", "apply")
_NOUNS = ("batch", "entry", "window", "token", "route", "shard", "record", "header", "offset", "lease")
_ERRORS = ("AssertionError: expected {a}, got {b}", "KeyError: '{n}_{a}'", "TimeoutError: {n} took {a}.{b}s")
_FACT_LINES = {"read_file": "# NOTE: {fact}", "run_tests": "INFO {fact}", "grep": "docs/notes.md:17: {fact}"}


def _call(rng: random.Random, size: int) -> Call:
    area, part = rng.choice(_AREAS), rng.choice(_PARTS)
    name = rng.choice(("read_file", "read_file", "run_tests", "grep"))
    if name == "read_file":
        arguments = {"path": f"src/{area}/{part}.py"}
    elif name == "run_tests":
        arguments = {"target": f"tests/test_{area}_{part}.py"}
    else:
        arguments = {"pattern": f"{rng.choice(_VERBS)}_{rng.choice(_NOUNS)}", "path": f"src/{area}/"}
    return Call(name, arguments, size)


def _source(rng: random.Random, arguments: dict[str, str], size: int) -> list[str]:
    path = arguments["path"]
    lines = [f"# {path}", f'"""{path.split("/")[1].title()} {path.rsplit("/", 1)[1][:-3]}: the service\'s helpers."""']
    lines += ["", "from __future__ import annotations", "", "import logging", "", "log = logging.getLogger(__name__)"]
    for n in range(size // 300 + 1):  # a function is ~330 characters
        verb, noun, other = rng.choice(_VERBS), rng.choice(_NOUNS), rng.choice(_NOUNS)
        lines += [
            "",
            "",
            f"def {verb}_{noun}_{n}({noun}: {noun.title()}, limit: int = {rng.randint(2, 512)}) -> {other.title()}:",
            f'    """{verb.title()} the {noun} into a {other}, at most `limit` at a time."""',
            f"    if {noun}.size > limit:",
            f'        log.debug("{verb} {noun}: %d over the limit", {noun}.size - limit)',
            f"        return {other.title()}.empty()",
            f"    return {other.title()}({noun}.{rng.choice(_NOUNS)}, offset={rng.randint(0, 9_999)})",
        ]
    return lines


def _test_log(rng: random.Random, arguments: dict[str, str], size: int) -> list[str]:
    target = arguments["target"]
    total, failed = size // 50 + 1, rng.randint(0, 3)  # a test's line is ~60 characters
    lines = [f"pytest {target}: {total - failed} passed, {failed} failed", f"$ python -m pytest {target} -v"]
    for n in range(total):
        verb, noun = rng.choice(_VERBS), rng.choice(_NOUNS)
        outcome = "FAILED" if n < failed else "PASSED"
        lines.append(f"{target}::test_{verb}_{noun}[{n}] {outcome} [{100 * (n + 1) // total:3d}%]")
        if outcome == "FAILED":
            error = rng.choice(_ERRORS).format(a=rng.randint(1, 99), b=rng.randint(1, 99), n=noun)
            lines += [f"    assert {verb}_{noun}({n}) == expected", f"E   {error}"]
    lines.append(f"==== {failed} failed, {total - failed} passed in {rng.randint(1, 60)}.{rng.randint(10, 99)}s ====")
    return lines


def _grep(rng: random.Random, arguments: dict[str, str], size: int) -> list[str]:
    pattern, path = arguments["pattern"], arguments["path"]
    matches = size // 50 + 1  # a match is ~55 characters
    lines = [f"grep -rn {pattern!r} {path}: {matches} matches"]
    for _ in range(matches):
        file = f"{path}{rng.choice(_PARTS)}.py"
        lines.append(f"{file}:{rng.randint(1, 900)}:    {rng.choice(_NOUNS)} = {pattern}({rng.choice(_NOUNS)})")
    return lines


_WRITERS = {"read_file": _source, "run_tests": _test_log, "grep": _grep}


def _cut(lines: list[str], size: int) -> list[str]:
    """The first lines that fit in `size` characters, newlines included."""
    kept: list[str] = []
    used = 0
    for line in lines:
        used += len(line) + 1
        if used > size + 1:  # the last line has no newline
            break
        kept.append(line)
    return kept
