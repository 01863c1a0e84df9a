"""Issue 11, typing and presence: ephemeral events that reach the events polls
that ask for them (`ephemeral=1`), outside the gapless sequence; presence
across processes from the presence table's few writes.

Several tests run a second `chatterwerks serve` on the same database; its
grace and sweep are shortened through the environment."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from helpers import assert_error, start_server, stop_server
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz import (
    FUZZ_SETTINGS,
    World,
    bodies,
    channel_ids,
    json_values,
    path_segments,
    queries,
    world,  # noqa: F401 (the module-scoped fixture of tests/test_fuzz.py)
)

from chatterwerks import keys
from chatterwerks.ratelimit import Limit, SharedLimiter
from chatterwerks.realtime.presence import Presence
from chatterwerks.store.live import AWAY, OFFLINE, ONLINE

REMOTE_ENV = {
    "CHATTERWERKS_PRESENCE_GRACE": "0.5",
    "CHATTERWERKS_PRESENCE_SWEEP": "1",
    "CHATTERWERKS_LIMIT_TYPING_USER": "off",
    "CHATTERWERKS_LIMIT_MESSAGES_USER": "off",
}


@pytest.fixture
def settings(settings):
    return settings.replace(limit_typing_user=None, presence_grace=0.5, presence_sweep=1.0)


@pytest.fixture
def remote_env(monkeypatch):
    for name, value in REMOTE_ENV.items():
        monkeypatch.setenv(name, value)


class Way:
    """One user's way into one server process (the test app or a subprocess)."""

    def __init__(self, session: Any, token: str) -> None:
        self.session = session
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        async with self.session.request(
            method, path, json=json, headers=self.headers, **kw
        ) as response:
            body = None if response.status == 204 else await response.json()
            return response.status, body

    async def poll(self, cursor: str, timeout: float = 5, **flags: str) -> dict[str, Any]:
        params = {"cursor": cursor, "timeout": str(timeout), "ephemeral": "1", **flags}
        status, body = await self.call("GET", "/api/events", params=params)
        assert status == 200, body
        return body

    async def cursor(self) -> str:
        return (await self.call("GET", "/api/me"))[1]["cursor"]


def way(user: Any) -> Way:
    return Way(user.client, user.token)


async def collect(
    who: Way, cursor: str, done: Callable[[list[dict[str, Any]]], bool], seconds: float = 10
) -> tuple[list[dict[str, Any]], str]:
    """Polls from cursor, gathering events, until done(events) or seconds."""
    events: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not done(events) and loop.time() < deadline:
        body = await who.poll(cursor, timeout=min(2.0, max(0.1, deadline - loop.time())))
        events += body["events"]
        cursor = body["cursor"]
    return events, cursor


def typing_of(events: list[dict[str, Any]], channel_id: int | None = None) -> list[int]:
    return [
        e["user"]["id"]
        for e in events
        if e["type"] == "typing" and channel_id in (None, e["channel_id"])
    ]


def presence_of(events: list[dict[str, Any]], user_id: int) -> list[str]:
    return [e["presence"] for e in events if e["type"] == "presence" and e["user"]["id"] == user_id]


async def typing_until_seen(typist: Way, channel_id: int, receiving: asyncio.Task) -> None:
    """Sends typing until the receiving poll has answered: a typing event
    reaches only polls parked at that moment (best-effort by design)."""
    for _ in range(100):
        status, body = await typist.call("POST", f"/api/channels/{channel_id}/typing")
        assert status == 204, body
        await asyncio.wait({receiving}, timeout=0.2)
        if receiving.done():
            return
    raise AssertionError("the typing event never arrived")


async def group(owner: Any, name: str, *members: Any) -> int:
    body = await owner.post(
        "/api/channels", {"name": name, "members": [m.username for m in members]}
    )
    return body["channel"]["id"]


# --------------------------------------------------------------------------
# Typing
# --------------------------------------------------------------------------


async def test_typing_reaches_the_other_members_only(app, make_user):
    alice, bob, carol = await make_user("alice"), await make_user("bob"), await make_user("carol")
    channel_id = await group(alice, "plans", bob)
    cursors = {u.username: await way(u).cursor() for u in (alice, bob, carol)}

    async def bob_sees_typing() -> list[dict[str, Any]]:
        events, _ = await collect(way(bob), cursors["bob"], lambda ev: bool(typing_of(ev)))
        return events

    receiving = asyncio.create_task(bob_sees_typing())
    others = [
        asyncio.create_task(collect(way(u), cursors[u.username], lambda ev: False, seconds=2.5))
        for u in (alice, carol)
    ]
    while app[keys.HUB].parked_count < 3:
        await asyncio.sleep(0.01)
    await typing_until_seen(way(alice), channel_id, receiving)
    [event] = [e for e in receiving.result() if e["type"] == "typing"]
    assert event == {
        "type": "typing",
        "channel_id": channel_id,
        "user": {"id": alice.id, "username": "alice", "is_bot": False},
    }
    # Neither the typist nor a non-member hears of it.
    for task in others:
        events, _ = await task
        assert typing_of(events) == []


