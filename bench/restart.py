"""How soon delivery resumes after PostgreSQL comes back.

A cluster of its own (tests/pgcluster.py: the machine's PostgreSQL 15
binaries), one in-process server, a parked long-poll. PostgreSQL is stopped
(fast), held down --down seconds and started again; then a message is sent
(retried until it answers 201) and the parked poll must hear of it. Reports,
per round, how long after `pg_ctl start` returned the send succeeded and the
poll answered: with the pool waking the listener (the default), and without
(--no-wake: the listener waits out its backoff, as before issue 13).

    python bench/restart.py [--down 5] [--rounds 3] [--no-wake]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pgcluster import Clusters

from chatterwerks import db, keys
from chatterwerks.app import create_app, make_runner
from chatterwerks.config import Settings


async def retry(call):  # type: ignore[no-untyped-def]
    while True:
        try:
            return await call()
        except (aiohttp.ClientError, AssertionError):
            await asyncio.sleep(0.01)


async def main(down: float, rounds: int, wake: bool) -> None:
    logging.basicConfig(level=logging.ERROR)
    clusters = await asyncio.to_thread(Clusters)
    runner = None
    try:
        node = await asyncio.to_thread(clusters.primary)
        admin = await asyncpg.connect(node.url())
        await admin.execute("CREATE DATABASE chat")
        await admin.close()
        await db.migrate_url(node.url("chat"))
        settings = Settings(
            database_url=node.url("chat"),
            argon2_time_cost=1,
            argon2_memory_kib=64,
            limit_messages_user=None,
            log_level="ERROR",
        )
        app = await create_app(settings)
        runner = make_runner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}/api"
        if not wake:
            app[keys.HUB]._listener.wake = lambda: None  # type: ignore[method-assign]
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{base}/register", json={"username": "alice", "password": "correct horse"}
            ) as response:
                auth = {"Authorization": f"Bearer {(await response.json())['token']}"}
            async with http.get(f"{base}/me", headers=auth) as response:
                home = (await response.json())["channels"][0]["id"]
            sent_after, heard_after = [], []
            for n in range(rounds):
                async with http.get(
                    f"{base}/channels/{home}/messages", params={"limit": "1"}, headers=auth
                ) as response:
                    last = max((m["seq"] for m in (await response.json())["messages"]), default=0)

                async def poll(after: int = last) -> float:
                    async with http.get(
                        f"{base}/channels/{home}/messages",
                        params={"after": str(after), "wait": "60"},
                        headers=auth,
                    ) as response:
                        assert response.status == 200
                        assert (await response.json())["messages"]
                    return time.monotonic()

                async def send(n: int = n) -> float:
                    async with http.post(
                        f"{base}/channels/{home}/messages",
                        json={"text": f"round {n}"},
                        headers={**auth, "Idempotency-Key": f"round-{n}"},
                    ) as response:
                        assert response.status in (200, 201), response.status
                    return time.monotonic()

                parked = asyncio.create_task(poll())
                for _ in range(200):  # until the poll is parked
                    if app[keys.HUB].parked_count:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.to_thread(node.stop, "fast")
                await asyncio.sleep(down)
                await asyncio.to_thread(node.start)
                up = time.monotonic()
                sent = await retry(send)
                heard = await parked
                sent_after.append(sent - up)
                heard_after.append(heard - up)
                print(
                    f"round {n + 1}: send {sent - up:.3f}s, poll {heard - up:.3f}s"
                    " after PostgreSQL was back",
                    flush=True,
                )
                await asyncio.sleep(1)
        print(
            f"{'with' if wake else 'without'} the wake, down {down:.0f}s, {rounds} rounds:"
            f" send median {statistics.median(sent_after):.3f}s,"
            f" poll median {statistics.median(heard_after):.3f}s max {max(heard_after):.3f}s"
        )
    finally:
        if runner is not None:
            await runner.cleanup()
        await asyncio.to_thread(clusters.close)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--down", type=float, default=5.0, help="seconds PostgreSQL stays down")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-wake", action="store_true", help="the listener as before: backoff")
    args = parser.parse_args()
    asyncio.run(main(args.down, args.rounds, not args.no_wake))
