"""The web inspector end to end: headless Chromium (Debian's, at /usr/bin/chromium) driven by Playwright against a
real `contextfold serve` process whose small window makes the `test` model's sessions compact.

The tests load the pages and click through a conversation with compactions, a masked tool output, a failed turn
and a deleted item, checking what is shown against the API's own numbers; they save screenshots (the list, the
timeline, the chart) to $CONTEXTFOLD_SCREENSHOTS (default: a temporary directory). The page may reach only the
server: any other request fails the test, and so does any error on the console (a CSP violation is one). The key
prompt is checked last, because creating a key switches authentication on for the rest of the server's life.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, Request, Route, expect, sync_playwright

from .processes import Replica

CHROMIUM = Path("/usr/bin/chromium")
WINDOW = 4_096
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")


@dataclass
class Served:
    """One `contextfold serve` process on loopback, and the conversations made on it."""

    url: str
    db: Path
    http: httpx.Client
    conversation: str = ""
    other: str = ""

    def get(self, path: str, **params: Any) -> Any:
        reply = self.http.get(path, params=params)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def respond(self, text: Any, **body: Any) -> dict[str, Any]:
        reply = self.http.post("/v1/responses", json={"model": "test", "input": text, **body})
        assert reply.status_code in (200, 502), reply.text
        result: dict[str, Any] = reply.json()
        return result


def session(served: Served) -> str:
    """Long answers (folded into summaries), a failed turn, file reads (old outputs masked), a deleted answer."""
    conversation: str = served.http.post("/v1/conversations", json={"metadata": {"task": "ZX-4127"}}).json()["id"]
    served.respond("Fix the failing build of ticket ZX-4127", conversation=conversation)
    for _ in range(6):
        served.respond("/long 120", conversation=conversation)
    served.respond("/fail 503", conversation=conversation)
    tool = {"type": "function", "name": "read_file", "parameters": {"type": "object", "properties": {}}}
    for n in range(20):  # until an old output is masked (the ninth read does it, with today's policy)
        states = {e["state"] for e in served.get(f"/v1/conversations/{conversation}/events", limit=1000)["data"]}
        if "masked" in states:
            break
        called = served.respond(f'/tool read_file {{"path": "src/mod{n}.py"}}', conversation=conversation, tools=[tool])
        call_id = next(item["call_id"] for item in called["output"] if item["type"] == "function_call")
        lines = "\n".join(f"line {i}: value = compute({i}, {n})" for i in range(30))
        output = {"type": "function_call_output", "call_id": call_id, "output": f"# src/mod{n}.py\n{lines}"}
        served.respond([output], conversation=conversation, tools=[tool])
    last = served.get(f"/v1/conversations/{conversation}/items", limit=1)["data"][0]
    assert served.http.delete(f"/v1/conversations/{conversation}/items/{last['id']}").status_code == 200
    return conversation


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("inspector")
    db = root / "inspector.db"
    replica = Replica(str(db), root / "server.log", "--context-window", str(WINDOW), "--compact-background", "false")
    try:
        replica.wait_ready()
        with httpx.Client(base_url=replica.url, timeout=60) as http:
            running = Served(replica.url, db, http)
            running.other = http.post("/v1/conversations", json={"metadata": {"task": "other"}}).json()["id"]
            running.respond("hello", conversation=running.other)
            running.conversation = session(running)
            yield running
    finally:
        assert replica.stop() == 0
    assert "Traceback" not in replica.output()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = _launch(playwright)
        yield launched
        launched.close()


def _launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)


@dataclass
class Watched:
    """A page, and what went wrong on it: requests beyond the server, console errors, uncaught exceptions."""

    page: Page
    problems: list[str] = field(default_factory=list)


@pytest.fixture
def watched(browser: Browser, served: Served) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=served.url)
    page = context.new_page()
    seen = Watched(page)

    def only_the_server(route: Route, request: Request) -> None:
        if request.url.startswith(served.url + "/"):
            route.continue_()
        else:
            seen.problems.append(f"request beyond the server: {request.url}")
            route.abort()

    context.route("**/*", only_the_server)
    page.on("console", lambda m: seen.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda error: seen.problems.append(f"uncaught: {error}"))
    try:
        yield seen
        assert seen.problems == []
    finally:
        context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $CONTEXTFOLD_SCREENSHOTS, else a temporary directory."""
    chosen = os.environ.get("CONTEXTFOLD_SCREENSHOTS")
    directory = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def open_conversation(page: Page, conversation: str) -> None:
    page.goto("/ui/")
    page.get_by_role("link", name=conversation).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(conversation)
    expect(page.locator("#live")).to_contain_text("Live")


