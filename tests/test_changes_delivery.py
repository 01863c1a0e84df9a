"""Issue 10, delivery: every kind of change (sends, thread replies, edits,
deletions, reactions) reaches followers on two server processes once and in
stream order, and applying the events as docs/api.md says converges on the
database's state; reaction counts stay exact under concurrent toggles; a
user in 5,000 channels can poll."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from helpers import assert_error, start_server, stop_server

from chatterwerks import keys
from chatterwerks.events import decode_cursor

# A thumbs-up with a skin tone and a heart with its variation selector: one
# grapheme of several code points each.
EMOJI = ["👍", "🎉", "❤️", "👍🏽"]
FACES = list("😀😁😂🤣😃😄😅😆😉😊😋😎😍😘🥰😗😙😚🙂🤗🤩🤔🤨😐😑")
# What a follower's view and history must agree on, message by message.
COMPARED = (
    "text",
    "edited_at",
    "deleted",
    "reply_to",
    "reply_count",
    "last_reply_at",
    "mentions",
)


def reaction_path(channel_id: int, seq: int, emoji: str) -> str:
    return f"/api/channels/{channel_id}/messages/{seq}/reactions/{quote(emoji, safe='')}"


class Endpoint:
    """One user's way into one server process (the test app or a subprocess)."""

    def __init__(self, session: Any, token: str, name: str) -> None:
        self.session = session
        self.headers = {"Authorization": f"Bearer {token}"}
        self.name = name

    async def call(self, method: str, path: str, json: Any = None) -> tuple[int, Any]:
        response = await self.session.request(method, path, json=json, headers=self.headers)
        try:
            body = None if response.status == 204 else await response.json()
        finally:
            response.release()
        return response.status, body


# --------------------------------------------------------------------------
# A follower: a poller that applies the events to its own view
# --------------------------------------------------------------------------


@dataclass
class Follower:
    name: str
    endpoint: Endpoint
    use_post: bool
    # channel -> what arrived, in order: ("message", seq), ("edited", seq),
    # ("deleted", seq), ("reaction", seq, emoji, user id, added)
    items: dict[int, list[tuple[Any, ...]]] = field(default_factory=lambda: defaultdict(list))
    # channel -> seq -> the message as this follower's events made it
    view: dict[int, dict[int, dict[str, Any]]] = field(default_factory=lambda: defaultdict(dict))
    cursor: str = ""

    async def poll(self, timeout: float) -> dict[str, Any]:
        if self.use_post:
            body = {"cursor": self.cursor, "timeout": timeout}
            status, answer = await self.endpoint.call("POST", "/api/events", body)
        else:
            path = f"/api/events?cursor={self.cursor}&timeout={timeout}"
            status, answer = await self.endpoint.call("GET", path)
        assert status == 200, (self.name, status, answer)
        before, after = decode_cursor(self.cursor), decode_cursor(answer["cursor"])
        assert set(before) == set(after), self.name
        for channel_id, position in after.items():
            assert position.seq >= before[channel_id].seq, (self.name, channel_id)
        for event in answer["events"]:
            self.apply(event)
        self.cursor = answer["cursor"]
        return answer

    def apply(self, event: dict[str, Any]) -> None:
        """As docs/api.md says: set, never increment."""
        kind = event["type"]
        if kind == "read":
            return
        if kind == "message":
            message = event["message"]
            channel_id, seq = message["channel_id"], message["seq"]
            self.items[channel_id].append(("message", seq))
            view = self.view[channel_id]
            assert seq not in view, (self.name, "message twice", message)
            view[seq] = dict(message)
            if message["reply_to"] is not None:
                # The root came before its reply, in the same stream.
                root = view[message["reply_to"]]
                root["reply_count"] = message["thread"]["reply_count"]
                root["last_reply_at"] = message["thread"]["last_reply_at"]
            return
        channel_id, seq = event["channel_id"], event["seq"]
        # A change comes after the message it changes.
        assert seq in self.view[channel_id], (self.name, "change before its message", event)
        message = self.view[channel_id][seq]
        if kind == "message_edited":
            self.items[channel_id].append(("edited", seq))
            message.update(text=event["text"], edited_at=event["edited_at"])
            message["mentions"] = event["mentions"]
        elif kind == "message_deleted":
            self.items[channel_id].append(("deleted", seq))
            message.update(deleted=True, text="", edited_at=None, reactions=[], mentions=[])
        elif kind == "reaction":
            entry = {"emoji": event["emoji"], "count": event["count"], "users": event["users"]}
            assert event["count"] == len(event["users"]), event
            self.items[channel_id].append(
                ("reaction", seq, event["emoji"], event["user"]["id"], event["added"])
            )
            others = [r for r in message["reactions"] if r["emoji"] != event["emoji"]]
            if len(others) == len(message["reactions"]):
                message["reactions"] = others + ([entry] if entry["count"] else [])
            else:
                message["reactions"] = [
                    entry if r["emoji"] == event["emoji"] else r
                    for r in message["reactions"]
                    if r["emoji"] != event["emoji"] or entry["count"]
                ]
        else:
            raise AssertionError(f"{self.name}: unexpected event {event}")


