"""Issue 10, rules: who may edit, delete, react and read threads (checked in
the store, an outsider answered as for a channel that does not exist); a
deleted message's text leaves the database; @mentions are counted, cleared
by the read marker and listed with paging."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import asyncpg
from helpers import assert_error

from chatterwerks import keys

MISSING_CHANNEL = 987_654_321

# Every table an issue-10 request may write, with the columns that matter.
CHANGES_SNAPSHOT_SQL = """
SELECT
  (SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), ''))
     FROM (SELECT id, channel_id, seq, author_id, text, edited_at, deleted_at, reply_to,
                  reply_number, reply_count, last_reply_at, mentions FROM messages) t) AS messages,
  (SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|'
            ORDER BY t.channel_id, t.message_seq, t.emoji), ''))
     FROM (SELECT channel_id, message_seq, emoji, users FROM reactions) t) AS reactions,
  (SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|'
            ORDER BY t.user_id, t.channel_id, t.seq), ''))
     FROM (SELECT user_id, channel_id, seq, message_id FROM mentions) t) AS mentions,
  (SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|'
            ORDER BY t.channel_id, t.seq), ''))
     FROM (SELECT channel_id, seq, kind, message_seq, user_id, emoji, added
           FROM channel_changes) t) AS changes,
  (SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), ''))
     FROM (SELECT id, last_seq FROM channels) t) AS channels,
  (SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), ''))
     FROM (SELECT id, channel_id, user_id, role, last_read_seq FROM subscriptions) t)
     AS subscriptions
