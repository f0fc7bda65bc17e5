"""`contextfold migrate` and `contextfold doctor`, run as a deploy script would: exit codes and the named checks.

Migrations are checked on both backends from an old schema made with `target=`; the doctor against a loopback fake
upstream (good, unreachable, refusing, not listing the model), a bad config file and a bad database URL.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from pathlib import Path

import pytest

from contextfold.cli import main
from contextfold.store import open_server_store
from contextfold.store._migrations import SQLITE

from .fakes._server import FakeServer, Reply, Request
from .store_fixtures import Backend

LATEST = SQLITE[-1].version
"""The schema version this build migrates to (migrations are added as features need them)."""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, re.sub(r" +$", "", out, flags=re.M), re.sub(r" +$", "", err, flags=re.M)


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wide terminal, so that each check is one line to match."""
    monkeypatch.setenv("COLUMNS", "250")
    for name in ("CONTEXTFOLD_CONFIG", "CONTEXTFOLD_DB", "CONTEXTFOLD_UPSTREAM", "CONTEXTFOLD_MODEL"):
        monkeypatch.delenv(name, raising=False)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- migrate -------------------------------------------------------------------------------------------------


def test_migrate_brings_an_old_database_up_to_date(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(backend.migrate(target=2))
    code, out, err = run(capsys, "migrate", "--check", "--db", backend.location)
    assert code == 1
    assert f"schema version 2, this contextfold needs {LATEST}; pending:" in out
    assert re.search(r"^  3  tenants, stored responses, API keys and turn leases$", out, re.M)
    assert re.search(r"^  4  the proxy's anchors$", out, re.M)
    assert "`contextfold migrate` applies them" in err
    assert backend.query("SELECT max(version) FROM schema_migrations") == [(2,)]  # --check applied nothing

    code, out, _ = run(capsys, "migrate", "--db", backend.location)
    assert code == 0
    assert f"schema version 2 → {LATEST}" in out
    assert re.findall(r"^  applied (\d)  ", out, re.M) == [str(m.version) for m in SQLITE if m.version > 2]
    assert backend.query("SELECT max(version) FROM schema_migrations") == [(LATEST,)]

    for argv in (["migrate", "--check"], ["migrate"]):
        code, out, _ = run(capsys, *argv, "--db", backend.location)
        assert code == 0
        assert out.endswith(f"schema version {LATEST}, up to date\n")


def test_migrate_takes_the_database_from_the_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, config = tmp_path / "cf.db", tmp_path / "cf.toml"
    config.write_text(f'db = "{db}"\n')
    code, out, _ = run(capsys, "migrate", "--check", "--config", str(config))
    assert code == 1
    assert f"SQLite file {db}: not created yet, this contextfold needs {LATEST}" in out
    assert not db.exists()  # looking creates nothing
    code, out, _ = run(capsys, "migrate", "--config", str(config))
    assert code == 0
    assert f"schema version 0 → {LATEST}" in out
    assert re.findall(r"^  applied (\d)  ", out, re.M) == [str(m.version) for m in SQLITE]


def test_a_database_newer_than_this_contextfold_is_refused(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(backend.migrate())
    future = LATEST + 1
    backend.query("INSERT INTO schema_migrations VALUES (?, ?, ?)", (future, "from the future", 0.0))
    for argv in (["migrate"], ["migrate", "--check"]):
        code, out, err = run(capsys, *argv, "--db", backend.location)
        assert (code, out) == (1, "")
        assert f"database schema is version {future}, newer than this build's {LATEST}; upgrade contextfold" in err


def test_migrate_names_a_database_it_cannot_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database, just bytes " * 100)
    code, _, err = run(capsys, "migrate", "--db", str(junk))
    assert code == 1
    assert f"contextfold: cannot read SQLite file {junk}" in err
    url = f"postgresql://nobody@127.0.0.1:{closed_port()}/contextfold"
    code, _, err = run(capsys, "migrate", "--check", "--db", url)
    assert code == 1
    assert "cannot read the schema of postgresql://127.0.0.1:" in err


# --- doctor --------------------------------------------------------------------------------------------------


def models_list(*ids: str, window: int | None = None) -> Reply:
    """`GET /v1/models` as vLLM answers it (with `max_model_len` when a window is given)."""
    extra = {"max_model_len": window} if window else {}
    return Reply(
        json={
            "object": "list",
            "data": [{"id": i, "object": "model", "created": 0, "owned_by": "vllm", **extra} for i in ids],
        }
    )


def migrated(tmp_path: Path) -> str:
    db = str(tmp_path / "cf.db")
    assert main(["migrate", "--db", db]) == 0
    return db


def checks(out: str) -> dict[str, tuple[str, str]]:
    """The doctor's table as {check: (mark, detail)}."""
    rows = (re.match(r"^(\S+(?: \S+)?) +([✓✗-]) +(.*)$", line) for line in out.splitlines()[1:])
    return {row[1]: (row[2], row[3]) for row in rows if row}


def test_doctor_passes_a_good_setup(tmp_path: Path, server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    db = migrated(tmp_path)
    server.handler = lambda request: models_list("qwen", "other", window=32_768)
    capsys.readouterr()
    code, out, err = run(capsys, "doctor", "--db", db, "--upstream", f"{server.url}/v1", "--model", "qwen")
    assert (code, err) == (0, "")
    found = checks(out)
    assert found["configuration"] == ("✓", "from flags, environment and defaults: default model qwen, no model routes")
    assert found["database"] == ("✓", f"SQLite file {db} opens")
    assert found["schema"] == ("✓", f"version {LATEST}, current")
    assert found["write/read"] == ("✓", "appended an event, read it back and deleted it")
    assert found["API keys"][0] == "✓"
    assert found["upstream"] == ("✓", f"{server.url}/v1/models: 2 model(s): qwen, other")
    assert found["model qwen"] == ("✓", f"listed by {server.url}/v1/models")
    assert found["window qwen"] == (
        "✓",
        "32,768 tokens (reported by the upstream's /models); budget 28,672, compaction at 22,937 down to 14,336",
    )
    assert found["model test"][0] == "✓"
    assert all(request.path == "/v1/models" for request in server.requests)
    assert json.loads(run(capsys, "conversations", "list", "--db", db, "--json")[1]) == []  # its test is gone


def test_doctor_probes_each_route_with_its_own_client(
    tmp_path: Path, server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    db = migrated(tmp_path)

    def answer(request: Request) -> Reply:
        if "anthropic-version" in request.headers:  # the anthropic SDK, with the claude route's key
            assert request.headers["authorization"] == "Bearer anthropic-key"
            body = {"id": "claude-x", "type": "model", "display_name": "Claude", "created_at": "2025-01-01T00:00:00Z"}
            return Reply(json={"data": [body], "has_more": False, "first_id": "claude-x", "last_id": "claude-x"})
        assert request.headers["authorization"] == "Bearer route-key"
        return models_list("served-name", "another")

    server.handler = answer
    config = tmp_path / "cf.toml"
    config.write_text(
        f'db = "{db}"\n'
        f'[[models]]\nname = "local"\nprovider = "openai-chat"\nmodel = "served-name"\nbase_url = "{server.url}/v1"\n'
        'api_key = "route-key"\ncontext_window = 8000\n'
        f'[[models]]\nname = "claude"\nprovider = "anthropic"\nmodel = "claude-x"\nbase_url = "{server.url}"\n'
        'api_key = "anthropic-key"\ncontext_window = 200000\n'
        '[[models]]\nname = "azure"\nprovider = "azure"\nbase_url = "https://example.openai.azure.com"\n'
        'api_key = "k"\ncontext_window = 128000\n'
    )
    code, out, _ = run(capsys, "doctor", "--config", str(config))
    assert code == 0, out
    found = checks(out)
    assert found["configuration"] == ("✓", f"from {config}: default model test, 3 model route(s)")
    assert found["model local"] == ("✓", f"listed by {server.url}/v1/models")
    assert found["window local"][1].startswith("8,000 tokens (configured); budget 6,000")
    assert found["model claude"] == ("✓", f"listed by {server.url}/v1/models")
    assert sorted(request.path for request in server.requests) == ["/v1/models", "/v1/models"]
    assert found["model azure"] == ("-", "azure: not probed (its API lists models differently)")
    assert found["window azure"][1].startswith("128,000 tokens (configured)")


def test_doctor_names_an_unreachable_upstream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = migrated(tmp_path)
    upstream = f"http://127.0.0.1:{closed_port()}/v1"
    argv = ("doctor", "--db", db, "--upstream", upstream, "--model", "qwen", "--context-window", "8000")
    code, out, err = run(capsys, *argv)
    assert code == 1
    found = checks(out)
    assert found["upstream"][0] == "✗"
    assert found["upstream"][1].startswith(f"{upstream}/models: unreachable (")
    assert found["model qwen"][0] == "✗"
    assert found["window qwen"][1].startswith("8,000 tokens (configured)")  # the window does not need the upstream
    assert found["database"][0] == found["write/read"][0] == "✓"
    assert "2 check(s) failed: upstream, model qwen" in err


@pytest.mark.parametrize(
    ("reply", "upstream", "model"),
    [
        (
            Reply(401, json={"error": {"message": "bad key", "type": "auth"}}),
            "answered 401: ",
            "did not list its models",
        ),
        (models_list("llama-a", "llama-b"), "2 model(s)", "'qwen' is not among the models of"),
    ],
)
def test_doctor_names_an_upstream_that_refuses_or_lacks_the_model(
    reply: Reply, upstream: str, model: str, tmp_path: Path, server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    db = migrated(tmp_path)
    server.handler = lambda request: reply
    code, out, _ = run(capsys, "doctor", "--db", db, "--upstream", f"{server.url}/v1", "--model", "qwen")
    assert code == 1
    found = checks(out)
    assert upstream in found["upstream"][1]
    assert found["model qwen"][0] == "✗"
    assert model in found["model qwen"][1]
    assert found["window qwen"][0] == "✗"  # neither configured, nor reported, nor in a profile
    assert "--context-window" in found["window qwen"][1]


def test_doctor_shows_a_bad_config_file_as_a_failed_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "cf.toml"
    config.write_text('port = "eighty"\n')
    code, out, err = run(capsys, "doctor", "--config", str(config))
    assert code == 1
    assert checks(out) == {
        "configuration": ("✗", f"port must be an integer from 1 to 65535, got 'eighty' (from {config}:port)")
    }
    assert "Traceback" not in err
    code, out, _ = run(capsys, "doctor", "--config", str(tmp_path / "missing.toml"), "--json")
    assert code == 1
    (only,) = json.loads(out)
    assert (only["check"], only["result"]) == ("configuration", "fail")
    assert "does not exist" in only["detail"]


def test_doctor_names_a_database_it_cannot_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql://nobody@127.0.0.1:{closed_port()}/contextfold"
    code, out, _ = run(capsys, "doctor", "--db", url)
    assert code == 1
    found = checks(out)
    assert found["database"][0] == "✗"
    assert found["database"][1].startswith("cannot read the schema of postgresql://127.0.0.1:")
    assert "write/read" not in found
    assert found["window test"][0] == "✓"  # the models are checked all the same

    code, out, _ = run(capsys, "doctor", "--db", str(tmp_path / "none.db"))
    assert code == 0  # what `serve` would create is not a fault
    assert checks(out)["database"] == (
        "✓",
        f"SQLite file {tmp_path / 'none.db'} does not exist yet; `contextfold serve` (or `contextfold migrate`) "
        "creates it",
    )
    assert not (tmp_path / "none.db").exists()


def test_doctor_reports_pending_migrations_without_applying_them(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(backend.migrate(target=3))
    code, out, _ = run(capsys, "doctor", "--db", backend.location)
    assert code == 0  # `serve` applies them on start
    found = checks(out)
    assert found["database"][0] == "✓"
    assert found["schema"] == (
        "✓",
        f"version 3, this contextfold needs {LATEST}; `contextfold serve` (or `contextfold migrate`) applies "
        f"{len([m for m in SQLITE if m.version > 3])} migration(s)",
    )
    assert found["write/read"][0] == "-"
    assert backend.query("SELECT max(version) FROM schema_migrations") == [(3,)]


def test_doctor_wants_api_keys_beyond_loopback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = migrated(tmp_path)
    code, out, _ = run(capsys, "doctor", "--db", db, "--host", "0.0.0.0")
    assert code == 1
    mark, detail = checks(out)["API keys"]
    assert mark == "✗"
    assert "refusing to listen on 0.0.0.0: there are no API keys" in detail

    async def create_key() -> None:
        store = await open_server_store(db)
        try:
            await store.keys.create("acme")
        finally:
            await store.close()

    asyncio.run(create_key())
    code, out, _ = run(capsys, "doctor", "--db", db, "--host", "0.0.0.0")
    assert code == 0
    assert checks(out)["API keys"] == ("✓", "1 active; requests need one")
