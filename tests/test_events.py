"""Real-time delivery: GET /api/events and ?after=&wait=, on real sockets and
a real PostgreSQL LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict

import aiohttp
import asyncpg
from helpers import assert_error, start_server, stop_server

from chatterwerks import keys
from chatterwerks.events import decode_cursor, encode_cursor
from chatterwerks.realtime import APPLICATION_NAME
from chatterwerks.realtime.view import PAGE_MESSAGES


async def cursor_of(user) -> str:
    return (await user.get("/api/me"))["cursor"]


async def poll(user, cursor, timeout=5.0):
    return await user.get(f"/api/events?cursor={cursor}&timeout={timeout}")


def messages_of(answer):
    return [e["message"] for e in answer["events"] if e["type"] == "message"]


async def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_first_poll_without_cursor_answers_at_once(make_user):
    alice = await make_user()
    answer = await alice.get("/api/events?timeout=30")
    assert answer["events"] == [] and isinstance(answer["cursor"], str)


async def test_poll_wakes_on_send(make_user, home_id):
    alice, bob = await make_user("alice"), await make_user("bob")
    cursor = await cursor_of(alice)
    waiting = asyncio.create_task(poll(alice, cursor, timeout=10))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    started = time.monotonic()
    sent = await bob.send(home_id, "ping")
    answer = await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - started < 2
    assert messages_of(answer) == [sent]
    assert answer["cursor"] != cursor


async def test_poll_times_out_with_unchanged_cursor(make_user):
    alice = await make_user()
    cursor = await cursor_of(alice)
    started = time.monotonic()
    answer = await poll(alice, cursor, timeout=0.3)
    assert 0.25 < time.monotonic() - started < 3
    assert answer == {"cursor": cursor, "events": []}


async def test_timeout_is_validated_and_clamped(make_user, app):
    alice = await make_user()
    cursor = await cursor_of(alice)
    for bad in ("abc", "-1", "nan"):
        body = await alice.get(f"/api/events?cursor={cursor}&timeout={bad}", expect=400)
        assert_error(body, "invalid_timeout")


async def test_malformed_cursor_is_400(make_user):
    alice = await make_user()
    good = await cursor_of(alice)
    for bad in ("!!!", "AAAA", "x" * 7000, good[:-2] + "__", "AgAA", "AQL_____________"):
        body = await alice.get(f"/api/events?cursor={bad}&timeout=0", expect=400)
        assert_error(body, "invalid_cursor")


def test_cursor_round_trip():
    from chatterwerks.events import Position

    cursor = {3: Position(10, 42, 40), 2**40: Position(2**62, 2**63 - 1, 0), 7: Position(1, 0, 0)}
    assert decode_cursor(encode_cursor(cursor)) == cursor
    assert decode_cursor(encode_cursor({})) == {}


async def test_cursor_resume_delivers_each_message_once(make_user, home_id):
    alice, bob = await make_user("alice"), await make_user("bob")
    cursor = await cursor_of(alice)
    for i in range(3):
        await bob.send(home_id, f"m{i}")
    first = await poll(alice, cursor)
    assert [m["text"] for m in messages_of(first)] == ["m0", "m1", "m2"]
    await bob.send(home_id, "m3")
    second = await poll(alice, first["cursor"])
    assert [m["text"] for m in messages_of(second)] == ["m3"]
    # An old cursor is still valid: it replays from where it stood.
    again = await poll(alice, cursor)
    assert [m["text"] for m in messages_of(again)] == ["m0", "m1", "m2", "m3"]


async def test_backlog_comes_in_bounded_pages(make_user, app, home_id):
    alice = await make_user("alice")
    cursor = await cursor_of(alice)
    channels = []
    for i in range(4):
        body = await alice.post("/api/channels", {"name": f"c{i}"}, expect=201)
        channels.append(body["channel"]["id"])
    answer = await poll(alice, cursor)
    assert [e["type"] for e in answer["events"]] == ["channel_added"] * 4
    cursor = answer["cursor"]
    async with app[keys.POOL].acquire() as conn:
        for cid in channels:
            await conn.execute(
                """INSERT INTO messages (channel_id, seq, number, author_id, text)
                   SELECT $1, g, g, $2, 'bulk ' || g FROM generate_series(1, 250) g""",
                cid,
                alice.id,
            )
            await conn.execute("UPDATE channels SET last_seq = 250 WHERE id = $1", cid)
            # As send_message would: tell every process that the channel moved.
            await conn.execute(
                "SELECT pg_notify('chatterwerks', 'm:' || $1::bigint || ':250:0:250')", cid
            )
    seen = defaultdict(list)
    answers = 0
    while True:
        started = time.monotonic()
        answer = await poll(alice, cursor, timeout=3)
        if not answer["events"]:
            break
        assert time.monotonic() - started < 2  # a backlog page answers at once
        answers += 1
        assert len(answer["events"]) <= PAGE_MESSAGES
        for m in messages_of(answer):
            seen[m["channel_id"]].append(m["seq"])
        cursor = answer["cursor"]
    assert answers >= 2
    assert {cid: seen[cid] for cid in channels} == {cid: list(range(1, 251)) for cid in channels}


async def test_channel_added_when_someone_opens_a_direct_channel(make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    cursor = await cursor_of(bob)
    waiting = asyncio.create_task(poll(bob, cursor))
    await asyncio.sleep(0.1)
    direct = (await alice.post("/api/direct", {"username": "bob"}, expect=201))["channel"]
    answer = await asyncio.wait_for(waiting, 5)
    [event] = answer["events"]
    assert event["type"] == "channel_added"
    assert event["channel"]["id"] == direct["id"]
    assert event["channel"]["peer"]["username"] == "alice"
    sent = await alice.send(direct["id"], "hi bob")
    answer = await poll(bob, answer["cursor"])
    assert messages_of(answer) == [sent]


async def test_read_events_reach_the_other_tab(client, make_user, home_id):
    alice = await make_user("alice", password="password9")
    response = await client.post("/api/login", json={"username": "alice", "password": "password9"})
    other_tab = (await response.json())["token"]
    newest = (await alice.get(f"/api/channels/{home_id}/messages"))["messages"][-1]
    last_seq = newest["seq"]
    cursor = await cursor_of(alice)
    headers = {"Authorization": f"Bearer {other_tab}"}
    waiting = asyncio.create_task(
        client.get(f"/api/events?cursor={cursor}&timeout=5", headers=headers)
    )
    await asyncio.sleep(0.1)
    await alice.post(f"/api/channels/{home_id}/read", {"seq": last_seq}, expect=204)
    answer = await (await asyncio.wait_for(waiting, 5)).json()
    assert answer["events"] == [
        {"type": "read", "channel_id": home_id, "seq": last_seq, "read_count": newest["number"]}
    ]
    # A tab still holding the old cursor is told too, at once, every time:
    # also once the memberships are cached again (the view's at-head test).
    for _ in range(2):
        again = await poll(alice, cursor, timeout=5)
        assert again["events"] == answer["events"] and again["cursor"] == answer["cursor"]
    # Moving it backwards is ignored, so no event follows.
    await alice.post(f"/api/channels/{home_id}/read", {"seq": 0}, expect=204)
    assert (await poll(alice, answer["cursor"], timeout=0.2))["events"] == []


async def test_removal_ends_delivery_and_rejoin_restarts_it(make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    cid = (await alice.post("/api/channels", {"name": "g", "members": ["bob"]}, expect=201))[
        "channel"
    ]["id"]
    cursor = await cursor_of(bob)
    await alice.send(cid, "before")
    await alice.call("DELETE", f"/api/channels/{cid}/members/bob", expect=204)
    await alice.send(cid, "while away")
    answer = await poll(bob, cursor)
    assert {"type": "channel_removed", "channel_id": cid} in answer["events"]
    assert "while away" not in [m["text"] for m in messages_of(answer)]
    await alice.post(f"/api/channels/{cid}/members", {"username": "bob"}, expect=200)
    await alice.send(cid, "welcome back")
    answer = await poll(bob, answer["cursor"])
    types = [e["type"] for e in answer["events"]]
    assert types == ["channel_added", "message"]
    assert messages_of(answer)[0]["text"] == "welcome back"


async def test_channel_long_poll_after_and_wait(make_user, home_id):
    alice, bob = await make_user("alice"), await make_user("bob")
    path = f"/api/channels/{home_id}/messages"
    last = (await alice.get(path))["messages"][-1]["seq"]
    started = time.monotonic()
    assert (await alice.get(f"{path}?after={last}&wait=0.3")) == {"messages": []}
    assert time.monotonic() - started >= 0.25
    waiting = asyncio.create_task(alice.get(f"{path}?after={last}&wait=10"))
    await asyncio.sleep(0.1)
    sent = await bob.send(home_id, "for curl -N")
    answer = await asyncio.wait_for(waiting, 5)
    assert answer["messages"] == [sent]
    # Something already there answers at once, even with a long wait.
    started = time.monotonic()
    assert (await alice.get(f"{path}?after={last}&wait=30"))["messages"] == [sent]
    assert time.monotonic() - started < 5  # far from the 30 s wait; slack for CI


async def test_disconnecting_poller_frees_its_waiter(app, client, make_user):
    alice = await make_user()
    cursor = await cursor_of(alice)
    hub = app[keys.HUB]
    url = client.make_url(f"/api/events?cursor={cursor}&timeout=30")
    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(session.get(url, headers=alice.headers))
        await wait_until(lambda: hub.waiter_count == 1)
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await request
    # The connection closed: the handler is cancelled and the waiter gone at once.
    await wait_until(lambda: hub.waiter_count == 0, timeout=2)


async def test_shutdown_answers_waiting_polls_at_once(app, make_user):
    alice = await make_user()
    cursor = await cursor_of(alice)
    waiting = asyncio.create_task(poll(alice, cursor, timeout=30))
    await wait_until(lambda: app[keys.HUB].waiter_count == 1)
    started = time.monotonic()
    await app[keys.HUB].close()
    answer = await asyncio.wait_for(waiting, 5)
    assert answer == {"cursor": cursor, "events": []}
    assert time.monotonic() - started < 3  # not the 30 s timeout; slack for CI


async def test_one_message_wakes_many_waiters_with_at_most_one_read(app, make_user, home_id):
    """A message rides in its NOTIFY payload: 40 polls get it with no read at
    all. One too long for the payload (8000 bytes) is read once for all 40."""
    users = [await make_user(f"fan{i}") for i in range(5)]
    hub = app[keys.HUB]
    for text, reads in (("to everyone", 0), ("é" * 4000, 1)):
        cursors = [await cursor_of(u) for u in users]
        polls = [
            asyncio.create_task(poll(u, c))
            for u, c in zip(users, cursors, strict=True)
            for _ in range(8)
        ]
        # Parked, not only registered: a poll still at its first read could
        # see the new seq in the database before the NOTIFY and read it there.
        await wait_until(lambda: hub.parked_count == 40)
        reads_before = hub.cache.database_reads
        sent = await users[0].send(home_id, text)
        answers = await asyncio.wait_for(asyncio.gather(*polls), 5)
        assert all(messages_of(a) == [sent] for a in answers)
        assert hub.cache.database_reads - reads_before == reads, text[:20]


async def test_steady_state_poll_needs_no_database(app, make_user, home_id, monkeypatch):
    """A poll at the head of its channels is answered from what the listener
    has told this process: no query for the session, the memberships or the
    channels' newest seqs; and the message arrives in its notification."""
    users = [await make_user(f"quiet{i}") for i in range(3)]
    cursors = [await cursor_of(u) for u in users]
    for user, cursor in zip(users, cursors, strict=True):
        await poll(user, cursor, timeout=0)  # warms the caches
    # Their first polls made them online: that one write is not the steady state.
    await wait_until(lambda: app[keys.HUB].presence.settled)
    acquired = []
    real_acquire = asyncpg.Pool.acquire

    def counting_acquire(self, *args, **kwargs):
        acquired.append(1)
        return real_acquire(self, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Pool, "acquire", counting_acquire)
    polls = [asyncio.create_task(poll(u, c)) for u, c in zip(users, cursors, strict=True)]
    await wait_until(lambda: app[keys.HUB].parked_count == 3)
    assert acquired == []
    sent = await users[0].send(home_id, "one read for all")  # the send itself: one acquire
    answers = await asyncio.wait_for(asyncio.gather(*polls), 5)
    assert all(messages_of(a) == [sent] for a in answers)
    assert len(acquired) == 1  # the send; the message itself came with its NOTIFY


