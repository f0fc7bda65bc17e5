"""The two servers under test, each a real process on loopback in front of the same fake upstream.

contextfold runs as `python -m contextfold serve` (`benchmarks/_processes.py`'s `serve_process`) on a SQLite file.
Llama Stack 0.7.3 runs from its own Python 3.12 environment as `llama stack run CONFIG --port PORT`, bound to
127.0.0.1, with a configuration written here: its remote OpenAI-compatible inference provider pointing at the
upstream, its builtin Responses provider (which needs vector_io, tool_runtime and files providers: FAISS, MCP and
local files, none used by these turns) and its default SQLite storage (a key-value and a SQL database) in a
temporary directory. Its logging is set to warnings, as contextfold's is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from .._processes import _free_port, serve_process
from . import _venv

LLAMA_STACK_MODEL = "upstream/bench"
"""Llama Stack names a provider's model `<provider id>/<model>`."""


@dataclass(frozen=True)
class Server:
    name: str
    url: str
    model: str
    databases: tuple[Path, ...]
    """The SQLite files the server writes its state to."""


@contextmanager
def recorder_process() -> Iterator[str]:
    """The recording fake upstream (`_recorder.py`), in its own process; its base URL."""
    port = _free_port()
    root = str(Path(__file__).resolve().parents[2])
    command = [sys.executable, "-m", "benchmarks.versus._recorder", str(port)]
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        process.stdout.readline()  # "ready"
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def contextfold(workdir: Path, upstream: str, *, queue_turns: bool = False) -> Iterator[Server]:
    db = workdir / "contextfold.db"
    flags = ("--queue-turns",) if queue_turns else ()
    name = "contextfold --queue-turns" if queue_turns else "contextfold"
    with serve_process(str(db), upstream, *flags) as url:
        yield Server(name, url, "bench", (db,))


def _llama_stack_config(workdir: Path, upstream: str, port: int) -> dict[str, object]:
    kv, sql = workdir / "kvstore.db", workdir / "sql_store.db"
    return {
        "version": 2,
        "distro_name": "contextfold-bench",
        "apis": ["inference", "responses", "vector_io", "tool_runtime", "files"],
        "providers": {
            "inference": [
                {
                    "provider_id": "upstream",
                    "provider_type": "remote::openai",
                    "config": {"api_key": "bench", "base_url": upstream},
                }
            ],
            "responses": [
                {
                    "provider_id": "builtin",
                    "provider_type": "inline::builtin",
                    "config": {
                        "persistence": {
                            "agent_state": {"namespace": "agents", "backend": "kv_default"},
                            "responses": {"table_name": "responses", "backend": "sql_default"},
                        }
                    },
                }
            ],
            "vector_io": [
                {
                    "provider_id": "faiss",
                    "provider_type": "inline::faiss",
                    "config": {"persistence": {"namespace": "vector_io::faiss", "backend": "kv_default"}},
                }
            ],
            "tool_runtime": [{"provider_id": "mcp", "provider_type": "remote::model-context-protocol"}],
            "files": [
                {
                    "provider_id": "files",
                    "provider_type": "inline::localfs",
                    "config": {
                        "storage_dir": str(workdir / "files"),
                        "metadata_store": {"table_name": "files_metadata", "backend": "sql_default"},
                    },
                }
            ],
        },
        "storage": {
            "backends": {
                "kv_default": {"type": "kv_sqlite", "db_path": str(kv)},
                "sql_default": {"type": "sql_sqlite", "db_path": str(sql)},
            },
            # The stores of its `starter` distribution, with the same backends.
            "stores": {
                "metadata": {"namespace": "registry", "backend": "kv_default"},
                "inference": {"table_name": "inference_store", "backend": "sql_default"},
                "conversations": {"table_name": "openai_conversations", "backend": "sql_default"},
                "prompts": {"namespace": "prompts", "backend": "kv_default"},
                "connectors": {"namespace": "connectors", "backend": "kv_default"},
            },
        },
        "server": {"host": "127.0.0.1", "port": port},
    }


@contextmanager
def llama_stack(workdir: Path, upstream: str) -> Iterator[Server]:
    python = _venv.ensure(_venv.LLAMA_STACK)
    port = _free_port()
    config = workdir / "llama-stack.yaml"
    config.write_text(json.dumps(_llama_stack_config(workdir, upstream, port), indent=1))  # JSON is YAML
    env = {
        **os.environ,
        "TIKTOKEN_CACHE_DIR": str(_venv.tiktoken_cache()),
        "LLAMA_STACK_LOGGING": "all=warning",
        "LLAMA_STACK_CONFIG_DIR": str(workdir / "home"),
    }
    log = (workdir / "llama-stack.log").open("w")
    command = [str(python), "-m", "llama_stack.cli.llama", "stack", "run", str(config), "--port", str(port)]
    process = subprocess.Popen(command, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Llama Stack exited at startup; its log: {workdir / 'llama-stack.log'}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Llama Stack did not start in 180 s; its log: {workdir / 'llama-stack.log'}")
            time.sleep(0.2)
        yield Server("Llama Stack", url, LLAMA_STACK_MODEL, (workdir / "kvstore.db", workdir / "sql_store.db"))
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
