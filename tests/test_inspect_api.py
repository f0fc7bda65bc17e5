"""The inspector's JSON (`/events`, `/usage`) and its static files at `/ui`, in-process.

`/events` gives every event of the log with how it stands in the view now: checked against the view itself for
generated sessions (every state, any page size), and for one session that has every state at once. `/usage` is
checked against the log and against `/context`. Both are behind the keys like every extension. The static files are
served with a strict CSP, hold no inline code, and never build markup from text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contextfold import Conversation
from contextfold.events import Compaction, Message, Reasoning, ToolCall, ToolResult, TurnMarker, Usage, encode, new_id
from contextfold.server import ServerConfig
from contextfold.server.inspect._ui import CSP, UI_DIR

from .server_fixtures import Served, check_error, function_tool, serving

WINDOW = 4_096
"""Small enough that a few turns of the `test` model compact."""
READ_FILE = function_tool("read_file", path={"type": "string"})


def small_window(tmp_path: Path) -> ServerConfig:
    # Inline compaction only: `every_state` reads where a turn's own compaction lands (before the answer it then
    # deletes); one off the request path would land after that answer, whenever it commits.
    return ServerConfig(db=str(tmp_path / "inspect.db"), context_window=WINDOW, compact_background=False)


async def turn(served: Served, conversation: str, given: Any, *, refusable: bool = False, **body: Any) -> Any:
    """One response; with `refusable`, a 400 for a view that cannot fit (pins can leave no room) is None."""
    request = {"model": "test", "input": given, "conversation": conversation, **body}
    reply = await served.http.post("/v1/responses", json=request)
    if refusable and reply.status_code == 400:
        assert reply.json()["error"]["code"] == "context_length_exceeded", reply.text
        return None
    assert reply.status_code == 200, reply.text
    return reply.json()


async def tool_round(served: Served, conversation: str, n: int, *, lines: int = 45, refusable: bool = False) -> None:
    """The model reads a file (a client tool): its call, then our output for it."""
    asked = f'/tool read_file {{"path": "src/mod{n}.py"}}'
    called = await turn(served, conversation, asked, refusable=refusable, tools=[READ_FILE])
    if called is None:
        return
    call_id = next(item["call_id"] for item in called["output"] if item["type"] == "function_call")
    output = "\n".join(f"line {i}: value = compute({i}, {n})" for i in range(lines))
    answer = {"type": "function_call_output", "call_id": call_id, "output": f"# src/mod{n}.py\n{output}"}
    await turn(served, conversation, [answer], refusable=refusable, tools=[READ_FILE])


async def failed_turn(served: Served, conversation: str) -> None:
    await served.post(
        "/v1/responses", json={"model": "test", "input": "/fail 503", "conversation": conversation}, status=502
    )


async def every_state(served: Served) -> str:
    """A session whose log has an event in every state: long answers (folded into a summary), a failed turn, file
    reads (their old outputs masked), and a deleted answer."""
    conversation: str = (await served.post("/v1/conversations", json={"metadata": {"task": "ZX-4127"}}))["id"]
    await served.respond(input="Fix the failing build of ticket ZX-4127", conversation=conversation)
    await served.turns(conversation, 6, words=120)
    await failed_turn(served, conversation)
    for n in range(40):  # until an old output is masked (the ninth read does it, with today's policy)
        await tool_round(served, conversation, n, lines=30)
        if any(e["state"] == "masked" for e in await all_events(served, conversation)):
            break
    last = (await served.get(f"/v1/conversations/{conversation}/items", limit=1))["data"][0]
    await served.delete(f"/v1/conversations/{conversation}/items/{last['id']}")
    return conversation


async def all_events(served: Served, conversation: str, *, limit: int = 1_000) -> list[dict[str, Any]]:
    """Every event, page by page with `after=` the last seq seen."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await served.get(f"/v1/conversations/{conversation}/events", after=after, limit=limit)
        assert page["object"] == "list"
        assert len(page["data"]) <= limit
        events += page["data"]
        assert page["last_seq"] == (page["data"][-1]["seq"] if page["data"] else after)
        assert page["has_more"] == (page["last_seq"] < page["head"])
        if not page["has_more"]:
            return events
        after = page["last_seq"]


