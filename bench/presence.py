"""Presence benchmark: what presence costs with 1,000 connected users.

Starts the server (the Procfile's gunicorn command, 2 workers) on a fresh
database, registers N users, and has each hold an events long-poll open, as
the browser client does (re-polling when answered). Then, with the CPU of
the server processes and of the bench database's PostgreSQL backends
measured (benchlib.CpuMeter):

  (1) steady: N users online, nothing changes. Presence should cost ~0: no
      heartbeat, no timer reading the presence table.
  (2) churn: users go online -> away -> offline -> online at --rate changes
      a second (a poll re-opened with idle=1, a poll closed without goodbye,
      a poll opened), while the holders do NOT take ephemeral events: the
      cost of presence itself (the local transition, the presence table
      write under its advisory lock, the NOTIFY, each hub's bookkeeping).
  (3) fan-out: the same churn at --fanout-rate while every holder takes
      ephemeral events (ephemeral=1): each change reaches every other
      user's poll (everyone shares Home), batched over 0.5 s.

CPU per change = (CPU of the churn window - the steady rate x its length) /
presence events announced (counted by an observer that takes them).

    PYTHONPATH=$PWD /work/venv/bin/python bench/presence.py            # ~2 min
    PYTHONPATH=$PWD /work/venv/bin/python bench/presence.py --users 100 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from benchlib import (
    Client,
    CpuMeter,
    User,
    calibrate,
    chatterwerks_server,
    drop_database,
    free_port,
    fresh_database,
    http_session,
    raise_fd_limit,
    wait_for_quiet,
)

PASSWORD = "bench-password-1"
GRACE_S = 5.0
SERVER_ENV = {
    "CHATTERWERKS_LOG_LEVEL": "WARNING",
    "CHATTERWERKS_ARGON2_TIME_COST": "1",
    "CHATTERWERKS_ARGON2_MEMORY_KIB": "64",
    "CHATTERWERKS_LIMIT_REGISTER_ADDRESS": "off",
    "CHATTERWERKS_LIMIT_LOGIN_ADDRESS": "off",
    "CHATTERWERKS_POLL_MAX_TIMEOUT": "120",
    # The default grace: offline 5 s after the last poll (the window waits for it).
    "CHATTERWERKS_PRESENCE_GRACE": str(GRACE_S),
}
POLL_TIMEOUT_S = 100.0  # longer than any window: a held poll is not re-opened on its own


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Holder:
    """One user's client: holds a poll in the wanted state, re-opens it when
    answered or when the state changes (the old one closed, as a tab would)."""

    def __init__(self, client: Client, user: User, cursor: str) -> None:
        self.client = client
        self.user = user
        self.cursor = cursor
        self.want = "online"
        self.ephemeral = False
        self.changed = asyncio.Event()
        self.answers = 0
        self.events = 0
        self.presence_seen: list[tuple[int, str]] = []

    def set(self, want: str) -> None:
        self.want = want
        self.changed.set()

    async def run(self) -> None:
        while True:
            self.changed.clear()
            if self.want == "offline":
                await self.changed.wait()
                continue
            params = {
                "cursor": self.cursor,
                "timeout": str(POLL_TIMEOUT_S),
                "idle": "1" if self.want == "away" else "0",
                "ephemeral": "1" if self.ephemeral else "0",
            }
            poll = asyncio.ensure_future(
                self.client.request("GET", "/api/events", user=self.user, params=params)
            )
            changed = asyncio.ensure_future(self.changed.wait())
            try:
                await asyncio.wait({poll, changed}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                poll.cancel()
                raise
            finally:
                changed.cancel()
            if not poll.done():
                poll.cancel()  # closes its connection: the server sees it go
                with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                    await poll
                continue
            try:
                answer = poll.result()
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.5)
                continue
            if answer.status != 200:
                await asyncio.sleep(0.5)
                continue
            body = answer.json()
            self.cursor = body["cursor"]
            self.answers += 1
            self.events += len(body["events"])
            for event in body["events"]:
                if event["type"] == "presence":
                    self.presence_seen.append((event["user"]["id"], event["presence"]))


async def wait_online(client: Client, observer: User, users: list[User], timeout: float) -> bool:
    """Until the members list of Home says every user is online."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        me = await client.call("GET", "/api/me", observer)
        home = next(c for c in me["channels"] if c["kind"] == "home")
        channel = await client.call("GET", f"/api/channels/{home['id']}", observer)
        online = {m["id"] for m in channel["channel"]["members"] if m["presence"] == "online"}
        if all(u.id in online for u in users):
            return True
        await asyncio.sleep(0.5)
    return False


