"""What the scripted coding client's tools print, and the texts of its tasks: realistic-looking, deterministic.

Everything is drawn from the `random.Random` the caller passes, so one seed gives one run. A tool output has
exactly the size asked for: a numbered listing of a Python module (`read_file`) or a pytest log (`run_tests`).
"""

from __future__ import annotations

import json
import random
import string

_VERBS = ("parse", "load", "render", "check", "merge", "split", "apply", "resolve", "encode", "fetch", "build")
_NOUNS = ("config", "invoice", "order", "token", "batch", "record", "window", "payload", "schema", "ledger")
_TASKS = (
    "fix the failing test in module {n:03d} without changing its public API",
    "add input validation to module {n:03d} and cover the error paths with tests",
    "make module {n:03d} handle empty input, then run its tests",
    "find why the tests of module {n:03d} are flaky and fix the cause",
    "refactor module {n:03d} so that each function does one thing",
)


def fact_code(rng: random.Random) -> str:
    """A code nobody could guess: `AB-1234-CD`."""
    letters = string.ascii_uppercase
    return "".join(rng.choices(letters, k=2)) + f"-{rng.randint(1000, 9999)}-" + "".join(rng.choices(letters, k=2))


def task_text(rng: random.Random, number: int, steps: int) -> str:
    """The user message that starts a task: "task N (K steps): ..."."""
    unit = "step" if steps == 1 else "steps"
    return f"task {number} ({steps} {unit}): " + rng.choice(_TASKS).format(n=number)


def tool_output(rng: random.Random, name: str, arguments: str, size: int) -> str:
    """What running tool `name` prints: `size` characters, cut at the end."""
    try:
        path = str(json.loads(arguments).get("path", "?"))
    except (ValueError, AttributeError):
        path = "?"
    lines = (
        _listing(rng, path, size)
        if name == "read_file"
        else _pytest_log(rng, path, size)
        if name == "run_tests"
        else []
    )
    if not lines:
        return f"error: no tool named {name!r}"[:size]
    return "\n".join(lines)[:size]


def _name(rng: random.Random) -> str:
    return f"{rng.choice(_VERBS)}_{rng.choice(_NOUNS)}"


def _listing(rng: random.Random, path: str, size: int) -> list[str]:
    source = [f'"""{path}: helpers for the {rng.choice(_NOUNS)} pipeline."""', "", "import json", "import logging", ""]
    chars = sum(len(line) + 8 for line in source)
    while chars <= size:
        function, argument, limit = _name(rng), rng.choice(_NOUNS), rng.randint(2, 99)
        block = [
            "",
            f"def {function}({argument}, *, strict=False):",
            f'    """{function.replace("_", " ").capitalize()} and return it, or None when it is empty."""',
            f"    if not {argument}:",
            "        return None",
            f"    value = json.loads({argument}) if isinstance({argument}, str) else {argument}",
            f"    if strict and len(value) > {limit}:",
            f'        raise ValueError(f"{argument} too long: {{len(value)}} > {limit}")',
            "    return value",
        ]
        source += block
        chars += sum(len(line) + 8 for line in block)
    return [f"{number:6}\t{line}" for number, line in enumerate(source, start=1)]


def _pytest_log(rng: random.Random, path: str, size: int) -> list[str]:
    lines = [
        "============================= test session starts ==============================",
        "platform linux -- Python 3.12.3, pytest-8.3.2, pluggy-1.5.0",
        "rootdir: /home/dev/app",
        f"collected {rng.randint(20, 400)} items",
        "",
    ]
    chars, count, failed = sum(len(line) + 1 for line in lines), 0, 0
    while chars <= size:
        count += 1
        test = f"test_{_name(rng)}_{count}"
        ok = rng.random() > 0.08
        failed += not ok
        line = f"{path}::{test} {'PASSED' if ok else 'FAILED'}".ljust(72) + f"[{min(99, count):3}%]"
        block = [line]
        if not ok:
            expected = rng.randint(1, 99)
            block += [
                f"    def {test}():",
                f">       assert {_name(rng)}(sample) == {expected}",
                f"E       AssertionError: assert {expected - 1} == {expected}",
            ]
        lines += block
        chars += sum(len(b) + 1 for b in block)
    lines.append(f"=== {failed} failed, {count - failed} passed in {rng.randint(10, 900) / 100:.2f}s ===")
    return lines