async def test_typing_moves_no_cursor_and_is_not_replayed(app, make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    channel_id = await group(alice, "plans", bob)
    cursor = await way(bob).cursor()
    receiving = asyncio.create_task(way(bob).poll(cursor))
    while app[keys.HUB].parked_count < 1:
        await asyncio.sleep(0.01)
    await typing_until_seen(way(alice), channel_id, receiving)
    answer = receiving.result()
    assert typing_of(answer["events"]) == [alice.id]
    assert answer["cursor"] == cursor  # only durable events move it
    # A later poll from the same cursor gets no typing: nothing is stored.
    again = await way(bob).poll(cursor, timeout=0)
    assert typing_of(again["events"]) == []
    # And a message after it arrives once, from that same cursor.
    await alice.send(channel_id, "hello")
    events, _ = await collect(way(bob), cursor, lambda ev: any(e["type"] == "message" for e in ev))
    assert [e["message"]["text"] for e in events if e["type"] == "message"] == ["hello"]


async def test_polls_that_do_not_ask_get_no_ephemeral_events(app, make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    channel_id = await group(alice, "plans", bob)
    cursor = await way(bob).cursor()
    plain = asyncio.create_task(bob.get("/api/events", params={"cursor": cursor, "timeout": "1.5"}))
    while app[keys.HUB].parked_count < 1:
        await asyncio.sleep(0.01)
    for _ in range(3):
        await alice.post(f"/api/channels/{channel_id}/typing", expect=204)
    assert (await plain)["events"] == []


async def test_typing_outsider_and_removed_member_get_404(app, make_user):
    alice, bob, carol = await make_user("alice"), await make_user("bob"), await make_user("carol")
    channel_id = await group(alice, "plans", bob)
    body = await carol.post(f"/api/channels/{channel_id}/typing", expect=404)
    assert_error(body, "channel_not_found")
    assert_error(await carol.post("/api/channels/999999/typing", expect=404), "channel_not_found")
    await bob.post(f"/api/channels/{channel_id}/typing", expect=204)
    # Removed: bob's typing is refused, and alice's no longer reaches him.
    bob_cursor = await way(bob).cursor()
    await alice.call("DELETE", f"/api/channels/{channel_id}/members/bob", expect=204)
    assert_error(
        await bob.post(f"/api/channels/{channel_id}/typing", expect=404), "channel_not_found"
    )
    watching = asyncio.create_task(collect(way(bob), bob_cursor, lambda ev: False, seconds=2))
    await asyncio.sleep(0.3)
    for _ in range(5):
        await alice.post(f"/api/channels/{channel_id}/typing", expect=204)
        await asyncio.sleep(0.1)
    events, _ = await watching
    assert {"type": "channel_removed", "channel_id": channel_id} in events
    assert typing_of(events, channel_id) == []


async def test_typing_is_rate_limited_per_user(app, make_user, aiohttp_client):
    limiter = SharedLimiter("typing_user", Limit(3, 60.0))
    limiter.bind(app[keys.POOL])
    app[keys.LIMITERS].typing_user = limiter
    alice, bob = await make_user("alice"), await make_user("bob")
    channel_id = await group(alice, "plans", bob)
    for _ in range(3):
        await alice.post(f"/api/channels/{channel_id}/typing", expect=204)
    response = await alice.client.post(f"/api/channels/{channel_id}/typing", headers=alice.headers)
    assert response.status == 429
    assert_error(await response.json(), "rate_limited")
    assert int(response.headers["Retry-After"]) >= 1
    # Per user: bob still may.
    await bob.post(f"/api/channels/{channel_id}/typing", expect=204)


async def test_typing_across_two_processes(app, make_user, settings, remote_env):
    alice, bob = await make_user("alice"), await make_user("bob")
    channel_id = await group(alice, "plans", bob)
    process, base = await start_server(settings.database_url)
    try:
        async with aiohttp.ClientSession(base_url=base) as remote:
            bob_remote, alice_remote = Way(remote, bob.token), Way(remote, alice.token)
            # Typed here, heard there ...
            cursor = await bob_remote.cursor()
            receiving = asyncio.create_task(
                collect(bob_remote, cursor, lambda ev: bool(typing_of(ev)))
            )
            await typing_until_seen(way(alice), channel_id, receiving)
            assert typing_of(receiving.result()[0]) == [alice.id]
            # ... and typed there, heard here.
            cursor = await way(alice).cursor()
            receiving = asyncio.create_task(
                collect(way(alice), cursor, lambda ev: bool(typing_of(ev)))
            )
            await typing_until_seen(Way(remote, bob.token), channel_id, receiving)
            assert typing_of(receiving.result()[0]) == [bob.id]
            del alice_remote
    finally:
        stop_server(process)


async def test_typing_storms_leave_exactly_once_intact(app, make_user, settings, remote_env):
    """Followers on two processes, taking ephemeral events, get every
    message once and in order while everyone types as fast as allowed."""
    users = [await make_user(f"user{i}") for i in range(4)]
    channel_id = await group(users[0], "storm", *users[1:])
    sends = 60
    process, base = await start_server(settings.database_url)
    try:
        async with aiohttp.ClientSession(base_url=base) as remote:
            followers = []
            for user in users:
                for endpoint in (way(user), Way(remote, user.token)):
                    followers.append((endpoint, await endpoint.cursor()))

            async def follow(endpoint: Way, cursor: str) -> list[str]:
                def all_in(events: list[dict[str, Any]]) -> bool:
                    return sum(e["type"] == "message" for e in events) >= sends

                events, _ = await collect(endpoint, cursor, all_in, seconds=60)
                return [e["message"]["text"] for e in events if e["type"] == "message"]

            following = [asyncio.create_task(follow(e, c)) for e, c in followers]

            async def storm(endpoint: Way, stop: asyncio.Event) -> None:
                while not stop.is_set():
                    status, _ = await endpoint.call("POST", f"/api/channels/{channel_id}/typing")
                    assert status == 204
                    await asyncio.sleep(0.005)

            stop = asyncio.Event()
            storms = [asyncio.create_task(storm(e, stop)) for e, _ in followers]
            for i in range(sends):
                sender = users[i % len(users)]
                endpoint = way(sender) if i % 2 else Way(remote, sender.token)
                status, body = await endpoint.call(
                    "POST", f"/api/channels/{channel_id}/messages", {"text": f"m{i}"}
                )
                assert status == 201, body
            results = await asyncio.gather(*following)
            stop.set()
            await asyncio.gather(*storms)
            expected = [f"m{i}" for i in range(sends)]
            for texts in results:
                assert texts == expected
    finally:
        stop_server(process)


# --------------------------------------------------------------------------
# Presence
# --------------------------------------------------------------------------


async def member_presence(viewer: Any, channel_id: int, user_id: int) -> str:
    channel = (await viewer.get(f"/api/channels/{channel_id}"))["channel"]
    [member] = [m for m in channel["members"] if m["id"] == user_id]
    return member["presence"]


async def until(check: Callable[[], Any], seconds: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await check():
        assert loop.time() < deadline, "condition never held"
        await asyncio.sleep(0.05)


async def test_presence_online_away_offline_across_two_processes(
    app, make_user, settings, remote_env
):
    alice, bob = await make_user("alice"), await make_user("bob")
    direct = (await bob.post("/api/direct", {"username": "alice"}, expect=201))["channel"]
    assert direct["peer"]["presence"] == "offline"
    channel_id = await group(bob, "plans", alice)
    watch_cursor = await way(bob).cursor()
    process, base = await start_server(settings.database_url)
    try:
        async with aiohttp.ClientSession(base_url=base) as remote:
            alice_remote = Way(remote, alice.token)
            cursor = await alice_remote.cursor()
            # alice holds a poll there: online, here too.
            active = asyncio.create_task(alice_remote.poll(cursor, timeout=30, ephemeral="0"))
            events, watch_cursor = await collect(
                way(bob), watch_cursor, lambda ev: presence_of(ev, alice.id)[-1:] == ["online"]
            )
            assert presence_of(events, alice.id)[-1] == "online"
            assert await member_presence(bob, channel_id, alice.id) == "online"
            channels = (await bob.get("/api/channels"))["channels"]
            [dm] = [c for c in channels if c["id"] == direct["id"]]
            assert dm["peer"]["presence"] == "online"
            # Her client says she is idle: away.
            idle = asyncio.create_task(
                alice_remote.poll(cursor, timeout=30, idle="1", ephemeral="0")
            )
            await asyncio.sleep(0.2)
            active.cancel()
            events, watch_cursor = await collect(
                way(bob), watch_cursor, lambda ev: presence_of(ev, alice.id)[-1:] == ["away"]
            )
            assert presence_of(events, alice.id)[-1] == "away"
            assert await member_presence(bob, channel_id, alice.id) == "away"
            # Her client vanishes without a goodbye: offline after the grace.
            idle.cancel()
            events, watch_cursor = await collect(
                way(bob), watch_cursor, lambda ev: presence_of(ev, alice.id)[-1:] == ["offline"]
            )
            assert presence_of(events, alice.id)[-1] == "offline"
            assert await member_presence(bob, channel_id, alice.id) == "offline"
    finally:
        stop_server(process)


async def test_no_flapping_between_one_poll_and_the_next(app, make_user):
    alice = await make_user("alice")
    cursor = await way(alice).cursor()
    presence = app[keys.HUB].presence
    presence.grace = 5.0  # the default: a loaded machine's gaps stay well inside it
    written = presence.changes_written
    # Polls back to back, each answering after 50 ms: one transition, online.
    for _ in range(10):
        await way(alice).poll(cursor, timeout=0.05, ephemeral="0")
    assert presence.changes_written == written + 1
    assert app[keys.HUB].presence_of(alice.id) == "online"


async def test_a_vanished_client_goes_offline_after_the_grace(app, make_user, client):
    alice, bob = await make_user("alice"), await make_user("bob")
    cursor = await way(alice).cursor()
    # A connection of its own, closed under the parked poll.
    session = aiohttp.ClientSession(base_url=str(client.make_url("")))
    poll = asyncio.create_task(Way(session, alice.token).poll(cursor, timeout=30, ephemeral="0"))
    await until(lambda: _is(app, alice.id, "online"))
    poll.cancel()
    await session.close()
    await until(lambda: _is(app, alice.id, "offline"))
    assert app[keys.HUB].presence_of(bob.id) == "offline"


async def _is(app: Any, user_id: int, state: str) -> bool:
    return app[keys.HUB].presence_of(user_id) == state


async def test_a_killed_process_takes_its_users_offline(app, make_user, settings, remote_env):
    alice, bob = await make_user("alice"), await make_user("bob")
    channel_id = await group(bob, "plans", alice)
    process, base = await start_server(settings.database_url)
    try:
        async with aiohttp.ClientSession(base_url=base) as remote:
            alice_remote = Way(remote, alice.token)
            poll = asyncio.create_task(
                alice_remote.poll(await alice_remote.cursor(), timeout=30, ephemeral="0")
            )
            await until(lambda: _is(app, alice.id, "online"))
            os.kill(process.pid, signal.SIGKILL)  # no goodbye, rows left behind
            process.wait()
            # This process's sweep finds the dead listener and its rows.
            await until(lambda: _is(app, alice.id, "offline"), seconds=20)
            assert await member_presence(bob, channel_id, alice.id) == "offline"
            with pytest.raises(aiohttp.ClientError):
                await poll
    finally:
        stop_server(process)


async def test_a_presence_event_carries_the_user_and_no_channel(app, make_user):
    """A presence event has no channel_id and carries the user."""
    alice, bob = await make_user("alice"), await make_user("bob")
    watching = asyncio.create_task(
        collect(way(bob), await way(bob).cursor(), lambda ev: bool(presence_of(ev, alice.id)))
    )
    await until(lambda: _is(app, bob.id, "online"))
    await way(alice).poll(await way(alice).cursor(), timeout=0)
    events, _ = await watching
    [event] = [e for e in events if e["type"] == "presence" and e["user"]["id"] == alice.id]
    assert event == {
        "type": "presence",
        "user": {"id": alice.id, "username": "alice", "is_bot": False},
        "presence": "online",
    }


@pytest.mark.parametrize(
    "params", [{"idle": "maybe"}, {"ephemeral": "2"}, {"idle": "yes"}, {"ephemeral": "TRUE"}]
)
async def test_poll_flags_are_validated(make_user, params):
    alice = await make_user("alice")
    cursor = await way(alice).cursor()
    body = await alice.get("/api/events", expect=400, params={"cursor": cursor, **params})
    assert_error(body, "invalid_" + next(iter(params)))


async def test_poll_flags_in_a_body_must_be_booleans(make_user):
    alice = await make_user("alice")
    cursor = await way(alice).cursor()
    for field in ("idle", "ephemeral"):
        body = await alice.post("/api/events", {"cursor": cursor, field: "1"}, expect=400)
        assert_error(body, "invalid_" + field)
    ok = await alice.post(
        "/api/events", {"cursor": cursor, "timeout": 0, "idle": True, "ephemeral": True}, expect=200
    )
    assert ok["cursor"] == cursor


# --------------------------------------------------------------------------
# Fuzz (the harness of tests/test_fuzz.py: no 5xx, one error shape, a 4xx
# changes no data)
# --------------------------------------------------------------------------


@FUZZ_SETTINGS
@given(data=st.data(), body=st.one_of(st.none(), bodies({})))
def test_fuzz_typing(world: World, data: st.DataObject, body: bytes | None) -> None:  # noqa: F811
    channel = data.draw(channel_ids(world), label="channel")
    world.request("POST", f"/api/channels/{channel}/typing", body)


@FUZZ_SETTINGS
@given(
    query=queries,
    idle=st.one_of(st.none(), path_segments(["1", "0", "true", "false"])),
    ephemeral=st.one_of(st.none(), path_segments(["1", "0", "true", "false"])),
    body=bodies({"idle": json_values, "ephemeral": json_values, "timeout": st.just(0)}),
)
def test_fuzz_poll_flags(
    world: World,  # noqa: F811
    query: str,
    idle: str | None,
    ephemeral: str | None,
    body: bytes,
) -> None:
    flags = "".join(f"&{k}={v}" for k, v in (("idle", idle), ("ephemeral", ephemeral)) if v)
    world.request("GET", f"/api/events?cursor={world.cursor}&timeout=0{flags}&{query}")
    world.request("POST", "/api/events", body)


def test_typing_and_presence_settings_from_the_environment():
    from chatterwerks.config import ConfigError, Settings

    settings = Settings.from_env(
        {
            "CHATTERWERKS_LIMIT_TYPING_USER": "5/1",
            "CHATTERWERKS_AWAY_AFTER": "30",
            "CHATTERWERKS_PRESENCE_GRACE": "2.5",
            "CHATTERWERKS_PRESENCE_SWEEP": "10",
        }
    )
    assert settings.limit_typing_user == Limit(5, 1.0)
    assert (settings.away_after, settings.presence_grace, settings.presence_sweep) == (30, 2.5, 10)
    assert Settings.from_env({"CHATTERWERKS_LIMIT_TYPING_USER": "off"}).limit_typing_user is None
    for name, value in (("CHATTERWERKS_AWAY_AFTER", "0"), ("CHATTERWERKS_PRESENCE_GRACE", "x")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: value})


async def test_the_page_carries_the_away_time(client, settings):
    page = await (await client.get("/")).text()
    assert f'<meta name="away-after" content="{settings.away_after}">' in page


def test_ephemeral_events_held_for_a_poll_are_bounded_and_kept_until_answered():
    from chatterwerks.realtime.waiters import MAX_EPHEMERAL, Waiter

    waiter = Waiter(1, [7], events_poll=True, takes_ephemeral=True)
    waiter.offer(("typing", 7, 2), "first")
    waiter.offer(("presence", 3), "away")
    waiter.offer(("typing", 7, 2), "again")  # replaces the older, goes last
    # A read repeated after a linger sees them all again ...
    assert waiter.peek_ephemeral() == ["away", "again"]
    assert waiter.peek_ephemeral() == ["away", "again"]
    # ... and only the answer consumes them: a later poll gets none of them.
    waiter.answered()
    assert waiter.peek_ephemeral() == []
    for user in range(MAX_EPHEMERAL + 5):
        waiter.offer(("presence", user), str(user))
    held = waiter.peek_ephemeral()
    assert len(held) == MAX_EPHEMERAL and held[0] == "5"  # the oldest went


async def test_the_grace_runs_from_the_last_poll_not_the_first():
    """One timer per user, never cancelled: a user who came back and left
    again within the grace goes offline a grace after the last poll ended."""
    presence = Presence(pool=None, application_name="test", grace=0.3)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    presence.poll_started(7, idle=False)
    presence.poll_ended(7, idle=False)
    first_end = loop.time()
    await asyncio.sleep(0.2)
    presence.poll_started(7, idle=False)
    presence.poll_ended(7, idle=False)
    last_end = loop.time()
    await asyncio.sleep(0.15)  # past the first end's grace: still here
    assert presence._local[7].state == ONLINE and loop.time() > first_end + 0.3
    while 7 in presence._local:
        await asyncio.sleep(0.01)
    assert loop.time() >= last_end + 0.3
    assert presence._dirty == {7: OFFLINE}
    # Holding a poll when the timer fires keeps the user, with no timer left.
    presence.poll_started(8, idle=True)
    presence.poll_ended(8, idle=True)
    presence.poll_started(8, idle=True)
    await asyncio.sleep(0.4)
    assert presence._local[8].state == AWAY and presence._local[8].timer is None
