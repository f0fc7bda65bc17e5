"""The compaction proxies users pick instead of contextfold's, each started from its own environment (`_venv.py`)
as its own process on loopback, in front of the fake upstream, with its compaction held off.

How each is started and held off, from its own README and code (PyPI sdists/wheels of the pinned versions):
- ctxkeeper 1.2.0 (`python -m ctxkeeper`, a standard-library `ThreadingHTTPServer`): `--budget` is its live window
  in tokens; set far past any history here, it never moves turns to its archive nor asks the model for notes.
  `--no-recite` (repeat its RULES after a user message) has nothing to repeat without notes; set anyway.
- context-guardian 0.12.0 (`python -m context_guardian`, FastAPI; configured by environment variables):
  `GUARDIAN_NUM_CTX` far past any history, and `GUARDIAN_DETECT_CONTEXT=0` so it does not ask the upstream for a
  smaller window; its PyPI version check is off (`GUARDIAN_VERSION_CHECK=0`).
- cliffcompaction 0.1.0 (`python -m cliffcompaction serve`, Starlette): `--threshold` (estimated tokens) far past any
  history; it still canonicalises and hashes each message, as it does on every request.
- LiteLLM's proxy 1.105.3 (`litellm --config`): it has no compaction of its own unless one is configured; one model
  routed to the upstream, its price list read from the package (`LITELLM_LOCAL_MODEL_COST_MAP`), telemetry off.

Every one gets a HOME and state directory of its own under the run's scratch folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from .._processes import LOGS, Proc, _free_port, spawned
from . import _venv

NEVER = 1_000_000_000
"""A window or threshold, in tokens, no history here comes near: compaction held off."""


def _env(workdir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "HOME": str(workdir), **extra}


@contextmanager
def ctxkeeper(workdir: Path, upstream: str) -> Iterator[Proc]:
    python, port = _venv.ensure(_venv.CTXKEEPER), _free_port()
    command = [str(python), "-m", "ctxkeeper", "--upstream", upstream.removesuffix("/v1"), "--port", str(port)]
    command += ["--budget", str(NEVER), "--no-recite", "--state-dir", str(workdir / "state")]
    with spawned("ctxkeeper", command, "/v1/models", port=port, env=_env(workdir), log=LOGS / "ctxkeeper.log") as p:
        yield p


@contextmanager
def context_guardian(workdir: Path, upstream: str) -> Iterator[Proc]:
    python, port = _venv.ensure(_venv.CONTEXT_GUARDIAN), _free_port()
    env = _env(
        workdir,
        GUARDIAN_PORT=str(port),
        GUARDIAN_UPSTREAM_URL=upstream,
        GUARDIAN_NUM_CTX=str(NEVER),
        GUARDIAN_DETECT_CONTEXT="0",
        GUARDIAN_VERSION_CHECK="0",
        GUARDIAN_VERBOSE="0",
        GUARDIAN_DATA_DIR=str(workdir / "data"),
    )
    command = [str(python), "-m", "context_guardian"]
    log = LOGS / "context-guardian.log"
    with spawned("context-guardian", command, "/guardian/health", port=port, env=env, log=log) as proc:
        yield proc


@contextmanager
def cliffcompaction(workdir: Path, upstream: str) -> Iterator[Proc]:
    python, port = _venv.ensure(_venv.CLIFFCOMPACTION), _free_port()
    command = [str(python), "-m", "cliffcompaction", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--threshold", str(NEVER), "--openai-upstream", upstream.removesuffix("/v1")]
    log = LOGS / "cliffcompaction.log"
    with spawned("cliffcompaction", command, "/__cliff__/status", port=port, env=_env(workdir), log=log) as proc:
        yield proc


@contextmanager
def litellm(workdir: Path, upstream: str) -> Iterator[Proc]:
    python, port = _venv.ensure(_venv.LITELLM), _free_port()
    config = workdir / "litellm.json"  # YAML is a superset of JSON: its --config reads this as it is
    route = {"model": "openai/bench", "api_base": upstream, "api_key": "sk-bench"}
    # It refuses to start without a master key; the benchmark's clients all send this one.
    settings = {"master_key": "sk-bench"}
    config.write_text(
        json.dumps({"model_list": [{"model_name": "bench", "litellm_params": route}], "general_settings": settings})
    )
    env = _env(workdir, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False", LITELLM_LOG="ERROR")
    command = [str(python.parent / "litellm"), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    log = LOGS / "litellm.log"
    with spawned("LiteLLM proxy", command, "/health/liveliness", port=port, env=env, log=log, seconds=300) as proc:
        yield proc


PEERS: dict[str, tuple[_venv.Env, Callable[[Path, str], AbstractContextManager[Proc]]]] = {
    "ctxkeeper": (_venv.CTXKEEPER, ctxkeeper),
    "context-guardian": (_venv.CONTEXT_GUARDIAN, context_guardian),
    "cliffcompaction": (_venv.CLIFFCOMPACTION, cliffcompaction),
    "LiteLLM proxy": (_venv.LITELLM, litellm),
}