"""


async def snapshot(app: Any) -> dict[str, str]:
    async with app[keys.POOL].acquire() as conn:
        return dict(await conn.fetchrow(CHANGES_SNAPSHOT_SQL))


def reaction_path(channel_id: int, seq: int, emoji: str = "👍") -> str:
    return f"/api/channels/{channel_id}/messages/{seq}/reactions/{quote(emoji, safe='')}"


def every_new_endpoint(channel_id: int, seq: int) -> list[tuple[str, str, Any]]:
    """(method, path, body) of each issue-10 request on message `seq`."""
    message = f"/api/channels/{channel_id}/messages/{seq}"
    return [
        ("POST", f"/api/channels/{channel_id}/messages", {"text": "re", "reply_to": seq}),
        ("PATCH", message, {"text": "changed"}),
        ("DELETE", message, None),
        ("PUT", reaction_path(channel_id, seq), None),
        ("DELETE", reaction_path(channel_id, seq), None),
        ("GET", message + "/replies", None),
        ("GET", message + "/replies?after=0&limit=1", None),
    ]


async def group_with(owner: Any, *members: Any, name: str = "team") -> int:
    body = await owner.post(
        "/api/channels", {"name": name, "members": [m.username for m in members]}, expect=201
    )
    return body["channel"]["id"]


async def message_at(user: Any, channel_id: int, seq: int) -> dict[str, Any]:
    page = await user.get(f"/api/channels/{channel_id}/messages?before={seq + 1}&limit=1")
    [message] = page["messages"]
    assert message["seq"] == seq
    return message


async def assert_hidden_as_missing(app: Any, user: Any, channel_id: int, seq: int) -> None:
    """Every new endpoint answers `user` exactly as for a channel that does not
    exist, and writes nothing."""
    before = await snapshot(app)
    for (method, path, body), (_, missing, _) in zip(
        every_new_endpoint(channel_id, seq),
        every_new_endpoint(MISSING_CHANNEL, seq),
        strict=True,
    ):
        there = await user.call(method, path, json=body, expect=404)
        nowhere = await user.call(method, missing, json=body, expect=404)
        assert_error(there, "channel_not_found")
        assert there == nowhere, (method, path)
    assert await snapshot(app) == before


# --------------------------------------------------------------------------
# 3. Authorization
# --------------------------------------------------------------------------


async def test_an_outsider_gets_the_404_of_a_missing_channel(app, make_user):
    alice, bob, carol = await make_user("alice"), await make_user("bob"), await make_user("carol")
    channel_id = await group_with(alice, bob)
    sent = await bob.send(channel_id, "inside only")
    await alice.call("PUT", reaction_path(channel_id, sent["seq"]), expect=204)
    await assert_hidden_as_missing(app, carol, channel_id, sent["seq"])
    # Also for a seq that does not exist: the channel is what is hidden.
    await assert_hidden_as_missing(app, carol, channel_id, 999)


async def test_a_removed_member_gets_the_404_of_a_missing_channel(app, make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    channel_id = await group_with(alice, bob)
    mine = await bob.send(channel_id, "mine, before I leave")
    await bob.call("PUT", reaction_path(channel_id, mine["seq"]), expect=204)
    await alice.send(channel_id, "bye @bob")
    assert len((await bob.get("/api/mentions"))["mentions"]) == 1
    cursor = (await bob.get("/api/me"))["cursor"]
    await alice.call("DELETE", f"/api/channels/{channel_id}/members/bob", expect=204)
    # Not even his own message, nor his own reaction.
    await assert_hidden_as_missing(app, bob, channel_id, mine["seq"])
    assert (await bob.get("/api/mentions"))["mentions"] == []
    # Nor the changes made after he left, through his cursor from before.
    await alice.call("PATCH", f"/api/channels/{channel_id}/messages/{mine['seq'] + 2}",
                     {"text": "said behind his back"}, expect=200)  # fmt: skip
    await alice.call("PUT", reaction_path(channel_id, mine["seq"], "🎉"), expect=204)
    answer = await bob.get(f"/api/events?cursor={cursor}&timeout=0.3")
    assert answer["events"] == [{"type": "channel_removed", "channel_id": channel_id}]


async def test_plain_member_and_moderator_in_a_group(app, make_user):
    alice, bob, carol = await make_user("alice"), await make_user("bob"), await make_user("carol")
    channel_id = await group_with(alice, bob, carol)  # alice moderates
    carols = await carol.send(channel_id, "carol's words")
    path = f"/api/channels/{channel_id}/messages/{carols['seq']}"
    before = await snapshot(app)
    assert_error(await bob.call("DELETE", path, expect=403), "not_allowed")
    for editor in (bob, alice):  # a moderator deletes, but edits nobody's words
        assert_error(
            await editor.call("PATCH", path, {"text": "not yours"}, expect=403), "not_author"
        )
    assert await snapshot(app) == before
    await alice.call("DELETE", path, expect=204)
    await alice.call("DELETE", path, expect=204)  # again: the same result
    await carol.call("DELETE", path, expect=204)  # and by its author, after the fact
    shown = await message_at(carol, channel_id, carols["seq"])
    assert shown["deleted"] is True and shown["text"] == ""
    # A member deletes their own.
    bobs = await bob.send(channel_id, "bob's own")
    await bob.call("DELETE", f"/api/channels/{channel_id}/messages/{bobs['seq']}", expect=204)
    # Reacting and reading threads are for every member.
    alices = await alice.send(channel_id, "react here")
    await bob.call("PUT", reaction_path(channel_id, alices["seq"]), expect=204)
    replies = await carol.get(f"/api/channels/{channel_id}/messages/{alices['seq']}/replies")
    assert replies == {"messages": [], "has_more": False}


async def test_nobody_edits_otters_messages(make_user, home_id):
    alice = await make_user("alice")
    await alice.send(home_id, "Hey Otter, help")
    page = await alice.get(f"/api/channels/{home_id}/messages")
    otters = page["messages"][-1]
    assert otters["author"]["is_bot"] is True
    path = f"/api/channels/{home_id}/messages/{otters['seq']}"
    assert_error(await alice.call("PATCH", path, {"text": "I am Otter"}, expect=403), "not_author")
    # Home is no group: only an author deletes there.
    assert_error(await alice.call("DELETE", path, expect=403), "not_allowed")
    assert (await message_at(alice, home_id, otters["seq"]))["text"] == otters["text"]


async def test_in_a_direct_channel_only_the_author_deletes(app, make_user):
    alice, bob, carol = await make_user("alice"), await make_user("bob"), await make_user("carol")
    direct = (await alice.post("/api/direct", {"username": "bob"}, expect=201))["channel"]["id"]
    bobs = await bob.send(direct, "between us")
    path = f"/api/channels/{direct}/messages/{bobs['seq']}"
    before = await snapshot(app)
    # alice opened the channel; that makes her no moderator of it.
    assert_error(await alice.call("DELETE", path, expect=403), "not_allowed")
    assert_error(await alice.call("PATCH", path, {"text": "mine now"}, expect=403), "not_author")
    assert await snapshot(app) == before
    await assert_hidden_as_missing(app, carol, direct, bobs["seq"])
    await alice.call("PUT", reaction_path(direct, bobs["seq"]), expect=204)
    await bob.call("PATCH", path, {"text": "between us two"}, expect=200)
    await bob.call("DELETE", path, expect=204)
    assert (await message_at(alice, direct, bobs["seq"]))["deleted"] is True


async def test_edit_and_delete_rules(app, make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    channel_id = await group_with(alice, bob)
    sent = await alice.send(channel_id, "first draft")
    path = f"/api/channels/{channel_id}/messages/{sent['seq']}"
    edited = (await alice.call("PATCH", path, {"text": "second draft"}, expect=200))["message"]
    assert edited["text"] == "second draft" and edited["edited_at"] is not None
    # The same text again: 200, and nothing recorded (no new stream position).
    before = await snapshot(app)
    again = (await alice.call("PATCH", path, {"text": "second draft"}, expect=200))["message"]
    assert again == edited
    assert await snapshot(app) == before
    for bad in ("", "   ", "x" * 4001):
        assert_error(await alice.call("PATCH", path, {"text": bad}, expect=400), "invalid_text")
    missing = f"/api/channels/{channel_id}/messages/999"
    assert_error(await alice.call("PATCH", missing, {"text": "x"}, expect=404), "message_not_found")
    assert_error(await alice.call("DELETE", missing, expect=404), "message_not_found")
    assert_error(await alice.call("PUT", reaction_path(channel_id, 999), expect=404),
                 "message_not_found")  # fmt: skip
    assert await snapshot(app) == before
    await bob.call("PUT", reaction_path(channel_id, sent["seq"]), expect=204)
    await alice.call("DELETE", path, expect=204)
    after_delete = await snapshot(app)
    # A deleted message: no edit, no new reaction; removing one is done already.
    assert_error(await alice.call("PATCH", path, {"text": "x"}, expect=404), "message_not_found")
    assert_error(await bob.call("PUT", reaction_path(channel_id, sent["seq"], "🎉"), expect=404),
                 "message_not_found")  # fmt: skip
    await bob.call("DELETE", reaction_path(channel_id, sent["seq"]), expect=204)
    await alice.call("DELETE", path, expect=204)
    assert await snapshot(app) == after_delete


async def test_invalid_emoji_is_400(app, make_user):
    alice = await make_user("alice")
    channel_id = await group_with(alice)
    sent = await alice.send(channel_id, "pick one")
    before = await snapshot(app)
    for bad in ("a", "👍👍", "👍a", ":+1:", "%F0%9F", " ", "👍 ", "\u200d"):
        body = await alice.call("PUT", reaction_path(channel_id, sent["seq"], bad), expect=400)
        assert_error(body, "invalid_emoji")
    assert await snapshot(app) == before
    for good in ("👍🏽", "🇫🇷", "👨‍👩‍👧", "❤️"):
        await alice.call("PUT", reaction_path(channel_id, sent["seq"], good), expect=204)
    shown = await message_at(alice, channel_id, sent["seq"])
    assert [r["emoji"] for r in shown["reactions"]] == ["👍🏽", "🇫🇷", "👨‍👩‍👧", "❤️"]


async def test_thread_replies(app, make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    channel_id = await group_with(alice, bob)
    other = await group_with(alice, name="elsewhere")
    root = await alice.send(channel_id, "a question")
    post = f"/api/channels/{channel_id}/messages"
    first = (await bob.post(post, {"text": "answer 1", "reply_to": root["seq"]}, expect=201))[
        "message"
    ]
    assert first["reply_to"] == root["seq"] and first["thread"]["reply_count"] == 1
    # A reply to a reply answers the root.
    second = (await alice.post(post, {"text": "answer 2", "reply_to": first["seq"]}, expect=201))[
        "message"
    ]
    assert second["reply_to"] == root["seq"] and second["thread"]["reply_count"] == 2
    shown = await message_at(alice, channel_id, root["seq"])
    assert shown["reply_count"] == 2 and shown["last_reply_at"] == second["created_at"]
    before = await snapshot(app)
    elsewhere = await alice.send(other, "not in that channel")
    before = await snapshot(app)
    for target in (999, elsewhere["seq"] + 100):
        body = await alice.post(post, {"text": "lost", "reply_to": target}, expect=400)
        assert_error(body, "invalid_reply_to")
    for bad in (0, -1, "1", 1.5, True, 2**63):
        body = await alice.post(post, {"text": "bad", "reply_to": bad}, expect=400)
        assert_error(body, "invalid_reply_to")
    assert await snapshot(app) == before
    replies = f"/api/channels/{channel_id}/messages/{root['seq']}/replies"
    page = await bob.get(replies + "?limit=1")
    assert [m["seq"] for m in page["messages"]] == [first["seq"]] and page["has_more"]
    page = await bob.get(replies + f"?after={first['seq']}&limit=1")
    assert [m["seq"] for m in page["messages"]] == [second["seq"]] and not page["has_more"]
    assert_error(
        await bob.get(f"/api/channels/{channel_id}/messages/999/replies", expect=404),
        "message_not_found",
    )
    # A deleted message is answered no more.
    await bob.call("DELETE", f"{post}/{first['seq']}", expect=204)
    body = await alice.post(post, {"text": "late", "reply_to": first["seq"]}, expect=400)
    assert_error(body, "invalid_reply_to")


async def test_a_deleted_messages_text_is_gone_from_the_database(app, make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    channel_id = await group_with(alice, bob)
    cursor = (await bob.get("/api/me"))["cursor"]
    sent = await alice.send(channel_id, "first WORDSONE for @bob")
    path = f"/api/channels/{channel_id}/messages/{sent['seq']}"
    await alice.call("PATCH", path, {"text": "then WORDSTWO for @bob"}, expect=200)
    await bob.call("PUT", reaction_path(channel_id, sent["seq"], "🎉"), expect=204)
    await alice.post(
        f"/api/channels/{channel_id}/messages", {"text": "a reply", "reply_to": sent["seq"]}, 201
    )
    await alice.call("DELETE", path, expect=204)
    async with app[keys.POOL].acquire() as conn:
        database = await conn.fetchval(
            """SELECT string_agg(t, '|') FROM (
                   SELECT m::text AS t FROM messages m WHERE channel_id = $1
                   UNION ALL SELECT r::text FROM reactions r WHERE channel_id = $1
                   UNION ALL SELECT n::text FROM mentions n WHERE channel_id = $1
                   UNION ALL SELECT c::text FROM channel_changes c WHERE channel_id = $1
               ) rows""",
            channel_id,
        )
        assert "WORDSONE" not in database and "WORDSTWO" not in database
        assert "🎉" not in database
        assert not await conn.fetchval(
            "SELECT count(*) FROM mentions WHERE channel_id = $1 AND seq = $2",
            channel_id,
            sent["seq"],
        )
        assert not await conn.fetchval(
            "SELECT count(*) FROM reactions WHERE channel_id = $1 AND message_seq = $2",
            channel_id,
            sent["seq"],
        )
    # Not from a cache either: a poll from before the message replays it as a
    # tombstone, and no event tells the old words or the reaction.
    answer = await bob.get(f"/api/events?cursor={cursor}&timeout=1")
    events = str(answer["events"])
    assert "WORDSONE" not in events and "WORDSTWO" not in events and "🎉" not in events
    [message] = [
        e["message"]
        for e in answer["events"]
        if e["type"] == "message" and e["message"]["seq"] == sent["seq"]
    ]
    assert message["deleted"] is True and message["text"] == "" and message["mentions"] == []
    assert {"type": "message_deleted", "channel_id": channel_id, "seq": sent["seq"]} in answer[
        "events"
    ]
    # Bob's mention there is gone with it.
    assert (await bob.get("/api/mentions"))["mentions"] == []


# --------------------------------------------------------------------------
# 4. Mentions
# --------------------------------------------------------------------------


async def mentions_count(user: Any, channel_id: int) -> int:
    [channel] = [c for c in (await user.get("/api/channels"))["channels"] if c["id"] == channel_id]
    return channel["mentions"]


async def test_mentions_counted_cleared_and_listed(app, make_user):
    alice, bob, carol = await make_user("alice"), await make_user("bob"), await make_user("carol")
    channel_id = await group_with(alice, bob, name="talk")
    other = await group_with(alice, bob, name="other")
    sent = [
        await alice.send(channel_id, "hi @bob and @carol"),  # carol is no member: plain text
        await alice.send(other, "also @BOB here"),
        await alice.send(channel_id, "email bob@example.com is no mention"),
        await alice.send(channel_id, "@bob, again"),
    ]
    assert [m["mentions"] for m in sent] == [["bob"], ["bob"], [], ["bob"]]
    assert await mentions_count(bob, channel_id) == 2
    assert await mentions_count(bob, other) == 1
    assert await mentions_count(alice, channel_id) == 0
    assert await mentions_count(carol, await group_with(carol, name="own")) == 0
    assert (await carol.get("/api/mentions"))["mentions"] == []
    # Listed newest first across channels, paged with `next`.
    listed, before = [], ""
    for _ in range(5):
        page = await bob.get(f"/api/mentions?limit=1{before}")
        assert len(page["mentions"]) <= 1
        listed += page["mentions"]
        if page["next"] is None:
            break
        before = f"&before={page['next']}"
    assert [(m["channel_id"], m["message"]["seq"]) for m in listed] == [
        (channel_id, sent[3]["seq"]),
        (other, sent[1]["seq"]),
        (channel_id, sent[0]["seq"]),
    ]
    assert listed[0]["message"] == sent[3]
    whole = await bob.get("/api/mentions")
    assert whole["mentions"] == listed and whole["next"] is None
    # The read marker clears them up to where it stands.
    await bob.post(f"/api/channels/{channel_id}/read", {"seq": sent[0]["seq"]}, expect=204)
    assert await mentions_count(bob, channel_id) == 1
    await bob.post(f"/api/channels/{channel_id}/read", {"seq": sent[3]["seq"]}, expect=204)
    assert await mentions_count(bob, channel_id) == 0
    assert await mentions_count(bob, other) == 1
    # Read or not, the mentions view still lists them.
    assert len((await bob.get("/api/mentions"))["mentions"]) == 3
    # An edit can add a mention, or take it back.
    edit = f"/api/channels/{channel_id}/messages/{sent[2]['seq']}"
    await alice.call("PATCH", edit, {"text": "well, @bob"}, expect=200)
    assert await mentions_count(bob, channel_id) == 0  # the message is read already
    assert len((await bob.get("/api/mentions"))["mentions"]) == 4
    edit = f"/api/channels/{other}/messages/{sent[1]['seq']}"
    edited = await alice.call("PATCH", edit, {"text": "never mind"}, expect=200)
    assert edited["message"]["mentions"] == []
    assert await mentions_count(bob, other) == 0
    assert len((await bob.get("/api/mentions"))["mentions"]) == 3
    # Carol joins later: what was plain text then stays plain text.
    await alice.post(f"/api/channels/{channel_id}/members", {"username": "carol"}, expect=200)
    assert (await carol.get("/api/mentions"))["mentions"] == []
    assert await mentions_count(carol, channel_id) == 0
    later = await bob.send(channel_id, "welcome @Carol")
    assert later["mentions"] == ["carol"]
    assert await mentions_count(carol, channel_id) == 1


async def test_a_mention_at_the_end_of_a_sentence(make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    channel_id = await group_with(alice, bob)
    sent = await alice.send(channel_id, "Thanks, @bob.")
    assert sent["mentions"] == ["bob"]
    assert await mentions_count(bob, channel_id) == 1


async def test_mentions_paging_rejects_bad_input(make_user):
    alice = await make_user("alice")
    for query, code in (
        ("limit=0", "invalid_limit"),
        ("limit=x", "invalid_limit"),
        ("before=0", "invalid_before"),
        ("before=abc", "invalid_before"),
        ("before=99999999999999999999", "invalid_before"),
    ):
        assert_error(await alice.get(f"/api/mentions?{query}", expect=400), code)
    assert await alice.get("/api/mentions?limit=100000") == {"mentions": [], "next": None}


async def test_a_reply_racing_the_deletion_of_its_root(app, settings, make_user):
    """The rule "reply_to must be a live message" holds in the statement: a
    reply that began while its root was live, but takes its position after
    the root's deletion committed, is refused. The channel row is held by
    hand so that the deletion queues first and the reply second."""
    alice, bob = await make_user("alice"), await make_user("bob")
    channel_id = await group_with(alice, bob)
    root = await alice.send(channel_id, "soon gone")
    holder = await asyncpg.connect(settings.database_url)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT 1 FROM channels WHERE id = $1 FOR NO KEY UPDATE", channel_id)
        deleting = asyncio.create_task(
            alice.call("DELETE", f"/api/channels/{channel_id}/messages/{root['seq']}")
        )
        await asyncio.sleep(0.3)
        replying = asyncio.create_task(
            bob.client.post(
                f"/api/channels/{channel_id}/messages",
                json={"text": "too late", "reply_to": root["seq"]},
                headers=bob.headers,
            )
        )
        await asyncio.sleep(0.3)
        assert not deleting.done() and not replying.done()
        await transaction.rollback()
        await asyncio.wait_for(deleting, 5)
        response = await asyncio.wait_for(replying, 5)
        body = await response.json()
    finally:
        await holder.close()
    shown = await message_at(alice, channel_id, root["seq"])
    assert shown["deleted"] is True
    assert (response.status, body.get("error", {}).get("code")) == (400, "invalid_reply_to"), body
    assert shown["reply_count"] == 0