async def test_exactly_once_under_load(make_user):
    """4 senders in 3 channels, 6 pollers following their cursor chains: each
    poller gets every message of its channels once, in seq order."""
    users = [await make_user(f"load{i}") for i in range(6)]
    names = [u.username for u in users]
    owner = users[0]
    channel_ids = []
    members = {0: names[1:], 1: names[1:4], 2: [names[4], names[5]]}
    for i in range(3):
        body = await owner.post(
            "/api/channels", {"name": f"load{i}", "members": members[i]}, expect=201
        )
        channel_ids.append(body["channel"]["id"])
    subscribed = {
        u.username: [
            cid for i, cid in enumerate(channel_ids) if u is owner or u.username in members[i]
        ]
        for u in users
    }
    cursors = {u.username: await cursor_of(u) for u in users}
    received = {u.username: defaultdict(list) for u in users}
    done = asyncio.Event()

    async def follow(user):
        cursor = cursors[user.username]
        while True:
            answer = await poll(user, cursor, timeout=1)
            for m in messages_of(answer):
                received[user.username][m["channel_id"]].append(m["seq"])
            cursor = answer["cursor"]
            if done.is_set() and not answer["events"]:
                return

    per_sender = 40

    async def sender(user, k):
        for i in range(per_sender):
            cid = [c for c in subscribed[user.username]][i % len(subscribed[user.username])]
            await user.send(cid, f"{user.username} {i}")
            if i % 10 == k:
                await asyncio.sleep(0.005)

    followers = [asyncio.create_task(follow(u)) for u in users]
    await asyncio.sleep(0.2)
    await asyncio.gather(*(sender(u, k) for k, u in enumerate(users[:4])))
    done.set()
    await asyncio.wait_for(asyncio.gather(*followers), 30)
    last_seq = {c["id"]: c["last_seq"] for c in (await owner.get("/api/channels"))["channels"]}
    assert sum(last_seq[cid] for cid in channel_ids) == 4 * per_sender
    for user in users:
        for cid in subscribed[user.username]:
            assert received[user.username][cid] == list(range(1, last_seq[cid] + 1)), (
                user.username,
                cid,
            )