async def check_states(served: Served, conversation: str, events: list[dict[str, Any]]) -> None:
    """Each event is the codec's JSON plus its state, and the states say what the view holds."""
    log = await served.store.read(conversation)
    view = (await Conversation.load(served.store, conversation)).view
    assert [e["seq"] for e in events] == [e.seq for e in log] == list(range(1, view.head + 1))
    failed = {e.turn_id for e in log if isinstance(e, TurnMarker) and e.status in ("failed", "interrupted")}
    for shown, event in zip(events, log, strict=True):
        assert {k: v for k, v in shown.items() if k != "state"} == json.loads(encode(event))
        state = shown["state"]
        if not isinstance(event, (Message, ToolCall, ToolResult, Reasoning)):
            assert state == "marker"
        elif event.seq in view.items:
            assert state == ("masked" if event.seq in view.masked else "in_view")
        elif event.redacted:
            assert state == "erased"
        elif event.turn_id in failed:
            assert state == "failed"
        else:
            assert state == "folded"


async def test_events_have_every_state_and_page_alike(tmp_path: Path) -> None:
    async with serving(small_window(tmp_path)) as served:
        conversation = await every_state(served)
        events = await all_events(served, conversation)
        assert {e["state"] for e in events} == {"in_view", "masked", "folded", "failed", "erased", "marker"}
        await check_states(served, conversation, events)
        for limit in range(1, 13):  # a turn's end marker on a later page still makes its items failed
            assert await all_events(served, conversation, limit=limit) == events
        page = await served.get(f"/v1/conversations/{conversation}/events")
        assert page["pinned"] == []
        compaction = next(e for e in events if e["type"] == "compaction" and e["strategy"] == "summary")
        assert compaction["summary"]
        assert compaction["covers"]
        assert compaction["tokens_before"] > compaction["tokens_after"] > 0


async def test_a_poll_with_nothing_new_is_empty(tmp_path: Path) -> None:
    async with serving(small_window(tmp_path)) as served:
        conversation = (await served.respond(input="hello"))["conversation"]["id"]
        head = (await served.store.conversations.get(conversation)).head
        for after in (head, head + 5):
            page = await served.get(f"/v1/conversations/{conversation}/events", after=after)
            assert page == {
                "object": "list",
                "data": [],
                "head": head,
                "last_seq": after,
                "has_more": False,
                "pinned": None,
            }
        await served.respond(input="again", conversation=conversation)
        fresh = await served.get(f"/v1/conversations/{conversation}/events", after=head)
        assert [e["seq"] for e in fresh["data"]] == list(range(head + 1, fresh["head"] + 1))
        assert [e["type"] for e in fresh["data"]][:2] == ["turn", "message"]
        for bad in ({"after": -1}, {"limit": 0}, {"limit": 1_001}):
            check_error(await served.http.get(f"/v1/conversations/{conversation}/events", params=bad), 400)


async def test_pins_are_listed(tmp_path: Path) -> None:
    async with serving(small_window(tmp_path)) as served:
        conversation = (await served.respond(input="remember ZX-4127"))["conversation"]["id"]
        item = (await served.get(f"/v1/conversations/{conversation}/items", order="asc"))["data"][0]
        pinned = await served.post(f"/v1/conversations/{conversation}/pins", json={"item_id": item["id"]})
        page = await served.get(f"/v1/conversations/{conversation}/events")
        assert page["pinned"] == pinned["targets"]
        assert page["data"][-1]["type"] == "pin"
        assert page["data"][-1]["state"] == "marker"


Action = tuple[str, int]
ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("long"), st.integers(20, 160)),
        st.tuples(st.just("tool"), st.integers(2, 50)),
        st.tuples(st.just("fail"), st.just(0)),
        st.tuples(st.just("delete"), st.integers(0, 5)),
        st.tuples(st.just("pin"), st.integers(0, 5)),
    ),
    min_size=1,
    max_size=14,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS, limit=st.integers(1, 40))
