"""`_proxy_match.History`: the chain at every assistant position, read lazily past the latest few, equals the chain
hashed eagerly message by message (what anchors recorded before hold)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from contextfold.server.proxy import _proxy_match
from contextfold.server.proxy._chains import Ends
from contextfold.server.proxy._proxy_match import _RECENT, History, chain_anchor, system_key


@dataclass(frozen=True)
class _Keyed:
    key: bytes
    role: str


@dataclass(frozen=True)
class _Source:
    system_prompt: str | None
    messages: tuple[_Keyed, ...]


def eager(source: _Source) -> dict[int, bytes]:
    """The chain after each assistant message but the last message, hashed as anchors always were."""
    running = hashlib.blake2b(b"chain", digest_size=16)
    prompt = system_key(source.system_prompt)
    running.update(len(prompt).to_bytes(8, "little") + prompt)
    out: dict[int, bytes] = {}
    for i, message in enumerate(source.messages):
        running.update(len(message.key).to_bytes(8, "little") + message.key)
        if message.role == "assistant" and i < len(source.messages) - 1:
            out[i] = running.digest()
    return out


messages = st.lists(st.builds(_Keyed, st.binary(max_size=6), st.sampled_from(["user", "assistant", "tool"])))


@given(st.none() | st.text(max_size=5), messages, st.booleans())
def test_lazy_links_equal_the_eager_chain(prompt: str | None, listed: list[_Keyed], oldest_first: bool) -> None:
    source = _Source(prompt, tuple(listed))
    history = History(source)
    expected = eager(source)
    positions = history.positions()
    assert positions == sorted(expected, reverse=True)
    for i in positions[::-1] if oldest_first else positions:
        assert history.link(i) == expected[i]
    if expected:
        recorded = history.anchors_after(b"answer")
        assert recorded == History(source).anchors_after(b"answer")


def _old_construction(source: _Source) -> tuple[dict[int, bytes], Any]:
    """`History.__init__` as it was before the chain was fed in joined slices (two `update` calls per message):
    the links it read off at the latest `_RECENT` assistant positions and the running digest at the end."""
    running = hashlib.blake2b(b"chain", digest_size=16)
    prompt = system_key(source.system_prompt)
    running.update(len(prompt).to_bytes(8, "little") + prompt)
    last = len(source.messages) - 1
    positions = [i for i, message in enumerate(source.messages) if message.role == "assistant" and i < last]
    wanted = set(positions[-_RECENT:])
    links: dict[int, bytes] = {}
    update = running.update
    for i, message in enumerate(source.messages):
        update(len(message.key).to_bytes(8, "little"))
        update(message.key)
        if i in wanted:
            links[i] = running.digest()
    return links, running


def _check_against_old_loop(source: _Source, history: History) -> None:
    """The links, the end digest and the anchor after an answer are the old loop's, byte for byte."""
    links, end = _old_construction(source)
    assert history._links == links
    assert history._end.digest() == end.digest()
    end.update(len(b"answer").to_bytes(8, "little") + b"answer")
    assert history.anchors_after(b"answer")[0] == chain_anchor(end.digest())


keys = st.lists(st.builds(_Keyed, st.binary(max_size=300), st.sampled_from(["user", "assistant", "tool"])), max_size=40)


@given(st.none() | st.text(max_size=20), keys)
def test_the_joined_feed_hashes_as_the_per_message_loop_did(prompt: str | None, listed: list[_Keyed]) -> None:
    """Anchors already stored must still match: the links read off at construction, the end digest and the chain
    anchor recorded after an answer (which extends it) are byte for byte those of the old loop."""
    source = _Source(prompt, tuple(listed))
    history = History(source)
    _check_against_old_loop(source, history)


@settings(max_examples=200, deadline=None)
@given(
    st.none() | st.text(max_size=5),
    st.lists(st.builds(_Keyed, st.binary(max_size=6), st.sampled_from(["user", "assistant", "tool"])), max_size=30),
    st.lists(st.tuples(st.integers(0, 30), st.none() | st.integers(0, 30), st.booleans()), min_size=1, max_size=8),
    st.integers(1, 200),
    st.integers(1, 4),
)
def test_a_history_that_picks_up_a_kept_end_hashes_as_from_the_start(
    prompt: str | None,
    base: list[_Keyed],
    requests: list[tuple[int, int | None, bool]],
    bound: int,
    count: int,
) -> None:
    """Whatever earlier histories left in the table of ends (growing prefixes of one conversation, an edited
    message, other instructions, a table too small to keep them), every history's links, end digest and answer
    anchors are the old loop's."""
    with patch.object(_proxy_match, "_ENDS", Ends(max_bytes=bound, max_ends=count)):
        for length, edited, other_prompt in requests:
            listed = list(base[:length])
            if edited is not None and edited < len(listed):
                listed[edited] = _Keyed(listed[edited].key + b"!", listed[edited].role)
            source = _Source(f"{prompt}?" if other_prompt else prompt, tuple(listed))
            history = History(source)
            _check_against_old_loop(source, history)
            expected = eager(source)
            assert {i: history.link(i) for i in history.positions()} == expected


def test_a_resent_history_is_hashed_from_where_the_last_one_ended() -> None:
    """The second request feeds only its two new keys: the kept digest is copied, and nothing is fed twice."""
    table = Ends()
    with patch.object(_proxy_match, "_ENDS", table):
        first = _Source("be brief", tuple(_Keyed(b"k%d" % n, ("user", "assistant")[n % 2]) for n in range(9)))
        History(first)
        assert len(table) == 1
        second = _Source("be brief", (*first.messages, _Keyed(b"answer", "assistant"), _Keyed(b"next", "user")))
        fed: list[int] = []
        real = History._run

        def counting(self: History, running: Any, start: int, through: int, wanted: Any) -> Any:
            fed.append(through - start)
            return real(self, running, start, through, wanted)

        with patch.object(History, "_run", counting):
            history = History(second)
        assert fed == [2]
        assert history._links == _old_construction(second)[0]
        assert len(table) == 1  # the end taken was dropped, the new one kept
