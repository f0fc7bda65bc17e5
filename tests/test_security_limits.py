"""Size limits as an attacker meets them: bodies over `max_body_bytes` refused with 413 before they are read into
memory, JSON nested thousands deep refused with a clear 400, huge numbers of items and tools, very long strings in
query parameters and paths. Never a 5xx, never a RecursionError in the log.

The 413 is checked against a real process (`contextfold serve` behind uvicorn) over a raw socket: a chunked body
far over the limit is streamed in, and the server must stop reading it (the bytes it took, and its resident memory,
stay far below the body's size). Nothing here is timed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from contextfold.server import Limits, ServerConfig
from contextfold.server.responses._schemas import MAX_JSON_DEPTH

from .processes import Replica
from .server_fixtures import Served, check_anthropic_error, check_error, serving

LIMIT = 1 << 20
"""The body limit of the real process under test: 1 MiB."""
OFFERED = 256 << 20
"""What the client tries to send: 256 MiB, far over the limit and over anything the kernel buffers."""
TOO_DEEP = "[" * 100_000 + "]" * 100_000
MESSAGES = "/v1/messages"
_FAILURE = re.compile(
    r"^(Traceback \(most recent call last\)|RecursionError|.* internal error err_\w+$|.* 5\d\d [\d.]+ms$)"
)
"""A server log line telling of a failure: a traceback, an internal error, a 5xx answered."""


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    """One `contextfold serve` process with a 1 MiB body limit."""
    where = tmp_path_factory.mktemp("limits")
    config = where / "server.toml"
    config.write_text(f"[limits]\nmax_body_bytes = {LIMIT}\n")
    served = Replica(str(where / "limits.db"), where / "server.log", "--config", str(config))
    try:
        served.wait_ready()
        yield served
    finally:
        served.stop()


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


def offer(port: int, head: bytes, *, chunked: bool) -> tuple[int, bytes]:
    """Send `head`, then offer up to OFFERED bytes of body until the server stops taking them; return how many it
    took and what it answered."""
    sent = 0
    answer = b""
    piece = b"x" * (64 << 10)
    frame = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        opening = b'{"model": "test", "input": "'
        sock.sendall(b"%x\r\n%s\r\n" % (len(opening), opening) if chunked else opening)
        with contextlib.suppress(OSError):  # the server closing the connection ends the offer
            while sent < OFFERED:
                sock.sendall(frame)
                sent += len(piece)
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    return sent, answer


def send_refusable(port: int, request: bytes) -> bytes:
    """Send `request` on a new connection and read the answer. A server may refuse a request before it is all
    written and close at once: the rest of the write, or the read, then fails with a reset (the kernel drops the
    answer when the unread request makes the close a reset), and that early close is the refusal. b"" stands for
    it; whether the server is still alive is for the caller to check."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(request + b"host: x\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer


