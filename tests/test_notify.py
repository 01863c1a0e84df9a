"""Notifications, server side (issue 11): the per-channel `notify` setting
(PUT /api/channels/{id}/settings) and "mark all as read" (POST /api/read-all),
with their authorization, bad input, concurrency and the `read` events that
carry a moved marker to the user's other clients."""

from __future__ import annotations

import asyncio
import json

import asyncpg
from helpers import assert_error
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz import FUZZ_SETTINGS, World, world  # noqa: F401 (world is a fixture)

from chatterwerks import keys
from chatterwerks.db import QUERIES


async def cursor_of(user) -> str:
    return (await user.get("/api/me"))["cursor"]


async def poll(user, cursor, timeout=5.0, headers=None):
    response = await user.client.get(
        f"/api/events?cursor={cursor}&timeout={timeout}", headers=headers or user.headers
    )
    assert response.status == 200, await response.text()
    return await response.json()


async def group(owner, name, *members) -> int:
    body = await owner.post("/api/channels", {"name": name, "members": list(members)}, expect=201)
    return body["channel"]["id"]


async def direct(user, peer: str) -> int:
    response = await user.call("POST", "/api/direct", {"username": peer})
    return response["channel"]["id"]


async def put_settings(user, channel_id, notify, expect=200):
    return await user.call(
        "PUT", f"/api/channels/{channel_id}/settings", {"notify": notify}, expect=expect
    )


async def me_channels(user) -> dict[int, dict]:
    return {c["id"]: c for c in (await user.get("/api/me"))["channels"]}


# ---------------------------------------------------------------- settings


async def test_defaults_by_channel_kind(make_user, home_id):
    alice, _bob = await make_user("alice"), await make_user("bob")
    gid = await group(alice, "team", "bob")
    did = await direct(alice, "bob")
    otter_dm = await direct(alice, "otter")
    channels = await me_channels(alice)
    assert channels[home_id]["notify"] == "mentions"
    assert channels[gid]["notify"] == "mentions"
    assert channels[did]["notify"] == "all"
    assert channels[otter_dm]["notify"] == "all"
    # The same in GET /api/channels and GET /api/channels/{id}.
    listed = {c["id"]: c["notify"] for c in (await alice.get("/api/channels"))["channels"]}
    assert listed == {cid: c["notify"] for cid, c in channels.items()}
    assert (await alice.get(f"/api/channels/{did}"))["channel"]["notify"] == "all"


async def test_set_and_read_back_per_user(make_user, home_id):
    alice, bob = await make_user("alice"), await make_user("bob")
    gid = await group(alice, "team", "bob")
    did = await direct(alice, "bob")
    for value in ("all", "none", "mentions", "none"):
        answer = await put_settings(alice, gid, value)
        assert answer["channel"]["id"] == gid
        assert answer["channel"]["notify"] == value
        assert {m["username"] for m in answer["channel"]["members"]} == {"alice", "bob"}
        assert (await alice.get(f"/api/channels/{gid}"))["channel"]["notify"] == value
        assert (await me_channels(alice))[gid]["notify"] == value
    await put_settings(alice, did, "mentions")
    await put_settings(alice, home_id, "none")
    mine = await me_channels(alice)
    assert (mine[gid]["notify"], mine[did]["notify"], mine[home_id]["notify"]) == (
        "none",
        "mentions",
        "none",
    )
    # Bob's settings are his own: still the defaults.
    his = await me_channels(bob)
    assert (his[gid]["notify"], his[did]["notify"], his[home_id]["notify"]) == (
        "mentions",
        "all",
        "mentions",
    )