async def test_listener_killed_from_the_database_side(app, settings, make_user, home_id):
    """pg_terminate_backend on the LISTEN connection while polls wait: the hub
    reconnects, re-LISTENs, and every message still arrives exactly once."""
    hub = app[keys.HUB]
    users = [await make_user(f"kill{i}") for i in range(3)]
    cursors = {u.username: await cursor_of(u) for u in users}
    admin = await asyncpg.connect(settings.database_url)
    try:
        query = "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()"
        [old_pid] = [r["pid"] for r in await admin.fetch(query, APPLICATION_NAME)]
        polls = [asyncio.create_task(poll(u, cursors[u.username], timeout=15)) for u in users]
        await wait_until(lambda: hub.waiter_count == 3)
        await admin.execute("SELECT pg_terminate_backend($1)", old_pid)
        await wait_until(lambda: not hub.connected.is_set(), timeout=5)
        sent = [await users[0].send(home_id, f"during outage {i}") for i in range(3)]
        await wait_until(lambda: hub.connected.is_set(), timeout=10)
        answers = await asyncio.wait_for(asyncio.gather(*polls), 10)
        got = {
            u.username: [m["seq"] for m in messages_of(a)]
            for u, a in zip(users, answers, strict=True)
        }
        for user, answer in zip(users, answers, strict=True):
            cursor = answer["cursor"]
            while True:  # follow until quiet: everything once, nothing twice
                more = await poll(user, cursor, timeout=0.3)
                if not more["events"]:
                    break
                got[user.username] += [m["seq"] for m in messages_of(more)]
                cursor = more["cursor"]
        expected = [m["seq"] for m in sent]
        assert all(seqs == expected for seqs in got.values()), got
        pids = [r["pid"] for r in await admin.fetch(query, APPLICATION_NAME)]
        assert len(pids) == 1 and pids[0] != old_pid
        assert hub.connections_made == 2
        # And the new connection delivers: a fresh wait wakes on the next send.
        cursor = await cursor_of(users[1])
        waiting = asyncio.create_task(poll(users[1], cursor, timeout=10))
        await asyncio.sleep(0.1)
        later = await users[0].send(home_id, "after reconnect")
        assert messages_of(await asyncio.wait_for(waiting, 3)) == [later]
    finally:
        await admin.close()


