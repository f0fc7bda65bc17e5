"""`contextfold serve` and `contextfold keys`, in-process on a SQLite file, and the server once as a real process."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

import contextfold.server
from contextfold.cli import main
from contextfold.server._config import ServerConfig
from contextfold.server._main import NEEDS_KEYS, NO_KEYS, banner, is_loopback, redact


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No CONTEXTFOLD_* from the environment running the tests, and the root logger as it was."""
    for name in list(os.environ):
        if name.startswith("CONTEXTFOLD_"):
            monkeypatch.delenv(name)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def create_key(db: Path, tenant: str, capsys: pytest.CaptureFixture[str], name: str = "") -> tuple[str, str]:
    assert main(["keys", "create", "--tenant", tenant, "--name", name, "--db", str(db)]) == 0
    out = capsys.readouterr()
    fields = dict(line.split(None, 1) for line in out.out.splitlines())
    assert "cannot be shown again" in out.err
    return fields["id"], fields["secret"]


# --- keys ----------------------------------------------------------------------------------------------------------


def test_keys_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "keys.db"
    first, secret = create_key(db, "acme", capsys, name="ci")
    second, _ = create_key(db, "globex", capsys)
    assert first.startswith("key_")
    assert secret.startswith("cf-")

    assert main(["keys", "list", "--db", str(db)]) == 0
    listed = capsys.readouterr().out
    assert listed.splitlines()[0].split() == ["id", "tenant", "name", "prefix", "created", "(UTC)", "revoked", "(UTC)"]
    assert re.search(rf"^{first}\s+acme\s+ci\s+{re.escape(secret[:8])}\s+\d{{4}}-\d\d-\d\d [\d:]+\s+-$", listed, re.M)
    assert secret not in listed  # the secret is shown once, at creation
    assert main(["keys", "list", "--db", str(db), "--tenant", "globex"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == [second]

    assert main(["keys", "revoke", first, "--db", str(db)]) == 0
    assert capsys.readouterr().out == f"revoked {first} (tenant acme, ci)\n"
    assert main(["keys", "list", "--db", str(db)]) == 0
    assert first not in capsys.readouterr().out
    assert main(["keys", "list", "--all", "--db", str(db)]) == 0
    revoked = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(first))
    assert not revoked.endswith("-")


def test_keys_mistakes_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "keys.db")
    assert main(["keys", "revoke", "key_nope", "--db", db]) == 2
    assert "key_nope" in capsys.readouterr().err
    assert main(["keys", "create", "--tenant", "no spaces", "--db", db]) == 2
    assert "tenant" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["keys", "create", "--db", db])  # --tenant is required
    assert exited.value.code == 2
    assert main(["keys", "list", "--db", db]) == 0
    assert capsys.readouterr().out == "no API keys\n"


def test_keys_use_the_database_serve_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'db = "{tmp_path / "from-file.db"}"\n')
    monkeypatch.setenv("CONTEXTFOLD_CONFIG", str(config))
    assert main(["keys", "create", "--tenant", "acme"]) == 0
    assert (tmp_path / "from-file.db").exists()
    monkeypatch.setenv("CONTEXTFOLD_DB", str(tmp_path / "from-env.db"))
    assert main(["keys", "list"]) == 0
    assert (tmp_path / "from-env.db").exists()
    assert "no API keys" in capsys.readouterr().out


# --- serve, in-process ---------------------------------------------------------------------------------------------


class Served:
    """What `run` handed to create_app and uvicorn, with both replaced."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.config: ServerConfig | None = None
        self.uvicorn: uvicorn.Config | None = None
        served = self

        def create_app(config: ServerConfig) -> object:
            served.config = config
            return "the app"

        def run(server: uvicorn.Server, sockets: Any = None) -> None:
            served.uvicorn = server.config
            raise KeyboardInterrupt  # what uvicorn re-raises after a graceful shutdown on Ctrl-C

        monkeypatch.setattr(contextfold.server, "create_app", create_app)
        monkeypatch.setattr(uvicorn.Server, "run", run)


def test_serve_runs_the_app_on_uvicorn_with_a_banner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    served = Served(monkeypatch)
    db = str(tmp_path / "serve.db")
    argv = ["serve", "--db", db, "--port", "8411", "--queue-turns", "--log-format", "json", "--context-window", "9000"]
    assert main(argv) == 0
    assert served.config == ServerConfig(db=db, port=8411, queue_turns=True, log_format="json", context_window=9000)
    assert served.uvicorn is not None
    assert (served.uvicorn.app, served.uvicorn.host, served.uvicorn.port) == ("the app", "127.0.0.1", 8411)
    assert (served.uvicorn.log_config, served.uvicorn.access_log, served.uvicorn.lifespan) == (None, False, "on")
    err = capsys.readouterr().err
    assert "http://127.0.0.1:8411/v1" in err
    assert db in err
    assert "test (default)" in err
    assert NO_KEYS in err


def test_serve_refuses_a_public_address_without_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    served = Served(monkeypatch)
    db = tmp_path / "serve.db"
    assert main(["serve", "--db", str(db), "--host", "0.0.0.0"]) == 2
    assert NEEDS_KEYS in capsys.readouterr().err
    assert served.config is None  # never started

    create_key(db, "acme", capsys)
    assert main(["serve", "--db", str(db), "--host", "0.0.0.0"]) == 0
    assert served.uvicorn is not None
    assert served.uvicorn.host == "0.0.0.0"
    assert "API keys required (1 active)" in capsys.readouterr().err


def test_serve_reports_bad_configuration_with_its_source(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    served = Served(monkeypatch)
    assert main(["serve", "--port", "http"]) == 2
    assert "port must be an integer from 1 to 65535, got 'http' (from --port)" in capsys.readouterr().err
    monkeypatch.setenv("CONTEXTFOLD_MODEL", "gpt-4o")
    assert main(["serve"]) == 2
    assert "(from CONTEXTFOLD_MODEL) is not served" in capsys.readouterr().err
    assert served.config is None


def test_banner_lists_models_and_hides_passwords() -> None:
    config = ServerConfig(
        host="::1", db="postgresql://cf:hunter2@db:5432/cf", model="qwen", upstream="http://localhost:8000/v1"
    )
    text = banner(config, active_keys=2)
    assert "http://[::1]:8400/v1" in text
    assert "postgresql://cf:***@db:5432/cf" in text
    assert "hunter2" not in text
    assert "qwen (default), test; any other name goes to http://localhost:8000/v1" in text
    assert "API keys required (2 active)" in text
    assert redact("contextfold.db") == "contextfold.db"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.4", False), ("example.com", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# --- serve, as a real process --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def healthz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            status: int = answer.status
            return status
    except OSError:
        return None


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_as_a_process_answers_and_stops_cleanly(tmp_path: Path, stop: signal.Signals) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTEXTFOLD_")}
    command = [sys.executable, "-m", "contextfold", "serve", "--port", str(port), "--db", str(tmp_path / "s.db")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        status = None
        deadline = time.monotonic() + 60  # a bound on waiting for start-up, not an assertion on speed
        while status is None and process.poll() is None and time.monotonic() < deadline:
            status = healthz(port)
            if status is None:
                time.sleep(0.05)
        if status != 200:
            process.kill()
            pytest.fail(f"the server did not answer /healthz: {process.communicate()[1]}")
        process.send_signal(stop)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert f"http://127.0.0.1:{port}/v1" in err
    assert NO_KEYS in err
    assert "Traceback" not in err
