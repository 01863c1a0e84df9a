"""Delivery benchmark: latency, throughput and idle long-poll capacity.

This script is the load generator. It creates a dedicated database on a real
PostgreSQL, starts the server with gunicorn (the Procfile's command) as a
child process, drives it over loopback with aiohttp, stops it, and prints one
JSON document on stdout (progress goes to stderr):

  (a) latency: R receivers follow GET /api/events while one sender posts at a
      fixed rate; latency = receipt time - the time the POST started (both in
      this process, monotonic clock); exactly-once per receiver is checked.
  (b) throughput: S senders post as fast as they are answered while R
      receivers stay attached; messages accepted per second, deliveries per
      second, completeness (received / expected), duplicates and gaps.
  (c) capacity: C idle GET /api/events polls parked in ONE worker; resident
      memory per poll, PostgreSQL connections of the bench database, and the
      time for one message to reach all C polls, each compared with a bare
      aiohttp app (its own process, same worker class and load generator)
      whose handler only awaits an asyncio.Event.

    /work/venv/bin/python bench/delivery.py            # the target numbers (~3 min)
    /work/venv/bin/python bench/delivery.py --quick    # a smoke run (~30 s)
    /work/venv/bin/python bench/delivery.py --only capacity --py-spy bench/results
    /work/venv/bin/python bench/delivery.py --pin      # load generator on core 0,
                                                       # server + PostgreSQL on the rest

Each of (a) and (b) reports the CPU milliseconds of the server's processes and
of the bench database's PostgreSQL backends per accepted message and per
delivery, also divided by the calibration loop's seconds so that runs on
different days compare; (b) reports its accepted rate as a share of the
PostgreSQL ceiling the calibration measured in the same run.

The server runs with CHATTERWERKS_ARGON2_TIME_COST=1 and
CHATTERWERKS_ARGON2_MEMORY_KIB=64 (registration is not what is measured), and
for (c) with CHATTERWERKS_POLL_MAX_TIMEOUT raised so that the first parked
polls outlive the parking of the last ones.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import psutil
from aiohttp import web
from benchlib import (
    HOST,
    Client,
    CorePinning,
    CpuMeter,
    Server,
    User,
    calibrate,
    chatterwerks_server,
    drop_database,
    exactly_once,
    free_port,
    fresh_database,
    http_session,
    percentile,
    procfile_web_argv,
    raise_fd_limit,
    rss_bytes,
    summary_ms,
    wait_for_quiet,
)

BENCH_DIR = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
PASSWORD = "bench-password-1"
LISTENER_APP = "chatterwerks-listener"

# The server's environment in every run (reported in the output): registration
# made cheap, and the per-address / per-user rate limits off, since one
# loopback address registers hundreds of users and 8 senders post ~125/s each.
SERVER_ENV = {
    "CHATTERWERKS_LOG_LEVEL": "WARNING",
    "CHATTERWERKS_ARGON2_TIME_COST": "1",
    "CHATTERWERKS_ARGON2_MEMORY_KIB": "64",
    "CHATTERWERKS_LIMIT_REGISTER_ADDRESS": "off",
    "CHATTERWERKS_LIMIT_LOGIN_ADDRESS": "off",
    "CHATTERWERKS_LIMIT_MESSAGES_USER": "off",
}

TARGETS = {
    "latency": {"receivers": 50, "rate": 50.0, "p50_ms": 5.0, "p99_ms": 25.0},
    "throughput": {"senders": 8, "receivers": 50, "accepted_per_s": 1000.0},
    # Issue 14's targets, stated for the pinned mode (--pin).
    "pinned_throughput": {"server_ms_per_message": 1.0, "share_of_postgres_ceiling": 0.25},
    "capacity": {"idle_polls": 10_000, "memory_ratio": 1.4, "fanout_ratio": 1.5},
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# The baseline: a bare aiohttp app whose handler only awaits an asyncio.Event.
# gunicorn imports it as delivery:baseline_app (--pythonpath bench/).


async def baseline_app() -> web.AppRunner:
    """GET /wait parks until POST /release; the runner is configured like the
    server's (handler cancellation on, no access log)."""
    state = {"event": asyncio.Event()}

    async def wait(request: web.Request) -> web.Response:
        await state["event"].wait()
        return web.json_response({"events": []})

    async def release(request: web.Request) -> web.Response:
        event, state["event"] = state["event"], asyncio.Event()
        event.set()
        return web.json_response({"released": True})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/wait", wait)
    app.router.add_post("/release", release)
    app.router.add_get("/healthz", healthz)
    return web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=5)


# ---------------------------------------------------------------------------
# Small utilities


async def wait_until(predicate: Callable[[], bool], deadline: float, interval: float) -> bool:
    """Polls predicate until it holds (True) or the monotonic deadline passes (False)."""
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


# ---------------------------------------------------------------------------
# Processes: the server (gunicorn), the baseline, py-spy


# --pin: set once by run(); every server started after it runs on these cores.
PINNING: CorePinning | None = None
# --stream: receivers read GET /api/events/stream rather than long-poll.
STREAM = False


def bench_server(port: int, workers: int, database_url: str, extra_env: dict[str, str]) -> Server:
    server = chatterwerks_server("bench", port, workers, database_url, {**SERVER_ENV, **extra_env})
    server.cpus = PINNING.server_cpus if PINNING else None
    return server