async def test_two_server_processes_deliver_to_each_other(settings, make_user, home_id):
    alice, bob = await make_user("alice"), await make_user("bob")
    process, base = await start_server(settings.database_url)
    try:
        async with aiohttp.ClientSession(base_url=base) as other:
            # bob polls on the other process; alice sends through this one.
            cursor = await cursor_of(bob)
            waiting = asyncio.create_task(
                other.get(f"/api/events?cursor={cursor}&timeout=10", headers=bob.headers)
            )
            await asyncio.sleep(0.3)
            sent = await alice.send(home_id, "across processes")
            answer = await (await asyncio.wait_for(waiting, 5)).json()
            assert messages_of(answer) == [sent]
            # And the other way round.
            cursor = await cursor_of(alice)
            waiting = asyncio.create_task(poll(alice, cursor, timeout=10))
            await asyncio.sleep(0.2)
            response = await other.post(
                f"/api/channels/{home_id}/messages", json={"text": "back"}, headers=bob.headers
            )
            assert response.status == 201
            assert [m["text"] for m in messages_of(await asyncio.wait_for(waiting, 5))] == ["back"]
            # Logging out here ends the session there too, though the other
            # process had it cached: its NOTIFY arrives within milliseconds.
            response = await other.get("/api/me", headers=bob.headers)
            assert response.status == 200
            await bob.post("/api/logout", expect=204)
            assert (await bob.client.get("/api/me", headers=bob.headers)).status == 401
            started = time.monotonic()
            while (await other.get("/api/me", headers=bob.headers)).status != 401:
                assert time.monotonic() - started < 1.0, "logout did not reach the other process"
                await asyncio.sleep(0.01)
    finally:
        stop_server(process)