async def churn(holders: list[Holder], rate: float, duration: float) -> int:
    """Changes a random holder's state `rate` times a second: online -> away
    -> offline -> online. Returns how many local changes were asked for."""
    order = {"online": "away", "away": "offline", "offline": "online"}
    asked = 0
    interval = 1.0 / rate
    start = time.monotonic()
    while time.monotonic() - start < duration:
        holder = random.choice(holders)
        holder.set(order[holder.want])
        asked += 1
        await asyncio.sleep(max(0.0, start + asked * interval - time.monotonic()))
    return asked


async def measure(
    server: Any, database: str, seconds: float, work: Any = None
) -> tuple[dict[str, Any], Any]:
    meter = CpuMeter(server.all_pids, database)
    meter.start()
    result = await work if work is not None else await asyncio.sleep(seconds)
    await asyncio.sleep(GRACE_S + 1.0 if work is not None else 0)  # the last offlines land
    return meter.stop(), result


def cpu_ms(window: dict[str, Any], key: str) -> float:
    return window[key] * window["wall_s"] * 1000


async def run(args: argparse.Namespace) -> dict[str, Any]:
    database_url = await fresh_database(args.admin_url, args.database)
    calibration = await calibrate(database_url)
    log(f"machine: {calibration}")
    port = free_port()
    server = chatterwerks_server("presence", port, args.workers, database_url, SERVER_ENV)
    results: dict[str, Any] = {"calibration": calibration}
    async with http_session() as session:
        client = Client(session, server.base)
        await server.start(session)
        try:
            names = [f"p{i:05d}" for i in range(args.users + 1)]
            log(f"registering {len(names)} users")
            users = await client.register(names, PASSWORD)
            observer, users = users[0], users[1:]
            cursors = await client.cursors(users)
            holders = [Holder(client, u, c) for u, c in zip(users, cursors, strict=True)]
            watcher = Holder(client, observer, (await client.cursors([observer]))[0])
            watcher.ephemeral = True
            tasks = [asyncio.create_task(h.run()) for h in [*holders, watcher]]
            log(f"{len(holders)} users hold a poll each")
            online = await wait_online(client, observer, users, 60)
            log(f"all online: {online}")
            results["all_online"] = online
            quiet = await wait_for_quiet(args.wait_quiet)
            steady, _ = await measure(server, args.database, args.duration)
            results["steady"] = {"users_online": len(users), "quiet": quiet, **steady}
            log(f"steady: {steady}")

            for section, rate, ephemeral in (
                ("churn", args.rate, False),
                ("fanout", args.fanout_rate, True),
            ):
                for holder in holders:
                    holder.ephemeral = ephemeral
                    holder.set("online")  # re-open with the section's flags
                await wait_online(client, observer, users, 60)
                await asyncio.sleep(2)
                answers0 = sum(h.answers for h in holders)
                events0 = sum(h.events for h in holders)
                seen0 = len(watcher.presence_seen)
                window, asked = await measure(
                    server, args.database, 0, churn(holders, rate, args.duration)
                )
                announced = len(watcher.presence_seen) - seen0
                base = steady["server_cores"] + steady["postgres_bench_cores"]
                total_ms = cpu_ms(window, "server_cores") + cpu_ms(window, "postgres_bench_cores")
                extra_ms = total_ms - base * window["wall_s"] * 1000
                results[section] = {
                    "rate_per_s": rate,
                    "takes_ephemeral": ephemeral,
                    "local_changes_asked": asked,
                    "presence_events_announced": announced,
                    "poll_answers": sum(h.answers for h in holders) - answers0,
                    "events_delivered": sum(h.events for h in holders) - events0,
                    "server_cpu_ms": round(cpu_ms(window, "server_cores"), 1),
                    "postgres_cpu_ms": round(cpu_ms(window, "postgres_bench_cores"), 1),
                    "cpu_ms_per_announced_change": round(extra_ms / max(1, announced), 3),
                    **window,
                }
                log(f"{section}: {results[section]}")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            server.stop()
    if not args.keep_database:
        await drop_database(args.admin_url, args.database)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000, help="N connected users")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=20.0, help="(2) changes per second")
    parser.add_argument("--fanout-rate", type=float, default=2.0, help="(3) changes per second")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per window")
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--database", default="chatterwerks_bench_presence")
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument("--wait-quiet", type=float, default=20.0)
    args = parser.parse_args(argv)
    if urlsplit(args.admin_url).hostname not in {"127.0.0.1", "localhost", "::1"}:
        parser.error("the bench only talks to a PostgreSQL on loopback")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit(4 * args.users + 1024)
    results = asyncio.run(run(args))
    report = {
        "benchmark": "chatterwerks presence",
        "parameters": {
            "users": args.users,
            "workers": args.workers,
            "rate": args.rate,
            "fanout_rate": args.fanout_rate,
            "duration_s": args.duration,
            "grace_s": GRACE_S,
        },
        **results,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