def baseline_server(port: int) -> Server:
    # The Procfile's command (worker class and all), with the bare app.
    argv = procfile_web_argv(port, 1, app="delivery:baseline_app")
    argv[2:2] = ["--pythonpath", str(BENCH_DIR)]
    server = Server("bench-baseline", argv, dict(os.environ), port, 1)
    server.cpus = PINNING.server_cpus if PINNING else None
    return server


class Profiler:
    """Optional: py-spy record (raw collapsed stacks) of each server worker
    while a section runs, into --py-spy DIR."""

    def __init__(self, directory: Path | None, native: bool = False) -> None:
        self.directory = directory
        self.native = native
        self.procs: list[subprocess.Popen[bytes]] = []
        self.files: list[str] = []

    def start(self, label: str, pids: list[int], seconds: float) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for pid in pids:
            out = self.directory / f"{label}-{pid}.txt"
            self.files.append(str(out))
            self.procs.append(
                subprocess.Popen(
                    [
                        str(VENV_BIN / "py-spy"),
                        "record",
                        "--pid",
                        str(pid),
                        "--rate",
                        "200",
                        "--duration",
                        str(max(1, math.ceil(seconds))),
                        "--format",
                        "raw",
                        # --native reads C stacks, which needs the process paused
                        *(["--native"] if self.native else ["--nonblocking"]),
                        "--output",
                        str(out),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    def stop(self) -> None:
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
                if proc.poll() is None:
                    proc.kill()
        self.procs = []


# ---------------------------------------------------------------------------
# The HTTP client side: receivers following the events cursor chain


class Receiver:
    """One user following the events cursor chain; records (channel, seq) and
    the receipt time of every message of the watched channels."""

    def __init__(self, user: User, cursor: str, channels: set[int]) -> None:
        self.user = user
        self.cursor = cursor
        self.channels = channels
        self.order: dict[int, list[int]] = {c: [] for c in channels}
        self.unique: dict[int, set[int]] = {c: set() for c in channels}
        self.receipts: list[tuple[str, float]] = []  # (text, monotonic receipt time)
        self.polls = 0
        self.answers_with_messages = 0
        self.other_events = 0
        self.errors = 0
        self.last_receipt = 0.0

    def has_all(self, accepted: dict[int, int]) -> bool:
        return all(len(self.unique[c]) >= n for c, n in accepted.items())

    async def run(self, client: Client, poll_timeout: float, deadline: float) -> None:
        if STREAM:
            await self.run_stream(client, poll_timeout, deadline)
            return
        while time.monotonic() < deadline:
            try:
                answer = await client.poll(self.cursor, poll_timeout, self.user)
            except (aiohttp.ClientError, TimeoutError):
                answer = None
            if answer is None or answer.status != 200:
                self.errors += 1
                await asyncio.sleep(0.05)
                continue
            self.take(answer.json(), answer.at)

    async def run_stream(self, client: Client, timeout: float, deadline: float) -> None:
        """--stream: GET /api/events/stream, each line an answer; a stream
        that ends is reopened from the last line's cursor."""
        while time.monotonic() < deadline:
            params = {"cursor": self.cursor, "timeout": f"{timeout:.1f}"}
            try:
                async with client.session.get(
                    client.base + "/api/events/stream", params=params, headers=self.user.headers
                ) as response:
                    if response.status != 200:
                        self.errors += 1
                        await asyncio.sleep(0.05)
                        continue
                    async for line in response.content:
                        self.take(json.loads(line), time.monotonic())
            except (aiohttp.ClientError, TimeoutError):
                self.errors += 1
                await asyncio.sleep(0.05)

    def take(self, data: dict[str, Any], now: float) -> None:
        """One answer (a poll's, or a stream's line) received at `now`."""
        self.polls += 1
        got = 0
        for event in data["events"]:
            message = event.get("message") if event.get("type") == "message" else None
            if message is None or message["channel_id"] not in self.channels:
                self.other_events += 1
                continue
            channel_id, seq = message["channel_id"], message["seq"]
            self.order[channel_id].append(seq)
            self.unique[channel_id].add(seq)
            self.receipts.append((message["text"], now))
            got += 1
        if got:
            self.answers_with_messages += 1
            self.last_receipt = now
        self.cursor = data["cursor"]


def check_receivers(receivers: list[Receiver], accepted: dict[int, set[int]]) -> dict[str, Any]:
    """Duplicates, gaps (accepted but never received), strays and order."""
    return {
        **exactly_once([r.order for r in receivers], accepted),
        "poll_errors": sum(r.errors for r in receivers),
    }


async def run_receivers(
    client: Client,
    receivers: list[Receiver],
    load: Callable[[], Awaitable[dict[int, set[int]]]],
    drain_s: float,
    poll_timeout: float,
    hard_deadline: float,
) -> dict[int, set[int]]:
    """Receivers poll while load() runs, then until each has every accepted
    message (or drain_s passes); returns what load() reports as accepted."""
    tasks = [asyncio.create_task(r.run(client, poll_timeout, hard_deadline)) for r in receivers]
    try:
        await asyncio.sleep(0.5)  # let every receiver park its first poll
        accepted = await load()
        counts = {c: len(s) for c, s in accepted.items()}
        drain_deadline = time.monotonic() + drain_s
        await wait_until(lambda: all(r.has_all(counts) for r in receivers), drain_deadline, 0.01)
        return accepted
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------------------
# (a) latency


async def latency_section(
    client: Client,
    receivers_users: list[User],
    sender: User,
    rate: float,
    duration: float,
    warmup_s: float,
) -> dict[str, Any]:
    channel_id = await client.create_group(sender, "bench-latency", [sender, *receivers_users])
    cursors = await client.cursors(receivers_users)
    receivers = [
        Receiver(u, c, {channel_id}) for u, c in zip(receivers_users, cursors, strict=True)
    ]
    n_warm = round(rate * warmup_s)
    n_total = n_warm + round(rate * duration)
    sent_at: dict[int, float] = {}
    post_times: list[float] = []
    accepted: set[int] = set()
    send_errors = 0
    lag: list[float] = []

    async def send(index: int) -> None:
        nonlocal send_errors
        t0 = time.monotonic()
        sent_at[index] = t0
        try:
            answer = await client.send(channel_id, f"m {index}", sender)
        except aiohttp.ClientError:
            send_errors += 1
            return
        if answer.status != 201:
            send_errors += 1
            return
        if index >= n_warm:
            post_times.append(answer.at - t0)
        accepted.add(answer.json()["message"]["seq"])

    async def load() -> dict[int, set[int]]:
        start = time.monotonic() + 0.05
        sends = []
        for index in range(n_total):
            due = start + index / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            lag.append(max(0.0, time.monotonic() - due))
            sends.append(asyncio.create_task(send(index)))
        await asyncio.gather(*sends)
        return {channel_id: accepted}

    log(
        f"latency: {len(receivers)} receivers, {rate:g} msg/s for {duration:g}s"
        f" (+{warmup_s:g}s warm-up)"
    )
    hard = time.monotonic() + warmup_s + duration + 60
    accepted_by_channel = await run_receivers(client, receivers, load, 10.0, 20.0, hard)
    latencies = []
    for receiver in receivers:
        for text, t in receiver.receipts:
            index = int(text.split()[1])
            if index >= n_warm:
                latencies.append(t - sent_at[index])
    lag.sort()
    return {
        "channel_id": channel_id,
        "messages_sent": n_total,
        "warmup_messages_excluded": n_warm,
        "messages_accepted": len(accepted),
        "send_errors": send_errors,
        "latency": summary_ms(latencies),
        "post_response": summary_ms(post_times),
        "sender_schedule_lag_p99_ms": round((percentile(lag, 99) or 0) * 1000, 3),
        "polls_answered": sum(r.polls for r in receivers),
        **check_receivers(receivers, accepted_by_channel),
    }


# ---------------------------------------------------------------------------
# (b) throughput


async def throughput_section(
    client: Client,
    receivers_users: list[User],
    senders: list[User],
    duration: float,
    channels: int,
) -> dict[str, Any]:
    channel_ids = [
        await client.create_group(senders[0], f"bench-throughput-{k}", [*senders, *receivers_users])
        for k in range(channels)
    ]
    cursors = await client.cursors(receivers_users)
    receivers = [
        Receiver(u, c, set(channel_ids)) for u, c in zip(receivers_users, cursors, strict=True)
    ]
    counter = itertools.count()
    sent_at: dict[int, float] = {}
    accepted: dict[int, set[int]] = {c: set() for c in channel_ids}
    post_times: list[float] = []
    errors: Counter[str] = Counter()
    window: dict[str, float] = {}

    async def sender_loop(k: int, user: User, stop_at: float) -> None:
        channel_id = channel_ids[k % len(channel_ids)]
        while time.monotonic() < stop_at:
            index = next(counter)
            t0 = time.monotonic()
            sent_at[index] = t0
            try:
                answer = await client.send(channel_id, f"t {index}", user)
            except aiohttp.ClientError as exc:
                errors[type(exc).__name__] += 1
                continue
            if answer.status != 201:
                errors[str(answer.status)] += 1
                continue
            post_times.append(answer.at - t0)
            accepted[channel_id].add(answer.json()["message"]["seq"])

    async def load() -> dict[int, set[int]]:
        window["start"] = time.monotonic()
        stop_at = window["start"] + duration
        await asyncio.gather(*(sender_loop(k, u, stop_at) for k, u in enumerate(senders)))
        window["senders_done"] = time.monotonic()
        return accepted

    log(
        f"throughput: {len(senders)} senders into {channels} channel(s), "
        f"{len(receivers)} receivers, {duration:g}s"
    )
    hard = time.monotonic() + duration + 60
    await run_receivers(client, receivers, load, 15.0, 20.0, hard)
    n_accepted = sum(len(s) for s in accepted.values())
    send_window = window["senders_done"] - window["start"]
    last_delivery = max((r.last_receipt for r in receivers), default=window["start"])
    delivery_window = max(last_delivery, window["senders_done"]) - window["start"]
    check = check_receivers(receivers, accepted)
    latencies = [t - sent_at[int(text.split()[1])] for r in receivers for text, t in r.receipts]
    answers = sum(r.answers_with_messages for r in receivers)
    return {
        "channel_ids": channel_ids,
        "messages_accepted": n_accepted,
        "send_window_s": round(send_window, 3),
        "accepted_per_s": round(n_accepted / send_window, 1),
        "send_errors": dict(errors),
        "post_response": summary_ms(post_times),
        "delivery_window_s": round(delivery_window, 3),
        "deliveries_per_s": round(check["received_deliveries"] / delivery_window, 1),
        "delivery_latency": summary_ms(latencies),
        "polls_answered": sum(r.polls for r in receivers),
        "messages_per_answer": round(sum(len(r.receipts) for r in receivers) / answers, 2)
        if answers
        else None,
        **check,
    }


# ---------------------------------------------------------------------------
# (c) capacity


class Parker:
    """Opens many idle polls at a bounded pace and records when each answers."""

    def __init__(self, session: aiohttp.ClientSession, sent_counter: list[int]) -> None:
        self.session = session
        self.sent = sent_counter  # [n] incremented by the trace hook
        self.tasks: list[asyncio.Task[tuple[float, int, bytes]]] = []

    async def one(self, url: str, params: dict[str, str], headers: dict[str, str]) -> Any:
        try:
            async with self.session.get(url, params=params, headers=headers) as resp:
                body = await resp.read()
                return time.monotonic(), resp.status, body
        except (aiohttp.ClientError, TimeoutError) as exc:
            return time.monotonic(), -1, repr(exc).encode()

    async def open(
        self,
        requests: list[tuple[str, dict[str, str], dict[str, str]]],
        batch: int = 250,
        deadline: float = 120.0,
    ) -> None:
        """Launches the requests in batches, each once most of the previous
        batch has been written (so the accept queue does not overflow)."""
        stop = time.monotonic() + deadline
        for start in range(0, len(requests), batch):
            for url, params, headers in requests[start : start + batch]:
                self.tasks.append(asyncio.create_task(self.one(url, params, headers)))
            target = len(self.tasks) - batch // 2
            await wait_until(lambda: self.sent[0] >= target, stop, 0.005)  # noqa: B023

    def answered_early(self) -> int:
        return sum(task.done() for task in self.tasks)

    async def results(self, timeout: float) -> list[tuple[float, int, bytes]]:
        done, pending = await asyncio.wait(self.tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return [task.result() for task in self.tasks if task in done]


def server_connections(pid: int, port: int) -> int:
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return 0
    return sum(
        1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
    )


async def wait_parked(pid: int, port: int, expected: int, timeout: float) -> dict[str, Any]:
    """Until the worker holds `expected` connections, its CPU is idle and its
    RSS has settled: every poll is parked."""
    proc = psutil.Process(pid)
    proc.cpu_percent(None)
    start = time.monotonic()
    calm = 0
    last_rss = proc.memory_info().rss
    conns = 0
    while time.monotonic() - start < timeout:
        await asyncio.sleep(0.5)
        cpu = proc.cpu_percent(None)
        rss = proc.memory_info().rss
        conns = server_connections(pid, port)
        settled = abs(rss - last_rss) <= max(64 * 1024, last_rss // 500)
        last_rss = rss
        calm = calm + 1 if conns >= expected and cpu < 3.0 and settled else 0
        if calm >= 3:
            return {"parked": True, "connections": conns, "wait_s": time.monotonic() - start}
    return {"parked": False, "connections": conns, "wait_s": time.monotonic() - start}


async def park_and_release(
    label: str,
    session: aiohttp.ClientSession,
    sent: list[int],
    worker_pid: int,
    port: int,
    requests: list[tuple[str, dict[str, str], dict[str, str]]],
    release: Callable[[], Awaitable[Any]],
    database: str,
    quiet_s: float,
) -> tuple[dict[str, Any], list[tuple[float, int, bytes]], float]:
    """Measures RSS before/after parking the requests, then times the release."""
    await asyncio.sleep(1.0)
    rss_before = rss_bytes(worker_pid)
    sent[0] = 0
    parker = Parker(session, sent)
    t_open = time.monotonic()
    await parker.open(requests)
    parked = await wait_parked(worker_pid, port, len(requests), timeout=180)
    park_time = time.monotonic() - t_open
    rss_after = rss_bytes(worker_pid)
    early = parker.answered_early()
    log(
        f"{label}: {len(requests)} polls parked={parked['parked']} in "
        f"{time.monotonic() - t_open:.1f}s, RSS +{(rss_after - rss_before) / 2**20:.1f} MiB"
        f", answered early: {early}"
    )
    quiet = await wait_for_quiet(quiet_s)
    meter = CpuMeter(lambda: [worker_pid], database)
    meter.start()
    t0 = time.monotonic()
    await release()
    results = await parker.results(timeout=120)
    release_cpu = meter.stop()
    stats = {
        "polls": len(requests),
        "parked": parked["parked"],
        "park_time_s": round(park_time, 3),
        "park_settle_wait_s": round(parked["wait_s"], 3),
        "server_connections": parked["connections"],
        "answered_before_release": early,
        "worker_rss_before_mib": round(rss_before / 2**20, 2),
        "worker_rss_parked_mib": round(rss_after / 2**20, 2),
        "rss_per_poll_kib": round((rss_after - rss_before) / len(requests) / 1024, 3),
        "release_cpu": {**release_cpu, "machine_before": quiet},
    }
    return stats, results, t0


def fanout_stats(
    results: list[tuple[float, int, bytes]], t0: float, expected: int
) -> dict[str, Any]:
    ok = [t - t0 for t, status, _ in results if status == 200 and t >= t0]
    return {
        "answered": len(ok),
        "failed": sum(1 for _, status, _ in results if status != 200),
        "missing": expected - len(results),
        "reach_all_ms": round(max(ok) * 1000, 3) if len(ok) == expected else None,
        "reach": summary_ms(ok),
    }


async def baseline_capacity(
    polls: int, warmup: int, database: str, quiet_s: float
) -> dict[str, Any]:
    port = free_port()
    server = baseline_server(port)
    sent = [0]
    async with http_session(sent_counter=sent) as session:
        try:
            await server.start(session)
            worker = server.workers()[0]
            base = server.base

            async def release() -> None:
                async with session.post(base + "/release") as resp:
                    await resp.read()

            # The same request as the server gets (a query with a cursor and a
            # timeout, a bearer token), which the bare handler ignores: the
            # comparison is then of what each does with a request, not of
            # what parsing a bigger request costs.
            same_shape = (
                base + "/wait",
                {"cursor": "AQEBAgEAAAA", "timeout": "500"},
                {"Authorization": "Bearer " + "x" * 43},
            )
            # Warm-up round, so both apps are measured after their first polls.
            _, _, _ = await park_and_release(
                "baseline warm-up",
                session,
                sent,
                worker,
                port,
                [same_shape] * warmup,
                release,
                database,
                0.0,
            )
            stats, results, t0 = await park_and_release(
                "baseline",
                session,
                sent,
                worker,
                port,
                [same_shape] * polls,
                release,
                database,
                quiet_s,
            )
            stats.update(fanout_stats(results, t0, polls))
            return stats
        finally:
            server.stop(timeout=20)


async def pg_sampler(
    url: str, stop: asyncio.Event, samples: list[tuple[int, int, int]], interval: float = 0.1
) -> None:
    """Samples (total, listener, active) connections to the bench database."""
    conn = await asyncpg.connect(url)
    try:
        while not stop.is_set():
            row = await conn.fetchrow(
                """SELECT count(*) AS total,
                          count(*) FILTER (WHERE application_name = $2) AS listener,
                          count(*) FILTER (WHERE state <> 'idle') AS busy
                   FROM pg_stat_activity
                   WHERE datname = $1 AND pid <> pg_backend_pid()""",
                urlsplit(url).path.lstrip("/"),
                LISTENER_APP,
            )
            samples.append((row["total"], row["listener"], row["busy"]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    finally:
        await conn.close()


async def chatterwerks_capacity(
    database_url: str, polls: int, users_n: int, warmup: int, pool_size: int, quiet_s: float
) -> dict[str, Any]:
    port = free_port()
    server = bench_server(
        port,
        1,
        database_url,
        {"CHATTERWERKS_POLL_MAX_TIMEOUT": "600", "CHATTERWERKS_POOL_SIZE": str(pool_size)},
    )
    sent = [0]
    samples: list[tuple[int, int, int]] = []
    stop_sampling = asyncio.Event()
    async with http_session(sent_counter=sent) as session:
        client = Client(session, server.base)
        sampler = None
        try:
            await server.start(session)
            worker = server.workers()[0]
            database = urlsplit(database_url).path.lstrip("/")
            log(f"capacity: registering {users_n} users")
            users = await client.register([f"idle{i}" for i in range(users_n)], PASSWORD)
            me = await client.call("GET", "/api/me", users[0])
            home = next(c["id"] for c in me["channels"] if c["kind"] == "home")
            url = server.base + "/api/events"
            sampler = asyncio.create_task(pg_sampler(database_url, stop_sampling, samples))

            async def round_(
                label: str, n: int, quiet: float
            ) -> tuple[dict[str, Any], Any, float, int]:
                cursors = await client.cursors(users)
                requests = [
                    (
                        url,
                        {"cursor": cursors[i % users_n], "timeout": "500"},
                        users[i % users_n].headers,
                    )
                    for i in range(n)
                ]
                seq: list[int] = []

                async def release() -> None:
                    data = await client.call(
                        "POST", f"/api/channels/{home}/messages", users[0], {"text": label}
                    )
                    seq.append(data["message"]["seq"])

                stats, results, t0 = await park_and_release(
                    label, session, sent, worker, port, requests, release, database, quiet
                )
                return stats, results, t0, seq[0]

            await round_("warm-up", warmup, 0.0)
            samples.clear()
            stats, results, t0, seq = await round_("chatterwerks", polls, quiet_s)
            stats.update(fanout_stats(results, t0, polls))
            # Each answer must carry exactly that one message.
            wrong = 0
            for _, status, body in results:
                if status != 200:
                    continue
                events = json.loads(body)["events"]
                got = [
                    (e["message"]["channel_id"], e["message"]["seq"])
                    for e in events
                    if e["type"] == "message"
                ]
                wrong += got != [(home, seq)]
            stats["answers_without_exactly_the_message"] = wrong
            await asyncio.sleep(0.3)
        finally:
            stop_sampling.set()
            if sampler is not None:
                with contextlib.suppress(Exception):
                    await sampler
            server.stop(timeout=20)
    stats["db_connections"] = {
        "pool_max_size": pool_size,
        "bound": pool_size + 1,
        "max_total": max((s[0] for s in samples), default=None),
        "max_listener": max((s[1] for s in samples), default=None),
        "max_busy": max((s[2] for s in samples), default=None),
        "samples": len(samples),
    }
    return stats


# ---------------------------------------------------------------------------
# Database and the run


async def server_settings(admin_url: str) -> dict[str, str]:
    """The PostgreSQL settings that decide what a commit costs, for the report."""
    admin = await asyncpg.connect(admin_url)
    try:
        return {
            key: await admin.fetchval(f"SHOW {key}")
            for key in ("server_version", "synchronous_commit", "fsync", "max_connections")
        }
    finally:
        await admin.close()


async def db_counters(admin_url: str, database: str) -> dict[str, int]:
    conn = await asyncpg.connect(admin_url)
    try:
        row = await conn.fetchrow(
            """SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted,
                      tup_updated
               FROM pg_stat_database WHERE datname = $1""",
            database,
        )
    finally:
        await conn.close()
    return dict(row) if row else {}


def cpu_per_message(result: dict[str, Any], calibration: dict[str, Any]) -> dict[str, Any]:
    """CPU milliseconds of the server's processes and of the bench database's
    PostgreSQL backends per accepted message and per delivery, and each
    divided by the calibration loop's seconds (the same work on a machine
    twice as fast takes half the milliseconds and half the loop), so that
    runs on different days and machines compare."""
    loop_s = calibration["python_sum_of_squares_1e7_s"]
    accepted = result["messages_accepted"]
    deliveries = result.get("received_deliveries", 0)
    out: dict[str, Any] = {"calibration_loop_s": loop_s}
    for who in ("server", "postgres_bench"):
        cpu_ms = result["cpu"][f"{who}_cpu_s"] * 1000
        for per, n in (("message", accepted), ("delivery", deliveries)):
            if n:
                out[f"{who}_ms_per_{per}"] = round(cpu_ms / n, 4)
                out[f"{who}_ms_per_{per}_per_loop_s"] = round(cpu_ms / n / loop_s, 4)
    return out


async def server_section(
    args: argparse.Namespace,
    label: str,
    database_url: str,
    profiler: Profiler,
    users: list[User],
    body: Callable[[Client, list[User]], Awaitable[dict[str, Any]]],
    seconds: float,
) -> dict[str, Any]:
    """One section on its own server: start it, (register the users once),
    run body while measuring CPU, stop it, then read what PostgreSQL counted
    (backends flush their statistics when they exit)."""
    port = free_port()
    server = bench_server(port, args.workers, database_url, {})
    async with http_session() as session:
        client = Client(session, server.base)
        try:
            await server.start(session)
            log(f"{label}: server up, {args.workers} worker(s) on port {port}")
            if not users:
                n_users = max(args.receivers, 1) + max(args.senders, 1)
                users.extend(await client.register([f"user{i}" for i in range(n_users)], PASSWORD))
            quiet = await wait_for_quiet(args.wait_quiet)
            before = await db_counters(args.admin_url, args.database)
            meter = CpuMeter(server.all_pids, args.database)
            profiler.start(label, server.workers(), seconds)
            meter.start()
            result = await body(client, users)
            result["cpu"] = meter.stop()
            result["cpu"]["machine_before"] = quiet
            profiler.stop()
        finally:
            server.stop(timeout=20)
    await asyncio.sleep(1.0)
    after = await db_counters(args.admin_url, args.database)
    result["cpu_per_message"] = cpu_per_message(result, args.calibration)
    requests = result["polls_answered"] + result["messages_accepted"]
    xacts = after.get("xact_commit", 0) - before.get("xact_commit", 0)
    result["postgres"] = {
        "transactions": xacts,
        "rows_returned_or_fetched": sum(
            after.get(k, 0) - before.get(k, 0) for k in ("tup_returned", "tup_fetched")
        ),
        "requests": requests,
        "transactions_per_request": round(xacts / requests, 2) if requests else None,
    }
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    global PINNING, STREAM
    STREAM = args.stream
    pinned = None
    if args.pin:
        PINNING = CorePinning.split()
        pinned = await PINNING.apply(args.admin_url)
        log(f"pinned: {pinned}")
    try:
        return await run_pinned(args, pinned)
    finally:
        if PINNING:
            PINNING.restore()


async def run_pinned(args: argparse.Namespace, pinned: dict[str, Any] | None) -> dict[str, Any]:
    sections = [args.only] if args.only else ["latency", "throughput", "capacity"]
    database_url = await fresh_database(args.admin_url, args.database)
    pg_settings = await server_settings(args.admin_url)
    calibration = await calibrate(database_url)
    args.calibration = calibration
    log(f"machine: {calibration}")
    results: dict[str, Any] = {}
    profiler = Profiler(args.py_spy, args.py_spy_native)
    users: list[User] = []
    try:
        if "latency" in sections:

            async def latency(client: Client, users: list[User]) -> dict[str, Any]:
                return await latency_section(
                    client,
                    users[: args.receivers],
                    users[args.receivers],
                    args.rate,
                    args.duration,
                    args.warmup,
                )

            results["latency"] = await server_section(
                args, "latency", database_url, profiler, users, latency, args.duration + 2
            )
        if "throughput" in sections:

            async def throughput(client: Client, users: list[User]) -> dict[str, Any]:
                return await throughput_section(
                    client,
                    users[: args.receivers],
                    users[args.receivers : args.receivers + args.senders],
                    args.duration,
                    args.channels,
                )

            results["throughput"] = thr = await server_section(
                args, "throughput", database_url, profiler, users, throughput, args.duration + 1
            )
            # The ceiling: what PostgreSQL commits per second, in the same run,
            # of the bare shape of a send (an insert and a NOTIFY, 8 clients).
            ceiling = calibration["postgres_commits_per_s_8_clients"]
            thr["share_of_postgres_ceiling"] = round(thr["accepted_per_s"] / ceiling, 3)
        if "capacity" in sections:
            warmup = min(args.idle_polls, 500)
            log(f"capacity: baseline app, {args.idle_polls} idle polls")
            baseline = await baseline_capacity(
                args.idle_polls, warmup, args.database, args.wait_quiet
            )
            log(f"capacity: chatterwerks, 1 worker, {args.idle_polls} idle polls")
            users_n = max(1, min(args.idle_users, args.idle_polls))
            server_result = await chatterwerks_capacity(
                database_url, args.idle_polls, users_n, warmup, args.pool_size, args.wait_quiet
            )
            results["capacity"] = {
                "users": users_n,
                "polls_per_user": math.ceil(args.idle_polls / users_n),
                "chatterwerks": server_result,
                "baseline": baseline,
            }
            base_mem = baseline["rss_per_poll_kib"]
            base_reach = baseline["reach_all_ms"]
            results["capacity"]["memory_ratio"] = (
                round(server_result["rss_per_poll_kib"] / base_mem, 3) if base_mem > 0 else None
            )
            results["capacity"]["fanout_ratio"] = (
                round(server_result["reach_all_ms"] / base_reach, 3)
                if base_reach and server_result["reach_all_ms"]
                else None
            )
    finally:
        profiler.stop()
        if not args.keep_database:
            await drop_database(args.admin_url, args.database)
    return {
        "postgres": pg_settings,
        "pinned": pinned,
        "calibration": calibration,
        "results": results,
        "profiles": profiler.files,
    }


def judge(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    """Each target: its threshold, the measured value, pass, and whether this
    run used the parameters the target is stated for."""
    targets: dict[str, Any] = {}
    lat = results.get("latency")
    if lat:
        t = TARGETS["latency"]
        applies = not args.stream and args.receivers == t["receivers"] and args.rate == t["rate"]
        p50, p99 = lat["latency"].get("p50_ms"), lat["latency"].get("p99_ms")
        targets["latency_p50_ms"] = _target(
            f"< {t['p50_ms']}", p50, p50 is not None and p50 < t["p50_ms"], applies
        )
        targets["latency_p99_ms"] = _target(
            f"< {t['p99_ms']}", p99, p99 is not None and p99 < t["p99_ms"], applies
        )
        targets["latency_exactly_once"] = _target(
            "100% delivered exactly once",
            lat["completeness"],
            lat["exactly_once"] and lat["send_errors"] == 0,
            applies,
        )
    thr = results.get("throughput")
    if thr:
        t = TARGETS["throughput"]
        applies = (
            not args.stream and args.senders == t["senders"] and args.receivers == t["receivers"]
        )
        targets["throughput_accepted_per_s"] = _target(
            f">= {t['accepted_per_s']:g}",
            thr["accepted_per_s"],
            thr["accepted_per_s"] >= t["accepted_per_s"],
            applies,
        )
        targets["throughput_all_delivered"] = _target(
            "every accepted message delivered to every receiver, exactly once",
            thr["completeness"],
            thr["exactly_once"] and not thr["send_errors"],
            applies,
        )
    if thr and args.pin:
        t = TARGETS["pinned_throughput"]
        applies = not args.stream and args.senders == 8 and args.receivers == 50
        ms = thr["cpu_per_message"].get("server_ms_per_message")
        targets["pinned_server_ms_per_message"] = _target(
            f"<= {t['server_ms_per_message']}",
            ms,
            ms is not None and ms <= t["server_ms_per_message"],
            applies,
        )
        share = thr["share_of_postgres_ceiling"]
        targets["pinned_share_of_postgres_ceiling"] = _target(
            f">= {t['share_of_postgres_ceiling']}",
            share,
            share >= t["share_of_postgres_ceiling"],
            applies,
        )
    cap = results.get("capacity")
    if cap:
        t = TARGETS["capacity"]
        applies = args.idle_polls == t["idle_polls"]
        server = cap["chatterwerks"]
        ok_parked = server["parked"] and server["answered_before_release"] == 0
        targets["capacity_all_parked"] = _target(
            f"{args.idle_polls} polls parked in one worker", server["parked"], ok_parked, applies
        )
        ratio = cap["memory_ratio"]
        targets["capacity_memory_ratio"] = _target(
            f"<= {t['memory_ratio']} x baseline RSS per poll",
            ratio,
            ratio is not None and ratio <= t["memory_ratio"],
            applies,
        )
        db = server["db_connections"]
        targets["capacity_db_connections"] = _target(
            f"<= pool size + 1 listener = {db['bound']}",
            db["max_total"],
            db["max_total"] is not None and db["max_total"] <= db["bound"],
            applies,
        )
        ratio = cap["fanout_ratio"]
        targets["capacity_fanout_ratio"] = _target(
            f"<= {t['fanout_ratio']} x baseline time to answer all",
            ratio,
            ratio is not None
            and ratio <= t["fanout_ratio"]
            and server["answers_without_exactly_the_message"] == 0,
            applies,
        )
    return targets


def _target(target: str, measured: Any, passed: bool, applies: bool) -> dict[str, Any]:
    return {
        "target": target,
        "measured": measured,
        "pass": bool(passed),
        "at_target_parameters": applies,
    }


def default_polls_per_user() -> int:
    """The server's default cap on parked polls per user in one process."""
    from chatterwerks.config import Settings

    return int(getattr(Settings(), "max_polls_per_user", 100))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for (a), (b)")
    parser.add_argument("--receivers", type=int, default=50, help="R waiting receivers")
    parser.add_argument("--rate", type=float, default=50.0, help="(a) messages per second")
    parser.add_argument("--duration", type=float, default=10.0, help="(a), (b) seconds measured")
    parser.add_argument("--warmup", type=float, default=1.0, help="(a) seconds not measured")
    parser.add_argument("--senders", type=int, default=8, help="(b) S concurrent senders")
    parser.add_argument(
        "--channels", type=int, default=1, help="(b) group channels the senders spread over"
    )
    parser.add_argument("--idle-polls", type=int, default=10_000, help="(c) C idle long-polls")
    parser.add_argument(
        "--idle-users",
        type=int,
        help="(c) users holding them (default: enough for the server's default max polls per user)",
    )
    parser.add_argument("--pool-size", type=int, default=10, help="(c) CHATTERWERKS_POOL_SIZE")
    parser.add_argument("--only", choices=["latency", "throughput", "capacity"])
    parser.add_argument(
        "--message-limit",
        default="off",
        help="CHATTERWERKS_LIMIT_MESSAGES_USER for the server (BURST/SECONDS or off): "
        "to measure what the shared rate limit costs",
    )
    parser.add_argument("--quick", action="store_true", help="small numbers: a smoke run")
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL URL allowed to create the bench database",
    )
    parser.add_argument("--database", default="chatterwerks_bench")
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=20.0,
        help="seconds to wait, before each measurement, for other work on the machine to stop",
    )
    parser.add_argument("--py-spy", type=Path, help="record server workers into this directory")
    parser.add_argument(
        "--py-spy-native",
        action="store_true",
        help="with --py-spy: native frames too (C code of uvloop, asyncpg, the HTTP parser)",
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="receivers read GET /api/events/stream, not long-polls (not the targets' workload)",
    )
    parser.add_argument("--no-uvloop", action="store_true", help="load generator on asyncio's loop")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="load generator on core 0, server and PostgreSQL on the other cores "
        "(measures the server, not its contention with the load generator)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.receivers = min(args.receivers, 5)
        args.senders = min(args.senders, 2)
        args.duration = min(args.duration, 3.0)
        args.idle_polls = min(args.idle_polls, 200)
    if args.idle_users is None:
        args.idle_users = math.ceil(args.idle_polls / default_polls_per_user())
    if urlsplit(args.admin_url).hostname not in {"127.0.0.1", "localhost", "::1"}:
        parser.error("the bench only talks to a PostgreSQL on loopback")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    SERVER_ENV["CHATTERWERKS_LIMIT_MESSAGES_USER"] = args.message_limit
    fds = raise_fd_limit(2 * args.idle_polls + 4096)
    loop_name = "asyncio"
    if not args.no_uvloop:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            loop_name = "uvloop"
        except ImportError:
            pass
    if fds["soft"] < args.idle_polls + 1024:
        print(f"RLIMIT_NOFILE {fds} too low for {args.idle_polls} polls", file=sys.stderr)
        return 2
    started = time.monotonic()
    outcome = asyncio.run(run(args))
    targets = judge(args, outcome["results"])
    from chatterwerks.config import Settings

    report = {
        "benchmark": "chatterwerks delivery",
        "parameters": {
            "workers": args.workers,
            "receivers": args.receivers,
            "rate_per_s": args.rate,
            "duration_s": args.duration,
            "latency_warmup_s": args.warmup,
            "senders": args.senders,
            "throughput_channels": args.channels,
            "idle_polls": args.idle_polls,
            "idle_users": args.idle_users,
            "capacity_workers": 1,
            "quick": args.quick,
            "pin": args.pin,
            "stream": args.stream,
            "only": args.only,
        },
        "environment": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "aiohttp": aiohttp.__version__,
            "asyncpg": asyncpg.__version__,
            "postgres": outcome["postgres"],
            "calibration": outcome["calibration"],
            "pinned": outcome["pinned"],
            "load_generator": f"one process, aiohttp client, {loop_name} loop, loopback only",
            "server_command": " ".join(["gunicorn", *procfile_web_argv(0, 2)[1:]]).replace(
                f"{HOST}:0", f"{HOST}:PORT"
            ),
            "server_env": {
                **SERVER_ENV,
                "note": "argon2 cost lowered so registration is fast, rate limits off; the "
                "capacity run also sets CHATTERWERKS_POLL_MAX_TIMEOUT=600 and "
                f"CHATTERWERKS_POOL_SIZE={args.pool_size}; users there hold at most "
                "the default max polls per user each",
            },
            "pool_max_size_default": Settings().pool_max_size,
            "rlimit_nofile": fds,
        },
        "results": outcome["results"],
        "targets": targets,
        "all_pass": all(t["pass"] for t in targets.values()),
        "profiles": outcome["profiles"],
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
