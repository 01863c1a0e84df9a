"""Channels, members, direct channels, user search, and who may do what."""

from __future__ import annotations

import asyncio

import pytest
from helpers import assert_error

from chatterwerks import keys


async def make_group(owner, name="general", members=()):
    body = await owner.post("/api/channels", {"name": name, "members": list(members)}, expect=201)
    return body["channel"]


async def test_create_group_with_members(make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    channel = await make_group(alice, "Design", members=["BOB", "alice"])
    assert channel["kind"] == "group" and channel["name"] == "Design"
    assert channel["role"] == "moderator" and channel["unread"] == 0 and channel["last_seq"] == 0
    assert sorted(m["username"] for m in channel["members"]) == ["alice", "bob"]
    bobs = (await bob.get("/api/channels"))["channels"]
    assert [c["name"] for c in bobs if c["kind"] == "group"] == ["Design"]
    assert next(c for c in bobs if c["kind"] == "group")["role"] == "member"


async def test_group_name_unique_case_insensitively(make_user):
    alice = await make_user()
    await make_group(alice, "Design")
    body = await alice.post("/api/channels", {"name": "design"}, expect=409)
    assert_error(body, "channel_exists")


async def test_create_group_validation(make_user):
    alice = await make_user()
    cases = [
        ({}, "missing_name"),
        ({"name": "   "}, "invalid_name"),
        ({"name": "x" * 65}, "invalid_name"),
        ({"name": 7}, "invalid_name"),
        ({"name": "ok", "members": "bob"}, "invalid_members"),
        ({"name": "ok", "members": [1]}, "invalid_members"),
        ({"name": "ok", "description": "d" * 501}, "invalid_description"),
    ]
    for payload, code in cases:
        assert_error(await alice.post("/api/channels", payload, expect=400), code)
    body = await alice.post("/api/channels", {"name": "ok", "members": ["ghost"]}, expect=404)
    assert_error(body, "user_not_found")
    # Nothing half-made: the failed create left no channel behind.
    assert [c["kind"] for c in (await alice.get("/api/channels"))["channels"]] == ["home"]


async def test_direct_channel_one_per_pair(make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    first = await alice.post("/api/direct", {"username": "Bob"}, expect=201)
    again = await bob.post("/api/direct", {"username": "alice"}, expect=200)
    assert first["channel"]["id"] == again["channel"]["id"]
    assert first["channel"]["kind"] == "direct" and first["channel"]["name"] is None
    assert first["channel"]["peer"]["username"] == "bob"
    assert again["channel"]["peer"]["username"] == "alice"
    assert_error(
        await alice.post("/api/direct", {"username": "alice"}, expect=400), "direct_with_self"
    )
    assert_error(
        await alice.post("/api/direct", {"username": "nobody"}, expect=404), "user_not_found"
    )


async def test_concurrent_direct_opens_make_one_channel(app, make_user):
    users = [await make_user(f"pair{i}") for i in range(2)]
    a, b = users
    results = await asyncio.gather(
        *[a.call("POST", "/api/direct", {"username": b.username}) for _ in range(10)],
        *[b.call("POST", "/api/direct", {"username": a.username}) for _ in range(10)],
    )
    ids = {r["channel"]["id"] for r in results}
    assert len(ids) == 1
    async with app[keys.POOL].acquire() as conn:
        count = await conn.fetchval("SELECT count(*) FROM channels WHERE kind = 'direct'")
        subs = await conn.fetchval(
            "SELECT count(*) FROM subscriptions WHERE channel_id = $1", ids.pop()
        )
    assert count == 1 and subs == 2


async def test_members_add_remove_leave(make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    await make_user("carol")
    channel = await make_group(alice, members=["bob"])
    path = f"/api/channels/{channel['id']}"
    # Only the moderator adds.
    assert_error(
        await bob.post(f"{path}/members", {"username": "carol"}, expect=403), "not_moderator"
    )
    body = await alice.post(f"{path}/members", {"username": "carol"}, expect=200)
    assert sorted(m["username"] for m in body["channel"]["members"]) == ["alice", "bob", "carol"]
    # Adding twice is harmless.
    await alice.post(f"{path}/members", {"username": "carol"}, expect=200)
    assert_error(
        await alice.post(f"{path}/members", {"username": "ghost"}, expect=404), "user_not_found"
    )
    # Only the moderator removes others; anybody leaves.
    body = await bob.call("DELETE", f"{path}/members/carol", expect=403)
    assert_error(body, "not_moderator")
    await alice.call("DELETE", f"{path}/members/carol", expect=204)
    await bob.call("DELETE", f"{path}/members/bob", expect=204)
    members = (await alice.get(path))["channel"]["members"]
    assert [m["username"] for m in members] == ["alice"]
    body = await alice.call("DELETE", f"{path}/members/bob", expect=404)
    assert_error(body, "member_not_found")


async def test_last_moderator_leaving_hands_over(make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    channel = await make_group(alice, members=["bob"])
    await alice.call("DELETE", f"/api/channels/{channel['id']}/members/alice", expect=204)
    assert (await bob.get(f"/api/channels/{channel['id']}"))["channel"]["role"] == "moderator"


async def test_nobody_leaves_home_or_direct(make_user, home_id):
    alice = await make_user("alice")
    await make_user("bob")
    body = await alice.call("DELETE", f"/api/channels/{home_id}/members/alice", expect=403)
    assert_error(body, "cannot_leave")
    direct = (await alice.post("/api/direct", {"username": "bob"}, expect=201))["channel"]
    body = await alice.call("DELETE", f"/api/channels/{direct['id']}/members/alice", expect=403)
    assert_error(body, "cannot_leave")
    # Nobody moderates Home or a direct channel, so nobody adds or removes there.
    body = await alice.call("DELETE", f"/api/channels/{home_id}/members/bob", expect=403)
    assert_error(body, "not_moderator")
    body = await alice.post(f"/api/channels/{direct['id']}/members", {"username": "bob"})
    assert body["error"]["code"] in {"not_moderator", "already_member"}


async def test_authorization_matrix(make_user, app):
    """Every channel endpoint, as moderator, member, non-member, removed member,
    and for a channel id that does not exist: outsiders get the same 404."""
    mod, member, outsider, removed = [
        await make_user(name) for name in ("mod", "member", "outsider", "removed")
    ]
    channel = await make_group(mod, "secret", members=["member", "removed"])
    cid = channel["id"]
    await mod.send(cid, "first")
    await mod.call("DELETE", f"/api/channels/{cid}/members/removed", expect=204)
    async with app[keys.POOL].acquire() as conn:
        missing = await conn.fetchval("SELECT max(id) + 1000 FROM channels")

    def calls(channel_id):
        path = f"/api/channels/{channel_id}"
        return [
            ("GET", path, None),
            ("GET", f"{path}/messages", None),
            ("GET", f"{path}/messages?after=0", None),
            ("GET", f"{path}/messages?after=0&wait=0.1", None),
            ("POST", f"{path}/messages", {"text": "let me in"}),
            ("POST", f"{path}/read", {"seq": 1}),
            ("POST", f"{path}/members", {"username": "outsider"}),
            ("DELETE", f"{path}/members/member", None),
        ]

    for user in (outsider, removed):
        for channel_id in (cid, missing):
            for method, path, body in calls(channel_id):
                answer = await user.call(method, path, body)
                assert answer == {
                    "error": {"code": "channel_not_found", "message": "No such channel."}
                }, (
                    user.username,
                    method,
                    path,
                    answer,
                )
        names = [c.get("name") for c in (await user.get("/api/channels"))["channels"]]
        assert "secret" not in names
    # A plain member reads and posts, but cannot moderate.
    assert (await member.get(f"/api/channels/{cid}/messages"))["messages"][0]["text"] == "first"
    await member.send(cid, "hello")
    await member.post(f"/api/channels/{cid}/read", {"seq": 2}, expect=204)
    body = await member.post(f"/api/channels/{cid}/members", {"username": "outsider"}, expect=403)
    assert_error(body, "not_moderator")
    # Nothing the outsiders tried was stored.
    texts = [m["text"] for m in (await mod.get(f"/api/channels/{cid}/messages"))["messages"]]
    assert texts == ["first", "hello"]
    members = [m["username"] for m in (await mod.get(f"/api/channels/{cid}"))["channel"]["members"]]
    assert members == ["member", "mod"]


async def test_removed_member_loses_access_at_once(make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    channel = await make_group(alice, members=["bob"])
    cid = channel["id"]
    await bob.send(cid, "still here")
    await alice.call("DELETE", f"/api/channels/{cid}/members/bob", expect=204)
    assert_error(
        await bob.post(f"/api/channels/{cid}/messages", {"text": "x"}, expect=404),
        "channel_not_found",
    )
    assert_error(await bob.get(f"/api/channels/{cid}/messages", expect=404), "channel_not_found")


async def test_bad_channel_ids_are_not_found(make_user):
    alice = await make_user()
    for raw in ("abc", "-1", "1.5", "99999999999999999999999", "%F0%9F%98%80"):
        body = await alice.get(f"/api/channels/{raw}", expect=404)
        assert body["error"]["code"] in {"channel_not_found", "not_found"}


async def test_user_search(make_user):
    for name in ("Anna", "annabel", "anne_marie", "bob", "an.dy"):
        await make_user(name)
    alice = await make_user("zed")
    found = [u["username"] for u in (await alice.get("/api/users?q=ANN"))["users"]]
    assert found == ["Anna", "annabel", "anne_marie"]
    assert [u["username"] for u in (await alice.get("/api/users?q=an."))["users"]] == ["an.dy"]
    # '_' and '%' are not wildcards.
    assert (await alice.get("/api/users?q=ann_"))["users"] == []
    assert (await alice.get("/api/users?q=%25"))["users"] == []
    everyone = (await alice.get("/api/users"))["users"]
    assert {"otter", "zed", "bob"} <= {u["username"] for u in everyone}
    assert all(set(u) == {"id", "username", "is_bot"} for u in everyone)


@pytest.mark.parametrize("count", [60])
async def test_user_search_is_capped_at_50(make_user, count):
    users = [await make_user(f"many{i:03d}") for i in range(count)]
    assert len((await users[0].get("/api/users?q=many"))["users"]) == 50


async def test_newcomers_start_with_history_read(make_user, home_id):
    alice = await make_user("alice")
    for i in range(4):
        await alice.send(home_id, f"old {i}")
    cid = (await alice.post("/api/channels", {"name": "g"}, expect=201))["channel"]["id"]
    for i in range(3):
        await alice.send(cid, f"before bob {i}")
    bob = await make_user("bob")
    home = next(c for c in (await bob.get("/api/channels"))["channels"] if c["kind"] == "home")
    assert home["unread"] == 1  # only Otter's welcome to bob
    body = await alice.post(f"/api/channels/{cid}/members", {"username": "bob"}, expect=200)
    roles = {m["username"]: m["role"] for m in body["channel"]["members"]}
    assert roles == {"alice": "moderator", "bob": "member"}
    group = next(c for c in (await bob.get("/api/channels"))["channels"] if c["id"] == cid)
    assert (group["last_seq"], group["unread"]) == (3, 0)
    await alice.send(cid, "after bob")
    group = next(c for c in (await bob.get("/api/channels"))["channels"] if c["id"] == cid)
    assert group["unread"] == 1


async def test_two_members_leaving_at_once_leave_a_moderator(make_user):
    """The moderator and the longest member leave at the same moment: the
    role must pass to someone who stays, every time."""
    mod, first, *rest = [await make_user(f"leaver{i}") for i in range(4)]
    for attempt in range(10):
        channel = await make_group(
            mod, name=f"leave{attempt}", members=[first.username] + [u.username for u in rest]
        )
        path = f"/api/channels/{channel['id']}/members"
        await asyncio.gather(
            mod.call("DELETE", f"{path}/{mod.username}", expect=204),
            first.call("DELETE", f"{path}/{first.username}", expect=204),
        )
        members = (await rest[0].get(f"/api/channels/{channel['id']}"))["channel"]["members"]
        roles = sorted(m["role"] for m in members)
        assert roles == ["member", "moderator"], (attempt, members)
