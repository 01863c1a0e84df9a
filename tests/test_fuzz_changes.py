"""Property-based tests of the issue-10 endpoints (edits, deletions,
reactions, thread replies, mentions, POST /api/events), with the harness of
tests/test_fuzz.py: for every request no 5xx and no hang, an error has the
one shape, and a request that fails (4xx) changes no data, now including
the reactions, mentions and stream changes tables."""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from snapshot import SNAPSHOT_SQL
from test_changes_authz import CHANGES_SNAPSHOT_SQL
from test_fuzz import (
    EDGE_INTS,
    FUZZ_SETTINGS,
    MAX_WAIT,
    NASTY_TEXT,
    World,
    _quote,
    any_chars,
    bodies,
    channel_ids,
    encode_json,
    json_ints,
    json_text,
    json_values,
    path_segments,
    queries,
    raw_bodies,
    structured_cursors,
    text_values,
    world,  # noqa: F401 (the module-scoped fixture: one app and database here)
)

from chatterwerks import keys

EMOJI_PARTS = [
    "👍", "🎉", "❤", "❤️", "🏽", "\u200d", "\ufe0f", "\ufe0e", "🇫", "🇷", "👨", "👩", "👧",
    "#", "1", "\u20e3", "🏴", "\U000e0067", "\U000e007f", "a", " ", "%", "/", "\x00",
]  # fmt: skip
emoji_strings = st.one_of(
    st.sampled_from(list("😀😁😂🤣😃😄😅😆😉😊😋😎😍😘🥰😗😙😚🙂🤗🤩🤔🤨😐😑")),
    st.sampled_from(["👍", "👍🏽", "🇫🇷", "👨‍👩‍👧", "❤️", "1️⃣", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "😀", "🤔", "🥰"]),
    st.lists(st.sampled_from(EMOJI_PARTS), min_size=1, max_size=5).map("".join),
    st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),
    st.text(min_size=1, max_size=6),
    st.text(any_chars, min_size=1, max_size=4),
    st.sampled_from([s for s in NASTY_TEXT if s]),
)


# Texts a send or an edit takes (with mentions of members, non-members, nobody).
plausible_texts = st.one_of(
    st.text(min_size=1, max_size=30).filter(str.strip),
    st.sampled_from(["@bob", "hi @carol", "@alice @bob", "@@bob", "a@bob", "@", "Hey Otter, help"]),
)


