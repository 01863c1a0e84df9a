"""Server CPU per request, pinned: what one request costs, apart from the
fan-out and the queueing that bench/delivery.py measures together.

Four probes, each on its own server (the Procfile's command, one worker,
pinned with PostgreSQL to the cores after the first; this process on the
first):

- bare: GET /healthz of a bare aiohttp app (delivery.py's baseline) from
  50 concurrent clients: the floor of aiohttp and uvloop per request;
- poll at head: GET /api/events?timeout=0 with a cursor at the head, from
  50 concurrent clients: routing, the middlewares, auth, the cursor, the
  waiter and presence bookkeeping, one read of the view, the answer;
- send, back to back: one client's POSTs, each as soon as the last is
  answered (the statement, its commit and NOTIFY, the listener's share);
- send, paced: the same, one every 20 ms, as in delivery.py's latency run.

Each probe is repeated (--rounds) and the minimum and median reported; the
machine's noise only ever adds. The paced probe shows what an idle core
costs: the same send takes more CPU and a longer round trip when it comes
to a core that had gone idle (on this VM, about 3x and 2x).

    python bench/request_cost.py [--rounds 5] [--requests 12000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import delivery
from benchlib import (
    CorePinning,
    calibrate,
    cpu_seconds,
    drop_database,
    free_port,
    fresh_database,
    http_session,
    with_database,
)

from chatterwerks import db

CONCURRENCY = 50


async def _concurrently(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], n: int
) -> None:
    async def client(count: int) -> None:
        for _ in range(count):
            async with session.get(url, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url}: {response.status}")

    await asyncio.gather(*(client(n // CONCURRENCY) for _ in range(CONCURRENCY)))


async def _cpu_per_request(
    pids: list[int], n: int, run: Callable[[], Awaitable[list[float]]]
) -> dict[str, float]:
    before, started = cpu_seconds(pids), time.monotonic()
    round_trips = await run()
    elapsed = time.monotonic() - started
    out = {"cpu_us": round((cpu_seconds(pids) - before) / n * 1e6, 1), "per_s": round(n / elapsed)}
    if round_trips:
        round_trips.sort()
        out["round_trip_p50_ms"] = round(round_trips[len(round_trips) // 2] * 1000, 2)
    return out


def _summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    cpu = sorted(run["cpu_us"] for run in runs)
    out: dict[str, Any] = {"cpu_us_min": cpu[0], "cpu_us_median": statistics.median(cpu)}
    if "round_trip_p50_ms" in runs[0]:
        out["round_trip_p50_ms_median"] = statistics.median(r["round_trip_p50_ms"] for r in runs)
    out["runs"] = runs
    return out


async def probe_bare(session: aiohttp.ClientSession, rounds: int, n: int) -> dict[str, Any]:
    port = free_port()
    server = delivery.baseline_server(port)
    await server.start(session)
    try:
        url = f"{server.base}/healthz"
        await _concurrently(session, url, {}, 1000)

        async def run() -> list[float]:
            await _concurrently(session, url, {}, n)
            return []

        return _summary([await _cpu_per_request(server.workers(), n, run) for _ in range(rounds)])
    finally:
        server.stop()


async def probe_server(
    session: aiohttp.ClientSession, database_url: str, rounds: int, n: int
) -> dict[str, Any]:
    port = free_port()
    server = delivery.bench_server(
        port, 1, database_url, {"CHATTERWERKS_MAX_POLLS_PER_USER": str(2 * CONCURRENCY)}
    )
    await server.start(session)
    try:
        base = server.base
        async with session.post(
            f"{base}/api/register", json={"username": f"probe{port}", "password": "correct horse"}
        ) as response:
            headers = {"Authorization": "Bearer " + (await response.json())["token"]}
        async with session.post(
            f"{base}/api/channels", json={"name": f"probe{port}", "members": []}, headers=headers
        ) as response:
            channel_id = (await response.json())["channel"]["id"]
        async with session.get(f"{base}/api/events", headers=headers) as response:
            cursor = (await response.json())["cursor"]
        poll_url = f"{base}/api/events?cursor={cursor}&timeout=0"
        await _concurrently(session, poll_url, headers, 1000)
        pids = server.workers()

        async def polls() -> list[float]:
            await _concurrently(session, poll_url, headers, n)
            return []

        def sends(count: int, gap: float) -> Callable[[], Awaitable[list[float]]]:
            async def run() -> list[float]:
                round_trips = []
                for i in range(count):
                    if gap:
                        await asyncio.sleep(gap)
                    started = time.monotonic()
                    async with session.post(
                        f"{base}/api/channels/{channel_id}/messages",
                        json={"text": f"probe {i}"},
                        headers=headers,
                    ) as response:
                        await response.read()
                        if response.status != 201:
                            raise RuntimeError(f"send: {response.status}")
                    round_trips.append(time.monotonic() - started)
                return round_trips

            return run

        # The polls first: once a message is sent, the cursor is behind.
        out = {
            "poll_at_head": _summary(
                [await _cpu_per_request(pids, n, polls) for _ in range(rounds)]
            )
        }
        await sends(200, 0)()
        back_to_back, paced = n // 6, 300
        return {
            **out,
            "send_back_to_back": _summary(
                [
                    await _cpu_per_request(pids, back_to_back, sends(back_to_back, 0))
                    for _ in range(rounds)
                ]
            ),
            "send_paced_20ms": _summary(
                [await _cpu_per_request(pids, paced, sends(paced, 0.02)) for _ in range(rounds)]
            ),
        }
    finally:
        server.stop()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pinning = CorePinning.split()
    pinned = await pinning.apply(args.admin_url)
    delivery.PINNING = pinning
    database_url = with_database(args.admin_url, args.database)
    try:
        await fresh_database(args.admin_url, args.database)
        await db.migrate_url(database_url)
        calibration = await calibrate(database_url)
        async with http_session() as session:
            bare = await probe_bare(session, args.rounds, args.requests)
            ours = await probe_server(session, database_url, args.rounds, args.requests)
        return {
            "benchmark": "chatterwerks request cost",
            "calibration": calibration,
            "pinned": pinned,
            "bare_aiohttp_get": bare,
            **ours,
        }
    finally:
        pinning.restore()
        delivery.PINNING = None
        await drop_database(args.admin_url, args.database)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="chatterwerks_request_cost")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=12000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
