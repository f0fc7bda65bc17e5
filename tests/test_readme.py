"""The README's library example runs as written."""

from __future__ import annotations

import os
import re
import runpy
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"


def test_readme_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = README.read_text().split("## The engine underneath", 1)[1]  # the agent sketch runs in test_docs
    code = re.findall(r"```python\n(.*?)```", engine, re.S)[0]
    script = tmp_path / "example.py"
    script.write_text(code)
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        os.chdir(cwd)
    first, second = capsys.readouterr().out.splitlines()
    assert first.startswith("False ")
    assert int(second) == 1
    assert (tmp_path / "contextfold.db").exists()


def test_readme_first_screen_has_exactly_two_setup_commands() -> None:
    first_screen = README.read_text().split("---", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", first_screen, re.S)
    assert len(block.strip().splitlines()) == 2


def test_readme_server_example_runs_against_the_server(tmp_path: Path) -> None:
    """The first screen's SDK snippet, against `python -m contextfold serve` started as the README says."""
    first_screen = README.read_text().split("---", 1)[0]
    code = re.findall(r"```python\n(.*?)```", first_screen, re.S)[0]
    port = _free_port()
    code = code.replace("127.0.0.1:8400", f"127.0.0.1:{port}")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent / "src")}
    server = subprocess.Popen(
        [sys.executable, "-m", "contextfold", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_until_healthy(port, server)
        script = tmp_path / "client.py"
        script.write_text(code)
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert 'You said: "Hello!"' in done.stdout
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
        if server.stderr is not None:
            server.stderr.close()
    assert (tmp_path / "contextfold.db").exists()  # the default database, in the directory it was started from


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_healthy(port: int, server: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if server.poll() is not None:
            raise AssertionError(f"the server exited: {server.stderr.read().decode() if server.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                if b"200" in conn.recv(64):
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the server did not become healthy")
