"""The HTTP edge as an attacker meets it, against a real `contextfold serve` process (issue 14, items 9 and 10):
junk methods and paths sent without a key leave `/metrics` with a bounded number of series, and a request head
(request line and headers) over `max_header_bytes` is refused with 431 before it is read into memory, by the
httptools parser the server runs with and by h11. Nothing here is timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from contextfold.server import ServerConfig, create_app
from contextfold.server.edge._http import _h11, protocol

from .processes import Replica
from .test_security_limits import resident_bytes

HEAD_LIMIT = 16 << 10
OFFERED = 100 << 20
"""What the client tries to send as one header: 100 MB, as in the finding."""


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    where = tmp_path_factory.mktemp("edge")
    served = Replica(str(where / "edge.db"), where / "server.log", "--max-header-bytes", str(HEAD_LIMIT))
    try:
        served.wait_ready()
        yield served
    finally:
        served.stop()


def series(url: str) -> int:
    """The number of samples `/metrics` renders (each labelled series, each histogram bucket)."""
    text = httpx.get(f"{url}/metrics").text
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


DAV = ("PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "REPORT", "PURGE", "LINK")
"""Methods every parser accepts (httptools refuses tokens it does not know with a 400 of its own; h11 takes any)."""


def flood(url: str, count: int) -> None:
    """`count` each of requests with junk methods and paths, sent without a key."""
    with httpx.Client(base_url=url) as http:
        for n in range(count):
            http.request(f"M{n}X", "/v1/responses")
            http.request(DAV[n % len(DAV)], f"/random/{n}/path")
            http.request(DAV[n % len(DAV)], f"/v1/conversations/conv_{n}")
            http.get(f"/v1/conversations/conv_junk_{n}")
            http.get(f"/v1/responses/resp_{n}/input_items")
            http.get(f"/nothing/here/{n}")


def measure(url: str) -> tuple[int, int]:
    """The series `/metrics` has once every kind of junk request was seen, and after 12,000 more of them."""
    flood(url, len(DAV))
    series(url)  # a scrape counts itself in the next one
    before = series(url)
    flood(url, 2_000)
    return before, series(url)


def check_bounded(url: str, before: int, after: int) -> None:
    assert after - before < 5, f"{after - before} new series after 12,000 junk requests"
    text = httpx.get(f"{url}/metrics").text
    assert 'method="other"' in text
    assert 'route="unmatched"' in text
    assert 'route="/v1/conversations/{conversation_id}"' in text  # the template, not the raw path
    assert "conv_junk_" not in text
    assert "M17X" not in text
    assert "PROPFIND" not in text


def test_junk_methods_and_paths_leave_the_metrics_series_bounded(replica: Replica) -> None:
    check_bounded(replica.url, *measure(replica.url))


async def test_junk_methods_h11_takes_leave_the_series_bounded_too(tmp_path: Path) -> None:
    async with h11_server(tmp_path) as port:
        url = f"http://127.0.0.1:{port}"
        before, after = await asyncio.to_thread(measure, url)
        await asyncio.to_thread(check_bounded, url, before, after)


def offer_header(port: int, limit: int = OFFERED) -> tuple[int, bytes]:
    """Send a request whose one header grows to `limit` bytes, reading any answer as it comes (as an HTTP client
    does); stop sending once the server answers or stops taking bytes. Returns what was sent and the answer."""
    sent, answer = 0, b""
    piece = b"a" * (64 << 10)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: ")
        with contextlib.suppress(OSError):
            while sent < limit:
                if select.select([sock], [], [], 0)[0]:
                    break  # the server answered: a client reads it rather than sending on
                sock.sendall(piece)
                sent += len(piece)
            else:
                sock.sendall(b"\r\n\r\n")
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    return sent, answer


def check_431(answer: bytes, limit: int) -> None:
    status, _, rest = answer.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 431"), answer[:300]
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"connection: close" in headers.lower()
    error = json.loads(body)["error"]
    assert error["code"] == "request_header_fields_too_large"
    assert "max_header_bytes" in error["message"]
    assert str(limit) in error["message"]


def test_a_huge_header_is_refused_with_431_before_it_is_read(replica: Replica) -> None:
    with httpx.Client(base_url=replica.url) as http:
        assert http.get("/healthz", headers={"x-fits": "a" * (HEAD_LIMIT // 2)}).status_code == 200
    before = resident_bytes(replica.process.pid)
    sent, answer = offer_header(replica.port)
    grown = resident_bytes(replica.process.pid) - before
    check_431(answer, HEAD_LIMIT)
    assert sent < OFFERED // 10, f"the server took {sent >> 20} MiB of a header over its {HEAD_LIMIT}-byte limit"
    assert grown < 16 << 20, f"the server grew by {grown >> 20} MiB reading a refused header"
    with httpx.Client(base_url=replica.url) as http:  # and it serves on, keep-alive requests too
        for _ in range(3):
            assert http.get("/healthz").status_code == 200
    with socket.create_connection(("127.0.0.1", replica.port), timeout=30) as sock:  # a long request line too
        sock.sendall(b"GET /v1/conversations?after=" + b"x" * (4 << 20) + b" HTTP/1.1\r\nhost: x\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]


def test_the_server_runs_the_httptools_parser() -> None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    assert issubclass(protocol(HEAD_LIMIT), HttpToolsProtocol)  # its speed kept: the bound is a thin subclass


@contextlib.asynccontextmanager
async def h11_server(tmp_path: Path) -> AsyncIterator[int]:
    app = create_app(ServerConfig(db=str(tmp_path / "s.db")))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=_h11(HEAD_LIMIT), log_config=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        await task


async def test_h11_refuses_a_huge_header_with_431_too(tmp_path: Path) -> None:
    async with h11_server(tmp_path) as port:
        sent, answer = await asyncio.to_thread(offer_header, port, 8 << 20)
        check_431(answer, HEAD_LIMIT)
        assert sent < 8 << 20
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            fits = await http.get("/healthz", headers={"x-fits": "a" * (HEAD_LIMIT // 2)})
            assert fits.status_code == 200