async def test_gunicorn_workers_deliver_across_workers(settings, make_user, home_id):
    """chatterwerks serve --workers 2: polls parked on both workers all wake."""
    users = [await make_user(f"gw{i}") for i in range(4)]
    process, base = await start_server(settings.database_url, "--workers", "2")
    try:
        async with aiohttp.ClientSession(
            base_url=base, connector=aiohttp.TCPConnector(force_close=True)
        ) as other:
            cursors = {u.username: await cursor_of(u) for u in users}

            async def remote_poll(user):
                url = f"/api/events?cursor={cursors[user.username]}&timeout=10"
                async with other.get(url, headers=user.headers) as response:
                    return await response.json()

            polls = [asyncio.create_task(remote_poll(u)) for u in users for _ in range(4)]
            await asyncio.sleep(1.0)
            sent = []
            for i in range(3):
                response = await other.post(
                    f"/api/channels/{home_id}/messages",
                    json={"text": f"w{i}"},
                    headers=users[0].headers,
                )
                sent.append((await response.json())["message"]["seq"])
            answers = await asyncio.wait_for(asyncio.gather(*polls), 15)
            for answer in answers:
                seqs = [m["seq"] for m in messages_of(answer)]
                assert seqs and seqs == sent[: len(seqs)]
            assert len(answers) == 16
    finally:
        stop_server(process)


