"""The examples in docs/ run as written and print what the docs say they print."""

from __future__ import annotations

import os
import re
import runpy
from pathlib import Path

import pytest

AGENTS = Path(__file__).parent.parent / "docs" / "agents.md"


def run_block(code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code)
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        os.chdir(cwd)


def test_the_agent_example_runs_and_prints_what_the_docs_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = AGENTS.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    (shown,) = re.findall(r"It prints:\n\n```\n(.*?)```", text, re.S)
    run_block(blocks[0], tmp_path)
    assert capsys.readouterr().out == shown
    assert (tmp_path / "agent-example.db").exists()


def test_the_blocking_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", AGENTS.read_text(), re.S)
    run_block(blocks[1], tmp_path)
    assert capsys.readouterr().out == "Hi!\n"
