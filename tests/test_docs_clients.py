"""The SDK examples of docs/clients.md run as written against a real `contextfold serve` (the built-in `test`
model): those marked `main` in this environment, those marked `sdk` in the SDK venv (`tests/sdk_harness.py`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .processes import Replica
from .sdk_harness import sdk_python

CLIENTS = Path(__file__).parent.parent / "docs" / "clients.md"
BLOCKS = re.findall(r"<!-- run: (\w+) -->\n```python\n(.*?)```", CLIENTS.read_text(), re.S)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    where = tmp_path_factory.mktemp("clients")
    replica = Replica(str(where / "server.db"), where / "server.log")
    try:
        replica.wait_ready()
        yield replica
    finally:
        replica.stop()


def test_every_example_is_marked() -> None:
    assert len(BLOCKS) == len(re.findall(r"```python\n", CLIENTS.read_text())) == 5


@pytest.mark.parametrize(("where", "code"), BLOCKS, ids=[f"block{n}" for n in range(len(BLOCKS))])
def test_the_example_runs(server: Replica, tmp_path: Path, where: str, code: str) -> None:
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {**os.environ, "CONTEXTFOLD_URL": server.url}
    python = sys.executable
    if where == "sdk":
        python = str(sdk_python())
        env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [python, str(script)], capture_output=True, text=True, env=env, timeout=120, check=False, cwd=tmp_path
    )
    assert done.returncode == 0, f"{done.stderr}\n--- server ---\n{server.output()[-3000:]}"
    assert done.stdout.strip(), done.stderr
