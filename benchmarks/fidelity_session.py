"""Generated agent sessions with planted statements, for the `fidelity` section.

A session is 700+ turns of agent work: a user request (one of many task phrasings, with file names, tests and
functions drawn at random), 0-2 tool calls with outputs of 1-30 KB (log-uniform: mostly a few KB, some large), and
the agent's answer (a few sentences of explanation, often with the code it changed). Into it go 30 planted items,
two of each kind (rules, constraints, facts, goals, preferences) at each position (early, middle, late), each
written in one of several plain-language phrasings with random values; about a third of the early and middle ones
are updated later, in a different phrasing. Everything comes from one
seeded generator. The extraction under test knows none of these templates: the benchmark counts what survives.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

KINDS = ("rule", "constraint", "fact", "goal", "preference")
POSITIONS = ("early", "middle", "late")

NAMES = ["Priya", "Marco", "Aiko", "Tomasz", "Leila", "Dmitri", "Grace", "Oluwaseun", "Ines", "Rafael", "Mei"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"]


@dataclass(frozen=True, slots=True)
class Planted:
    kind: str
    position: str
    turn: int
    text: str
    query: str
    update_turn: int | None = None
    update_text: str | None = None

    @property
    def current(self) -> str:
        return self.update_text or self.text


@dataclass(slots=True)
class Call:
    name: str
    arguments: str
    output: str


@dataclass(slots=True)
class Turn:
    user: str
    calls: list[Call] = field(default_factory=list)
    answer: str = ""


@dataclass(slots=True)
class Session:
    system: str
    turns: list[Turn]
    planted: list[Planted]

    def chars(self) -> int:
        return len(self.system) + sum(
            len(t.user) + len(t.answer) + sum(len(c.output) + len(c.arguments) + len(c.name) for c in t.calls)
            for t in self.turns
        )


# --- the planted statements: (query words, stated phrasings, update phrasings), values drawn per session --------


def _rules(rng: random.Random) -> list[tuple[str, list[str], list[str]]]:
    actions = [
        ("force-push to the main branch", "force-push main branch"),
        ("edit anything under the vendor directory", "edit vendor directory"),
        ("commit generated protobuf files", "commit generated protobuf files"),
        ("run database migrations during business hours", "database migrations business hours"),
        ("add a new dependency without asking me first", "add new dependency asking"),
        ("log customer email addresses", "log customer email addresses"),
        ("disable the linter in CI", "disable linter CI"),
        ("touch the legacy billing module", "touch legacy billing module"),
        ("merge a pull request without a green build", "merge pull request green build"),
        ("store secrets in plain environment files", "store secrets environment files"),
    ]
    out = []
    for action, query in actions:
        stated = [
            f"Never {action}.",
            f"Please don't {action}.",
            f"Do not {action}, whatever the reason.",
            f"Under no circumstances should you {action}.",
            f"You must not {action}.",
            f"One rule for this repo: nobody gets to {action}.",
            f"Make sure you never {action}.",
        ]
        updated = [
            f"Update: you're allowed to {action} from now on, as long as you tell me.",
            f"We relaxed that rule, you may now {action} when it saves time.",
            f"Change of rules: it's fine to {action} now, just mention it in the summary.",
        ]
        out.append((query, stated, updated))
    return out


def _constraints(rng: random.Random) -> list[tuple[str, list[str], list[str]]]:
    def n(lo: int, hi: int) -> int:
        return rng.randrange(lo, hi)

    a, b = rng.sample(MONTHS, 2)
    w1, w2, m1, m2, t1, t2 = n(80, 200), n(250, 400), n(256, 900), n(1000, 4000), n(2, 9), n(10, 30)
    d1, d2, f1, f2, j1, j2, i1, i2 = (
        n(500, 900),
        n(1000, 3000),
        n(5, 12),
        n(15, 40),
        n(10, 40),
        n(45, 90),
        n(200, 500),
        n(600, 999),
    )
    return [
        (
            "response words",
            [f"Keep every response under {w1} words.", f"Answers should stay below {w1} words."],
            [f"Responses can now be up to {w2} words.", f"Answers may run as long as {w2} words now."],
        ),
        (
            "worker memory budget",
            [f"The memory budget for the worker is {m1} MB.", f"The worker must fit in {m1} MB of memory."],
            [f"The worker's memory budget is now {m2} MB.", f"The worker memory budget went up to {m2} MB."],
        ),
        (
            "API timeout seconds",
            [f"The API timeout must stay below {t1} seconds."],
            [f"Change of plan: the API timeout can go up to {t2} seconds."],
        ),
        (
            "cloud credits spend month",
            [f"We can spend at most {d1} dollars on cloud credits this month."],
            [f"The cloud credit spend this month is capped at {d2} dollars now."],
        ),
        (
            "migration deadline",
            [f"The migration deadline is {a} {n(1, 28)}.", f"We have to finish the migration by {a} {n(1, 28)}."],
            [f"The migration deadline moved to {b} {n(1, 28)}."],
        ),
        (
            "pull request files",
            [f"Each pull request should touch no more than {f1} files."],
            [f"Pull requests may now touch up to {f2} files."],
        ),
        (
            "nightly job minutes",
            [f"The nightly job has to finish within {j1} minutes."],
            [f"The nightly job can now take up to {j2} minutes."],
        ),
        (
            "docker image size MB",
            [f"Docker images must stay below {i1} MB."],
            [f"Docker images can be as large as {i2} MB now."],
        ),
    ]


def _facts(rng: random.Random) -> list[tuple[str, list[str], list[str]]]:
    p1, p2 = rng.sample(range(3000, 9999), 2)
    n1, n2, n3, n4 = rng.sample(NAMES, 4)
    v1, v2 = f"1.{rng.randrange(20, 27)}.{rng.randrange(0, 9)}", f"1.{rng.randrange(28, 31)}.{rng.randrange(0, 9)}"
    k1, k2 = f"acme-artifacts-{rng.randrange(100, 999)}", f"acme-builds-{rng.randrange(100, 999)}"
    y1, y2 = rng.sample(range(2019, 2026), 2)
    i1, i2 = f"ci-runner:{rng.randrange(10, 40)}.04", f"ci-runner:{rng.randrange(41, 60)}.04"
    return [
        (
            "staging database port",
            [f"The staging database listens on port {p1}.", f"Staging's database is on port {p1}."],
            [f"The staging database now listens on port {p2}.", f"Heads up: the staging database moved to port {p2}."],
        ),
        (
            "on-call engineer",
            [f"Our on-call engineer this week is {n1}.", f"The on-call engineer this week is {n1}."],
            [f"{n2} is now our on-call engineer.", f"The on-call engineer changed: it's {n2} now."],
        ),
        (
            "production cluster Kubernetes version",
            [f"The production cluster runs Kubernetes {v1}."],
            [f"We upgraded: the production cluster now runs Kubernetes {v2}."],
        ),
        (
            "artifacts bucket",
            [f"The shared artifacts bucket is called {k1}."],
            [f"The artifacts bucket was renamed to {k2}."],
        ),
        (
            "invoices archived",
            [f"Invoices are archived under /srv/archive/invoices/{y1}."],
            [f"Invoices are archived under /srv/archive/invoices/{y2} now."],
        ),
        ("billing service owner", [f"The billing service is owned by {n3}."], [f"{n4} owns the billing service now."]),
        ("CI runner image", [f"The CI runner image is {i1}."], [f"The CI runner image changed to {i2}."]),
    ]


def _goals(rng: random.Random) -> list[tuple[str, list[str], list[str]]]:
    objectives = [
        "cut the cold start of the CLI below 300 ms",
        "support Parquet output",
        f"reach {rng.randrange(80, 95)} percent test coverage",
        "remove the last Python 2 code paths",
        f"ship to {rng.randrange(3, 9)} beta customers",
        "make every page load in under a second",
        "replace the cron jobs with a queue",
        "drop the old REST endpoints",
        "get the error rate under one in a thousand",
    ]
    rng.shuffle(objectives)
    areas = [
        (
            "exporter",
            "For the exporter, our goal is to {o}.",
            "Change of plans for the exporter: the goal is now to {o}.",
        ),
        ("search work", "The aim of the search work is to {o}.", "New aim for the search work: {o}."),
        (
            "onboarding flow",
            "For the onboarding flow, what we're aiming for is to {o}.",
            "For the onboarding flow, we now want to {o}.",
        ),
        (
            "mobile release objective",
            "Our objective for the mobile release is to {o}.",
            "The mobile release objective changed: {o}.",
        ),
        (
            "auth rewrite milestone",
            "The milestone for the auth rewrite is to {o}.",
            "The auth rewrite milestone is now to {o}.",
        ),
        (
            "reports page focus",
            "Right now the focus on the reports page is to {o}.",
            "On the reports page, the focus is now to {o}.",
        ),
    ]
    out = []
    for n, (query, stated, updated) in enumerate(areas):
        first, second = objectives[n], objectives[(n + 3) % len(objectives)]
        out.append((query, [stated.format(o=first)], [updated.format(o=second)]))
    return out


def _preferences(rng: random.Random) -> list[tuple[str, list[str], list[str]]]:
    styles = [
        "short imperative summaries",
        "the conventional-commits format",
        "one bullet per change",
        "a single plain paragraph",
        "a numbered checklist",
        "descriptive full sentences",
        "small focused notes",
    ]
    rng.shuffle(styles)
    areas = [
        ("commit messages", "I prefer {s} for commit messages.", "For commit messages I'd rather you use {s}."),
        ("code reviews", "For code reviews, I like {s}.", "For code reviews I now prefer {s}."),
        ("explain changes", "I'd rather you explain changes as {s}.", "When you explain changes, I now prefer {s}."),
        ("test names", "My preference for test names is {s}.", "For test names I'd rather have {s}."),
        ("status updates", "I like status updates written as {s}.", "Status updates: I prefer {s} from now on."),
        ("design notes", "Design notes work best for me as {s}.", "For design notes, I'd prefer {s} now."),
    ]
    out = []
    for n, (query, stated, updated) in enumerate(areas):
        out.append((query, [stated.format(s=styles[n])], [updated.format(s=styles[(n + 2) % len(styles)])]))
    return out


_POOLS = {"rule": _rules, "constraint": _constraints, "fact": _facts, "goal": _goals, "preference": _preferences}


# --- the work around them -----------------------------------------------------------------------------------------

_FILES = [
    "src/app/cli.py",
    "src/app/config.py",
    "src/core/parser.py",
    "src/core/cache.py",
    "src/api/routes.py",
    "src/api/auth.py",
    "lib/export/csv_writer.py",
    "lib/search/index.py",
    "web/pages/reports.tsx",
    "tests/conftest.py",
]
_FUNCS = [
    "parse_header",
    "load_config",
    "build_index",
    "render_report",
    "refresh_token",
    "flush_cache",
    "write_rows",
    "resolve_path",
    "retry_request",
    "merge_settings",
]
_TESTS = [
    "test_parse_empty",
    "test_cache_expiry",
    "test_auth_refresh",
    "test_export_unicode",
    "test_routes_404",
    "test_index_rebuild",
    "test_report_totals",
]
_TASKS = [
    "Look at {file} and tell me why {test} fails.",
    "Run the {suite} tests again.",
    "Open {file} around line {n} and explain what it does.",
    "Refactor {func} in {file} so the duplicated branch goes away.",
    "Grep for {func} across the repo.",
    "Add a test for {func} that covers the timeout path.",
    "Make sure the {suite} suite still passes after that.",
    "We need to fix the flaky {test} before the end of the day.",
    "Show me the diff for {file}.",
    "Check whether {func} is called anywhere else.",
    "Rename {func} to {func}_v2 everywhere.",
    "Continue with the next failing test.",
    "Looks good, next one.",
    "Why is {file} so slow to import?",
    "Try {test} with verbose logging.",
    "The build on branch feature/{n} broke; find out why.",
]
_ANSWERS = [
    "I read {file}; the failure comes from {func} returning None when the input is empty.",
    "Done: {test} passes now, {n} tests ran in total.",
    "The change is in {file}; I kept the public signature of {func}.",
    "I'll use the existing helper in {file} for this instead of writing a new one.",
    "Nothing else calls {func}; it is safe to change.",
    "The suite is green apart from {test}, which is flaky on timing.",
]
_EXPLANATIONS = [
    "The root cause is that {func} reads the cached value before the refresh finishes, so the first call sees stale "
    "data and the retry path in {file} never runs.",
    "I traced the call chain from {func} down to the parser; the branch that handles an empty header returns early "
    "without closing the file, which is what {test} trips over.",
    "Two approaches would work here: guard the call site in {file}, or change {func} to raise instead of returning "
    "None. The second is cleaner but touches more callers.",
    "The failing assertion compares the rendered output with a fixture that still has the old column order; after "
    "the change to {func} the order follows the schema instead.",
    "Running the suite with -x stops at {test}; the traceback points at line {n} of {file}, inside the retry loop.",
    "I left the behaviour of {func} unchanged for valid input and only tightened the error path, so existing callers "
    "keep working.",
    "The slow import comes from {file} building its lookup table at module level; moving that into {func} makes it "
    "lazy and the import drops well below the threshold we measured earlier.",
]
_TOOLS = ["read_file", "run_tests", "grep", "run_command"]


def _fill(rng: random.Random, template: str) -> str:
    return template.format(
        file=rng.choice(_FILES),
        func=rng.choice(_FUNCS),
        test=rng.choice(_TESTS),
        n=rng.randrange(2, 999),
        suite=rng.choice(["unit", "integration", "api", "export", "search"]),
    )


def _output(rng: random.Random) -> str:
    size = int(math.exp(rng.uniform(math.log(1_000), math.log(30_000))))
    lines: list[str] = []
    total = 0
    while total < size:
        kind = rng.random()
        if kind < 0.5:
            line = f"{rng.choice(_FILES)}:{rng.randrange(1, 900)}: {rng.choice(_FUNCS)}({rng.randrange(0, 99)}) ok"
        elif kind < 0.8:
            line = (
                f"    {rng.choice(['return', 'if', 'for', 'yield', 'raise'])} {rng.choice(_FUNCS)}(x{rng.randrange(9)})"
            )
        else:
            line = f"PASSED tests/{rng.choice(_TESTS)}[{rng.randrange(0, 64)}] in {rng.random():.3f}s"
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)


def _answer(rng: random.Random) -> str:
    """An agent's answer: what it did and why, in a few sentences, sometimes with the code it changed."""
    parts = [_fill(rng, rng.choice(_ANSWERS))]
    parts += [_fill(rng, rng.choice(_EXPLANATIONS)) for _ in range(rng.randrange(2, 8))]
    if rng.random() < 0.7:
        body = [
            f"    {rng.choice(['if', 'return', 'for', 'with'])} {rng.choice(_FUNCS)}(x{k}):"
            for k in range(rng.randrange(10, 50))
        ]
        parts.append("```python\ndef " + rng.choice(_FUNCS) + "(x):\n" + "\n".join(body) + "\n```")
    return "\n\n".join(parts)


