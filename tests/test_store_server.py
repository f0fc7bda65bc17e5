"""What the server keeps beside the logs, on both backends: tenants, stored responses, API keys, turn leases."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contextfold._errors import InvalidRequestError, NotFoundError
from contextfold.events import assistant, encode, user
from contextfold.store import ResponseRecord, ServerStore

from .store_fixtures import Backend

Order = Literal["asc", "desc"]

# --- tenants and listing ------------------------------------------------------------------------------------


async def _stamped(store: ServerStore, backend: Backend, tenant: str, created_at: float) -> str:
    """A new conversation with a chosen creation time, so tests can make ties and orders on purpose."""
    info = await store.conversations.create(tenant=tenant)
    backend.query("UPDATE conversations SET created_at = ? WHERE id = ?", (created_at, info.id))
    return info.id


async def test_a_conversation_belongs_to_a_tenant(store: ServerStore) -> None:
    plain = await store.conversations.create("conv_plain", {"a": "1"})
    assert plain.tenant == ""
    owned = await store.conversations.create("conv_owned", tenant="acme.eu-1")
    assert (owned.tenant, owned.metadata) == ("acme.eu-1", {})
    assert await store.conversations.get("conv_owned") == owned
    assert await store.conversations.get("conv_plain") == plain
    for bad in ("has space", "x" * 65, "semi;colon"):
        with pytest.raises(InvalidRequestError, match="tenant"):
            await store.conversations.create(tenant=bad)


async def test_list_filters_by_tenant_and_pages_both_ways(store: ServerStore, backend: Backend) -> None:
    a1 = await _stamped(store, backend, "a", 1.0)
    b1 = await _stamped(store, backend, "b", 2.0)
    a2 = await _stamped(store, backend, "a", 3.0)
    none = await _stamped(store, backend, "", 4.0)
    a3 = await _stamped(store, backend, "a", 5.0)

    async def ids(**kwargs: Any) -> list[str]:
        return [c.id for c in await store.conversations.list(**kwargs)]

    assert await ids() == [a1, b1, a2, none, a3]
    assert await ids(order="desc") == [a3, none, a2, b1, a1]
    assert await ids(tenant="a") == [a1, a2, a3]
    assert await ids(tenant="") == [none]
    assert await ids(tenant="nobody") == []
    assert await ids(tenant="a", order="desc", limit=2) == [a3, a2]
    assert await ids(tenant="a", order="desc", after=a2) == [a1]
    assert await ids(tenant="a", after=a1, limit=1) == [a2]
    assert await ids(after=b1) == [a2, none, a3]
    assert await ids(after=b1, order="desc") == [a1]
    assert await ids(limit=0) == []
    assert all(c.tenant == "a" for c in await store.conversations.list(tenant="a"))

    # a cursor from another tenant is as unknown as a missing one
    with pytest.raises(NotFoundError, match=f"{b1}.*tenant 'a'"):
        await store.conversations.list(tenant="a", after=b1)
    with pytest.raises(NotFoundError, match="conv_missing"):
        await store.conversations.list(after="conv_missing")
    with pytest.raises(InvalidRequestError, match="tenant"):
        await store.conversations.list(tenant="no spaces")
    with pytest.raises(InvalidRequestError, match="order"):
        await store.conversations.list(order="sideways")  # type: ignore[arg-type]  # what an untyped caller sends


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    stamps=st.lists(st.tuples(st.sampled_from(["", "t1", "t2"]), st.integers(0, 3)), max_size=12),
    page_size=st.integers(1, 5),
    order=st.sampled_from(["asc", "desc"]),
    tenant=st.sampled_from([None, "", "t1", "t2"]),
)
async def test_paging_yields_every_conversation_once_in_order(
    store: ServerStore,
    backend: Backend,
    stamps: list[tuple[str, int]],
    page_size: int,
    order: Order,
    tenant: str | None,
) -> None:
    for old in await store.conversations.list(limit=1000):  # the store outlives one example
        await store.conversations.delete(old.id)
    # few distinct times, so many conversations tie on created_at and the id must break the tie
    created = {await _stamped(store, backend, who, float(at)): (float(at), who) for who, at in stamps}
    expected = sorted(
        (cid for cid, (_, who) in created.items() if tenant is None or who == tenant),
        key=lambda cid: (created[cid][0], cid),
        reverse=order == "desc",
    )

    paged: list[str] = []
    after: str | None = None
    while page := await store.conversations.list(limit=page_size, after=after, tenant=tenant, order=order):
        assert len(page) <= page_size
        paged.extend(c.id for c in page)
        after = page[-1].id
    assert paged == expected


async def test_update_replaces_the_metadata(store: ServerStore) -> None:
    conv = await store.conversations.create(metadata={"a": "1", "b": "2"}, tenant="t")
    await store.append(conv.id, [user("hi")], 0)
    updated = await store.conversations.update(conv.id, {"c": "3"})
    assert (updated.id, updated.metadata, updated.tenant, updated.head) == (conv.id, {"c": "3"}, "t", 1)
    assert updated.created_at == conv.created_at
    assert await store.conversations.get(conv.id) == updated
    assert (await store.conversations.update(conv.id, {})).metadata == {}
    with pytest.raises(NotFoundError, match="conv_missing"):
        await store.conversations.update("conv_missing", {"a": "1"})


# --- responses ----------------------------------------------------------------------------------------------


def _response(response_id: str, conversation_id: str, created_at: float, **changes: Any) -> ResponseRecord:
    fields: dict[str, Any] = {
        "id": response_id,
        "tenant": "t",
        "conversation_id": conversation_id,
        "created_at": created_at,
        "status": "in_progress",
        "first_seq": 1,
        "last_seq": 0,
        "previous_response_id": None,
        "data": {"model": "m", "params": {"temperature": 0.5}, "usage": None},
    }
    fields.update(changes)
    return ResponseRecord(**fields)


async def test_responses_are_put_replaced_listed_and_deleted(store: ServerStore) -> None:
    conv = await store.conversations.create(tenant="t")
    first = _response("resp_1", conv.id, 10.0)
    await store.responses.put(first)
    assert await store.responses.get("resp_1") == first

    done = _response("resp_1", conv.id, 10.0, status="completed", last_seq=4, data={"usage": {"total_tokens": 9}})
    await store.responses.put(done)  # the same id replaces the record
    assert await store.responses.get("resp_1") == done
    second = _response("resp_2", conv.id, 20.0, previous_response_id="resp_1", first_seq=5)
    third = _response("resp_3", conv.id, 15.0, status="failed", data={"error": {"code": "x", "message": "é\x00"}})
    await store.responses.put(second)
    await store.responses.put(third)

    assert [r.id for r in await store.responses.for_conversation(conv.id)] == ["resp_2", "resp_3", "resp_1"]
    assert await store.responses.for_conversation(conv.id, limit=1) == [second]
    assert await store.responses.for_conversation((await store.conversations.create()).id) == []

    await store.responses.delete("resp_3")
    with pytest.raises(NotFoundError, match="resp_3"):
        await store.responses.get("resp_3")
    with pytest.raises(NotFoundError, match="resp_3"):
        await store.responses.delete("resp_3")
    assert [r.id for r in await store.responses.for_conversation(conv.id)] == ["resp_2", "resp_1"]


async def test_responses_are_checked_and_go_with_their_conversation(store: ServerStore, backend: Backend) -> None:
    conv = await store.conversations.create()
    with pytest.raises(NotFoundError, match="conv_missing"):
        await store.responses.put(_response("resp_x", "conv_missing", 1.0))
    with pytest.raises(NotFoundError, match="conv_missing"):
        await store.responses.for_conversation("conv_missing")
    with pytest.raises(InvalidRequestError, match="status 'done'"):
        await store.responses.put(_response("resp_x", conv.id, 1.0, status="done"))
    with pytest.raises(InvalidRequestError, match="JSON"):
        await store.responses.put(_response("resp_x", conv.id, 1.0, data={"when": object()}))
    with pytest.raises(InvalidRequestError, match="limit"):
        await store.responses.for_conversation(conv.id, limit=-1)

    await store.responses.put(_response("resp_a", conv.id, 1.0))
    await store.responses.put(_response("resp_b", conv.id, 2.0))
    await store.conversations.delete(conv.id)
    with pytest.raises(NotFoundError):
        await store.responses.get("resp_a")
    assert backend.query("SELECT count(*) FROM responses") == [(0,)]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.dictionaries(st.text(), _json, max_size=5))
async def test_response_data_round_trips_exactly(store: ServerStore, data: dict[str, Any]) -> None:
    conv = await store.conversations.create()
    record = _response("resp_" + conv.id, conv.id, 1.0, data=data)
    await store.responses.put(record)
    stored = await store.responses.get(record.id)
    assert stored == record
    assert list(stored.data) == list(data)  # key order too


# --- API keys -----------------------------------------------------------------------------------------------


async def test_keys_verify_until_revoked(store: ServerStore) -> None:
    assert await store.keys.active() == 0
    secret, key = await store.keys.create("acme", "ci")
    assert secret.startswith("cf-")
    assert len(secret) > 40
    assert key.id.startswith("key_")
    assert (key.tenant, key.name, key.prefix, key.revoked_at) == ("acme", "ci", secret[:8], None)
    other_secret, other = await store.keys.create("globex")

    assert await store.keys.verify(secret) == key
    assert await store.keys.verify(other_secret) == other
    for wrong in (secret[:-1], secret + "x", "cf-nonsense", "", "sk-" + secret[3:], secret.upper()):
        assert await store.keys.verify(wrong) is None
    assert await store.keys.active() == 2

    revoked = await store.keys.revoke(key.id)
    assert revoked.revoked_at is not None
    assert revoked.id == key.id
    assert await store.keys.verify(secret) is None
    assert await store.keys.revoke(key.id) == revoked  # revoking again changes nothing
    assert await store.keys.active() == 1
    with pytest.raises(NotFoundError, match="key_missing"):
        await store.keys.revoke("key_missing")

    assert await store.keys.list() == [other]
    assert await store.keys.list(include_revoked=True) == [revoked, other]
    assert await store.keys.list(tenant="acme") == []
    assert await store.keys.list(tenant="acme", include_revoked=True) == [revoked]


async def test_keys_need_a_valid_tenant(store: ServerStore) -> None:
    for bad in ("", "a b", "x" * 65, "ü"):
        with pytest.raises(InvalidRequestError, match="tenant"):
            await store.keys.create(bad)
    with pytest.raises(InvalidRequestError, match="name"):
        await store.keys.create("acme", "line\nbreak")
    assert (await store.keys.create("A-z_0.9" + "x" * 57))[1].tenant == "A-z_0.9" + "x" * 57
    assert await store.keys.active() == 1


async def test_only_a_hash_of_the_secret_is_stored(store: ServerStore, backend: Backend) -> None:
    secret, key = await store.keys.create("acme", "prod")
    rows = backend.query("SELECT * FROM api_keys")
    assert len(rows) == 1
    assert not any(secret in str(value) for value in rows[0])
    assert backend.query("SELECT secret_hash FROM api_keys WHERE id = ?", (key.id,)) == [
        (hashlib.sha256(secret.encode()).hexdigest(),)
    ]


# --- turn leases --------------------------------------------------------------------------------------------


async def test_a_lease_has_one_owner_until_released(store: ServerStore, backend: Backend) -> None:
    conv = await store.conversations.create()
    leases = store.leases
    assert await leases.acquire(conv.id, "a", 60)
    assert await leases.acquire(conv.id, "a", 60)  # re-entrant: the holder refreshes it
    assert not await leases.acquire(conv.id, "b", 60)
    assert await leases.renew(conv.id, "a", 60)
    assert not await leases.renew(conv.id, "b", 60)

    await leases.release(conv.id, "b")  # not b's: nothing happens
    assert not await leases.acquire(conv.id, "b", 60)
    await leases.release(conv.id, "a")
    assert not await leases.renew(conv.id, "a", 60)  # released is gone
    assert await leases.acquire(conv.id, "b", 60)

    other = await store.conversations.create()
    assert await leases.acquire(other.id, "a", 60)  # leases are per conversation

    with pytest.raises(NotFoundError, match="conv_missing"):
        await leases.acquire("conv_missing", "a", 60)
    assert not await leases.renew("conv_missing", "a", 60)
    await leases.release("conv_missing", "a")
    for owner, ttl in (("", 60.0), ("a", 0.0), ("a", -1.0), ("a", float("inf")), ("a", float("nan"))):
        with pytest.raises(InvalidRequestError, match="lease"):
            await leases.acquire(conv.id, owner, ttl)

    await store.conversations.delete(conv.id)
    assert backend.query("SELECT conversation_id FROM turn_leases") == [(other.id,)]


async def test_take_is_acquire_with_the_head_the_lease_saw(store: ServerStore, backend: Backend) -> None:
    conv = await store.conversations.create()
    assert await store.leases.take(conv.id, "a", 60) == 0
    await store.append(conv.id, [user("hi"), assistant("hello")], expected_head=0)
    assert await store.leases.take(conv.id, "a", 60) == 2  # re-entrant, and the head moved
    assert await store.leases.take(conv.id, "b", 60) is None
    second = await backend.open()  # another process writes, then gives the conversation back
    try:
        await store.leases.release(conv.id, "a")
        assert await second.leases.take(conv.id, "c", 60) == 2
        await second.append(conv.id, [user("more")], expected_head=2)
        await second.leases.release(conv.id, "c")
        assert await store.leases.take(conv.id, "b", 60) == 3
    finally:
        await second.close()
    with pytest.raises(NotFoundError, match="conv_missing"):
        await store.leases.take("conv_missing", "a", 60)
    with pytest.raises(InvalidRequestError, match="lease"):
        await store.leases.take(conv.id, "", 60)


async def test_racing_takes_on_two_stores_have_one_winner_who_sees_the_head(
    store: ServerStore, backend: Backend
) -> None:
    second = await backend.open()
    try:
        conv = await store.conversations.create()
        await store.append(conv.id, [user("hi")], expected_head=0)
        stores = [store, second] * 8
        taken = await asyncio.gather(*(s.leases.take(conv.id, f"owner{i}", 60) for i, s in enumerate(stores)))
        assert sorted(taken, key=lambda head: head is None)[:2] == [1, None]
        assert taken.count(1) == 1
    finally:
        await second.close()


async def test_an_expired_lease_can_be_taken_and_is_lost_to_its_old_owner(store: ServerStore) -> None:
    conv = await store.conversations.create()
    assert await store.leases.acquire(conv.id, "crashed", 0.05)
    for _ in range(2000):  # poll; never assume how long a tick takes
        if await store.leases.acquire(conv.id, "next", 60):
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the 50 ms lease never lapsed")
    assert not await store.leases.renew(conv.id, "crashed", 60)
    await store.leases.release(conv.id, "crashed")
    assert not await store.leases.acquire(conv.id, "third", 60)
    assert await store.leases.renew(conv.id, "next", 60)


async def test_racing_acquires_on_two_stores_have_exactly_one_winner(store: ServerStore, backend: Backend) -> None:
    second = await backend.open()  # another process's store on the same database
    try:
        for _ in range(3):
            conv = await store.conversations.create()
            stores = [store, second] * 8
            won = await asyncio.gather(*(s.leases.acquire(conv.id, f"owner{i}", 60) for i, s in enumerate(stores)))
            assert won.count(True) == 1
            winner = f"owner{won.index(True)}"
            assert backend.query("SELECT owner FROM turn_leases WHERE conversation_id = ?", (conv.id,)) == [(winner,)]
    finally:
        await second.close()


# --- migration ----------------------------------------------------------------------------------------------


async def test_migrating_from_version_2_keeps_the_data(backend: Backend) -> None:
    assert await backend.migrate(target=2) == 2
    old = user("before tenants", conversation_id="conv_old", seq=1)
    backend.query(
        "INSERT INTO conversations (id, created_at, metadata, head) VALUES (?, ?, ?, ?)",
        ("conv_old", 1.0, '{"k": "v"}', 1),
    )
    backend.query(
        "INSERT INTO events (conversation_id, seq, id, type, body, search_text) VALUES (?, ?, ?, ?, ?, ?)",
        ("conv_old", 1, old.id, "message", encode(old), "before tenants"),
    )
    assert await backend.migrate(target=3) == 3

    store = await backend.open()
    try:
        info = await store.conversations.get("conv_old")
        assert (info.tenant, info.metadata, info.head) == ("", {"k": "v"}, 1)
        assert [c.id for c in await store.conversations.list(tenant="")] == ["conv_old"]
        assert await store.read("conv_old") == [old]
        await store.append("conv_old", [assistant("after")], 1)
        await store.responses.put(_response("resp_old", "conv_old", 2.0, tenant=""))
        assert await store.leases.acquire("conv_old", "me", 60)
    finally:
        await store.close()
