"""Sends coalesced under bursts (chatterwerks/store/send_queue.py): a burst
to one channel goes in batches, and every send is answered exactly as it
would have been alone: gapless seqs in order, each message once, read
markers, Idempotency-Keys, non-members, and the sends that always go alone.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from conftest import Server, with_database
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatterwerks import keys
from chatterwerks.app import create_app
from chatterwerks.errors import NotFound
from chatterwerks.store import accounts, channels
from chatterwerks.store.send_queue import SendQueue


async def group(owner, *members, name="team"):
    body = await owner.post("/api/channels", {"name": name, "members": list(members)}, expect=201)
    return body["channel"]["id"]


async def test_burst_goes_in_batches_gapless_once_in_order(app, make_user):
    alice, bob, carol = await make_user(), await make_user(), await make_user()
    cid = await group(alice, bob.username, carol.username)
    first = await alice.get("/api/events")
    queue = app[keys.SEND_QUEUE]
    authors = [alice, bob, carol] * 10
    sent = await asyncio.gather(
        *(queue.send(cid, user.id, f"burst {i}", None) for i, user in enumerate(authors))
    )
    assert queue.batches >= 1, "a burst behind a send in flight goes as a batch"
    assert all(created for _, created in sent)
    bodies = [json.loads(text) for text, _ in sent]
    # Queued in the order sent, so seqs follow that order, without gaps.
    assert [m["seq"] for m in bodies] == list(range(1, 31))
    assert [m["text"] for m in bodies] == [f"burst {i}" for i in range(30)]
    assert [m["author"]["id"] for m in bodies] == [u.id for u in authors]
    page = await alice.get(f"/api/channels/{cid}/messages")
    assert page["messages"] == bodies
    # Each author's read marker is at their own last message.
    async with app[keys.POOL].acquire() as conn:
        marks = dict(
            await conn.fetch(
                "SELECT user_id, last_read_seq FROM subscriptions WHERE channel_id = $1", cid
            )
        )
        count = await conn.fetchval("SELECT message_count FROM channels WHERE id = $1", cid)
    assert marks == {alice.id: 28, bob.id: 29, carol.id: 30}
    assert count == 30
    # A follower gets every message once, in order, by the NOTIFYs of the batches.
    cursor, seen = first["cursor"], []
    while len(seen) < 30:
        answer = await alice.get(f"/api/events?cursor={cursor}&timeout=5")
        cursor = answer["cursor"]
        seen += [e["message"]["seq"] for e in answer["events"] if e["type"] == "message"]
    assert seen == list(range(1, 31))


async def test_each_send_in_a_burst_is_answered_as_alone(app, make_user, home_id):
    alice, bob, outsider = await make_user(), await make_user(), await make_user()
    cid = await group(alice, bob.username)
    queue = app[keys.SEND_QUEUE]
    before, _ = await queue.send(cid, alice.id, "sent before", "old-key")
    results = await asyncio.gather(
        queue.send(cid, alice.id, "in flight", None),  # goes alone; the rest queue
        queue.send(cid, bob.id, "keyed", "k1"),
        queue.send(cid, bob.id, "keyed again", "k1"),  # the same key: a repeat
        queue.send(cid, outsider.id, "not a member", None),
        queue.send(cid, alice.id, "retry", "old-key"),  # sent before the burst
        queue.send(cid, alice.id, f"hi @{bob.username}", None),  # a mention: alone
        queue.send(cid, bob.id, "plain", None),
        return_exceptions=True,
    )
    assert isinstance(results[3], NotFound) and results[3].code == "channel_not_found"
    keyed, repeat = results[1], results[2]
    assert keyed == (keyed[0], True) and repeat == (keyed[0], False)
    assert results[4] == (before, False)
    created = [json.loads(r[0]) for r in results if not isinstance(r, Exception) and r[1]]
    assert sorted(m["text"] for m in created) == sorted(
        ["in flight", "keyed", f"hi @{bob.username}", "plain"]
    )
    page = (await alice.get(f"/api/channels/{cid}/messages"))["messages"]
    assert [m["seq"] for m in page] == list(range(1, 6))  # nothing doubled, no gap
    assert {m["text"] for m in page} == {"sent before"} | {m["text"] for m in created}
    mention = next(m for m in page if m["text"].startswith("hi @"))
    assert mention["mentions"] == [bob.username]
    # A question to Otter in a burst goes alone, with its answer after it.
    answers = await asyncio.gather(
        queue.send(home_id, alice.id, "plain one", None),
        queue.send(home_id, bob.id, "Hey Otter, what time is it?", None),
        queue.send(home_id, alice.id, "plain two", None),
    )
    assert all(created for _, created in answers)
    home = (await alice.get(f"/api/channels/{home_id}/messages"))["messages"]
    question = next(i for i, m in enumerate(home) if m["text"].startswith("Hey Otter"))
    assert home[question + 1]["author"]["id"] == app[keys.OTTER_ID]


async def test_shutdown_answers_the_batch_in_flight(settings):
    """Closing lets a batch in flight finish: every send queued is answered."""
    app = await create_app(settings)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        pool = app[keys.POOL]
        otter = app[keys.OTTER_ID]
        user = await accounts.create_user(pool, "solo", "x", "hello", otter)
        channel = await channels.create_group(pool, user["id"], "solo", "", [])
        queue = app[keys.SEND_QUEUE]
        sends = [
            asyncio.ensure_future(queue.send(channel["id"], user["id"], f"m{i}", None))
            for i in range(20)
        ]
        await asyncio.sleep(0)  # all queued behind the first
    finally:
        await client.close()  # the app's cleanup: the queue closes before the pool
    answered = await asyncio.gather(*sends, return_exceptions=True)
    assert all(isinstance(a, tuple) and a[1] for a in answered), answered


# ---------------------------------------------------------------------------
# Hypothesis: random bursts, checked against what sending alone would answer


class _Loop:
    """A pool and a send queue on an event loop in a thread (Hypothesis runs
    sync tests), on a database of their own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def burst_world(pg_server: Server) -> Iterator[dict[str, Any]]:
    runner = _Loop()
    name = f"cw_sendq_{os.getpid()}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(pg_server.admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def start() -> dict[str, Any]:
        pool = await asyncpg.create_pool(
            with_database(pg_server.admin_url, name), min_size=1, max_size=4
        )
        otter = await accounts.otter_id(pool)
        users = [
            await accounts.create_user(pool, f"burster{i}", "x", "hello", otter) for i in range(3)
        ]
        return {
            "pool": pool,
            "otter": otter,
            "users": [u["id"] for u in users],
            "names": [u["username"] for u in users],
        }

    runner.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    runner.run(admin(f'CREATE DATABASE "{name}" TEMPLATE "{pg_server.template}"'))
    world = runner.run(start())
    world["runner"] = runner
    world["channels"] = itertools.count()
    try:
        yield world
    finally:
        runner.run(world["pool"].close())
        runner.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        runner.stop()


