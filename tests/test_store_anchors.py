"""The proxy's anchors, on both backends: put and find, tenants, re-puts, order, limits, deletion, migration, races."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contextfold._errors import InvalidRequestError, NotFoundError, PayloadTooLargeError
from contextfold.events import encode, user
from contextfold.server._fork import fork
from contextfold.store import Anchor, ServerStore
from contextfold.store._migrations import POSTGRES, SQLITE

from .store_fixtures import Backend


def _seen(anchors: list[Anchor]) -> list[tuple[str, str, int]]:
    """What an anchor says, without its time."""
    return [(a.key, a.conversation_id, a.seq) for a in anchors]


def _stamp(backend: Backend, conversation_id: str, key: str, created_at: float) -> None:
    """Set an anchor's time, so a test can make an order (or a tie) on purpose instead of waiting for the clock."""
    backend.query(
        "UPDATE proxy_anchors SET created_at = ? WHERE conversation_id = ? AND key = ?",
        (created_at, conversation_id, key),
    )


# --- put and find -------------------------------------------------------------------------------------------


async def test_put_then_find_returns_the_anchors_of_known_keys(store: ServerStore) -> None:
    conv = await store.conversations.create(tenant="acme")
    await store.anchors.put(conv.id, 4, ["aa01", "bb02"])

    found = await store.anchors.find(["bb02", "cc03", "aa01"], tenant="acme")
    assert sorted(_seen(found)) == [("aa01", conv.id, 4), ("bb02", conv.id, 4)]
    assert all(isinstance(a.created_at, float) and a.created_at > 0 for a in found)
    assert await store.anchors.find(["cc03"], tenant="acme") == []
    assert await store.anchors.find([], tenant="acme") == []
    await store.anchors.put(conv.id, 5, [])  # nothing to record
    assert _seen(await store.anchors.find(["aa01", "aa01"], tenant="acme")) == [("aa01", conv.id, 4)]


async def test_a_conversation_without_a_tenant_has_anchors_too(store: ServerStore) -> None:
    conv = await store.conversations.create()
    await store.anchors.put(conv.id, 0, ["k"])
    assert _seen(await store.anchors.find(["k"], tenant="")) == [("k", conv.id, 0)]
    assert await store.anchors.find(["k"], tenant="acme") == []


async def test_another_tenants_anchor_is_never_found(store: ServerStore) -> None:
    mine = await store.conversations.create(tenant="acme")
    theirs = await store.conversations.create(tenant="globex")
    await store.anchors.put(mine.id, 2, ["shared", "mine"])
    await store.anchors.put(theirs.id, 7, ["shared", "theirs"])

    assert sorted(_seen(await store.anchors.find(["shared", "mine", "theirs"], tenant="acme"))) == [
        ("mine", mine.id, 2),
        ("shared", mine.id, 2),
    ]
    assert sorted(_seen(await store.anchors.find(["shared", "mine", "theirs"], tenant="globex"))) == [
        ("shared", theirs.id, 7),
        ("theirs", theirs.id, 7),
    ]
    assert await store.anchors.find(["shared"], tenant="initech") == []


async def test_a_re_put_key_moves_to_the_new_seq_and_time(store: ServerStore, backend: Backend) -> None:
    conv = await store.conversations.create(tenant="t")
    await store.anchors.put(conv.id, 2, ["k1", "k2"])
    _stamp(backend, conv.id, "k1", 1.0)
    _stamp(backend, conv.id, "k2", 1.0)

    await store.anchors.put(conv.id, 6, ["k1"])
    found = await store.anchors.find(["k1", "k2"], tenant="t")
    assert _seen(found) == [("k1", conv.id, 6), ("k2", conv.id, 2)]  # one anchor per key and conversation
    assert found[0].created_at > 1.0
    assert found[1].created_at == 1.0

    await store.anchors.put(conv.id, 1, ["k1"])  # moved back is still moved
    assert _seen(await store.anchors.find(["k1"], tenant="t")) == [("k1", conv.id, 1)]


