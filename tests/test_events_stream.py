"""GET /api/events/stream: the events poll's answers as lines of one
response. Each line is what a long-poll from the previous line's cursor
would have answered, so a client may switch between the two, or resume
after a broken stream, without losing or repeating an event."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
from helpers import assert_error

from chatterwerks import keys


async def group(owner, *members, name="team"):
    body = await owner.post("/api/channels", {"name": name, "members": list(members)}, expect=201)
    return body["channel"]["id"]


class Stream:
    """One open stream, read line by line."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, within: float = 5.0) -> dict[str, Any] | None:
        """The next answer, or None when the stream has ended."""
        line = await asyncio.wait_for(self.response.content.readline(), within)
        if not line:
            return None
        assert line.endswith(b"\n"), line  # whole lines only
        return json.loads(line)

    async def messages(self, count: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Reads answers until `count` messages came: (the messages, the answers)."""
        found, answers = [], []
        while len(found) < count:
            answer = await self.next()
            assert answer is not None, f"the stream ended after {len(found)} messages"
            answers.append(answer)
            found += [e["message"] for e in answer["events"] if e["type"] == "message"]
        return found, answers


async def open_stream(user, query: str = "") -> Stream:
    response = await user.client.get(f"/api/events/stream?{query}", headers=user.headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-store"
    return Stream(response)


async def test_the_stream_carries_every_message_once_in_order(make_user):
    alice, bob = await make_user(), await make_user()
    cid = await group(bob, alice.username)
    cursor = (await alice.get("/api/events"))["cursor"]
    stream = await open_stream(alice, f"cursor={cursor}&timeout=20")
    first = await stream.next()
    assert first == {"cursor": cursor, "events": []}  # at once: the stream is open
    # Sends one at a time, then a burst (which batches, and lingers).
    for i in range(5):
        await bob.send(cid, f"one {i}")
    await asyncio.gather(*(bob.send(cid, f"burst {i}") for i in range(25)))
    found, answers = await stream.messages(30)
    assert [m["seq"] for m in found] == list(range(1, 31))
    assert len(found) == 30 and len(answers) < 30  # the burst came in fewer answers
    # Each line's cursor is a long-poll's: resuming from any line gives
    # exactly what came after it.
    told = 0
    for answer in answers[:-1]:
        told += sum(e["type"] == "message" for e in answer["events"])
        rest = await alice.get(f"/api/events?cursor={answer['cursor']}&timeout=0")
        seqs = [e["message"]["seq"] for e in rest["events"] if e["type"] == "message"]
        assert seqs == list(range(told + 1, 31))
    stream.response.close()


async def test_a_stream_without_a_cursor_starts_now(make_user, home_id):
    alice = await make_user()
    stream = await open_stream(alice, "timeout=10")
    first = await stream.next()
    assert first["events"] == [] and first["cursor"]
    sent = await alice.send(home_id, "after the start")
    found, _ = await stream.messages(1)
    assert found == [sent]
    stream.response.close()


async def test_the_stream_follows_a_new_channel(make_user):
    alice, bob = await make_user(), await make_user()
    stream = await open_stream(alice, "timeout=10")
    await stream.next()
    cid = await group(bob, alice.username, name="later")
    added = await stream.next()
    assert [e["type"] for e in added["events"]] == ["channel_added"]
    sent = await bob.send(cid, "in the new channel")
    found, _ = await stream.messages(1)
    assert found == [sent]
    stream.response.close()


async def test_the_stream_ends_at_its_time(make_user):
    alice = await make_user()
    started = time.monotonic()
    stream = await open_stream(alice, "timeout=0.3")
    assert (await stream.next())["events"] == []
    assert await stream.next() is None
    assert 0.25 < time.monotonic() - started < 3


async def test_shutdown_ends_streams_at_once(app, make_user):
    alice = await make_user()
    stream = await open_stream(alice, "timeout=30")
    await stream.next()
    started = time.monotonic()
    await app[keys.HUB].close()
    assert await stream.next() is None
    assert time.monotonic() - started < 2


async def test_a_stream_holds_its_user_online_and_counts_as_a_poll(app, make_user):
    alice = await make_user()
    hub = app[keys.HUB]
    stream = await open_stream(alice, "timeout=10")
    await stream.next()
    assert hub.polls_of(alice.id) == 1
    for _ in range(150):  # written by the presence task, told by its NOTIFY
        if hub.presence_of(alice.id) == "online":
            break
        await asyncio.sleep(0.02)
    assert hub.presence_of(alice.id) == "online"
    stream.response.close()
    for _ in range(100):
        if hub.polls_of(alice.id) == 0:
            break
        await asyncio.sleep(0.02)
    assert hub.polls_of(alice.id) == 0  # a client that hangs up frees its waiter


async def test_bad_requests_get_the_usual_errors(client, make_user):
    alice = await make_user()
    for query, code in [
        ("cursor=%21%21", "invalid_cursor"),
        ("timeout=soon", "invalid_timeout"),
        ("ephemeral=maybe", "invalid_ephemeral"),
        ("idle=2", "invalid_idle"),
    ]:
        response = await client.get(f"/api/events/stream?{query}", headers=alice.headers)
        assert response.status == 400
        assert_error(await response.json(), code)
    client.session.cookie_jar.clear()  # registering signed this client in by cookie
    response = await client.get("/api/events/stream")
    assert response.status == 401
    response = await client.head("/api/events/stream", headers=alice.headers)
    assert response.status == 405