# (author: 0 and 1 are members, 2 is not; Idempotency-Key or None)
SENDS = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from([None, None, "a", "b"])), min_size=1, max_size=40
)


@settings(
    max_examples=int(os.environ.get("CHATTERWERKS_FUZZ_EXAMPLES", "120")) // 2,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sends=SENDS)
def test_fuzz_bursts_answer_as_sends_alone(burst_world: dict[str, Any], sends) -> None:
    pool, users = burst_world["pool"], burst_world["users"]

    async def burst() -> tuple[list[Any], list[asyncpg.Record]]:
        queue = SendQueue(pool, burst_world["otter"])
        owner = users[0]
        name = f"burst-{next(burst_world['channels'])}"
        channel = await channels.create_group(pool, owner, name, "", [burst_world["names"][1]])
        cid = channel["id"]
        results = await asyncio.gather(
            *(queue.send(cid, users[a], f"m{i}", key) for i, (a, key) in enumerate(sends)),
            return_exceptions=True,
        )
        await queue.close()
        rows = await pool.fetch(
            "SELECT seq, author_id, text, idempotency_key FROM messages"
            " WHERE channel_id = $1 ORDER BY seq",
            cid,
        )
        return results, rows

    results, rows = burst_world["runner"].run(burst())
    # What sending alone would answer, in the order sent.
    first_of: dict[tuple[int, str], int] = {}
    expected_texts = []
    for i, ((author, key), result) in enumerate(zip(sends, results, strict=True)):
        if author == 2:
            assert isinstance(result, NotFound), result
            continue
        assert isinstance(result, tuple), result
        message = json.loads(result[0])
        if key is not None and (author, key) in first_of:
            assert result[1] is False  # a repeat: the first message, nothing new
            assert message["text"] == f"m{first_of[(author, key)]}"
            continue
        if key is not None:
            first_of[(author, key)] = i
        assert result[1] is True and message["text"] == f"m{i}"
        expected_texts.append(f"m{i}")
    # Every message once, seqs gapless; each sender's own messages in order.
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert sorted(r["text"] for r in rows) == sorted(expected_texts)
    for author in (0, 1):
        mine = [r["text"] for r in rows if r["author_id"] == users[author]]
        assert mine == [t for t in expected_texts if sends[int(t[1:])][0] == author]
