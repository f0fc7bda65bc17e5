"""`contextfold conversations export` and `import`: the log as JSON Lines, and back, exactly.

Round trips are checked on a real session (compactions, a pin, a deletion, failed and interrupted turns) and on
generated logs (the fold property's operations), between SQLite and PostgreSQL; a bad file is refused with its line
number, and nothing is written then.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contextfold import Conversation
from contextfold.cli import main
from contextfold.events import Compaction, decode, encode
from contextfold.store import open_server_store

from .scenario import turn
from .store_fixtures import Backend
from .test_cli_conversations import run, session
from .test_fold_properties import Op, ops
from .test_fold_properties import run as apply_op


def export(capsys: pytest.CaptureFixture[str], db: str, conversation_id: str) -> list[str]:
    code = main(["conversations", "export", conversation_id, "--db", db])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    return out.splitlines()


def conversations(capsys: pytest.CaptureFixture[str], db: str) -> list[dict[str, object]]:
    code, out, _ = run(capsys, "conversations", "list", "--db", db, "--json", "--limit", "100")
    assert code == 0
    listed: list[dict[str, object]] = json.loads(out)
    return listed


async def _stored(db: str, conversation_id: str) -> list[bytes]:
    store = await open_server_store(db)
    try:
        return [encode(event) for event in await store.read(conversation_id)]
    finally:
        await store.close()


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


def test_export_writes_each_event_as_the_store_holds_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "cf.db")
    conv = session(db)
    lines = export(capsys, db, conv)
    assert [line.encode() for line in lines] == asyncio.run(_stored(db, conv))
    assert all(json.loads(line)["conversation_id"] == conv for line in lines)


def test_export_to_a_file_of_a_big_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, file = str(tmp_path / "cf.db"), tmp_path / "out" / "log.jsonl"

    async def big() -> str:
        store = await open_server_store(db)
        try:
            conv = await Conversation.create(store)
            for i in range(0, 180, 20):  # 180 turns of 6 events: past one page of the export
                await conv.append(*[e for n in range(i, i + 20) for e in turn(f"step {n}", batches=[1])])
            return conv.id
        finally:
            await store.close()

    conv = asyncio.run(big())
    code, _, err = run(capsys, "conversations", "export", conv, "--db", db, "-o", str(file))
    assert code == 2
    assert f"cannot write {file}" in err
    file.parent.mkdir()
    code, out, err = run(capsys, "conversations", "export", conv, "--db", db, "-o", str(file))
    assert (code, out) == (0, "")
    assert re.search(r"^exporting .* 1080/1080 ", err, re.M)  # the progress bar, as it ends
    assert "wrote 1,080 events to" in err
    assert file.read_bytes().splitlines() == asyncio.run(_stored(db, conv))
    assert list(file.parent.iterdir()) == [file]  # no partial file left behind


def test_round_trip_between_backends_keeps_every_line(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A session on each backend, imported into a fresh SQLite file and back into the same store as a copy."""
    conv = session(backend.location)
    original = export(capsys, backend.location, conv)
    file = tmp_path / "log.jsonl"
    file.write_text("\n".join(original) + "\n")

    other = str(tmp_path / "other.db")
    code, out, err = run(capsys, "conversations", "import", str(file), "--db", other)
    assert (code, out.strip()) == (0, conv)
    assert f"imported {len(original)} events as {conv} (tenant default)" in err
    assert export(capsys, other, conv) == original
    # the same view: every event in the same state, the same context report
    for action in ("show", "context"):
        argv = ["conversations", action, conv, "--json", *(["--all"] if action == "show" else [])]
        assert json.loads(run(capsys, *argv, "--db", other)[1]) == json.loads(
            run(capsys, *argv, "--db", backend.location)[1]
        )

    code, out, _ = run(capsys, "conversations", "import", str(file), "--new-id", "--db", backend.location)
    assert code == 0
    copy = out.strip()
    assert copy != conv
    assert_same_log_but_ids(export(capsys, backend.location, copy), original, copy)
    assert export(capsys, backend.location, conv) == original  # the original is untouched