async def follow(follower: Follower, last_seqs: dict[int, int], done: asyncio.Event) -> None:
    """Polls until the actors are done and the cursor stands at every
    channel's newest position."""
    while True:
        await follower.poll(timeout=1)
        if done.is_set():
            at = decode_cursor(follower.cursor)
            if all(at[c].seq >= seq for c, seq in last_seqs.items() if c in at):
                return


# --------------------------------------------------------------------------
# What the database says
# --------------------------------------------------------------------------


async def stream_of(conn: Any, channel_id: int) -> list[Any]:
    """Every position of a channel's stream, oldest first."""
    return await conn.fetch(
        """SELECT seq, 'message' AS kind, seq AS message_seq,
                  NULL::text AS emoji, NULL::bigint AS user_id, NULL::boolean AS added
           FROM messages WHERE channel_id = $1
           UNION ALL
           SELECT seq, kind, message_seq, emoji, user_id, added
           FROM channel_changes WHERE channel_id = $1
           ORDER BY seq""",
        channel_id,
    )


def assert_once_in_order(
    who: str, stream: list[Any], deleted: set[int], received: list[tuple[Any, ...]]
) -> None:
    """`received` is the stream, each position once, in order. An edit or a
    reaction of a message deleted since may have been passed over (its event
    is gone from the database: nothing left to tell), or have arrived before
    the deletion; every other position must be there."""
    at = 0
    for row in stream:
        kind, message_seq = row["kind"], row["message_seq"]
        if kind in ("message", "deleted"):
            expected: tuple[Any, ...] | None = (kind, message_seq)
        elif message_seq in deleted:
            expected = None
            if at < len(received) and received[at][:2] == (kind, message_seq):
                at += 1
            continue
        elif kind == "edited":
            expected = ("edited", message_seq)
        else:
            expected = ("reaction", message_seq, row["emoji"], row["user_id"], row["added"])
        assert at < len(received), (who, "missing from the end", row["seq"], expected)
        assert received[at] == expected, (who, "at position", row["seq"], received[at], expected)
        at += 1
    assert at == len(received), (who, "more than the stream holds", received[at:])


async def history_of(endpoint: Endpoint, channel_id: int) -> dict[int, dict[str, Any]]:
    """Every message of a channel as GET history pages it."""
    found: dict[int, dict[str, Any]] = {}
    before = ""
    while True:
        status, page = await endpoint.call(
            "GET", f"/api/channels/{channel_id}/messages?limit=200{before}"
        )
        assert status == 200, page
        for message in page["messages"]:
            found[message["seq"]] = message
        if not page["has_more"]:
            return found
        before = f"&before={page['messages'][0]['seq']}"


