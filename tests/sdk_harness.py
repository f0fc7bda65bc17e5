"""What the end-to-end SDK tests share: the SDK venv, a real `contextfold serve` in front of the fake coding
upstream (8k window), and the client scripts of `tests/sdk_clients/` run in that venv as subprocesses.

The SDKs that need Python >= 3.12 (llama-stack-client) or pin packages the project's own environment must not
change (openai-agents) live in `.venv-py312`, which `scripts/sdk-venv.sh` (run by `scripts/test.sh`) creates.
Without it a test skips, saying so; in CI (`CI` set) it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .fakes.coding_upstream import CodingUpstream
from .processes import Replica
from .sdk_clients.scenario import FACT_VALUE, marker

ROOT = Path(__file__).resolve().parent.parent
SDK_PYTHON = ROOT / ".venv-py312" / "bin" / "python"
CLIENTS = Path(__file__).resolve().parent / "sdk_clients"
WINDOW = 8_192
MODEL = "gpt-4.1"  # openai-agents' compaction session accepts only OpenAI model names
CLIENT_TIMEOUT = 600.0
"""A safety net, not a timing: a client that hangs fails its test instead of the run."""


def sdk_python() -> Path:
    if not SDK_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{SDK_PYTHON} is missing: scripts/sdk-venv.sh creates it (Python 3.12 with the SDKs)")
        pytest.skip(f"{SDK_PYTHON} is missing: run scripts/sdk-venv.sh to create it")
    return SDK_PYTHON


@dataclass
class Stack:
    upstream: CodingUpstream
    server: Replica

    @property
    def root(self) -> str:
        return self.server.url


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with CodingUpstream(window=WINDOW, model=MODEL) as upstream:
        config = tmp_path / "server.toml"
        config.write_text(
            f"""
[[models]]
name = "{MODEL}"
provider = "openai-chat"
base_url = "{upstream.url}/v1"
api_key = "sk-upstream"
context_window = {WINDOW}
"""
        )
        server = Replica(str(tmp_path / "server.db"), tmp_path / "server.log", "--config", str(config))
        try:
            server.wait_ready()
            yield Stack(upstream, server)
        finally:
            server.stop()


def run_client(stack: Stack, script: str, **options: Any) -> dict[str, Any]:
    """Run `tests/sdk_clients/<script>` in the SDK venv with `options` (plus the server's URLs); its report."""
    python = sdk_python()
    given = {"root": stack.root, "base_url": f"{stack.root}/v1", "model": MODEL, **options}
    done = subprocess.run(
        [str(python), str(CLIENTS / script), json.dumps(given)],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        env={
            k: v for k, v in os.environ.items() if k != "PYTHONPATH"
        },  # the venv's own packages only  # the venv's own packages only
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"{script} {options} exited with {done.returncode}:\n{done.stderr[-6000:]}\n--- server log ---\n"
            f"{stack.server.output()[-4000:]}"
        )
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def check_session(stack: Stack, report: dict[str, Any], *, turns: int) -> None:
    """What every SDK session must show: every turn answered, the tools ran and their results reached the model,
    the fact answered at the end, and no upstream request over its window."""
    answers = report["answers"]
    assert len(answers) == turns
    assert all(answer.strip() for answer in answers), answers
    for turn in range(1, turns - 1):
        assert f"done with task {turn}" in answers[turn], (turn, answers[turn])
    assert FACT_VALUE in answers[-1], answers[-1]
    assert len(report["ran"]) == 2 * (turns - 2), report["ran"]
    sent = [json.dumps(r.body) for r in stack.upstream.model_requests()]
    for call in report["ran"]:
        name, task, step = call.split(":")
        tag = marker(name, int(task), int(step))
        assert any(tag in body for body in sent), f"the output of {call} never reached the model"
    requests = [r for r in stack.upstream.requests if r.wire is not None]
    assert requests
    over = [(n, r.tokens, r.summary, r.status) for n, r in enumerate(requests) if r.refused or r.tokens > WINDOW]
    assert not over, (
        f"{len(over)} of {len(requests)} upstream requests over the window (index, tokens, summary?, status): {over}"
    )
    assert stack.upstream.summary_requests() or any("recall" in body for body in sent)  # something was folded


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"