async def test_anchors_come_newest_first_then_by_seq(store: ServerStore, backend: Backend) -> None:
    a = await store.conversations.create("conv_a", tenant="t")
    b = await store.conversations.create("conv_b", tenant="t")
    await store.anchors.put(a.id, 3, ["k"])
    await store.anchors.put(b.id, 9, ["k"])
    await store.anchors.put(a.id, 5, ["j"])
    _stamp(backend, a.id, "k", 30.0)
    _stamp(backend, b.id, "k", 10.0)
    _stamp(backend, a.id, "j", 20.0)
    assert _seen(await store.anchors.find(["k", "j"], tenant="t")) == [("k", a.id, 3), ("j", a.id, 5), ("k", b.id, 9)]

    _stamp(backend, a.id, "j", 10.0)  # a tie in time: the later seq first, then conversation id and key
    await store.anchors.put(b.id, 9, ["i"])
    _stamp(backend, b.id, "i", 10.0)
    assert _seen(await store.anchors.find(["i", "j", "k"], tenant="t"))[1:] == [
        ("i", b.id, 9),
        ("k", b.id, 9),
        ("j", a.id, 5),
    ]


async def test_as_many_keys_as_allowed_go_in_one_call(store: ServerStore) -> None:
    """10,000 keys: beyond SQLite's old limit of 999 bound variables."""
    conv = await store.conversations.create(tenant="t")
    keys = [f"{i:064x}" for i in range(10_000)]
    await store.anchors.put(conv.id, 1, keys)
    found = await store.anchors.find(keys, tenant="t")
    assert sorted(a.key for a in found) == keys
    await store.anchors.put(conv.id, 2, keys[::-1])
    assert {a.seq for a in await store.anchors.find(keys, tenant="t")} == {2}

    with pytest.raises(PayloadTooLargeError, match="10001 anchor keys") as caught:
        await store.anchors.put(conv.id, 3, [*keys, "one-more"])
    assert caught.value.param == "keys"
    with pytest.raises(PayloadTooLargeError, match="at most 10000"):
        await store.anchors.find([*keys, "one-more"], tenant="t")


# --- what a put or find refuses -----------------------------------------------------------------------------


async def test_bad_keys_seqs_and_tenants_are_refused_by_name(store: ServerStore) -> None:
    conv = await store.conversations.create(tenant="t")
    for index, bad in ((1, ""), (1, "x" * 65), (1, "nul\x00"), (1, "new\nline"), (1, 7)):
        with pytest.raises(InvalidRequestError, match="anchor key") as caught:
            await store.anchors.put(conv.id, 1, ["fine", bad])  # type: ignore[list-item]  # an untyped caller
        assert caught.value.param == f"keys[{index}]"
        with pytest.raises(InvalidRequestError, match="anchor key"):
            await store.anchors.find(["fine", bad], tenant="t")  # type: ignore[list-item]
    with pytest.raises(InvalidRequestError, match="list of strings"):
        await store.anchors.put(conv.id, 1, "abc")  # a string is a sequence of keys to the type checker
    for seq in (-1, True, 1.5):
        with pytest.raises(InvalidRequestError, match="seq") as caught:
            await store.anchors.put(conv.id, seq, ["k"])  # type: ignore[arg-type]
        assert caught.value.param == "seq"
    with pytest.raises(InvalidRequestError, match="tenant"):
        await store.anchors.find(["k"], tenant="no spaces")

    await store.anchors.put(conv.id, 1, ["x" * 64, "ok"])  # the longest key there can be
    assert len(await store.anchors.find(["x" * 64, "ok"], tenant="t")) == 2


async def test_an_unknown_conversation_is_not_found(store: ServerStore, backend: Backend) -> None:
    with pytest.raises(NotFoundError, match="conv_missing"):
        await store.anchors.put("conv_missing", 1, ["k"])
    assert backend.query("SELECT count(*) FROM proxy_anchors") == [(0,)]


# --- deletion and forks -------------------------------------------------------------------------------------


async def test_anchors_go_with_their_conversation_and_are_not_forked(store: ServerStore, backend: Backend) -> None:
    gone = await store.conversations.create(tenant="t")
    kept = await store.conversations.create(tenant="t")
    await store.append(gone.id, [user("hello")], 0)
    await store.anchors.put(gone.id, 1, ["k1", "k2"])
    await store.anchors.put(kept.id, 0, ["k1"])

    forked = await fork(store, gone.id, 1, tenant="t")
    assert _seen(await store.anchors.find(["k1", "k2"], tenant="t")) != []
    assert backend.query("SELECT count(*) FROM proxy_anchors WHERE conversation_id = ?", (forked,)) == [(0,)]

    await store.conversations.delete(gone.id)
    assert _seen(await store.anchors.find(["k1", "k2"], tenant="t")) == [("k1", kept.id, 0)]
    assert backend.query("SELECT conversation_id FROM proxy_anchors") == [(kept.id,)]
    with pytest.raises(NotFoundError, match=gone.id):
        await store.anchors.put(gone.id, 2, ["k3"])