# --- the tests --------------------------------------------------------------------------------------------------


def test_the_list_shows_sizes_and_filters(watched: Watched, served: Served, shots: Path) -> None:
    page = watched.page
    page.goto("/ui")  # redirects to /ui/
    expect(page).to_have_url(f"{served.url}/ui/")
    rows = page.locator("table.conversations tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_have_attribute("data-id", served.conversation)  # newest first
    context = served.get(f"/v1/conversations/{served.conversation}/context")
    row = page.locator(f'tr[data-id="{served.conversation}"]')
    expect(row.locator("td").nth(2)).to_have_text(f"{context['events']:,}")
    expect(row.locator("td").nth(3)).to_have_text(f"{context['tokens']['total']:,}")
    expect(row.locator("td").nth(5)).to_have_text(str(context["totals"]["compactions"]))
    page.screenshot(path=shots / "inspector-list.png")
    page.keyboard.press("Tab")  # the keyboard reaches everything, starting with a way past the header
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    expect(page).to_have_url(f"{served.url}/ui/")
    page.get_by_label("Filter").fill("zx-41")
    expect(rows.locator("visible=true")).to_have_count(1)
    expect(page.locator("#list-status")).to_contain_text("1 of 2")
    page.get_by_label("Filter").fill(served.other[-6:])
    expect(page.locator(f'tr[data-id="{served.other}"]')).to_be_visible()
    expect(row).to_be_hidden()


def test_a_conversation_shows_its_timeline_chart_and_window(watched: Watched, served: Served, shots: Path) -> None:
    page = watched.page
    open_conversation(page, served.conversation)
    events = served.get(f"/v1/conversations/{served.conversation}/events", limit=1000)["data"]
    timeline = page.locator("#timeline > li")
    expect(timeline).to_have_count(len(events))
    for state in ("in_view", "masked", "folded", "failed", "erased", "marker"):
        count = sum(e["state"] == state for e in events)
        assert count, state
        expect(page.locator(f"#timeline > li.state-{state}")).to_have_count(count)
    expect(page.locator("li.state-failed").first).to_contain_text("/fail 503")
    expect(page.locator("li.state-erased").first).to_contain_text("Content erased")

    # a compaction marker with its summary, covered span, trigger and tokens
    summary = next(e for e in events if e["type"] == "compaction" and e["strategy"] == "summary")
    card = page.locator(f"#ev-{summary['seq']}")
    expect(card).to_have_class(re.compile(r"\bcompaction-card\b"))
    expect(card.locator(".summary-text")).to_contain_text(summary["summary"].splitlines()[0])
    expect(card.locator('[data-fact="trigger"] dd')).to_have_text(summary["trigger"])
    expect(card.locator('[data-fact="tokens"] dd')).to_contain_text(
        f"{summary['tokens_before']:,} → {summary['tokens_after']:,}"
    )
    start, end = summary["covers"][0]
    expect(card.locator('[data-fact="summary covers"] dd')).to_contain_text(f"#{start}\N{EN DASH}#{end}")

    # a tool call with its result, one click away
    call = next(e for e in events if e["type"] == "tool_call" and e["state"] == "in_view")
    result = next(e for e in events if e["type"] == "tool_result" and e.get("call_id") == call["call_id"])
    page.locator(f"#ev-{call['seq']}").get_by_role("button", name=f"#{result['seq']}").click()
    expect(page.locator(f"#ev-{result['seq']}")).to_be_focused()
    expect(page.locator(f"#ev-{result['seq']}")).to_contain_text("compute(0, ")

    # the chart: a point per request, the lines, a mark per compaction
    usage = served.get(f"/v1/conversations/{served.conversation}/usage")
    chart = page.locator("svg.chart")
    expect(chart.locator("circle.point")).to_have_count(len(usage["requests"]))
    expect(chart.locator("g.compaction-mark")).to_have_count(len(usage["compactions"]))
    for name, tokens in (("window", "context_window"), ("budget", "budget"), ("trigger", "trigger_tokens")):
        expect(chart.locator(f'g[data-line="{name}"]')).to_have_attribute("data-tokens", str(usage[tokens]))
    expect(chart.locator('g[data-line="target"]')).to_contain_text(f"target {usage['target_tokens']:,}")
    expect(chart.locator("circle.point").last).to_have_attribute("data-seq", str(usage["requests"][-1]["seq"]))

    # the window by category, as /context counts it
    context = served.get(f"/v1/conversations/{served.conversation}/context")
    for category in ("summary", "messages", "tool_outputs", "masked_tool_outputs"):
        cell = page.locator(f'table.categories tr[data-category="{category}"] td').first
        expect(cell).to_have_text(f"{context['tokens'][category]:,}")
    assert context["tokens"]["summary"]
    assert context["tokens"]["masked_tool_outputs"]

    page.locator(".chart-panel").screenshot(path=shots / "inspector-chart.png")
    page.screenshot(path=shots / "inspector-conversation.png")
    masked = page.locator("#timeline > li.state-masked").first
    masked.scroll_into_view_if_needed()
    page.mouse.wheel(0, -160)
    page.screenshot(path=shots / "inspector-timeline.png")


def test_search_finds_folded_history(watched: Watched, served: Served) -> None:
    page = watched.page
    open_conversation(page, served.conversation)
    hits = served.get(f"/v1/conversations/{served.conversation}/search", q="mod0")["data"]
    assert hits
    page.get_by_label("Search folded history").fill("mod0")
    page.get_by_role("button", name="Search", exact=True).click()
    found = page.locator("#search-results li")
    expect(found).to_have_count(len(hits))
    expect(found.first).to_contain_text(hits[0]["snippet"][:20])
    found.first.get_by_role("button").click()
    expect(page.locator(f"#ev-{hits[0]['seq']}")).to_be_focused()
    page.get_by_label("Search folded history").fill("no-such-word-anywhere")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#search-results")).to_contain_text("Nothing folded matches")


def test_a_new_turn_appears_live(watched: Watched, served: Served) -> None:
    page = watched.page
    open_conversation(page, served.other)
    rows = page.locator("#timeline > li")
    before = rows.count()
    served.respond("a live update, please", conversation=served.other)
    said = page.locator("#timeline > li.type-message").filter(has_text="a live update, please")
    expect(said).to_have_count(2)  # what was said, and the answer quoting it
    expect(said.first).to_be_visible()
    expect(page.locator("#live")).to_contain_text("new event")
    expect(rows).to_have_count(served.get(f"/v1/conversations/{served.other}/context")["events"])
    assert rows.count() > before
    expect(page.locator("svg.chart circle.point")).to_have_count(2)


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server of its own with one conversation of one model request that kept little for the answer (so the
    window and budget lines of its chart are close) and read a long file (so the target tick of the window bar
    crosses the tool output)."""
    root = tmp_path_factory.mktemp("single")
    replica = Replica(str(root / "single.db"), root / "server.log", "--context-window", str(WINDOW))
    try:
        replica.wait_ready()
        with httpx.Client(base_url=replica.url, timeout=60) as http:
            running = Served(replica.url, root / "single.db", http)
            running.conversation = http.post("/v1/conversations", json={}).json()["id"]
            output = "\n".join(f"line {i}: value = compute({i}, 7)" for i in range(260))
            read = [
                {"type": "message", "role": "user", "content": "Read the file"},
                {"type": "function_call", "call_id": "call_1", "name": "read_file", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": output},
                {"type": "message", "role": "user", "content": "What does it say?"},
            ]
            tool = {"type": "function", "name": "read_file", "parameters": {"type": "object", "properties": {}}}
            running.respond(read, conversation=running.conversation, tools=[tool], max_output_tokens=64)
            yield running
    finally:
        assert replica.stop() == 0


@pytest.fixture
def single_page(browser: Browser, single: Served) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=single.url)
    seen = Watched(context.new_page())
    seen.page.on(
        "console", lambda m: seen.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
    )
    seen.page.on("pageerror", lambda error: seen.problems.append(f"uncaught: {error}"))
    try:
        yield seen
        assert seen.problems == []
    finally:
        context.close()


_CONTRAST = """([a, b]) => {
  const rgb = (colour) => colour.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = (colour) => {
    const [r, g, b] = rgb(colour).map((v) => {
      const c = v / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const [hi, lo] = [lum(a), lum(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}"""


def test_line_labels_never_overlap_and_ticks_show_on_every_colour(
    single_page: Watched, single: Served, shots: Path
) -> None:
    page = single_page.page
    page.goto(f"/ui/#/c/{single.conversation}")
    expect(page.locator("#live")).to_contain_text("Live")
    usage = single.get(f"/v1/conversations/{single.conversation}/usage")
    assert usage["context_window"] - usage["budget"] == 64  # the lines are close: their labels must not be
    labels = page.locator("svg.chart g.ref text")
    expect(labels).to_have_count(4)
    found = [labels.nth(i).bounding_box() for i in range(4)]
    boxes = [box for box in found if box is not None]
    assert len(boxes) == 4
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            apart = a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"]
            assert apart or a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"], (a, b)
    svg = page.locator("svg.chart").bounding_box()
    assert svg
    assert all(box["x"] + box["width"] <= svg["x"] + svg["width"] + 1 for box in boxes)  # none cut off

    # each tick of the window bar stands out from whatever colour it crosses (tool output's, for one of them)
    crossed = []
    for name in ("trigger", "target"):
        tick = page.locator(f'svg.breakdown-bar g[data-tick="{name}"]')
        x = float(tick.locator("line.mark").get_attribute("x1") or "nan")
        under = page.evaluate(
            """(x) => {
              const hit = [...document.querySelectorAll('svg.breakdown-bar rect.cat')].find((r) => {
                const left = Number(r.getAttribute('x'));
                return left <= x && x <= left + Number(r.getAttribute('width'));
              });
              const rect = hit || document.querySelector('svg.breakdown-bar rect.free');
              return [rect.dataset.category || 'free', getComputedStyle(rect).fill];
            }""",
            x,
        )
        category, fill = under
        crossed.append(category)
        halo = tick.locator("line.halo").evaluate("(line) => getComputedStyle(line).stroke")
        mark = tick.locator("line.mark").evaluate("(line) => getComputedStyle(line).stroke")
        # seen against what it crosses: by its halo there, or by itself where the halo is as pale as the ground
        seen = max(page.evaluate(_CONTRAST, [halo, fill]), page.evaluate(_CONTRAST, [mark, fill]))
        assert seen >= 3, (name, category, fill, halo, mark)
        assert page.evaluate(_CONTRAST, [mark, halo]) >= 3, (name, mark, halo)
    assert "tool_outputs" in crossed
    page.locator(".panels").screenshot(path=shots / "inspector-close-lines.png")


def test_counts_agree_with_their_nouns(single_page: Watched, single: Served) -> None:
    page = single_page.page
    page.goto("/ui/")
    expect(page.locator("#list-status")).to_have_text("1 conversation.")
    page.get_by_label("Filter").fill(single.conversation[-8:])
    expect(page.locator("#list-status")).to_contain_text("1 of 1 conversation matches")
    page.goto(f"/ui/#/c/{single.conversation}")
    expect(page.locator("#live")).to_contain_text("Live")
    expect(page.locator("#stats")).to_contain_text("1 model request · model test")
    expect(page.locator("#stats")).to_contain_text("0 compactions")
    desc = page.locator("svg.chart desc").text_content() or ""
    assert desc.startswith("1 model request and 0 compactions"), desc
    text = page.locator("main").inner_text()
    assert not re.search(r"(?<![\d,.])1 (items|events|conversations|compactions|model requests|requests)\b", text)


def test_a_missing_conversation_shows_its_error_and_nothing_loading(single_page: Watched, shots: Path) -> None:
    page = single_page.page
    page.goto("/ui/#/c/conv_no_such_conversation")
    expect(page.get_by_role("alert")).to_contain_text("conv_no_such_conversation")
    expect(page.get_by_text("Loading…")).to_have_count(0)
    expect(page.locator("section.panel")).to_have_count(0)  # no empty panels under it
    expect(page.get_by_role("link", name="All conversations")).to_be_visible()
    page.screenshot(path=shots / "inspector-missing.png")
    # the browser reports the 404 on the console; nothing else may be there
    single_page.problems[:] = [p for p in single_page.problems if "status of 404" not in p]


def test_a_server_with_keys_prompts_for_one(watched: Watched, served: Served) -> None:
    """Last: a key switches authentication on for good."""
    created = subprocess.run(
        [sys.executable, "-m", "contextfold", "keys", "create", "--tenant", "default", "--db", str(served.db)],
        capture_output=True,
        text=True,
        check=True,
    )
    secret = re.search(r"^secret\s+(\S+)$", created.stdout, re.M)
    assert secret, created.stdout
    page = watched.page
    page.goto("/ui/")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    page.get_by_role("textbox", name="API key").fill("cf-not-a-key")
    page.get_by_role("button", name="Use key").click()
    expect(dialog).to_contain_text("refused")
    page.get_by_role("textbox", name="API key").fill(secret[1])
    page.get_by_role("button", name="Use key").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("table.conversations tbody tr")).to_have_count(2)
    expect(page.locator("#key-status")).to_contain_text("Using the API key")
    page.get_by_role("link", name=served.conversation).click()
    expect(page.locator("svg.chart circle.point").first).to_be_visible()
    # the browser reports each 401 on the console; nothing else may be there
    watched.problems[:] = [p for p in watched.problems if "status of 401" not in p]
