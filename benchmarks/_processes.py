"""The processes the latency sections measure, each a real process on loopback: the zero-latency fake upstream, the
floor pass-through, `contextfold serve`, and (in `benchmarks.versus`) the peer proxies.

Each context manager yields a `Proc` (its base URL and process id, for /proc readings) and stops the process on exit.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / "benchmarks" / "results" / "logs"
WINDOW = 32_000
"""The context window `contextfold serve` runs with here: small enough that long conversations compact."""


@dataclass(frozen=True)
class Proc:
    url: str
    pid: int


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def upstream_process() -> Iterator[str]:
    """The zero-latency fake upstream (`_upstream.py`), in its own process; its base URL, ending in /v1."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._upstream", str(port)], cwd=ROOT, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()  # "ready"
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


@contextmanager
def spawned(
    name: str,
    command: Sequence[str],
    health: str,
    *,
    port: int,
    env: Mapping[str, str] | None = None,
    cwd: Path = ROOT,
    log: Path | None = None,
    seconds: float = 120,
) -> Iterator[Proc]:
    """`command` started and polled at `health` (a path on 127.0.0.1:`port`) until it answers 200.

    Its output goes to `log`, which is removed again when the run ends cleanly (kept when something failed).
    """
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
    out: IO[bytes] | int = log.open("wb") if log else subprocess.DEVNULL
    failed = True
    process = subprocess.Popen(
        list(command), cwd=cwd, env=dict(env or os.environ), stdout=out, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + seconds
        while True:
            try:
                if httpx.get(url + health, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                where = f"; its log: {log}" if log else ""
                raise RuntimeError(f"{name} did not start (exit code {process.poll()}){where}")
            time.sleep(0.1)
        yield Proc(url, process.pid)
        failed = False
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if not isinstance(out, int):
            out.close()
        if log and not failed:
            log.unlink(missing_ok=True)


@contextmanager
def floor_process(upstream: str) -> Iterator[Proc]:
    """The floor pass-through (`_floor.py`) in front of `upstream` (a base URL ending in /v1); its URL has no /v1."""
    port = _free_port()
    base = upstream.removesuffix("/v1")  # the floor forwards the client's path, /v1 included
    command = [sys.executable, "-m", "benchmarks._floor", base, str(port)]
    with spawned("the floor pass-through", command, "/v1/models", port=port) as proc:
        yield proc


@contextmanager
def serving(db: str, upstream: str, *flags: str, window: int = WINDOW) -> Iterator[Proc]:
    """`python -m contextfold serve` on `db` (a SQLite path or a PostgreSQL URL) in front of `upstream`."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "contextfold", "serve", "--port", str(port), "--db", db]
    command += ["--upstream", upstream, "--model", "bench", "--context-window", str(window), "--log-level", "warning"]
    command += flags
    log = LOGS / f"contextfold-{port}.log"
    with spawned("contextfold serve", command, "/healthz", port=port, env=env, log=log) as proc:
        yield proc


@contextmanager
def serve_process(db: str, upstream: str, *flags: str) -> Iterator[str]:
    """`serving`, yielding only the URL (what the sections that need no /proc readings use)."""
    with serving(db, upstream, *flags) as proc:
        yield proc.url
