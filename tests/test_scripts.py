"""scripts/test.sh runs the suite with the Python that has the dev tools, whether or not its virtual environment is
activated: not whatever `python3` is first on PATH (a `No module named ruff` for someone whose venv is not active)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _without_tools(tmp_path: Path) -> Path:
    """A directory whose `python3` is an interpreter without the dev tools (it fails every import)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python3 = bin_dir / "python3"
    python3.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'ruff'\" >&2\nexit 1\n")
    python3.chmod(0o755)
    return bin_dir


def _pick(root: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = 'source "$1/scripts/python.sh" && pick_python "$2"'
    return subprocess.run(
        ["bash", "-c", script, "pick", str(ROOT), str(root)], capture_output=True, text=True, env=env, check=False
    )


def _env(bin_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV")}
    return {**env, "PATH": f"{bin_dir}:/usr/bin:/bin", **extra}


def test_a_virtual_environment_in_the_checkout_is_used_without_being_activated(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / ".venv" / "bin" / "python").symlink_to(sys.executable)  # the interpreter that has the tools
    picked = _pick(checkout, _env(_without_tools(tmp_path)))
    assert picked.returncode == 0, picked.stderr
    assert picked.stdout.strip() == str(checkout / ".venv" / "bin" / "python")


def test_python_chooses_the_interpreter(tmp_path: Path) -> None:
    picked = _pick(tmp_path, _env(_without_tools(tmp_path), PYTHON=sys.executable))
    assert picked.returncode == 0, picked.stderr
    assert picked.stdout.strip() == sys.executable


def test_no_interpreter_with_the_tools_is_a_clear_error_before_anything_runs(tmp_path: Path) -> None:
    bin_dir = _without_tools(tmp_path)
    run = subprocess.run(
        [str(ROOT / "scripts" / "test.sh")],
        capture_output=True,
        text=True,
        env=_env(bin_dir, PYTHON=str(bin_dir / "python3")),
        timeout=60,
        check=False,
    )
    assert run.returncode == 1
    assert f"no Python with the project's development tools (ruff, mypy, pytest, contextfold); tried: {bin_dir}" in (
        run.stderr
    )
    assert "PYTHON=/path/to/python scripts/test.sh" in run.stderr
    assert "would reformat" not in run.stdout + run.stderr  # ruff never started
