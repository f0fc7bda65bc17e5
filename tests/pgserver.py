"""A throwaway PostgreSQL server for the tests: initdb into a temporary folder, start on a free loopback port.

Nothing is installed or configured on the machine: the server lives in its own folder, trusts local
connections, skips fsync, and is stopped (`-m immediate`) and removed when the tests end. Every test gets a
fresh database from `create_database`, so tests never see each other's rows.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the `postgres` system user
(present when the Debian package is installed) or `nobody`, through `runuser`.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
from psycopg import sql

SUPERUSER = "contextfold"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine, or the server would not start."""


def find_bindir() -> Path:
    """The folder of initdb and pg_ctl: `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        bindir = Path(out.stdout.strip())
        if out.returncode == 0 and (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    candidates = sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if (Path(p) / "initdb").exists()),
        key=lambda p: _version_key(p.parent.name),
    )
    if candidates:
        return candidates[-1]
    raise PostgresUnavailable(
        "the PostgreSQL tests need the PostgreSQL server binaries (initdb, pg_ctl) and none were found; "
        "install them with `apt-get install postgresql` (or put pg_config on PATH)"
    )


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_as() -> str | None:
    """The user to run the server as, or None to run it as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise PostgresUnavailable("running as root, and neither a 'postgres' nor a 'nobody' user exists")


class Server:
    """A throwaway server. `url` points at its `postgres` database; `stop()` ends it and removes it."""

    def __init__(self, bindir: Path | None = None) -> None:
        self._bindir = bindir or find_bindir()
        self._user = _run_as()
        self._base = Path(tempfile.mkdtemp(prefix="contextfold-pg-"))
        self._data = self._base / "data"
        self._sock = self._base / "sock"
        self._sock.mkdir()
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            for path in (self._base, self._sock):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.port = 0
        self._running = False

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def _cmd(self, tool: str, *args: str) -> list[str]:
        command = [str(self._bindir / tool), *args]
        return command if self._user is None else ["runuser", "-u", self._user, "--", *command]

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(self._cmd(tool, *args), capture_output=True, text=True, check=False, cwd=self._base)
        if result.returncode != 0:
            log = self._base / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresUnavailable(
                f"{tool} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}{tail}"
            )

    def start(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self._data),
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        for attempt in range(3):  # a free port can be taken between probing it and binding it
            self.port = _free_port()
            options = (
                f"-p {self.port} -h 127.0.0.1 -k {self._sock} -F"
                " -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c autovacuum=off"
                " -c max_connections=200"
            )
            try:
                self._run(
                    "pg_ctl",
                    "-D",
                    str(self._data),
                    "-l",
                    str(self._base / "server.log"),
                    "-o",
                    options,
                    "-w",
                    "start",
                )
            except PostgresUnavailable:
                if attempt == 2:
                    self._remove()
                    raise
                continue
            self._running = True
            return

    def stop(self) -> None:
        if self._running:
            self._running = False
            with contextlib.suppress(PostgresUnavailable):
                self._run("pg_ctl", "-D", str(self._data), "-m", "immediate", "-w", "stop")
        self._remove()

    def _remove(self) -> None:
        shutil.rmtree(self._base, ignore_errors=True)

    def create_database(self) -> str:
        """A fresh, empty database with a random name; returns its URL."""
        name = f"test_{secrets.token_hex(6)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def start() -> tuple[Server, Callable[[], None]]:
    """Start a server; returns it and the function that stops and removes it (also run at exit)."""
    server = Server()
    server.start()
    atexit.register(server.stop)
    return server, server.stop


@contextlib.contextmanager
def running() -> Iterator[Server]:
    server, stop = start()
    try:
        yield server
    finally:
        stop()
