"""Messages that live: edits, deletions, reactions, thread replies and
@mentions, their rules, and the events that carry them."""

from __future__ import annotations

import urllib.parse

from helpers import assert_error

from chatterwerks import keys

THUMBS = urllib.parse.quote("👍")


async def group(owner, *members, name="team"):
    body = await owner.post("/api/channels", {"name": name, "members": list(members)}, expect=201)
    return body["channel"]["id"]


async def cursor_of(user) -> str:
    return (await user.get("/api/me"))["cursor"]


async def events_after(user, cursor) -> tuple[list, str]:
    answer = await user.get(f"/api/events?cursor={cursor}&timeout=0")
    return answer["events"], answer["cursor"]


async def history(user, cid) -> dict[int, dict]:
    return {m["seq"]: m for m in (await user.get(f"/api/channels/{cid}/messages"))["messages"]}


async def test_a_new_message_has_every_field(make_user):
    alice = await make_user("alice")
    cid = await group(alice)
    message = await alice.send(cid, "hello")
    assert message["edited_at"] is None and message["deleted"] is False
    assert message["reply_to"] is None and message["reply_count"] == 0
    assert message["last_reply_at"] is None
    assert message["reactions"] == [] and message["mentions"] == []
    assert "thread" not in message


async def test_edit_by_the_author_reaches_everyone_once(make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    cid = await group(alice, "bob")
    sent = await alice.send(cid, "helo")
    cursor = await cursor_of(bob)
    path = f"/api/channels/{cid}/messages/{sent['seq']}"
    edited = (await alice.call("PATCH", path, {"text": " hello @bob "}, expect=200))["message"]
    assert edited["text"] == "hello @bob" and edited["edited_at"] is not None
    assert edited["mentions"] == ["bob"] and edited["seq"] == sent["seq"]
    # The same text again changes nothing and records nothing.
    again = (await alice.call("PATCH", path, {"text": "hello @bob"}, expect=200))["message"]
    assert again["edited_at"] == edited["edited_at"]
    events, cursor = await events_after(bob, cursor)
    assert events == [
        {
            "type": "message_edited",
            "channel_id": cid,
            "seq": sent["seq"],
            "text": "hello @bob",
            "edited_at": edited["edited_at"],
            "mentions": ["bob"],
        }
    ]
    assert (await events_after(bob, cursor))[0] == []
    assert (await history(bob, cid))[sent["seq"]] == edited


async def test_only_the_author_edits(make_user, home_id):
    alice, bob = await make_user("alice"), await make_user("bob")
    cid = await group(alice, "bob")
    sent = await alice.send(cid, "mine")
    path = f"/api/channels/{cid}/messages/{sent['seq']}"
    assert_error(await bob.call("PATCH", path, {"text": "yours"}, expect=403), "not_author")
    # Nobody edits Otter's welcome, in Home.
    otter_seq = next(
        m["seq"]
        for m in (await bob.get(f"/api/channels/{home_id}/messages"))["messages"]
        if m["author"]["username"] == "otter"
    )
    body = await bob.call(
        "PATCH", f"/api/channels/{home_id}/messages/{otter_seq}", {"text": "x"}, expect=403
    )
    assert_error(body, "not_author")
    for bad, code in (
        ({"text": ""}, "invalid_text"),
        ({"text": "x" * 4001}, "invalid_text"),
        ({}, "missing_text"),
    ):
        assert_error(await alice.call("PATCH", path, bad, expect=400), code)
    missing = f"/api/channels/{cid}/messages/999"
    assert_error(await alice.call("PATCH", missing, {"text": "x"}, expect=404), "message_not_found")


async def test_delete_leaves_a_tombstone_and_nothing_else(app, make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    cid = await group(alice, "bob")
    sent = await bob.send(cid, "secret @alice")
    path = f"/api/channels/{cid}/messages/{sent['seq']}"
    await alice.call("PUT", f"{path}/reactions/{THUMBS}", expect=204)
    cursor = await cursor_of(alice)
    await bob.call("DELETE", path, expect=204)
    await bob.call("DELETE", path, expect=204)  # repeated: the same result
    tomb = (await history(alice, cid))[sent["seq"]]
    assert tomb["deleted"] is True and tomb["text"] == ""
    assert tomb["reactions"] == [] and tomb["mentions"] == []
    assert tomb["author"] == sent["author"] and tomb["created_at"] == sent["created_at"]
    events, _ = await events_after(alice, cursor)
    assert events == [{"type": "message_deleted", "channel_id": cid, "seq": sent["seq"]}]
    async with app[keys.POOL].acquire() as conn:
        text = await conn.fetchval(
            "SELECT text FROM messages WHERE channel_id = $1 AND seq = $2", cid, sent["seq"]
        )
        leftovers = await conn.fetchval(
            """SELECT (SELECT count(*) FROM reactions WHERE channel_id = $1)
                    + (SELECT count(*) FROM mentions WHERE channel_id = $1)
                    + (SELECT count(*) FROM channel_changes
                       WHERE channel_id = $1 AND (emoji IS NOT NULL OR user_id IS NOT NULL))""",
            cid,
        )
    assert text == "" and leftovers == 0
    # A deleted message cannot be edited or reacted to; its reaction removed is done.
    assert_error(await bob.call("PATCH", path, {"text": "x"}, expect=404), "message_not_found")
    body = await alice.call("PUT", f"{path}/reactions/{THUMBS}", expect=404)
    assert_error(body, "message_not_found")
    await alice.call("DELETE", f"{path}/reactions/{THUMBS}", expect=204)


async def test_who_may_delete(make_user):
    mod, member, other = await make_user("mod"), await make_user("member"), await make_user()
    cid = await group(mod, "member", other.username)
    by_other = await other.send(cid, "other's")
    path = f"/api/channels/{cid}/messages/{by_other['seq']}"
    assert_error(await member.call("DELETE", path, expect=403), "not_allowed")
    await mod.call("DELETE", path, expect=204)  # the moderator of a group may
    direct = (await member.post("/api/direct", {"username": "mod"}, expect=201))["channel"]["id"]
    mine = await member.send(direct, "in our direct channel")
    path = f"/api/channels/{direct}/messages/{mine['seq']}"
    assert_error(await mod.call("DELETE", path, expect=403), "not_allowed")
    # An outsider gets the same 404 as for a channel that does not exist.
    body = await other.call("DELETE", path, expect=404)
    assert body == await other.call("DELETE", "/api/channels/99999/messages/1", expect=404)
    assert_error(body, "channel_not_found")


async def test_reactions_toggle_and_are_counted(make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    cid = await group(alice, "bob")
    sent = await alice.send(cid, "react to me")
    path = f"/api/channels/{cid}/messages/{sent['seq']}/reactions"
    cursor = await cursor_of(alice)
    await alice.call("PUT", f"{path}/{THUMBS}", expect=204)
    await alice.call("PUT", f"{path}/{THUMBS}", expect=204)  # repeated: nothing new
    await bob.call("PUT", f"{path}/{THUMBS}", expect=204)
    await bob.call("PUT", f"{path}/{urllib.parse.quote('👩‍💻')}", expect=204)
    await alice.call("DELETE", f"{path}/{THUMBS}", expect=204)
    await alice.call("DELETE", f"{path}/{THUMBS}", expect=204)  # absent: fine
    message = (await history(alice, cid))[sent["seq"]]
    assert message["reactions"] == [
        {"emoji": "👍", "count": 1, "users": [bob.id]},
        {"emoji": "👩‍💻", "count": 1, "users": [bob.id]},
    ]
    events, _ = await events_after(alice, cursor)
    summary = [(e["emoji"], e["user"]["id"], e["added"]) for e in events]
    assert summary == [
        ("👍", alice.id, True),
        ("👍", bob.id, True),
        ("👩‍💻", bob.id, True),
        ("👍", alice.id, False),
    ]
    assert all(e["type"] == "reaction" and e["seq"] == sent["seq"] for e in events)
    for bad in ("a", "👍👍", "%20", urllib.parse.quote("👍 ")):
        assert_error(await bob.call("PUT", f"{path}/{bad}", expect=400), "invalid_emoji")


async def test_at_most_twenty_distinct_reactions(make_user):
    alice = await make_user("alice")
    cid = await group(alice)
    sent = await alice.send(cid, "many")
    path = f"/api/channels/{cid}/messages/{sent['seq']}/reactions"
    faces = [chr(0x1F600 + i) for i in range(21)]
    for face in faces[:20]:
        await alice.call("PUT", f"{path}/{urllib.parse.quote(face)}", expect=204)
    body = await alice.call("PUT", f"{path}/{urllib.parse.quote(faces[20])}", expect=409)
    assert_error(body, "too_many_reactions")
    await alice.call("PUT", f"{path}/{urllib.parse.quote(faces[0])}", expect=204)  # held already


async def test_thread_replies(make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    cid = await group(alice, "bob")
    root = await alice.send(cid, "a question")
    path = f"/api/channels/{cid}/messages"
    first = (await bob.post(path, {"text": "an answer", "reply_to": root["seq"]}, expect=201))[
        "message"
    ]
    assert first["reply_to"] == root["seq"]
    assert first["thread"] == {"reply_count": 1, "last_reply_at": first["created_at"]}
    # A reply to a reply answers the root.
    second = (await alice.post(path, {"text": "thanks", "reply_to": first["seq"]}, expect=201))[
        "message"
    ]
    assert second["reply_to"] == root["seq"] and second["thread"]["reply_count"] == 2
    now_root = (await history(alice, cid))[root["seq"]]
    assert now_root["reply_count"] == 2 and now_root["last_reply_at"] == second["created_at"]
    page = await alice.get(f"{path}/{root['seq']}/replies?limit=1")
    assert [m["text"] for m in page["messages"]] == ["an answer"] and page["has_more"]
    page = await alice.get(f"{path}/{root['seq']}/replies?after={first['seq']}")
    assert [m["text"] for m in page["messages"]] == ["thanks"] and not page["has_more"]
    for bad in (999, 0, "1", True):
        body = await bob.post(path, {"text": "x", "reply_to": bad}, expect=400)
        assert_error(body, "invalid_reply_to")
    await alice.call("DELETE", f"{path}/{root['seq']}", expect=204)
    body = await bob.post(path, {"text": "x", "reply_to": root["seq"]}, expect=400)
    assert_error(body, "invalid_reply_to")
    assert_error(await bob.get(f"{path}/999/replies", expect=404), "message_not_found")


async def test_mentions_are_counted_cleared_and_listed(make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    carol = await make_user("carol")
    cid = await group(alice, "bob")
    await alice.send(cid, "hi @Bob and @carol, mail me at a@b.cd")  # carol is no member
    second = await alice.send(cid, "@bob again, and @bob")
    channels = {c["id"]: c for c in (await bob.get("/api/channels"))["channels"]}
    assert channels[cid]["mentions"] == 2 and channels[cid]["unread"] == 2
    page = await bob.get("/api/mentions?limit=1")
    assert [m["message"]["text"] for m in page["mentions"]] == ["@bob again, and @bob"]
    assert page["mentions"][0]["channel_id"] == cid and page["next"] is not None
    older = await bob.get(f"/api/mentions?limit=1&before={page['next']}")
    assert older["mentions"][0]["message"]["mentions"] == ["bob"]  # not carol
    assert older["next"] is None
    assert (await carol.get("/api/mentions"))["mentions"] == []
    await bob.post(f"/api/channels/{cid}/read", {"seq": second["seq"]}, expect=204)
    channels = {c["id"]: c for c in (await bob.get("/api/channels"))["channels"]}
    assert channels[cid]["mentions"] == 0


async def test_a_cursor_with_thousands_of_channels_polls_by_post(app, make_user):
    """5,000 memberships: the cursor does not fit a URL, and fits a POST body."""
    alice, bob = await make_user("alice"), await make_user("bob")
    async with app[keys.POOL].acquire() as conn:
        await conn.execute(
            """WITH made AS (
                   INSERT INTO channels (kind, name)
                   SELECT 'group', 'bulk' || n FROM generate_series(1, 5000) AS n
                   RETURNING id
               )
               INSERT INTO subscriptions (channel_id, user_id, role)
               SELECT id, u, 'member' FROM made, unnest($1::bigint[]) AS u""",
            [alice.id, bob.id],
        )
        last = await conn.fetchval("SELECT max(id) FROM channels")
    cursor = await cursor_of(alice)
    assert len(cursor) > 8_000
    answer = await alice.call("POST", "/api/events", {"cursor": cursor, "timeout": 0}, expect=200)
    assert answer["events"] == []
    sent = await bob.send(last, "to the last one")
    answer = await alice.call(
        "POST", "/api/events", {"cursor": answer["cursor"], "timeout": 5}, expect=200
    )
    assert answer["events"] == [{"type": "message", "message": sent}]
    body = await alice.call("POST", "/api/events", {"cursor": 5}, expect=400)
    assert_error(body, "invalid_cursor")


async def test_unread_counts_messages_not_changes(make_user):
    """Reactions and edits take stream positions but are not unread, and a
    change after the newest message does not keep a channel unread."""
    alice, bob = await make_user("alice"), await make_user("bob")
    cid = await group(alice, "bob")
    first = await alice.send(cid, "one")
    second = await alice.send(cid, "two")
    assert (first["number"], second["number"]) == (1, 2)
    await bob.call("PUT", f"/api/channels/{cid}/messages/2/reactions/{THUMBS}", expect=204)
    await alice.call("PATCH", f"/api/channels/{cid}/messages/1", {"text": "one!"}, expect=200)

    async def unread(user):
        return next(c for c in (await user.get("/api/channels"))["channels"] if c["id"] == cid)

    channel = await unread(bob)
    assert channel["unread"] == 2 and channel["last_seq"] == 4
    assert (channel["message_count"], channel["read_count"]) == (2, 0)
    await bob.post(f"/api/channels/{cid}/read", {"seq": second["seq"]}, expect=204)
    assert (await unread(bob))["unread"] == 0
    assert (await unread(alice))["unread"] == 0  # her own messages, and changes after
