"""The `contextfold` command: the main job runs end to end on a real store; mistakes exit 2 with a clear message."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from contextfold.cli import main


def test_simulate_runs_a_long_session_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--db", str(tmp_path / "sim.db"), "--turns", "120", "--window", "16000"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"fact from turn 3 recalled +yes", out)
    assert re.search(r"^turns +120$", out, re.M)
    peak = int(out.split("peak window utilisation")[1].split("%")[0])
    assert peak <= 100


def test_simulate_refuses_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--turns", "3", "--db", ":memory:"]) == 2
    assert "--turns must be at least 10" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "contextfold", "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert done.stdout.startswith("contextfold ")


def test_the_suite_cannot_reach_beyond_loopback() -> None:
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError, match="only use loopback"):
        sock.connect(("203.0.113.7", 443))