async def test_states_say_what_the_view_holds_for_any_session(
    tmp_path: Path, actions: list[Action], limit: int
) -> None:
    config = ServerConfig(db=str(tmp_path / f"{new_id('db')}.db"), context_window=WINDOW)  # one per example
    async with serving(config) as served:
        conversation = (await served.post("/v1/conversations", json={}))["id"]
        for n, (kind, size) in enumerate(actions):
            if kind == "long":
                await turn(served, conversation, f"/long {size}", refusable=True)
            elif kind == "tool":
                await tool_round(served, conversation, n, lines=size, refusable=True)
            elif kind == "fail":
                await failed_turn(served, conversation)
            else:
                items = (await served.get(f"/v1/conversations/{conversation}/items", limit=6))["data"]
                if len(items) > size:
                    target = items[size]["id"]
                    if kind == "delete":
                        await served.delete(f"/v1/conversations/{conversation}/items/{target}")
                    else:  # a folded item cannot be pinned: 400, and the log is as it was
                        pin = {"item_id": target}
                        reply = await served.http.post(f"/v1/conversations/{conversation}/pins", json=pin)
                        assert reply.status_code in (200, 400), reply.text
        events = await all_events(served, conversation, limit=limit)
        await check_states(served, conversation, events)


async def test_usage_has_every_request_and_compaction_and_the_lines_of_context(tmp_path: Path) -> None:
    async with serving(small_window(tmp_path)) as served:
        conversation = await every_state(served)
        usage = await served.get(f"/v1/conversations/{conversation}/usage")
        context = await served.get(f"/v1/conversations/{conversation}/context")
        log = await served.store.read(conversation)
        requests = [e for e in log if isinstance(e, Usage)]
        compactions = [e for e in log if isinstance(e, Compaction)]
        assert usage["object"] == "conversation.usage"
        assert usage["model"] == context["model"] == "test"
        assert usage["context_window"] == context["context_window"] == WINDOW
        assert usage["budget"] == context["budget"]
        assert usage["reserved_output_tokens"] == context["reserved_output_tokens"]
        assert usage["trigger_tokens"] == context["compaction"]["trigger_tokens"]
        assert usage["target_tokens"] == context["compaction"]["target_tokens"]
        assert [r["seq"] for r in usage["requests"]] == [e.seq for e in requests]
        assert [r["input_tokens"] for r in usage["requests"]] == [e.input_tokens for e in requests]
        assert [r["estimated_input_tokens"] for r in usage["requests"]] == [e.estimated_input_tokens for e in requests]
        assert len(usage["requests"]) == context["totals"]["requests"]
        assert [c["seq"] for c in usage["compactions"]] == [e.seq for e in compactions]
        assert len(compactions) >= 2
        for shown, event in zip(usage["compactions"], compactions, strict=True):
            assert shown["tokens_before"] == event.tokens_before
            assert shown["tokens_after"] == event.tokens_after
            assert shown["strategy"] == event.strategy
            assert shown["after_request"] == sum(1 for r in requests if r.seq < event.seq)
        assert max(r["input_tokens"] for r in usage["requests"]) <= usage["budget"]
        empty = (await served.post("/v1/conversations", json={}))["id"]
        nothing = await served.get(f"/v1/conversations/{empty}/usage")
        assert nothing["requests"] == nothing["compactions"] == []
        check_error(await served.http.get(f"/v1/conversations/{empty}/usage", params={"model": "nope"}), 400)


async def test_a_server_with_another_window_shows_the_window_the_conversation_ran_with(tmp_path: Path) -> None:
    async with serving(small_window(tmp_path)) as served:
        conversation = await every_state(served)
        ran = await served.get(f"/v1/conversations/{conversation}/context")
    # reopened with another window (the default one): the log says what the requests were made against
    async with serving(ServerConfig(db=str(tmp_path / "inspect.db"), context_window=4 * WINDOW)) as served:
        usage = await served.get(f"/v1/conversations/{conversation}/usage")
        context = await served.get(f"/v1/conversations/{conversation}/context")
        assert usage["context_window"] == context["context_window"] == WINDOW
        assert usage["budget"] == context["budget"] == ran["budget"]
        assert usage["trigger_tokens"] == context["compaction"]["trigger_tokens"] == ran["compaction"]["trigger_tokens"]
        assert context["utilisation"] == ran["utilisation"]
        assert {(r["context_window"], r["budget"]) for r in usage["requests"]} == {(WINDOW, ran["budget"])}
        assert max(r["input_tokens"] for r in usage["requests"]) <= usage["budget"]
        # naming a model measures against that model's window: what the next request to it would have
        named = await served.get(f"/v1/conversations/{conversation}/context", model="test")
        assert (
            named["context_window"]
            == (await served.get(f"/v1/conversations/{conversation}/usage", model="test"))["context_window"]
            == 4 * WINDOW
        )