async def test_muted_channel_still_counts_unread_and_mentions(make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    gid = await group(alice, "team", "bob")
    await put_settings(bob, gid, "none")
    await alice.send(gid, "plain")
    await alice.send(gid, "hey @bob")
    channel = (await me_channels(bob))[gid]
    assert (channel["notify"], channel["unread"], channel["mentions"]) == ("none", 2, 1)


async def test_settings_authz(make_user, home_id):
    alice, bob, carol = await make_user("alice"), await make_user("bob"), await make_user("carol")
    gid = await group(alice, "team", "bob")
    did = await direct(alice, "bob")
    # An outsider, a channel that does not exist, a removed member: one 404.
    for user, cid in ((carol, gid), (carol, did), (alice, 10**12), (carol, "abc")):
        body = await put_settings(user, cid, "none", expect=404)
        assert_error(body, "channel_not_found")
    await put_settings(bob, gid, "all")
    await alice.call("DELETE", f"/api/channels/{gid}/members/bob", expect=204)
    assert_error(await put_settings(bob, gid, "none", expect=404), "channel_not_found")
    # Nothing of the others changed.
    assert (await me_channels(alice))[gid]["notify"] == "mentions"
    # Otter's DM and Home: any member sets their own.
    otter_dm = await direct(carol, "otter")
    assert (await put_settings(carol, otter_dm, "none"))["channel"]["notify"] == "none"
    assert (await put_settings(carol, home_id, "all"))["channel"]["notify"] == "all"
    # A bad token: 401.
    response = await alice.client.put(
        f"/api/channels/{gid}/settings",
        json={"notify": "all"},
        headers={"Authorization": "Bearer x"},
    )
    assert response.status == 401


async def test_settings_bad_values_are_400(make_user):
    alice = await make_user("alice")
    gid = await group(alice, "team")
    bad = [
        ({}, "missing_notify"),
        ({"notify": None}, "missing_notify"),
        ({"notify": "muted"}, "invalid_notify"),
        ({"notify": "ALL"}, "invalid_notify"),
        ({"notify": 1}, "invalid_notify"),
        ({"notify": True}, "invalid_notify"),
        ({"notify": ["all"]}, "invalid_notify"),
        ({"notify": {"all": 1}}, "invalid_notify"),
        ({"notify": "all\x00"}, "invalid_notify"),
    ]
    for body, code in bad:
        answer = await alice.call("PUT", f"/api/channels/{gid}/settings", body, expect=400)
        assert_error(answer, code)
    response = await alice.client.put(
        f"/api/channels/{gid}/settings", data=b"[1]", headers=alice.headers
    )
    assert response.status == 400
    assert_error(await response.json(), "invalid_json")
    assert (await me_channels(alice))[gid]["notify"] == "mentions"


# ---------------------------------------------------------------- read-all


async def test_read_all_moves_every_marker(make_user, home_id):
    alice, bob = await make_user("alice"), await make_user("bob")
    g1 = await group(alice, "one", "bob")
    g2 = await group(alice, "two", "bob")
    did = await direct(alice, "bob")
    await put_settings(bob, g2, "none")
    for cid in (g1, g2, did, home_id):
        await alice.send(cid, "hello @bob")
        await alice.send(cid, "and more")
    before = await me_channels(bob)
    assert all(before[c]["unread"] >= 2 and before[c]["mentions"] == 1 for c in (g1, g2, did))
    assert await bob.call("POST", "/api/read-all", expect=204) is None
    after = await me_channels(bob)
    for channel in after.values():
        assert channel["unread"] == 0 and channel["mentions"] == 0, channel
        assert channel["last_read_seq"] == channel["last_seq"]
        assert channel["read_count"] == channel["message_count"]
    # Again: nothing to move, still 204.
    await bob.call("POST", "/api/read-all", expect=204)


async def test_read_all_leaves_others_alone(make_user, home_id):
    alice, bob = await make_user("alice"), await make_user("bob")
    gid = await group(alice, "team", "bob")
    await bob.send(gid, "from bob")
    await alice.send(home_id, "from alice")
    alice_before = await me_channels(alice)
    assert alice_before[gid]["unread"] == 1
    await bob.call("POST", "/api/read-all", expect=204)
    assert await me_channels(alice) == alice_before


async def test_read_all_skips_channels_left(make_user, app):
    alice, bob = await make_user("alice"), await make_user("bob")
    gid = await group(alice, "team", "bob")
    await alice.send(gid, "one")
    await bob.call("DELETE", f"/api/channels/{gid}/members/bob", expect=204)
    await alice.send(gid, "while away")
    await bob.call("POST", "/api/read-all", expect=204)
    async with app[keys.POOL].acquire() as conn:
        rows = await conn.fetchval(
            "SELECT count(*) FROM subscriptions WHERE channel_id = $1 AND user_id = $2",
            gid,
            bob.id,
        )
    assert rows == 0  # not re-created by read-all
    # Back in: the history before the re-join counts as read, what follows is unread.
    await alice.post(f"/api/channels/{gid}/members", {"username": "bob"}, expect=200)
    await alice.send(gid, "welcome back")
    assert (await me_channels(bob))[gid]["unread"] == 1


async def test_read_all_reaches_other_clients_once(client, make_user, home_id):
    alice, bob = await make_user("alice"), await make_user("bob")
    g1 = await group(alice, "one", "bob")
    g2 = await group(alice, "two", "bob")
    quiet = await group(alice, "quiet", "bob")  # nothing unread: no event
    for cid in (g1, g2, home_id):
        await alice.send(cid, f"news in {cid}")
    response = await client.post(
        "/api/login", json={"username": "bob", "password": "correct horse"}
    )
    other_tab = {"Authorization": f"Bearer {(await response.json())['token']}"}
    cursor = await cursor_of(bob)
    waiting = asyncio.create_task(poll(bob, cursor, headers=other_tab))
    await asyncio.sleep(0.1)
    await bob.call("POST", "/api/read-all", expect=204)
    answer = await asyncio.wait_for(waiting, 5)
    # The poll may have woken before every event was there: follow the chain.
    events = list(answer["events"])
    while len(events) < 3:
        answer = await poll(bob, answer["cursor"], timeout=2, headers=other_tab)
        assert answer["events"], events
        events += answer["events"]
    channels = await me_channels(bob)
    expected = {
        cid: {
            "type": "read",
            "channel_id": cid,
            "seq": channels[cid]["last_seq"],
            "read_count": channels[cid]["message_count"],
        }
        for cid in (g1, g2, home_id)
    }
    assert sorted(events, key=lambda e: e["channel_id"]) == [expected[c] for c in sorted(expected)]
    assert quiet not in {e["channel_id"] for e in events}
    # Exactly once: the chain goes quiet, and a second read-all moves nothing.
    await bob.call("POST", "/api/read-all", expect=204)
    assert (await poll(bob, answer["cursor"], timeout=0.3, headers=other_tab))["events"] == []


async def test_read_all_is_exact_with_concurrent_sends(make_user, app):
    """Messages sent while read-all runs are each either read or unread, and
    the counts agree with the marker (no message half-read, no marker moved
    back past a send of the reader's own)."""
    alice, bob = await make_user("alice"), await make_user("bob")
    channels = [await group(alice, f"c{i}", "bob") for i in range(6)]

    async def sends(user, n):
        for i in range(n):
            await user.send(channels[i % len(channels)], f"{user.username} {i} @bob")

    async def read_alls(n):
        for _ in range(n):
            await bob.call("POST", "/api/read-all", expect=204)

    await asyncio.gather(sends(alice, 60), sends(bob, 30), read_alls(15), read_alls(15))
    async with app[keys.POOL].acquire() as conn:
        rows = await conn.fetch(
            """SELECT s.channel_id, s.last_read_seq, s.read_count,
                      (SELECT count(*) FROM messages m
                       WHERE m.channel_id = s.channel_id AND m.seq <= s.last_read_seq) AS counted,
                      (SELECT max(seq) FROM messages m
                       WHERE m.channel_id = s.channel_id AND m.author_id = s.user_id) AS own
               FROM subscriptions s WHERE s.user_id = $1 AND s.channel_id = ANY($2)""",
            bob.id,
            channels,
        )
    for row in rows:
        assert row["read_count"] == row["counted"], dict(row)
        assert row["own"] is None or row["last_read_seq"] >= row["own"], dict(row)
    await bob.call("POST", "/api/read-all", expect=204)
    mine = await me_channels(bob)
    assert all(mine[c]["unread"] == 0 and mine[c]["mentions"] == 0 for c in channels)


async def test_read_all_never_moves_a_marker_back_past_a_concurrent_send(make_user, settings, app):
    """The reader's own send commits while read-all waits for its membership
    row: read-all's snapshot is older than the send, yet the marker stays at
    the send (re-checked, not overwritten with the older end), and the count
    agrees with it."""
    alice, bob = await make_user("alice"), await make_user("bob")
    gid = await group(alice, "team", "bob")
    await alice.send(gid, "unread for bob")
    sender = await asyncpg.connect(settings.database_url)
    reader = await asyncpg.connect(settings.database_url)
    try:
        sending = sender.transaction()
        await sending.start()
        sent = await sender.fetchrow(QUERIES.send_message, gid, bob.id, "bob writes", None)
        reading = asyncio.create_task(reader.fetchrow(QUERIES.read_all, bob.id))
        # Wait until read-all is blocked on the row lock the send holds.
        pid = reader.get_server_pid()
        while not await sender.fetchval(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
        ):
            await asyncio.sleep(0.01)
        await sending.commit()
        await asyncio.wait_for(reading, 10)
    finally:
        await sender.close()
        await reader.close()
    channel = (await me_channels(bob))[gid]
    assert channel["last_read_seq"] == sent["seq"] == channel["last_seq"]
    assert (channel["unread"], channel["read_count"]) == (0, channel["message_count"])


async def test_read_all_notifies_once_and_only_when_a_marker_moved(make_user, settings):
    alice, bob = await make_user("alice"), await make_user("bob")
    gid = await group(alice, "team", "bob")
    await alice.send(gid, "news")
    listener = await asyncpg.connect(settings.database_url)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("chatterwerks", lambda *args: heard.put_nowait(args[3]))

    async def heard_until_barrier(mark: str) -> list[str]:
        # NOTIFYs arrive in commit order: one sent after read-all committed
        # comes after anything read-all sent.
        await listener.execute("SELECT pg_notify('chatterwerks', $1)", mark)
        got = []
        while (payload := await asyncio.wait_for(heard.get(), 10)) != mark:
            got.append(payload)
        return got

    try:
        await bob.call("POST", "/api/read-all", expect=204)
        assert await heard_until_barrier("barrier:1") == [f"u:{bob.id}"]
        await bob.call("POST", "/api/read-all", expect=204)
        assert await heard_until_barrier("barrier:2") == []
    finally:
        await listener.close()


async def test_read_all_needs_a_session(client):
    response = await client.post("/api/read-all", headers={"Authorization": "Bearer x"})
    assert response.status == 401


# ---------------------------------------------------------------- fuzz

NOTIFY_BODIES = st.one_of(
    st.fixed_dictionaries({"notify": st.sampled_from(["all", "mentions", "none"])}),
    st.dictionaries(
        st.sampled_from(["notify", "Notify", "x"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner),
            max_leaves=5,
        ),
        max_size=3,
    ),
)


@FUZZ_SETTINGS
@given(
    channel=st.sampled_from(["home", "general", "secret", "direct", "0", "999999", "x", "-1"]),
    body=NOTIFY_BODIES,
    user=st.sampled_from(["alice", "bob", "carol"]),
)
def test_fuzz_settings_never_5xx(world: World, channel, body, user):  # noqa: F811
    cid = world.channels.get(channel, channel)
    answer = world.request(
        "PUT", f"/api/channels/{cid}/settings", json.dumps(body).encode(), as_user=user
    )
    if answer.status == 200:
        assert json.loads(answer.raw)["channel"]["notify"] == body["notify"]
    else:
        assert answer.status in (400, 404), answer.describe()


@FUZZ_SETTINGS
@given(user=st.sampled_from(["alice", "bob", "carol"]), body=st.binary(max_size=20))
def test_fuzz_read_all_never_5xx(world: World, user, body):  # noqa: F811
    answer = world.request("POST", "/api/read-all", body, as_user=user)
    assert answer.status == 204, answer.describe()
