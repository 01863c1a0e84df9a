"""Messages: sending, history pages, limits, read markers, unread counts,
gapless seqs under concurrency, and Otter in the channels it answers in."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
from helpers import assert_error

from chatterwerks import keys


async def group(owner, *members, name="team"):
    body = await owner.post("/api/channels", {"name": name, "members": list(members)}, expect=201)
    return body["channel"]["id"]


async def test_send_and_read_back(make_user):
    alice = await make_user("alice")
    cid = await group(alice)
    message = await alice.send(cid, "  hello <b>world</b> & co  \n")
    assert message["text"] == "hello <b>world</b> & co"  # trimmed, stored verbatim
    assert message["seq"] == 1 and message["channel_id"] == cid
    assert message["author"] == {"id": alice.id, "username": "alice", "is_bot": False}
    assert message["created_at"].endswith("+00:00")
    page = await alice.get(f"/api/channels/{cid}/messages")
    assert page == {"messages": [message], "has_more": False}


async def test_text_limits(make_user):
    alice = await make_user()
    cid = await group(alice)
    path = f"/api/channels/{cid}/messages"
    assert (await alice.post(path, {"text": "é" * 4000}, expect=201))["message"]["seq"] == 1
    # 4000 code points is the limit, counted after trimming.
    assert await alice.post(path, {"text": "  " + "x" * 4000 + "  "}, expect=201)
    for payload, code in [
        ({"text": "x" * 4001}, "invalid_text"),
        ({"text": "   \n\t "}, "invalid_text"),
        ({"text": ""}, "invalid_text"),
        ({"text": 42}, "invalid_text"),
        ({"text": ["hi"]}, "invalid_text"),
        ({"text": "nul \x00 byte"}, "invalid_text"),
        ({}, "missing_text"),
    ]:
        assert_error(await alice.post(path, payload, expect=400), code)
    response = await alice.client.post(
        path, data=b'{"text": "\\ud800 lone"}', headers=alice.headers
    )
    assert response.status == 400
    assert_error(await response.json(), "invalid_text")
    assert (await alice.get(path))["messages"][-1]["seq"] == 2


async def test_history_pages_backwards(make_user):
    alice = await make_user()
    cid = await group(alice)
    for i in range(1, 121):
        await alice.send(cid, f"m{i}")
    path = f"/api/channels/{cid}/messages"
    newest = await alice.get(path)
    assert [m["seq"] for m in newest["messages"]] == list(range(71, 121))
    assert newest["has_more"] is True
    page = await alice.get(f"{path}?before=71&limit=60")
    assert [m["seq"] for m in page["messages"]] == list(range(11, 71)) and page["has_more"]
    last = await alice.get(f"{path}?before=11&limit=60")
    assert [m["seq"] for m in last["messages"]] == list(range(1, 11))
    assert last["has_more"] is False
    exact = await alice.get(f"{path}?before=11&limit=10")
    assert len(exact["messages"]) == 10 and exact["has_more"] is False
    assert (await alice.get(f"{path}?before=1"))["messages"] == []
    # A limit above 200 is clamped; below 1 or not a number is refused.
    assert len((await alice.get(f"{path}?limit=5000"))["messages"]) == 120
    for query in ("limit=0", "limit=-5", "limit=abc", "before=0", "before=x", "limit=1e3"):
        body = await alice.get(f"{path}?{query}", expect=400)
        assert body["error"]["code"].startswith("invalid_")


async def test_history_is_served_by_the_index(app, make_user):
    alice = await make_user()
    cid = await group(alice)
    async with app[keys.POOL].acquire() as conn:
        # Enough rows that a scan would be chosen if the index could not serve it.
        await conn.execute(
            """INSERT INTO messages (channel_id, seq, number, author_id, text)
               SELECT $1, g, g, $2, 'x' FROM generate_series(1, 20000) g""",
            cid,
            alice.id,
        )
        await conn.execute("UPDATE channels SET last_seq = 20000 WHERE id = $1", cid)
        await conn.execute("ANALYZE messages")
        from chatterwerks.db import QUERIES

        plan = "\n".join(
            row[0]
            for row in await conn.fetch("EXPLAIN " + QUERIES.history, cid, alice.id, 10000, 50)
        )
    assert "messages_channel_id_seq_key" in plan, plan
    assert "Seq Scan on messages" not in plan, plan


async def test_read_markers_and_unread(make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    cid = await group(alice, "bob")
    for i in range(5):
        await alice.send(cid, f"m{i}")

    async def bobs_view():
        channels = (await bob.get("/api/channels"))["channels"]
        return next(c for c in channels if c["id"] == cid)

    view = await bobs_view()
    assert (view["last_seq"], view["last_read_seq"], view["unread"]) == (5, 0, 5)
    await bob.post(f"/api/channels/{cid}/read", {"seq": 3}, expect=204)
    assert (await bobs_view())["unread"] == 2
    await bob.post(f"/api/channels/{cid}/read", {"seq": 1}, expect=204)  # never backwards
    assert (await bobs_view())["last_read_seq"] == 3
    await bob.post(f"/api/channels/{cid}/read", {"seq": 10**12}, expect=204)  # clamped
    view = await bobs_view()
    assert (view["last_read_seq"], view["unread"]) == (5, 0)
    for payload, code in [
        ({}, "missing_seq"),
        ({"seq": "3"}, "invalid_seq"),
        ({"seq": 1.5}, "invalid_seq"),
        ({"seq": True}, "invalid_seq"),
        ({"seq": -1}, "invalid_seq"),
        ({"seq": 2**63}, "invalid_seq"),
    ]:
        assert_error(await bob.post(f"/api/channels/{cid}/read", payload, expect=400), code)


async def test_concurrent_senders_get_gapless_seqs(app, settings, make_user):
    """150 messages from 6 users over several connections at once: seqs are
    exactly 1..150, none repeated, none missing, and stored once each."""
    users = [await make_user(f"sender{i}") for i in range(6)]
    cid = await group(users[0], *[u.username for u in users[1:]])
    per_user = 25

    async def burst(user):
        return [
            m["seq"]
            for m in await asyncio.gather(
                *(user.send(cid, f"{user.username}-{i}") for i in range(per_user))
            )
        ]

    # Also write straight through a second pool, as another server process would.
    other = await asyncpg.create_pool(settings.database_url, min_size=4, max_size=4)
    try:
        from chatterwerks.store import messages

        async def direct_send(i):
            async with other.acquire() as conn:
                row = await messages.insert(conn, cid, users[0].id, f"direct-{i}")
                return row["seq"]

        results = await asyncio.gather(
            *(burst(u) for u in users), asyncio.gather(*(direct_send(i) for i in range(30)))
        )
    finally:
        await other.close()
    seqs = sorted(seq for batch in results for seq in batch)
    total = per_user * len(users) + 30
    assert seqs == list(range(1, total + 1))
    async with app[keys.POOL].acquire() as conn:
        stored = [
            r["seq"]
            for r in await conn.fetch(
                "SELECT seq FROM messages WHERE channel_id = $1 ORDER BY seq", cid
            )
        ]
        last_seq = await conn.fetchval("SELECT last_seq FROM channels WHERE id = $1", cid)
    assert stored == list(range(1, total + 1)) and last_seq == total


async def test_otter_answers_in_home(make_user, home_id):
    alice = await make_user("alice")
    sent = await alice.send(home_id, "Hey Otter, what is (3 + 4) * 2.5?")
    page = await alice.get(f"/api/channels/{home_id}/messages?after={sent['seq']}")
    [reply] = page["messages"]
    assert reply["author"]["username"] == "otter" and reply["author"]["is_bot"]
    assert "17.5" in reply["text"] and reply["seq"] == sent["seq"] + 1


async def test_otter_answers_in_its_direct_channel_only(make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    with_otter = (await alice.post("/api/direct", {"username": "otter"}, expect=201))["channel"]
    await alice.send(with_otter["id"], "hey otter 6 times 7")
    texts = [
        m["text"]
        for m in (await alice.get(f"/api/channels/{with_otter['id']}/messages"))["messages"]
    ]
    assert texts[-1].endswith("42")
    # Not in a direct channel between people, nor in a group with otter in it.
    direct = (await alice.post("/api/direct", {"username": "bob"}, expect=201))["channel"]
    await alice.send(direct["id"], "Hey Otter, 1 + 1")
    cid = await group(alice, "bob", "otter")
    await bob.send(cid, "Hey Otter, 1 + 1")
    for channel_id in (direct["id"], cid):
        messages = (await alice.get(f"/api/channels/{channel_id}/messages"))["messages"]
        assert [m["author"]["username"] for m in messages] in (["alice"], ["bob"])


async def test_otter_only_when_addressed(make_user, home_id):
    alice = await make_user()
    sent = await alice.send(home_id, "I said hey otter, 2+2 in the middle")
    assert (await alice.get(f"/api/channels/{home_id}/messages?after={sent['seq']}"))[
        "messages"
    ] == []


async def test_send_completes_when_the_client_hangs_up(app, client, make_user, home_id):
    """The sender disconnects while its message waits for the channel's row
    lock: the handler is cancelled, the write is not, and the message lands."""
    import aiohttp

    alice = await make_user("alice")
    async with app[keys.POOL].acquire() as blocker:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("SELECT 1 FROM channels WHERE id = $1 FOR UPDATE", home_id)
        async with aiohttp.ClientSession() as session:
            posting = asyncio.create_task(
                session.post(
                    client.make_url(f"/api/channels/{home_id}/messages"),
                    json={"text": "sent while hanging up"},
                    headers=alice.headers,
                )
            )
            await asyncio.sleep(0.3)  # the send is now waiting on the lock
            posting.cancel()  # the client goes away
            with contextlib.suppress(asyncio.CancelledError):
                await posting
        await asyncio.sleep(0.2)
        await transaction.rollback()  # lets the send go on
    for _ in range(50):
        texts = [
            m["text"] for m in (await alice.get(f"/api/channels/{home_id}/messages"))["messages"]
        ]
        if "sent while hanging up" in texts:
            break
        await asyncio.sleep(0.05)
    assert "sent while hanging up" in texts


async def send_keyed(user, channel_id, text, key, expect):
    """POST a message with an Idempotency-Key header; returns the body."""
    response = await user.client.post(
        f"/api/channels/{channel_id}/messages",
        json={"text": text},
        headers={**user.headers, "Idempotency-Key": key},
    )
    body = await response.json()
    assert response.status == expect, (response.status, body)
    return body


async def test_a_retried_send_with_its_idempotency_key_posts_once(make_user, home_id):
    alice, bob = await make_user("alice"), await make_user("bob")
    cid = await group(alice, "bob")
    first = (await send_keyed(alice, cid, "only once", "k-1", 201))["message"]
    again = (await send_keyed(alice, cid, "only once", "k-1", 200))["message"]
    assert again == first
    # The stored message is what counts: a retry cannot rewrite it.
    assert (await send_keyed(alice, cid, "edited?", "k-1", 200))["message"] == first
    # The key is the author's, in this channel: bob's k-1, another channel's
    # k-1 and a new key are new messages.
    assert (await send_keyed(bob, cid, "mine", "k-1", 201))["message"]["seq"] == 2
    assert (await send_keyed(alice, home_id, "elsewhere", "k-1", 201))["message"][
        "channel_id"
    ] == home_id
    assert (await send_keyed(alice, cid, "only once", "k-2", 201))["message"]["seq"] == 3
    page = await alice.get(f"/api/channels/{cid}/messages")
    assert [m["text"] for m in page["messages"]] == ["only once", "mine", "only once"]
    # No seq was spent on the replays: the next plain send is 4.
    assert (await alice.send(cid, "plain"))["seq"] == 4


async def test_concurrent_sends_with_one_key_commit_one_message(make_user):
    alice = await make_user("alice")
    cid = await group(alice)
    answers = await asyncio.gather(
        *(
            alice.client.post(
                f"/api/channels/{cid}/messages",
                json={"text": "at the same moment"},
                headers={**alice.headers, "Idempotency-Key": "same"},
            )
            for _ in range(8)
        )
    )
    statuses = sorted(r.status for r in answers)
    bodies = [await r.json() for r in answers]
    assert statuses == [200] * 7 + [201], bodies
    assert len({b["message"]["id"] for b in bodies}) == 1
    page = await alice.get(f"/api/channels/{cid}/messages")
    assert [m["seq"] for m in page["messages"]] == [1]
    assert (await alice.send(cid, "next"))["seq"] == 2  # gapless: no bump leaked


async def test_otter_answers_a_keyed_question_once(make_user, home_id):
    alice = await make_user("alice")
    before = len((await alice.get(f"/api/channels/{home_id}/messages?limit=200"))["messages"])
    for status in (201, 200, 200):
        await send_keyed(alice, home_id, "Hey Otter, 6 times 7", "ask-1", status)
    page = (await alice.get(f"/api/channels/{home_id}/messages?limit=200"))["messages"]
    assert len(page) == before + 2  # the question and one answer
    assert "42" in page[-1]["text"] and page[-1]["author"]["is_bot"]


async def test_idempotency_key_is_checked(make_user):
    alice, mallory = await make_user("alice"), await make_user("mallory")
    cid = await group(alice)
    for bad in ("", "x" * 65, "tab\there", "é"):
        response = await alice.client.post(
            f"/api/channels/{cid}/messages",
            json={"text": "hi"},
            headers={**alice.headers, "Idempotency-Key": bad.encode().decode("latin-1")},
        )
        assert response.status == 400, bad
        assert_error(await response.json(), "invalid_idempotency_key")
    await send_keyed(alice, cid, "secret", "k", 201)
    # A non-member learns nothing from a key, used or not.
    for key in ("k", "unused"):
        assert_error(await send_keyed(mallory, cid, "hi", key, 404), "channel_not_found")
    page = await alice.get(f"/api/channels/{cid}/messages")
    assert [m["text"] for m in page["messages"]] == ["secret"]


async def test_your_own_messages_are_not_unread(make_user):
    """Sending moves the sender's read marker: after 120 sends the sender has
    nothing unread, the reader 120, and the sender's other tabs hear of it."""
    alice, bob = await make_user("alice"), await make_user("bob")
    cid = await group(alice, "bob")
    cursor = (await alice.get("/api/me"))["cursor"]
    for i in range(120):
        await alice.send(cid, f"m{i}")
    unread = {
        user.username: {c["id"]: c["unread"] for c in (await user.get("/api/channels"))["channels"]}
        for user in (alice, bob)
    }
    assert unread["alice"][cid] == 0 and unread["bob"][cid] == 120
    answer = await alice.get(f"/api/events?cursor={cursor}&timeout=0")
    assert {"type": "read", "channel_id": cid, "seq": 120, "read_count": 120} in answer["events"]
    # A message from someone else is unread again, and only that one.
    await bob.send(cid, "reply")
    channels = (await alice.get("/api/channels"))["channels"]
    assert [c["unread"] for c in channels if c["id"] == cid] == [1]