def comparable(message: dict[str, Any]) -> dict[str, Any]:
    shown = {name: message[name] for name in COMPARED}
    # Emoji order is not part of the contract; each emoji's users are.
    shown["reactions"] = {r["emoji"]: (r["count"], r["users"]) for r in message["reactions"]}
    return shown


# --------------------------------------------------------------------------
# 1. Exactly once under load, two server processes
# --------------------------------------------------------------------------


async def test_every_change_kind_once_in_order_on_two_processes(
    app, settings, make_user, monkeypatch
):
    """4 actors send, reply, edit, delete and react at once in 3 channels,
    through both processes; 12 followers (each of 6 users polls on both
    processes, GET on one, POST on the other) follow their cursor chains.
    Each, and each of 12 late followers from the same cursors, gets every
    position of its channels once, in order, and its view
    of every message equals history's."""
    rng = random.Random(10)
    users = [await make_user(f"live{i}") for i in range(6)]
    names = [u.username for u in users]
    owner = users[0]
    members = [names[1:], names[1:4], [names[4], names[5]]]
    channel_ids = []
    for i, invited in enumerate(members):
        body = await owner.post("/api/channels", {"name": f"live{i}", "members": invited}, 201)
        channel_ids.append(body["channel"]["id"])
    channels_of = {
        u.id: [
            c for c, m in zip(channel_ids, members, strict=True) if u is owner or u.username in m
        ]
        for u in users
    }
    channel_members = {c: {names[0], *m} for c, m in zip(channel_ids, members, strict=True)}

    monkeypatch.setenv("CHATTERWERKS_LIMIT_MESSAGES_USER", "off")
    process, base = await start_server(settings.database_url)
    try:
        async with aiohttp.ClientSession(base_url=base) as remote:
            local_of = {u.id: Endpoint(u.client, u.token, "local") for u in users}
            remote_of = {u.id: Endpoint(remote, u.token, "remote") for u in users}
            followers = []
            for user in users:
                for endpoint, use_post in ((local_of[user.id], False), (remote_of[user.id], True)):
                    follower = Follower(f"{user.username}@{endpoint.name}", endpoint, use_post)
                    _, me = await endpoint.call("GET", "/api/me")
                    follower.cursor = me["cursor"]
                    followers.append((user, follower))
            last_seqs: dict[int, int] = {}
            done = asyncio.Event()
            # Late followers start from the same cursors once all is done: they
            # read the stream from the database, where changes of messages
            # deleted since are passed over.
            late = []
            for user, follower in followers:
                name = follower.name.replace("@", "@late-")
                late.append((user, Follower(name, follower.endpoint, not follower.use_post)))
                late[-1][1].cursor = follower.cursor
            following = [asyncio.create_task(follow(f, last_seqs, done)) for _, f in followers]

            # channel -> [(seq, author id)] of the messages sent so far
            known: dict[int, list[tuple[int, int]]] = defaultdict(list)
            unexpected: list[Any] = []
            counts: dict[str, int] = defaultdict(int)

            async def act(user: Any, steps: int) -> None:
                for step in range(steps):
                    endpoint = (local_of if step % 2 else remote_of)[user.id]
                    channel_id = rng.choice(channels_of[user.id])
                    sent = known[channel_id]
                    mine = [seq for seq, author in sent if author == user.id]
                    recent = [seq for seq, _ in sent[-6:]]
                    mention = rng.choice([*names, "nobody", ""])
                    text = f"{user.username} step {step}" + (f" @{mention}" if mention else "")
                    roll = rng.random()
                    if roll < 0.3 or not sent:
                        op, allowed = "send", {201}
                        status, body = await endpoint.call(
                            "POST", f"/api/channels/{channel_id}/messages", {"text": text}
                        )
                    elif roll < 0.42:
                        op, allowed = "reply", {201, 400}
                        status, body = await endpoint.call(
                            "POST",
                            f"/api/channels/{channel_id}/messages",
                            {"text": "re: " + text, "reply_to": rng.choice(recent)},
                        )
                    elif roll < 0.55 and mine:
                        op, allowed = "edit", {200, 404}
                        status, body = await endpoint.call(
                            "PATCH",
                            f"/api/channels/{channel_id}/messages/{rng.choice(mine[-4:])}",
                            {"text": "edited " + text},
                        )
                    elif roll < 0.62 and (mine or user is owner):
                        # The owner moderates: they delete anyone's messages.
                        seq = rng.choice(recent if user is owner else mine[-4:])
                        op, allowed = "delete", {204}
                        status, body = await endpoint.call(
                            "DELETE", f"/api/channels/{channel_id}/messages/{seq}"
                        )
                    else:
                        add = rng.random() < 0.7
                        op, allowed = ("react" if add else "unreact"), {204, 404} if add else {204}
                        path = reaction_path(channel_id, rng.choice(recent), rng.choice(EMOJI))
                        status, body = await endpoint.call("PUT" if add else "DELETE", path)
                    counts[f"{op} {status}"] += 1
                    if status not in allowed:
                        unexpected.append((user.username, op, status, body))
                    elif status == 201:
                        known[channel_id].append((body["message"]["seq"], user.id))
                    elif status >= 400:
                        expected = {"reply": "invalid_reply_to"}.get(op, "message_not_found")
                        assert_error(body, expected)

            started = time.monotonic()
            seed = [await owner.send(c, f"first in {c}") for c in channel_ids]
            for message in seed:
                known[message["channel_id"]].append((message["seq"], owner.id))
            await asyncio.gather(*(act(u, 60) for u in (users[0], users[1], users[2], users[4])))
            assert unexpected == []
            # Every kind of change happened (else the test proves less than it says).
            for op in ("send 201", "reply 201", "edit 200", "delete 204", "react 204"):
                assert counts[op] > 0, counts
            async with app[keys.POOL].acquire() as conn:
                for channel_id in channel_ids:
                    last_seqs[channel_id] = await conn.fetchval(
                        "SELECT last_seq FROM channels WHERE id = $1", channel_id
                    )
            done.set()
            await asyncio.wait_for(asyncio.gather(*following), 30)
            await asyncio.wait_for(
                asyncio.gather(*(follow(f, last_seqs, done) for _, f in late)), 30
            )
            followers += late

            async with app[keys.POOL].acquire() as conn:
                for channel_id in channel_ids:
                    stream = await stream_of(conn, channel_id)
                    # Gapless: each position is exactly one message or one change.
                    assert [row["seq"] for row in stream] == list(
                        range(1, last_seqs[channel_id] + 1)
                    )
                    deleted = {
                        row["seq"]
                        for row in await conn.fetch(
                            "SELECT seq FROM messages WHERE channel_id = $1 AND deleted_at IS NOT NULL",
                            channel_id,
                        )
                    }
                    history = await history_of(local_of[owner.id], channel_id)
                    assert sorted(history) == [
                        row["seq"] for row in stream if row["kind"] == "message"
                    ]
                    for user, follower in followers:
                        if channel_id not in channels_of[user.id]:
                            assert channel_id not in follower.items
                            continue
                        assert_once_in_order(
                            follower.name, stream, deleted, follower.items[channel_id]
                        )
                        view = follower.view[channel_id]
                        assert sorted(view) == sorted(history), follower.name
                        for seq, message in history.items():
                            assert comparable(view[seq]) == comparable(message), (
                                follower.name,
                                channel_id,
                                seq,
                            )
                    # Mentions name members only: whoever else was @-ed is plain text.
                    for message in history.values():
                        assert set(message["mentions"]) <= channel_members[channel_id], message
            assert time.monotonic() - started < 50
    finally:
        stop_server(process)