def assert_same_log_but_ids(copied: list[str], original: list[str], copy_id: str) -> None:
    """The lines are the same but for the conversation id and fresh event ids (mapped consistently)."""
    assert len(copied) == len(original)
    ids: dict[str, str] = {}
    for new_line, old_line in zip(copied, original, strict=True):
        new, old = decode(new_line), decode(old_line)
        assert new.conversation_id == copy_id
        assert new.id != old.id
        ids[old.id] = new.id
        fields: dict[str, object] = {"id": old.id, "conversation_id": old.conversation_id}
        if isinstance(new, Compaction) and isinstance(old, Compaction) and old.previous is not None:
            assert new.previous == ids[old.previous]
            fields["previous"] = old.previous
        assert encode(msgspec.structs.replace(new, **fields)) == old_line.encode()


def test_export_piped_into_import_between_processes(tmp_path: Path) -> None:
    """`contextfold conversations export ID | contextfold conversations import -`, as a shell runs it."""
    db, other = str(tmp_path / "cf.db"), str(tmp_path / "other.db")
    conv = session(db)
    command = [sys.executable, "-m", "contextfold", "conversations"]
    exported = subprocess.run([*command, "export", conv, "--db", db], capture_output=True, check=True)
    imported = subprocess.run([*command, "import", "-", "--db", other], input=exported.stdout, capture_output=True)
    assert (imported.returncode, imported.stdout.decode().strip()) == (0, conv)
    again = subprocess.run([*command, "export", conv, "--db", other], capture_output=True, check=True)
    assert again.stdout == exported.stdout
    assert exported.stdout.splitlines() == asyncio.run(_stored(db, conv))


def test_import_sets_tenant_and_metadata_and_reads_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db, other = str(tmp_path / "cf.db"), str(tmp_path / "other.db")
    conv = session(db)
    data = ("\n".join(export(capsys, db, conv)) + "\n").encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    argv = ["import", "-", "--tenant", "acme", "--metadata", "source=backup", "--metadata", "note=a=b"]
    code, out, _ = run(capsys, "conversations", *argv, "--db", other)
    assert (code, out.strip()) == (0, conv)
    (listed,) = conversations(capsys, other)
    assert (listed["tenant"], listed["metadata"]) == ("acme", {"source": "backup", "note": "a=b"})


def test_an_existing_id_needs_new_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "cf.db")
    conv = session(db)
    file = tmp_path / "log.jsonl"
    file.write_text("\n".join(export(capsys, db, conv)))
    code, out, err = run(capsys, "conversations", "import", str(file), "--db", db)
    assert (code, out) == (2, "")
    assert f"conversation {conv!r} already exists in this store; pass --new-id" in err
    assert len(conversations(capsys, db)) == 1


def test_events_already_in_the_store_are_refused_and_nothing_stays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "cf.db")
    conv = session(db)
    lines = [json.loads(line) for line in export(capsys, db, conv)]
    file = tmp_path / "log.jsonl"
    file.write_text("\n".join(json.dumps({**line, "conversation_id": "conv_other"}) for line in lines))
    code, _, err = run(capsys, "conversations", "import", str(file), "--db", db)
    assert code == 2
    assert "if these events are in this store already, pass --new-id" in err
    assert [c["id"] for c in conversations(capsys, db)] == [conv]


def _edit(lines: list[dict[str, object]], case: str) -> list[str]:
    """A valid export broken one way."""
    text = [json.dumps(line) for line in lines]
    fifth = {"conversation_id": lines[0]["conversation_id"], "seq": 5}
    if case == "not json":
        text[1] = "{not json"
    elif case == "unknown type":
        text[2] = json.dumps({**lines[2], "type": "memo"})
    elif case == "newer schema":
        text[2] = json.dumps({**lines[2], "schema_version": 2})
    elif case == "gap":
        del text[2]
    elif case == "two conversations":
        text[3] = json.dumps({**lines[3], "conversation_id": "conv_other"})
    elif case == "same id twice":
        text[4] = json.dumps({**lines[4], "id": lines[1]["id"]})
    elif case == "erases a later event":
        text[4] = json.dumps({**fifth, "type": "deletion", "id": "ev_x", "targets": [9]})
    elif case == "answers no call":
        text[4] = json.dumps({**fifth, "type": "tool_result", "id": "ev_y", "call_id": "call_none", "output": "x"})
    return text