async def test_a_message_has_one_serialisation(app, client, make_user, home_id):
    """The send's answer, a history page and a poll carry the very same text
    for a message (SQL's message_json)."""
    alice = await make_user("alice")
    cursor = (await alice.get("/api/me"))["cursor"]
    path = f"/api/channels/{home_id}/messages"
    sent = await client.post(path, json={"text": 'quote " é'}, headers=alice.headers)
    sent_text = (await sent.text()).removeprefix('{"message": ').removesuffix("}")
    history = await (await client.get(path, headers=alice.headers)).text()
    events = await (
        await client.get(f"/api/events?cursor={cursor}&timeout=0", headers=alice.headers)
    ).text()
    assert sent_text in history and sent_text in events
    assert '" :' not in sent_text and '"id": ' in sent_text


async def test_limit_errors_state_the_real_range(make_user, home_id):
    alice = await make_user()
    body = await alice.get(f"/api/channels/{home_id}/messages?limit=0", expect=400)
    assert_error(body, "invalid_limit")
    assert "between 1 and 200" in body["error"]["message"]


async def test_a_keyed_retry_after_otters_reply_failed_gets_the_reply(
    app, client, make_user, home_id
):
    """The question and Otter's answer commit together: when the answer fails,
    nothing is kept, so the retry (same Idempotency-Key) posts both."""
    alice = await make_user("alice")
    pool = app[keys.POOL]
    otter_id = int(app[keys.OTTER_ID])
    await pool.execute(
        f"""CREATE FUNCTION refuse_otter() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'otter is down'; END $$;
            CREATE TRIGGER refuse_otter BEFORE INSERT ON messages FOR EACH ROW
            WHEN (NEW.author_id = {otter_id}) EXECUTE FUNCTION refuse_otter()"""
    )
    path = f"/api/channels/{home_id}/messages"
    headers = {**alice.headers, "Idempotency-Key": "ask-once"}
    question = {"text": "Hey Otter, what is 6 * 7?"}
    first = await client.post(path, json=question, headers=headers)
    assert first.status == 500, await first.text()
    await pool.execute("DROP TRIGGER refuse_otter ON messages")
    retry = await client.post(path, json=question, headers=headers)
    assert retry.status == 201, await retry.text()
    texts = [m["text"] for m in (await alice.get(path))["messages"]]
    assert texts[-2:] == ["Hey Otter, what is 6 * 7?", "6 * 7 = 42"]
    again = await client.post(path, json=question, headers=headers)
    assert again.status == 200