async def test_tombstone_of_an_edited_message_converges(make_user):
    """Bob has the message; Alice edits it, then deletes it; Bob's next poll
    passes the edit over (nothing left to tell) and makes a tombstone. His
    view must equal history's, edited_at included (docs/api.md: applying the
    events makes a client's view equal the database's)."""
    alice, bob = await make_user("alice"), await make_user("bob")
    body = await alice.post("/api/channels", {"name": "typos", "members": ["bob"]}, 201)
    channel_id = body["channel"]["id"]
    follower = Follower("bob", Endpoint(bob.client, bob.token, "local"), use_post=False)
    follower.cursor = (await bob.get("/api/me"))["cursor"]
    sent = await alice.send(channel_id, "teh typo")
    await follower.poll(timeout=5)
    assert follower.items[channel_id] == [("message", sent["seq"])]
    path = f"/api/channels/{channel_id}/messages/{sent['seq']}"
    await alice.call("PATCH", path, {"text": "the typo"}, expect=200)
    await alice.call("DELETE", path, expect=204)
    await follower.poll(timeout=5)
    assert follower.items[channel_id][-1] == ("deleted", sent["seq"])
    [shown] = (await bob.get(f"/api/channels/{channel_id}/messages"))["messages"]
    mine = follower.view[channel_id][sent["seq"]]
    assert {k: mine[k] for k in COMPARED} == {k: shown[k] for k in COMPARED}