@pytest.mark.parametrize(
    ("case", "line", "message"),
    [
        ("not json", 2, "event is not a JSON object"),
        ("unknown type", 3, "unknown event type 'memo'"),
        ("newer schema", 3, "schema version 2, this build reads version 1"),
        ("gap", 3, "seq 4, expected 3: an export is a whole log"),
        ("two conversations", 4, "a file holds one conversation"),
        ("same id twice", 5, "is on line 2 too"),
        ("erases a later event", 5, "can only erase earlier events"),
        ("answers no call", 5, "has no unanswered tool call before it"),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_written(
    case: str, line: int, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, other = str(tmp_path / "cf.db"), str(tmp_path / "other.db")
    conv = session(db)
    file = tmp_path / "log.jsonl"
    file.write_text("\n".join(_edit([json.loads(text) for text in export(capsys, db, conv)], case)) + "\n")
    for target, flags in ((other, []), (db, ["--new-id"])):
        code, out, err = run(capsys, "conversations", "import", str(file), *flags, "--db", target)
        assert (code, out) == (2, "")
        assert f"contextfold: {file} line {line}: " in err
        assert message in err
    assert conversations(capsys, other) == []
    assert [c["id"] for c in conversations(capsys, db)] == [conv]


def test_input_mistakes_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, empty = str(tmp_path / "cf.db"), tmp_path / "empty.jsonl"
    empty.write_text("\n")
    code, _, err = run(capsys, "conversations", "import", str(tmp_path / "missing.jsonl"), "--db", db)
    assert code == 2
    assert "cannot read" in err
    code, _, err = run(capsys, "conversations", "import", str(empty), "--db", db)
    assert code == 2
    assert "holds no conversation id (no events); pass --new-id" in err
    code, _, err = run(capsys, "conversations", "import", str(empty), "--db", db, "--tenant", "no spaces")
    assert code == 2
    code, out, _ = run(capsys, "conversations", "import", str(empty), "--new-id", "--db", db)
    assert code == 0
    assert [c["events"] for c in conversations(capsys, db)] == [0]
    assert export(capsys, db, out.strip()) == []
    with pytest.raises(SystemExit) as exited:
        main(["conversations", "import", str(empty), "--metadata", "novalue", "--db", db])
    assert exited.value.code == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


# --- generated logs ------------------------------------------------------------------------------------------


async def _generated(db: str, operations: list[Op]) -> str:
    store = await open_server_store(db)
    try:
        conv = await Conversation.create(store)
        crashed: list[str] = []
        for op in operations:
            await apply_op(conv, op, crashed)
        return conv.id
    finally:
        await store.close()


def round_trip(operations: list[Op], target: str | None) -> None:
    """Export a generated log, import it into `target` (a fresh SQLite file if None) and as a copy beside itself."""
    with tempfile.TemporaryDirectory() as folder:
        db, file, again = f"{folder}/source.db", Path(folder) / "log.jsonl", Path(folder) / "again.jsonl"
        conv = asyncio.run(_generated(db, operations))
        assert main(["conversations", "export", conv, "--db", db, "-o", str(file)]) == 0
        if not file.read_bytes():  # every operation was a no-op: no event carries the id, only a copy can be made
            assert main(["conversations", "import", str(file), "--db", db]) == 2
            assert main(["conversations", "import", str(file), "--new-id", "--db", db]) == 0
            return
        target = target or f"{folder}/target.db"
        assert main(["conversations", "import", str(file), "--db", target]) == 0
        assert main(["conversations", "export", conv, "--db", target, "-o", str(again)]) == 0
        assert again.read_bytes() == file.read_bytes()
        assert main(["conversations", "import", str(file), "--new-id", "--db", db]) == 0


EXAMPLES = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@settings(EXAMPLES, max_examples=25)
@given(operations=st.lists(ops, min_size=4, max_size=20))
def test_generated_logs_round_trip_on_sqlite(operations: list[Op]) -> None:
    round_trip(operations, None)


@settings(EXAMPLES, max_examples=10)
@given(operations=st.lists(ops, min_size=4, max_size=20))
def test_generated_logs_round_trip_into_postgres(pg_url: str, operations: list[Op]) -> None:
    round_trip(operations, pg_url)