async def test_a_log_from_before_windows_were_recorded_is_measured_against_the_servers_model(tmp_path: Path) -> None:
    async with serving(small_window(tmp_path)) as served:
        conversation = (await served.post("/v1/conversations", json={}))["id"]
        old = Usage(model="test", input_tokens=900, output_tokens=20)  # as written before the window was recorded
        await (await Conversation.load(served.store, conversation)).append(
            Message(role="user", content=[], tokens=5), old
        )
        usage = await served.get(f"/v1/conversations/{conversation}/usage")
        context = await served.get(f"/v1/conversations/{conversation}/context")
        assert usage["context_window"] == context["context_window"] == WINDOW
        assert usage["requests"][0]["context_window"] is usage["requests"][0]["budget"] is None
        assert usage["budget"] == context["budget"]


async def test_another_tenants_conversation_is_missing(tmp_path: Path) -> None:
    async with serving(small_window(tmp_path)) as served:
        acme_secret, _ = await served.store.keys.create("acme")
        globex_secret, _ = await served.store.keys.create("globex")
        acme, globex = await served.as_key(acme_secret), await served.as_key(globex_secret)
        conversation = (await acme.respond(input="hello"))["conversation"]["id"]
        for path in ("events", "usage"):
            assert (await acme.http.get(f"/v1/conversations/{conversation}/{path}")).status_code == 200
            check_error(await globex.http.get(f"/v1/conversations/{conversation}/{path}"), 404, code="not_found")
            check_error(await served.http.get(f"/v1/conversations/{conversation}/{path}"), 401)


# --- the static files ------------------------------------------------------------------------------------------


async def test_ui_is_served_with_a_strict_policy(served: Served) -> None:
    moved = await served.http.get("/ui")
    assert moved.status_code == 308
    assert moved.headers["location"] == "/ui/"
    index = await served.http.get("/ui/")
    assert index.status_code == 200
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    assert index.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP
    assert "unsafe" not in CSP
    assert index.headers["x-content-type-options"] == "nosniff"
    script = await served.http.get("/ui/app.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["content-security-policy"] == CSP
    again = await served.http.get("/ui/app.js", headers={"if-none-match": script.headers["etag"]})
    assert again.status_code == 304
    for missing in ("/ui/nothing.js", "/ui/..%2Fserver%2F_ui.py", "/ui/.hidden.js", "/ui/_ui.py"):
        assert (await served.http.get(missing)).status_code == 404, missing


async def test_ui_needs_no_key_but_its_api_does(tmp_path: Path) -> None:
    async with serving(small_window(tmp_path)) as served:
        await served.store.keys.create("acme")
        assert (await served.http.get("/ui/")).status_code == 200
        assert (await served.http.get("/ui/api.js")).status_code == 200
        check_error(await served.http.get("/v1/conversations"), 401)


def test_ui_files_hold_no_inline_code_and_build_no_markup_from_text() -> None:
    files = {path.name: path.read_text() for path in UI_DIR.iterdir()}
    index = files["index.html"]
    assert re.findall(r"<script\b[^>]*>", index) == ['<script type="module" src="app.js">']
    assert "<style" not in index
    assert " style=" not in index
    assert not re.search(r"\son[a-z]+=", index)  # no inline event handlers
    assert not re.search(r"(src|href)=\"(https?:)?//", index)  # nothing remote
    for name, text in files.items():
        if name.endswith(".js"):
            for risky in ("innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "new Function", "document.write"):
                assert risky not in text, f"{name} uses {risky}"
            assert set(re.findall(r"https?://[^'\"\s)]+", text)) <= {"http://www.w3.org/2000/svg"}  # a namespace
            for imported in re.findall(r"from '\./([\w.-]+)'", text):
                assert imported in files, f"{name} imports {imported}, which is not shipped"
        if name.endswith(".css"):
            assert "@import" not in text
            assert "url(" not in text