@pytest.fixture(scope="module")
def changes(world: World) -> Iterator[World]:  # noqa: F811
    """The fuzz world, with messages to change: alice's and bob's in
    general (a thread, a reaction, a mention), bob's in the direct channel,
    Otter's in home, carol's in secret (alice is no member there), and
    messages alice may delete. Failed requests must leave every issue-10
    table alone too."""
    general, direct = world.channels["general"], world.channels["direct"]
    seqs: dict[str, list[int]] = {"keep": [], "spare": []}

    async def call(user: str, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {world.tokens[user]}"}
        response = await world.client.request(method, path, json=body, headers=headers)
        assert response.status in (201, 204), await response.text()
        return await response.json() if response.status == 201 else None

    def send(user: str, channel_id: int, body: dict[str, Any]) -> int:
        path = f"/api/channels/{channel_id}/messages"
        return world.run(call(user, "POST", path, body))["message"]["seq"]

    home, secret = world.channels["home"], world.channels["secret"]
    root = send("alice", general, {"text": "a root for @bob"})
    targets = [
        (general, root),
        (general, send("bob", general, {"text": "bob's, not alice's", "reply_to": root})),
        (direct, send("bob", direct, {"text": "bob's in direct"})),
        (home, send("alice", home, {"text": "Hey Otter, help"}) + 1),  # Otter's answer
        (secret, send("carol", secret, {"text": "carol's secret"})),
    ]
    targets += [(general, send("alice", general, {"text": f"spare {i}"})) for i in range(40)]
    seqs["keep"] = [seq for _, seq in targets[:5]]
    seqs["spare"] = [seq for _, seq in targets[5:]]
    path = f"/api/channels/{general}/messages/{root}/reactions/{_quote('👍')}"
    world.run(call("bob", "PUT", path))

    async def snapshot(self: World) -> Any:
        async with self.app[keys.POOL].acquire() as conn:
            return {
                **dict(await conn.fetchrow(SNAPSHOT_SQL)),
                **dict(await conn.fetchrow(CHANGES_SNAPSHOT_SQL)),
            }

    world.snapshot = types.MethodType(snapshot, world)  # type: ignore[method-assign]
    world.message_seqs = seqs  # type: ignore[attr-defined]
    world.message_targets = targets  # type: ignore[attr-defined]
    yield world


def seq_segments(known: list[int]) -> st.SearchStrategy[str]:
    return path_segments([str(s) for s in known] + ["0", "999999", "1"])


def message_path(changes: World, data: st.DataObject, known: list[int]) -> str:
    """Mostly a message that exists (alice's, bob's, Otter's, carol's: each
    answer differs), else any channel and seq segments."""
    exact = [(channel, seq) for channel, seq in changes.message_targets if seq in known]
    if exact and data.draw(st.booleans(), label="existing"):
        channel, seq = data.draw(st.sampled_from(exact), label="message")
        return f"/api/channels/{channel}/messages/{seq}"
    channel = data.draw(channel_ids(changes), label="channel")
    seq = data.draw(seq_segments(known), label="seq")
    return f"/api/channels/{channel}/messages/{seq}"


@FUZZ_SETTINGS
@given(
    data=st.data(),
    body=bodies({"text": st.one_of(text_values, st.text(min_size=3995, max_size=4005))}),
)
def test_fuzz_edit(changes: World, data: st.DataObject, body: bytes) -> None:
    path = message_path(changes, data, changes.message_seqs["keep"])
    if data.draw(st.booleans(), label="plausible"):
        body = encode_json({"text": data.draw(plausible_texts, label="text")})
    changes.request("PATCH", path, body)


@FUZZ_SETTINGS
@given(data=st.data(), body=st.one_of(st.none(), bodies({})))
def test_fuzz_delete(changes: World, data: st.DataObject, body: bytes | None) -> None:
    """alice moderates general, so she could delete every message there: the
    messages she may delete are spares; the others are bob's in the direct
    channel (403), Otter's (403), carol's (404) and seqs that do not exist."""
    seqs = changes.message_seqs
    known = seqs["spare"] + seqs["keep"][2:]
    changes.request("DELETE", message_path(changes, data, known), body)


@FUZZ_SETTINGS
@given(data=st.data(), add=st.booleans(), emoji=emoji_strings)
def test_fuzz_reactions(changes: World, data: st.DataObject, add: bool, emoji: str) -> None:
    """Random emoji strings; the 20-distinct limit is reached on the way."""
    path = message_path(changes, data, changes.message_seqs["keep"])
    changes.request("PUT" if add else "DELETE", f"{path}/reactions/{_quote(emoji)}")


@FUZZ_SETTINGS
@given(data=st.data(), query=queries)
def test_fuzz_replies(changes: World, data: st.DataObject, query: str) -> None:
    path = message_path(changes, data, changes.message_seqs["keep"])
    changes.request("GET", f"{path}/replies?{query}")


@FUZZ_SETTINGS
@given(query=queries)
def test_fuzz_mentions(changes: World, query: str) -> None:
    for user in ("alice", "bob"):
        changes.request("GET", f"/api/mentions?{query}", as_user=user)


@FUZZ_SETTINGS
@given(
    data=st.data(),
    body=bodies(
        {
            "text": st.one_of(text_values, st.sampled_from(["@bob", "@carol hi", "@@bob", "@"])),
            "reply_to": st.one_of(json_ints, json_values, st.integers(-2, 60)),
        }
    ),
)
def test_fuzz_send_reply(changes: World, data: st.DataObject, body: bytes) -> None:
    general = str(changes.channels["general"])
    channel = data.draw(st.one_of(st.just(general), channel_ids(changes)), label="channel")
    if data.draw(st.booleans(), label="plausible"):
        seqs = [*changes.message_seqs["keep"], *changes.message_seqs["spare"], 999]
        reply_to = data.draw(st.sampled_from(seqs), label="reply_to")
        body = encode_json({"text": data.draw(plausible_texts, label="text"), "reply_to": reply_to})
    changes.request("POST", f"/api/channels/{channel}/messages", body)


small_timeouts = st.one_of(
    st.none(),
    st.floats(max_value=MAX_WAIT),
    st.integers(max_value=0),
    st.sampled_from([v for v in EDGE_INTS if v <= 0]),
    json_text,
    st.lists(st.integers(0, 1), max_size=2),
    st.booleans(),
)


@FUZZ_SETTINGS
@given(
    body=bodies(
        {
            "cursor": st.one_of(
                st.just("current"),
                structured_cursors,
                st.text(max_size=30),
                json_values,
            ),
            "timeout": small_timeouts,
        }
    )
)
def test_fuzz_post_events(changes: World, body: bytes) -> None:
    body = body.replace(b'"current"', ('"' + changes.cursor + '"').encode())
    changes.request("POST", "/api/events", body)


NEW_PATHS = [
    "/api/mentions",
    "/api/events",
    "/api/channels/{general}/messages/{seq}",
    "/api/channels/{general}/messages/{seq}/replies",
    "/api/channels/{general}/messages/{seq}/reactions/%F0%9F%91%8D",
    "/api/channels/{general}/messages/{seq}/reactions",
    "/api/channels/{general}/messages/{seq}/nothing",
]


@FUZZ_SETTINGS
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    path=st.sampled_from(NEW_PATHS),
    as_user=st.sampled_from(["alice", "bob", None]),
)
def test_fuzz_new_methods(changes: World, method: str, path: str, as_user: str | None) -> None:
    """Every method at every new address: an answer in the error shape or a
    success, never a 5xx. DELETE of the message itself is left out (a root
    deleted would shrink what the other tests reach)."""
    if method == "DELETE" and path.endswith("{seq}"):
        return
    root = changes.message_seqs["keep"][0]
    body = b'{"text": "fuzzed"}' if method in ("POST", "PUT", "PATCH") else None
    filled = path.format(general=changes.channels["general"], seq=root)
    changes.request(method, filled, body, as_user=as_user)


@FUZZ_SETTINGS
@given(
    target=st.sampled_from(["PATCH message", "POST events", "POST reply"]),
    body=raw_bodies,
)
def test_fuzz_new_raw_bodies(changes: World, target: str, body: Any) -> None:
    general, root = changes.channels["general"], changes.message_seqs["keep"][0]
    method, path = {
        "PATCH message": ("PATCH", f"/api/channels/{general}/messages/{root}"),
        "POST events": ("POST", "/api/events"),
        "POST reply": ("POST", f"/api/channels/{general}/messages"),
    }[target]
    changes.request(method, path, body.data)


def test_fuzz_reached_the_limits(changes: World) -> None:
    """After the runs above: no message has more than 20 distinct reactions,
    and no tombstone kept its text."""

    async def check() -> None:
        async with changes.app[keys.POOL].acquire() as conn:
            most = await conn.fetchval(
                "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM reactions "
                "GROUP BY channel_id, message_seq) t"
            )
            assert most <= 20
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM messages WHERE deleted_at IS NOT NULL AND text <> ''"
                )
                == 0
            )

    changes.run(check())