def test_message_cache_stays_consecutive_and_bounded(monkeypatch):
    from chatterwerks.realtime import cache as cache_module
    from chatterwerks.realtime.cache import CachedMessage, MessageCache

    now = [1000.0]
    monkeypatch.setattr(cache_module.time, "monotonic", lambda: now[0])

    cache = MessageCache(load=None, per_channel=4, max_bytes=100)  # type: ignore[arg-type]

    def add(channel_id, *seqs):
        cache._remember(channel_id, [CachedMessage(seq, "x" * 10) for seq in seqs])

    add(1, 1, 2)
    add(1, 3)  # the next one: appended
    assert [m.seq for m in cache.cached(1, 0, 10)] == [1, 2, 3]
    add(1, 5)  # a gap: the newer run replaces the old
    assert cache.cached(1, 0, 10) is None and [m.seq for m in cache.cached(1, 4, 10)] == [5]
    add(1, 3, 4)  # loads finishing out of order: merged into one run
    assert [m.seq for m in cache.cached(1, 2, 10)] == [3, 4, 5]
    add(1, 6, 7, 8, 9)  # at most 4 per channel
    assert [m.seq for m in cache.cached(1, 5, 10)] == [6, 7, 8, 9]
    assert cache.cached(1, 4, 10) is None
    add(2, 1, 2, 3, 4)
    add(3, 1, 2, 3, 4)  # 3 channels x 40 bytes > 100: the least recent goes
    assert not cache.holds(1) and cache.holds(2) and cache.holds(3)
    assert cache._bytes == sum(cache._sizes.values()) == 80
    # A channel nobody reads for a while is let go; one being read stays.
    now[0] += 30
    assert cache.cached(3, 0, 4)
    now[0] += 40
    cache.forget_idle(60)
    assert not cache.holds(2) and cache.holds(3)
    assert cache._bytes == 40


async def test_listener_survives_an_error_that_is_not_a_dropped_connection(
    app, settings, make_user, home_id
):
    """The server refuses the listener's reconnect with an error of its own
    (here a missing preload library, a PostgresError that is no connection
    error): the hub logs it, backs off and retries until it gets through,
    and delivery resumes without a restart."""
    hub = app[keys.HUB]
    alice, bob = await make_user("alice"), await make_user("bob")
    admin = await asyncpg.connect(settings.database_url)
    database = await admin.fetchval("SELECT current_database()")
    try:
        await admin.execute(
            f"ALTER DATABASE \"{database}\" SET session_preload_libraries = 'cw_no_such_lib'"
        )
        query = "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = $2"
        [pid] = [r["pid"] for r in await admin.fetch(query, APPLICATION_NAME, database)]
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        await wait_until(lambda: not hub.connected.is_set(), timeout=5)
        await wait_until(lambda: hub._listener.failures >= 3, timeout=10)
        await admin.execute(f'ALTER DATABASE "{database}" RESET session_preload_libraries')
        await wait_until(hub.connected.is_set, timeout=10)
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" RESET session_preload_libraries')
        await admin.close()
    cursor = await cursor_of(alice)
    waiting = asyncio.create_task(poll(alice, cursor, timeout=10))
    await wait_until(lambda: hub.parked_count == 1)
    sent = await bob.send(home_id, "still here")
    assert messages_of(await asyncio.wait_for(waiting, 5)) == [sent]