# --------------------------------------------------------------------------
# 2. Reaction counts under concurrency
# --------------------------------------------------------------------------


async def test_twenty_concurrent_reactions_count_exactly(app, make_user):
    users = [await make_user(f"fan{i}") for i in range(20)]
    owner = users[0]
    body = await owner.post(
        "/api/channels", {"name": "fans", "members": [u.username for u in users[1:]]}, 201
    )
    channel_id = body["channel"]["id"]
    message = await owner.send(channel_id, "react to me")
    path = reaction_path(channel_id, message["seq"], "👍🏽")
    answers = await asyncio.gather(*(u.call("PUT", path) for u in users))
    assert answers == [None] * 20  # all 204
    [shown] = (await owner.get(f"/api/channels/{channel_id}/messages"))["messages"][-1:]
    assert shown["seq"] == message["seq"]
    [entry] = shown["reactions"]
    assert entry["emoji"] == "👍🏽" and entry["count"] == 20
    assert sorted(entry["users"]) == sorted(u.id for u in users)
    # Each add took its own position of the stream.
    async with app[keys.POOL].acquire() as conn:
        rows = await conn.fetch(
            "SELECT user_id, added FROM channel_changes WHERE channel_id = $1 AND kind = 'reaction'",
            channel_id,
        )
        assert sorted(r["user_id"] for r in rows) == sorted(u.id for u in users)
        assert all(r["added"] for r in rows)
    # Again: nothing changes, nothing is recorded.
    await asyncio.gather(*(u.call("PUT", path, expect=204) for u in users[:5]))
    answers = await asyncio.gather(*(u.call("DELETE", path, expect=204) for u in users))
    shown = (await owner.get(f"/api/channels/{channel_id}/messages"))["messages"][-1]
    assert shown["reactions"] == []
    async with app[keys.POOL].acquire() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM reactions WHERE channel_id = $1", channel_id)
            == 0
        )
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM channel_changes WHERE channel_id = $1", channel_id
            )
            == 40
        )


