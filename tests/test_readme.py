"""The README's library example runs as written."""

from __future__ import annotations

import os
import re
import runpy
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
    (block,) = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    assert len(block.strip().splitlines()) == 2