def test_a_server_that_refuses_and_closes_before_the_request_is_written_is_a_refusal() -> None:
    """The machines where the real test failed: the server answered and closed while the request line was still
    being sent. A loopback server that does so every time (reads 64 KiB, answers 431, closes with the rest unread)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def refuse() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\r\n")

        server = threading.Thread(target=refuse)
        server.start()
        try:
            answer = send_refusable(port, b"GET /?q=" + b"x" * (64 << 20) + b" HTTP/1.1\r\n")
        finally:
            server.join(timeout=30)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:200]


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "declared-length"])
@pytest.mark.parametrize("path", ["/v1/responses", "/v1/chat/completions", "/v1/conversations"])
def test_a_huge_body_is_refused_and_no_longer_read(replica: Replica, chunked: bool, path: str) -> None:
    with httpx.Client(base_url=replica.url) as http:  # everything the first requests import, imported
        assert http.post("/v1/responses", json={"model": "test", "input": "warm up"}).status_code == 200
    before = resident_bytes(replica.process.pid)
    length = b"transfer-encoding: chunked" if chunked else b"content-length: %d" % (OFFERED + 30)
    head = b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n%s\r\n\r\n" % (
        path.encode(),
        length,
    )
    sent, answer = offer(replica.port, head, chunked=chunked)
    grown = resident_bytes(replica.process.pid) - before
    status, _, rest = answer.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 413"), answer[:300]
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"connection: close" in headers.lower()
    error = json.loads(body)["error"]
    assert error["code"] == "payload_too_large"
    assert "max_body_bytes" in error["message"]
    # it stopped reading: what it took is the limit plus what the kernel buffers, far below what was offered
    assert sent < OFFERED // 4, f"the server took {sent >> 20} MiB of a body over its {LIMIT >> 20} MiB limit"
    assert grown < 32 << 20, f"the server grew by {grown >> 20} MiB reading a refused body"
    with httpx.Client(base_url=replica.url) as http:  # and it serves on
        assert http.get("/healthz").status_code == 200


def test_the_real_process_survives_deep_json_and_huge_request_lines(replica: Replica) -> None:
    with httpx.Client(base_url=replica.url) as http:
        for path in ("/v1/responses", "/v1/chat/completions", "/v1/conversations", MESSAGES):
            reply = http.post(path, content=TOO_DEEP, headers={"content-type": "application/json"})
            assert reply.status_code == 400, reply.text
            assert "levels deep" in reply.text
    answer = send_refusable(replica.port, b"GET /v1/conversations?after=" + b"x" * (4 << 20) + b" HTTP/1.1\r\n")
    # uvicorn refuses a request line that long itself, answering 4xx or (closing before reading it all) resetting
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:200]
    forged = "2026-01-01 00:00:00,000 ERROR   contextfold.server: forged"
    with httpx.Client(base_url=replica.url) as http:
        assert http.get(f"/v1/conversations/x%0A{forged}").status_code == 404
        assert http.get("/healthz").status_code == 200
    assert not [line for line in replica.output().splitlines() if line.startswith(forged)]  # no line of its own
    failures = [line for line in replica.output().splitlines() if _FAILURE.match(line)]
    assert not failures, failures


# --- in-process: every route ------------------------------------------------------------------------------------


@pytest.fixture
async def small(tmp_path: Path) -> Any:
    async with serving(ServerConfig(db=str(tmp_path / "s.db"), limits=Limits(max_body_bytes=10_000))) as served:
        yield served


def post_routes(served: Served) -> list[str]:
    """Every POST route of the app's OpenAPI document that takes a JSON body, with any path parameter filled in (a
    body too large or too deep is refused before the route looks at it; a route that takes none never reads one)."""
    paths = served.app.openapi()["paths"]
    routes = [path for path, operations in paths.items() if "post" in operations and _json_body(operations["post"])]
    return [path.replace("{conversation_id}", "conv_x").replace("{response_id}", "resp_x") for path in routes]


def _json_body(operation: dict[str, Any]) -> bool:
    """A file upload takes multipart, not JSON, under its own limit (tests/test_server_files.py checks it); a cancel
    takes no body at all."""
    return "application/json" in operation.get("requestBody", {}).get("content", {})


def check_refusal(reply: httpx.Response, status: int, path: str) -> str:
    if path == MESSAGES:
        return check_anthropic_error(reply, status)
    return check_error(reply, status)


async def test_every_route_refuses_a_body_over_the_limit(small: Served) -> None:
    big = json.dumps({"model": "test", "input": "x" * 20_000})

    async def chunks() -> Any:
        for start in range(0, len(big), 1_000):
            yield big[start : start + 1_000].encode()

    for path in post_routes(small):
        for content in (big, chunks()):
            reply = await small.http.post(path, content=content, headers={"content-type": "application/json"})
            assert "max_body_bytes" in check_refusal(reply, 413, path), path
            assert reply.headers["connection"] == "close"


async def test_deep_json_is_a_clear_400_on_every_route(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    nested = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
    for path in post_routes(served):
        for body in (TOO_DEEP, '{"model": "test", "input": ' + TOO_DEEP + "}", '{"tools": ' + nested + "}"):
            reply = await served.http.post(path, content=body, headers={"content-type": "application/json"})
            message = check_refusal(reply, 400, path)
            assert f"more than {MAX_JSON_DEPTH} levels deep" in message, (path, message)
            if body.startswith('{"tools"') and path != MESSAGES:
                assert reply.json()["error"]["param"] == "tools", (path, reply.text)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_nesting_up_to_the_limit_is_served(served: Served) -> None:
    def schema(levels: int) -> dict[str, Any]:
        inner: dict[str, Any] = {"type": "string"}
        for _ in range(levels):
            inner = {"type": "object", "properties": {"x": inner}}
        return inner

    # a body, its tools list, a tool, its parameters: then each schema level is two more (properties, the schema)
    fits = schema((MAX_JSON_DEPTH - 4) // 2)
    tool = {"type": "function", "name": "deep", "parameters": fits}
    response = await served.respond(input="hi", tools=[tool])
    assert response["tools"][0]["parameters"] == fits
    over = {**tool, "parameters": {"wrap": schema((MAX_JSON_DEPTH - 4) // 2)}}
    reply = await served.http.post("/v1/responses", json={"model": "test", "input": "hi", "tools": [over]})
    check_error(reply, 400, param="tools")
    # arguments are strings, whatever JSON they hold: nested thousands deep, they are stored and keyed as text
    deep = "[" * 5_000 + "]" * 5_000
    call = {"id": "call_1", "type": "function", "function": {"name": "deep", "arguments": deep}}
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "done"},
    ]
    chat_tool = {"type": "function", "function": {"name": "deep", "parameters": {"type": "object"}}}
    reply = await served.http.post(
        "/v1/chat/completions", json={"model": "test", "messages": messages, "tools": [chat_tool]}
    )
    assert reply.status_code == 200, reply.text


async def test_huge_numbers_of_items_and_tools_are_refused_by_name(served: Served) -> None:
    limit = Limits().max_items_per_request
    items = [{"role": "user", "content": f"m{n}"} for n in range(limit + 1)]
    conversation = (await served.post("/v1/conversations", json={}))["id"]
    for path, body, param in [
        ("/v1/responses", {"model": "test", "input": items}, "input"),
        ("/v1/conversations", {"items": items}, "items"),
        (f"/v1/conversations/{conversation}/items", {"items": items}, "items"),
        ("/v1/chat/completions", {"model": "test", "messages": items}, "messages"),
    ]:
        reply = await served.http.post(path, json=body)
        assert str(limit) in check_error(reply, 413, code="payload_too_large", param=param), path
    reply = await served.http.post(MESSAGES, json={"model": "test", "max_tokens": 10, "messages": items})
    assert str(limit) in check_anthropic_error(reply, 413)
    # a history longer than the store's anchor lookups take at once is matched in batches, not refused for it
    history: list[dict[str, Any]] = []
    for n in range(6_000):
        history += [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}]
    history.append({"role": "user", "content": "and now?"})
    reply = await served.http.post("/v1/chat/completions", json={"model": "test", "messages": history})
    assert "new messages are over the limit" in check_error(reply, 413, param="messages")
    # thousands of tools: counted against the window, refused as too large for it (a 400 naming the input)
    tools = [{"type": "function", "name": f"tool_{n}", "parameters": {"type": "object"}} for n in range(5_000)]
    reply = await served.http.post("/v1/responses", json={"model": "test", "input": "hi", "tools": tools})
    check_error(reply, 400, code="context_length_exceeded")
    parts = [{"type": "input_text", "text": "x"}] * 50_000
    reply = await served.http.post(
        "/v1/responses", json={"model": "test", "input": [{"role": "user", "content": parts}]}
    )
    check_error(reply, 400, code="context_length_exceeded")


async def test_very_long_strings_in_query_parameters_and_paths(served: Served) -> None:
    made = await served.respond(input="hello")
    conversation, response = made["conversation"]["id"], made["id"]
    long = "x" * 60_000  # (what a client can put in a URL; uvicorn refuses longer request lines itself)
    probes: list[tuple[str, dict[str, str], int, str | None]] = [
        ("/v1/conversations", {"after": long}, 404, None),
        (f"/v1/conversations/{conversation}/items", {"after": long}, 400, "after"),
        (f"/v1/conversations/{conversation}/search", {"q": long}, 400, "q"),
        (f"/v1/conversations/{conversation}/context", {"model": long}, 400, None),
        (f"/v1/conversations/{conversation}/usage", {"model": long}, 400, None),
        (f"/v1/conversations/{conversation}/events", {"after": "9" * 5_000}, 400, "after"),
        (f"/v1/conversations/{conversation}/items", {"limit": "9" * 5_000}, 400, "limit"),
        (f"/v1/responses/{response}/input_items", {"after": long}, 400, "after"),
        (f"/v1/responses/{response}", {"starting_after": "9" * 5_000}, 400, "starting_after"),
        (f"/v1/conversations/{long}", {}, 404, None),
        (f"/v1/responses/{long}/input_items", {}, 404, None),
        (f"/v1/conversations/{conversation}/items/{long}", {}, 404, "item_id"),
    ]
    for path, params, status, param in probes:
        reply = await served.http.get(path, params=params)
        check_error(reply, status, param=param)
    reply = await served.http.post("/v1/responses", json={"model": long, "input": "hi"})
    check_error(reply, 400)