def generate(seed: int, turns: int = 720) -> Session:
    rng = random.Random(seed)
    planted_at: dict[int, list[str]] = {}
    planted: list[Planted] = []
    windows = {"early": (2, 70), "middle": (300, 400), "late": (turns - 110, turns - 10)}
    for kind in KINDS:
        pool = _POOLS[kind](rng)
        rng.shuffle(pool)
        for p, position in enumerate(POSITIONS):
            for k in range(2):
                query, stated, updated = pool[p * 2 + k]
                at = rng.randrange(*windows[position])
                text = rng.choice(stated)
                update_turn = update_text = None
                if position != "late" and rng.random() < 0.4:
                    update_turn = min(turns - 5, at + rng.randrange(80, 260))
                    update_text = rng.choice(updated)
                    planted_at.setdefault(update_turn, []).append(update_text)
                planted_at.setdefault(at, []).append(text)
                planted.append(Planted(kind, position, at, text, query, update_turn, update_text))
    session_turns = []
    for n in range(turns):
        task = _fill(rng, rng.choice(_TASKS)) if n else "We're working on the acme repo today. " + _fill(rng, _TASKS[0])
        statements = planted_at.get(n, [])
        user = " ".join([*statements, task] if rng.random() < 0.5 else [task, *statements])
        calls = [
            Call(name, f'{{"target": "{rng.choice(_FILES)}"}}', _output(rng))
            for name in rng.sample(_TOOLS, rng.choice([0, 0, 1, 1, 2]))
        ]
        session_turns.append(Turn(user, calls, _answer(rng)))
    system = "You are a coding agent working in a repository. Use the tools to read and run code."
    return Session(system, session_turns, planted)