async def test_twenty_distinct_emoji_at_most_under_concurrency(app, make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    body = await alice.post("/api/channels", {"name": "faces", "members": ["bob"]}, 201)
    channel_id = body["channel"]["id"]
    message = await alice.send(channel_id, "so many faces")
    faces = FACES[:25]
    assert len(set(faces)) == 25
    # Half by alice, half by bob: the limit is per message, not per user.
    responses = await asyncio.gather(
        *(
            (alice if i % 2 else bob).client.put(
                reaction_path(channel_id, message["seq"], face),
                headers=(alice if i % 2 else bob).headers,
            )
            for i, face in enumerate(faces)
        )
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [204] * 20 + [409] * 5
    for response in responses:
        if response.status == 409:
            assert_error(await response.json(), "too_many_reactions")
    shown = (await alice.get(f"/api/channels/{channel_id}/messages"))["messages"][-1]
    assert len(shown["reactions"]) == 20
    assert all(r["count"] == 1 for r in shown["reactions"])
    async with app[keys.POOL].acquire() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM reactions WHERE channel_id = $1", channel_id)
            == 20
        )
    # A kept emoji still takes more users; a new one is still refused.
    kept = shown["reactions"][0]["emoji"]
    user = alice if alice.id not in shown["reactions"][0]["users"] else bob
    await user.call("PUT", reaction_path(channel_id, message["seq"], kept), expect=204)
    refused = next(f for f in faces if f not in {r["emoji"] for r in shown["reactions"]})
    body = await alice.call("PUT", reaction_path(channel_id, message["seq"], refused), expect=409)
    assert_error(body, "too_many_reactions")


async def test_changes_wake_parked_polls_from_their_notifications(app, make_user):
    """A reaction, an edit and a deletion each wake 8 parked polls with its
    event, read from its NOTIFY payload: no database read at all."""
    users = [await make_user(f"quiet{i}") for i in range(4)]
    owner = users[0]
    body = await owner.post(
        "/api/channels", {"name": "quiet", "members": [u.username for u in users[1:]]}, 201
    )
    channel_id = body["channel"]["id"]
    sent = await owner.send(channel_id, "watch me")
    path = f"/api/channels/{channel_id}/messages/{sent['seq']}"
    hub = app[keys.HUB]
    changes = [
        ("PUT", reaction_path(channel_id, sent["seq"], "🎉"), None, "reaction"),
        ("PATCH", path, {"text": "watch me change"}, "message_edited"),
        ("DELETE", path, None, "message_deleted"),
    ]
    for method, change_path, json, kind in changes:
        cursors = [(await u.get("/api/me"))["cursor"] for u in users]
        for user, cursor in zip(users, cursors, strict=True):
            await user.get(f"/api/events?cursor={cursor}&timeout=0")  # warms the caches
        polls = [
            asyncio.create_task(user.get(f"/api/events?cursor={cursor}&timeout=10"))
            for user, cursor in zip(users, cursors, strict=True)
            for _ in range(2)
        ]
        deadline = time.monotonic() + 5
        while hub.parked_count < 8:
            assert time.monotonic() < deadline, "the polls never parked"
            await asyncio.sleep(0.01)
        reads = hub.cache.database_reads
        await owner.call(method, change_path, json, expect=204 if json is None else 200)
        answers = await asyncio.wait_for(asyncio.gather(*polls), 5)
        for answer in answers:
            [event] = answer["events"]
            assert event["type"] == kind and event["seq"] == sent["seq"], event
        assert hub.cache.database_reads == reads, kind


async def test_an_edit_too_long_for_its_notification_arrives(app, make_user):
    """8,000 bytes of text: the NOTIFY carries only the place ('e:'), and the
    event is read once from the database for the waiting polls."""
    alice, bob = await make_user("alice"), await make_user("bob")
    body = await alice.post("/api/channels", {"name": "long", "members": ["bob"]}, 201)
    channel_id = body["channel"]["id"]
    follower = Follower("bob", Endpoint(bob.client, bob.token, "local"), use_post=True)
    follower.cursor = (await bob.get("/api/me"))["cursor"]
    sent = await alice.send(channel_id, "short for now")
    await follower.poll(timeout=5)
    waiting = asyncio.create_task(follower.poll(timeout=10))
    hub = app[keys.HUB]
    deadline = time.monotonic() + 5
    while hub.parked_count < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    long_text = "é" * 4000
    path = f"/api/channels/{channel_id}/messages/{sent['seq']}"
    await alice.call("PATCH", path, {"text": long_text}, expect=200)
    answer = await asyncio.wait_for(waiting, 5)
    assert [e["type"] for e in answer["events"]] == ["message_edited"]
    assert follower.view[channel_id][sent["seq"]]["text"] == long_text


# --------------------------------------------------------------------------
# The per-channel tail (?after=&wait=) still returns new messages only
# --------------------------------------------------------------------------


async def test_channel_tail_skips_changes_and_returns_the_next_message(make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    body = await alice.post("/api/channels", {"name": "tail", "members": ["bob"]}, 201)
    channel_id = body["channel"]["id"]
    first = await alice.send(channel_id, "react to me")
    await bob.call("PUT", reaction_path(channel_id, first["seq"], "👍"), expect=204)
    second = await alice.send(channel_id, "and then this")
    path = f"/api/channels/{channel_id}/messages?after={first['seq']}&wait=5"
    assert (await bob.get(path))["messages"] == [second]


async def test_channel_tail_is_not_stalled_by_more_changes_than_its_limit(make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    body = await alice.post("/api/channels", {"name": "tail", "members": ["bob"]}, 201)
    channel_id = body["channel"]["id"]
    first = await alice.send(channel_id, "react to me")
    for emoji in EMOJI[:3]:
        await bob.call("PUT", reaction_path(channel_id, first["seq"], emoji), expect=204)
    second = await alice.send(channel_id, "and then this")
    # limit=2 against 3 changes: as the default limit (50) against 50 reactions.
    path = f"/api/channels/{channel_id}/messages?after={first['seq']}&limit=2&wait=1"
    assert (await bob.get(path))["messages"] == [second]


# --------------------------------------------------------------------------
# 5. A user in 5,000 channels polls
# --------------------------------------------------------------------------


async def test_a_user_in_five_thousand_channels_polls(app, make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    async with app[keys.POOL].acquire() as conn:
        last_channel = await conn.fetchval(
            """WITH made AS (
                   INSERT INTO channels (kind, name)
                   SELECT 'group', 'bulk' || g FROM generate_series(1, 5000) g
                   RETURNING id
               ), joined AS (
                   INSERT INTO subscriptions (channel_id, user_id, role)
                   SELECT id, $1, 'moderator' FROM made
               )
               SELECT max(id) FROM made""",
            alice.id,
        )
        await conn.execute(
            "INSERT INTO subscriptions (channel_id, user_id) VALUES ($1, $2)", last_channel, bob.id
        )
    me = await alice.get("/api/me")
    cursor = me["cursor"]
    assert len(decode_cursor(cursor)) == 5001  # and Home
    assert len(cursor) > 8192  # too long for a URL: this is what POST is for
    started = time.monotonic()
    waiting = asyncio.create_task(
        alice.call("POST", "/api/events", {"cursor": cursor, "timeout": 20}, expect=200)
    )
    hub = app[keys.HUB]
    deadline = time.monotonic() + 15
    while hub.parked_count < 1:
        assert not waiting.done(), waiting.result()
        assert time.monotonic() < deadline, "the poll never parked"
        await asyncio.sleep(0.02)
    sent = await bob.send(last_channel, "to the last of five thousand")
    answer = await asyncio.wait_for(waiting, 10)
    assert [e for e in answer["events"] if e["type"] != "read"] == [
        {"type": "message", "message": sent}
    ]
    assert time.monotonic() - started < 20
    again = await alice.call(
        "POST", "/api/events", {"cursor": answer["cursor"], "timeout": 0.3}, expect=200
    )
    assert again["events"] == []
    assert decode_cursor(again["cursor"])[last_channel].seq == sent["seq"]


@pytest.mark.parametrize("cursor", [5, ["x"], {"a": 1}, True])
async def test_post_events_cursor_must_be_a_string(make_user, cursor):
    alice = await make_user()
    body = await alice.call("POST", "/api/events", {"cursor": cursor, "timeout": 0}, expect=400)
    assert_error(body, "invalid_cursor")