async def test_missed_removal_never_lets_a_cached_member_read_on(app, settings, make_user):
    """A removal whose NOTIFY never came (a listener silently gone), and a
    message read into the shared cache by another member's poll: the removed
    user's cached membership must not serve it. Notifications are 'lost' by
    writing behind the server's back, as a dead listener would miss them."""
    alice, bob = await make_user("alice"), await make_user("bob")
    cid = (await alice.post("/api/channels", {"name": "g", "members": ["bob"]}, expect=201))[
        "channel"
    ]["id"]
    await alice.send(cid, "before")
    cursors = {u.username: await cursor_of(u) for u in (alice, bob)}
    # Both users' memberships are now cached by the hub (their polls read them).
    for user in (alice, bob):
        await poll(user, cursors[user.username], timeout=0)
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(
            "DELETE FROM subscriptions WHERE channel_id = $1 AND user_id = $2", cid, bob.id
        )
        await admin.execute(
            """WITH bumped AS (UPDATE channels SET last_seq = last_seq + 1,
                                                  message_count = message_count + 1
                               WHERE id = $1 RETURNING id, last_seq, message_count)
               INSERT INTO messages (channel_id, seq, number, author_id, text)
               SELECT id, last_seq, message_count, $2, 'after the removal' FROM bumped""",
            cid,
            alice.id,
        )
    finally:
        await admin.close()
    # Alice's read marker moves (a NOTIFY that does arrive): her next poll
    # reads her memberships and the channel's newest seq from the database,
    # and reads the new message into the shared cache.
    await alice.post(f"/api/channels/{cid}/read", {"seq": 2}, expect=204)
    # (Waiting: the NOTIFY of the moved marker reaches the hub a moment later.)
    answer = await poll(alice, cursors["alice"], timeout=5)
    assert "after the removal" in [m["text"] for m in messages_of(answer)]
    # Bob's membership is still cached; the message must not reach him.
    answer = await poll(bob, cursors["bob"], timeout=0)
    assert messages_of(answer) == []
    assert {"type": "channel_removed", "channel_id": cid} in answer["events"]


def test_a_burst_in_one_channel_delays_no_other():
    """Messages in quick succession in channel 1 make its readers linger; a
    message in channel 2 still wakes its readers on the next turn."""
    from chatterwerks.realtime.waiters import LINGER, Waiters

    async def scenario():
        waiters = Waiters()
        busy, calm = waiters.register(1, [1]), waiters.register(2, [2])
        waiters.message_arrived(1)  # the first of a burst wakes at once
        await asyncio.sleep(0)
        assert busy.disarm()
        waiters.message_arrived(1)  # less than BURST_GAP after the first: a burst
        waiters.message_arrived(2)
        assert waiters.bursting([1]) and not waiters.bursting([2])
        await asyncio.sleep(0)
        woken_at_once = (busy.pending, calm.pending)
        await asyncio.sleep(LINGER * 2)
        return woken_at_once, busy.pending

    woken_at_once, busy_later = asyncio.run(scenario())
    assert woken_at_once == (False, True)
    assert busy_later


def test_the_views_version_table_stays_bounded():
    from chatterwerks.realtime.view import View

    view = View(pool=None, max_users=3)  # type: ignore[arg-type]
    generation = view.generation
    for user_id in range(10):
        view.memberships_changed(user_id)
    assert len(view._user_versions) <= 3
    assert view.generation > generation  # reads in flight are voided, not trusted


async def test_close_leaves_no_read_running(app, make_user, home_id):
    """A message too long for its NOTIFY is read by a tracked task; closing
    the hub mid-read cancels and awaits it."""
    hub = app[keys.HUB]
    alice, bob = await make_user("alice"), await make_user("bob")
    cursor = await cursor_of(alice)
    waiting = asyncio.create_task(poll(alice, cursor, timeout=10))
    await wait_until(lambda: hub.parked_count == 1)
    await bob.send(home_id, "é" * 4000)  # 8000 bytes of JSON: an 'm:' notification
    await wait_until(lambda: hub._prefetches or hub.cache.holds(home_id))
    await hub.close()
    assert not hub._prefetches and not hub.cache._loads
    await asyncio.wait_for(waiting, 5)


async def test_head_does_not_park_a_long_poll(app, client, make_user):
    alice = await make_user()
    cursor = await cursor_of(alice)
    started = time.monotonic()
    response = await client.head(f"/api/events?cursor={cursor}&timeout=30", headers=alice.headers)
    assert response.status == 405 and time.monotonic() - started < 5
    assert app[keys.HUB].waiter_count == 0
