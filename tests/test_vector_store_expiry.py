"""`expires_after` on vector stores: recorded, shown as `expires_at` (moving on with `last_active_at` as the store
is used), enforced (an expired store answers 404 everywhere) and erased by the sweep, on both stores. The time is
moved with the knowledge stores' clock, never slept through."""

from __future__ import annotations

import openai
import pytest

from contextfold.server import ServerConfig
from contextfold.store._knowledge import CLOCK, DAY

from .server_fixtures import Served, check_error, serving
from .store_fixtures import Backend

NOTES = b"The launch code for project heron is 7741."


async def test_expired_stores_answer_as_missing_and_are_swept(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(ServerConfig(db=backend.location)) as served:
        client = served.client
        active = await client.vector_stores.create(name="a", expires_after={"anchor": "last_active_at", "days": 2})
        assert active.expires_after is not None
        assert (active.expires_after.anchor, active.expires_after.days) == ("last_active_at", 2)
        assert active.last_active_at is not None
        assert active.expires_at == active.last_active_at + 2 * DAY  # whole days: both round down alike
        fixed = await served.post("/v1/vector_stores", {"name": "f", "expires_after": {"days": 1}})
        assert fixed["expires_at"] == fixed["last_active_at"] + DAY  # never used again: it expires first
        lasting = await client.vector_stores.create(name="l")
        assert lasting.expires_at is None

        monkeypatch.setattr(CLOCK, "offset", 1.5 * DAY)
        uploaded = await client.files.create(file=("heron.md", NOTES), purpose="assistants")
        done = await client.vector_stores.files.create_and_poll(
            vector_store_id=active.id, file_id=uploaded.id, poll_interval_ms=20
        )
        assert done.status == "completed"
        moved = await client.vector_stores.retrieve(active.id)  # used: its expiry moved on with last_active_at
        assert moved.expires_at is not None
        assert active.expires_at is not None
        assert moved.expires_at >= active.expires_at + 1.5 * DAY - 1
        for attempt in (  # past its day: missing, though the sweep has not run
            client.vector_stores.retrieve(fixed["id"]),
            client.vector_stores.search(fixed["id"], query="heron"),
            client.vector_stores.files.list(fixed["id"]),
        ):
            with pytest.raises(openai.NotFoundError):
                await attempt
        assert {s.id for s in (await client.vector_stores.list()).data} == {active.id, lasting.id}

        monkeypatch.setattr(CLOCK, "offset", 2.5 * DAY)  # past the first expiry, not the moved one
        assert (await client.vector_stores.search(active.id, query="heron launch code")).data
        await served.store.knowledge.index.sweep()
        assert backend.query("SELECT id FROM vector_stores WHERE id = ?", (fixed["id"],)) == []

        monkeypatch.setattr(CLOCK, "offset", 4 * DAY)
        with pytest.raises(openai.NotFoundError):
            await client.vector_stores.retrieve(active.id)
        await served.store.knowledge.index.sweep()
        assert backend.query("SELECT count(*) FROM chunks") == [(0,)]  # its chunks went with it
        assert [s.id for s in (await client.vector_stores.list()).data] == [lasting.id]
        assert (await client.files.retrieve(uploaded.id)).id == uploaded.id  # the file itself stays


async def test_a_malformed_expires_after_is_a_400_naming_the_field(served: Served) -> None:
    for body, param in (
        ({"anchor": "last_active_at", "days": 0}, "expires_after.days"),
        ({"anchor": "created_at", "days": 3}, "expires_after.anchor"),
        ({"days": 3, "hours": 1}, "expires_after"),
    ):
        reply = await served.http.post("/v1/vector_stores", json={"name": "x", "expires_after": body})
        check_error(reply, 400, param=param)
    assert (await served.client.vector_stores.list()).data == []


async def test_expires_after_is_changed_or_cleared_by_an_update(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(ServerConfig(db=backend.location)) as served:
        client = served.client
        store = await client.vector_stores.create(name="s", expires_after={"anchor": "last_active_at", "days": 1})
        renamed = await client.vector_stores.update(store.id, name="t")  # not named: the expiry stays
        assert renamed.expires_after is not None
        assert renamed.expires_after.days == 1

        monkeypatch.setattr(CLOCK, "offset", 0.5 * DAY)
        longer = await client.vector_stores.update(store.id, expires_after={"anchor": "last_active_at", "days": 3})
        assert longer.expires_after is not None
        assert longer.expires_after.days == 3
        assert longer.last_active_at is not None
        assert longer.expires_at == longer.last_active_at + 3 * DAY
        assert (await client.vector_stores.retrieve(store.id)).expires_at == longer.expires_at
        assert longer.name == "t"

        monkeypatch.setattr(CLOCK, "offset", 2 * DAY)  # past the first day, within the new three
        assert (await client.vector_stores.retrieve(store.id)).id == store.id
        await served.store.knowledge.index.sweep()
        cleared = await served.post(f"/v1/vector_stores/{store.id}", {"expires_after": None})
        assert cleared["expires_after"] is None
        assert cleared["expires_at"] is None

        monkeypatch.setattr(CLOCK, "offset", 30 * DAY)
        await served.store.knowledge.index.sweep()
        assert (await client.vector_stores.retrieve(store.id)).expires_at is None

        bad = await served.http.post(f"/v1/vector_stores/{store.id}", json={"expires_after": {"days": 400}})
        check_error(bad, 400, param="expires_after.days")
        assert (await client.vector_stores.retrieve(store.id)).expires_after is None  # nothing half-written


async def test_expired_files_answer_as_missing_and_are_swept_with_their_chunks(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(ServerConfig(db=backend.location)) as served:
        client = served.client
        brief = await client.files.create(
            file=("heron.md", NOTES), purpose="assistants", expires_after={"anchor": "created_at", "seconds": 3600}
        )
        assert brief.expires_at == brief.created_at + 3600
        kept = await client.files.create(file=("kept.md", b"The heron nests by the lake."), purpose="assistants")
        assert kept.expires_at is None
        assert (await client.files.retrieve(brief.id)).expires_at == brief.expires_at
        store = await client.vector_stores.create(name="kb")
        for uploaded in (brief, kept):
            done = await client.vector_stores.files.create_and_poll(
                vector_store_id=store.id, file_id=uploaded.id, poll_interval_ms=20
            )
            assert done.status == "completed"
        assert backend.query("SELECT count(*) FROM chunks") == [(2,)]

        monkeypatch.setattr(CLOCK, "offset", 3601)
        for attempt in (client.files.retrieve(brief.id), client.files.content(brief.id), client.files.delete(brief.id)):
            with pytest.raises(openai.NotFoundError):
                await attempt
        assert [f.id for f in (await client.files.list()).data] == [kept.id]
        with pytest.raises(openai.NotFoundError):  # nor can it be added to a store
            await client.vector_stores.files.create(vector_store_id=store.id, file_id=brief.id)
        found = (await client.vector_stores.search(store.id, query="heron")).data  # nor found, before the sweep
        assert [h.file_id for h in found] == [kept.id]

        await served.store.knowledge.index.sweep()
        assert backend.query("SELECT id FROM files WHERE id = ?", (brief.id,)) == []
        assert backend.query("SELECT count(*) FROM chunks") == [(1,)]  # its chunks went with it, not the other's
        assert backend.query("SELECT file_id FROM vector_store_files") == [(kept.id,)]
        assert (await client.files.retrieve(kept.id)).id == kept.id


async def test_a_malformed_file_expires_after_is_a_400_naming_the_field(served: Served) -> None:
    for fields, param in (
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "60"}, "expires_after[seconds]"),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "2592001"}, "expires_after[seconds]"),
        ({"expires_after[anchor]": "created_at"}, "expires_after[seconds]"),
        ({"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"}, "expires_after[anchor]"),
        ({"expires_after[seconds]": "3600"}, "expires_after[anchor]"),
    ):
        reply = await served.http.post(
            "/v1/files", data={"purpose": "assistants", **fields}, files={"file": ("a.md", b"words")}
        )
        check_error(reply, 400, param=param)
    assert (await served.client.files.list()).data == []