# --- racing puts --------------------------------------------------------------------------------------------


async def test_puts_racing_on_the_same_keys_all_succeed(store: ServerStore, backend: Backend) -> None:
    second = await backend.open()  # another process's store on the same database
    try:
        conv = await store.conversations.create(tenant="t")
        keys = [f"k{i:02}" for i in range(20)]
        # Overlapping key lists in opposite orders: the way two writers could deadlock if rows were locked as given.
        calls = [
            s.anchors.put(conv.id, seq, keys if seq % 2 else keys[::-1])
            for seq, s in zip(range(16), itertools.cycle([store, second]), strict=False)
        ]
        await asyncio.gather(*calls)
        found = await store.anchors.find(keys, tenant="t")
        assert sorted(a.key for a in found) == keys  # still one anchor per key
        assert {a.seq for a in found} <= set(range(16))
    finally:
        await second.close()


# --- the same as a dictionary -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Put:
    conversation: int
    seq: int
    keys: list[str]


@dataclass(frozen=True)
class _Delete:
    conversation: int


_KEYS = st.sampled_from(["a", "b", "c", "d", "e"])
_STEPS = st.lists(
    st.one_of(
        st.builds(_Put, st.integers(0, 3), st.integers(0, 20), st.lists(_KEYS, max_size=4)),
        st.builds(_Delete, st.integers(0, 3)),
    ),
    max_size=12,
)
_example = itertools.count()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=_STEPS, wanted=st.lists(_KEYS, max_size=5))
async def test_find_agrees_with_a_dictionary_model(
    store: ServerStore, steps: list[_Put | _Delete], wanted: list[str]
) -> None:
    """For any puts and deletions, find returns what a dict of (tenant, key, conversation) -> seq holds."""
    run = next(_example)  # fresh tenants per example: the store outlives hypothesis's examples
    tenants = [f"t{run}-0", f"t{run}-0", f"t{run}-1", f"t{run}-1"]
    conversations = [(await store.conversations.create(tenant=t)).id for t in tenants]
    model: dict[tuple[str, str, str], int] = {}
    deleted: set[int] = set()
    for step in steps:
        conv = conversations[step.conversation]
        if isinstance(step, _Delete):
            if step.conversation not in deleted:
                await store.conversations.delete(conv)
                deleted.add(step.conversation)
                model = {k: v for k, v in model.items() if k[2] != conv}
        elif step.conversation in deleted and step.keys:
            with pytest.raises(NotFoundError):
                await store.anchors.put(conv, step.seq, step.keys)
        else:
            await store.anchors.put(conv, step.seq, step.keys)
            model.update({(tenants[step.conversation], key, conv): step.seq for key in step.keys})

    for tenant in sorted(set(tenants)):
        found = await store.anchors.find(wanted, tenant=tenant)
        expected = {(k, c, s) for (t, k, c), s in model.items() if t == tenant and k in wanted}
        assert sorted(_seen(found)) == sorted(expected)
        order = [(-a.created_at, -a.seq, a.conversation_id, a.key) for a in found]
        assert order == sorted(order)


# --- migration ----------------------------------------------------------------------------------------------


async def test_migrating_from_version_3_adds_anchors_to_old_conversations(backend: Backend) -> None:
    assert await backend.migrate(target=3) == 3
    old = user("before anchors", conversation_id="conv_old", seq=1)
    backend.query(
        "INSERT INTO conversations (id, created_at, metadata, head, tenant) VALUES (?, ?, ?, ?, ?)",
        ("conv_old", 1.0, "{}", 1, "acme"),
    )
    backend.query(
        "INSERT INTO events (conversation_id, seq, id, type, body, search_text) VALUES (?, ?, ?, ?, ?, ?)",
        ("conv_old", 1, old.id, "message", encode(old), "before anchors"),
    )
    assert await backend.migrate() == (SQLITE if backend.name == "sqlite" else POSTGRES)[-1].version >= 4

    store = await backend.open()
    try:
        assert await store.read("conv_old") == [old]
        await store.anchors.put("conv_old", 1, ["k"])
        assert _seen(await store.anchors.find(["k"], tenant="acme")) == [("k", "conv_old", 1)]
        await store.conversations.delete("conv_old")
        assert await store.anchors.find(["k"], tenant="acme") == []
    finally:
        await store.close()
