"""What bench/delivery.py and bench/soak.py share: figures and set-up."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

HOST = "127.0.0.1"  # loopback only
PROCFILE = Path(__file__).resolve().parent.parent / "Procfile"


def procfile_web_argv(port: int, workers: int, app: str | None = None) -> list[str]:
    """The Procfile's `web:` command, as argv: what is measured is what runs
    in production. Binds loopback `port`, runs `workers` workers; `app`
    swaps the application (the bare-handler baseline), keeping the rest."""
    for line in PROCFILE.read_text().splitlines():
        if line.startswith("web:"):
            argv = shlex.split(line.removeprefix("web:"))
            break
    else:
        raise RuntimeError(f"no web: line in {PROCFILE}")
    substitutes = {"0.0.0.0:$PORT": f"{HOST}:{port}", "${WEB_CONCURRENCY:-2}": str(workers)}
    argv = [substitutes.get(arg, arg) for arg in argv]
    argv[0] = str(Path(sys.executable).parent / argv[0])  # this venv's gunicorn
    if app is not None:
        argv[1] = app
    return argv


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary_ms(values: Iterable[float]) -> dict[str, Any]:
    """p50/p90/p99/max (and mean, count) of durations in seconds, in ms."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 3)

    return {
        "count": len(ordered),
        "p50_ms": ms(percentile(ordered, 50)),
        "p90_ms": ms(percentile(ordered, 90)),
        "p99_ms": ms(percentile(ordered, 99)),
        "max_ms": ms(ordered[-1]),
        "mean_ms": ms(sum(ordered) / len(ordered)),
    }


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def raise_fd_limit(wanted: int) -> dict[str, int]:
    """Raises RLIMIT_NOFILE for this process and the servers it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            soft, hard = wanted, wanted
    if soft < hard or (hard == resource.RLIM_INFINITY and soft < wanted):
        new_soft = wanted if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"soft": soft, "hard": hard}


async def fresh_database(admin_url: str, name: str) -> str:
    """Drops and creates database `name` on the server of admin_url, applies
    the migrations, and returns its URL."""
    import asyncpg

    from chatterwerks import db

    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(admin_url, name)
    await db.migrate_url(url)
    return url


def stop_process_group(proc: subprocess.Popen, timeout: float) -> int | None:
    """SIGTERM (a graceful stop for gunicorn), then SIGKILL to the whole
    process group if it outlives timeout seconds; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    return proc.returncode


async def calibrate(database_url: str, seconds: float = 3.0) -> dict[str, Any]:
    """How fast this machine is, so that figures from different machines can
    be compared: one core's pure-Python speed, and PostgreSQL's durable commit
    rate for one-row inserts with a NOTIFY from 8 connections (the shape of a
    send, without the server)."""
    import asyncpg

    started = time.perf_counter()
    sum(i * i for i in range(10**7))
    python_s = time.perf_counter() - started
    admin = await asyncpg.connect(database_url)
    conns = [await asyncpg.connect(database_url) for _ in range(8)]
    try:
        await admin.execute("CREATE TABLE calibration (id bigserial PRIMARY KEY, t text)")
        commits = 0
        stop = time.monotonic() + seconds

        async def insert(conn: asyncpg.Connection) -> None:
            nonlocal commits
            while time.monotonic() < stop:
                await conn.execute(
                    "INSERT INTO calibration (t) VALUES ('x'); SELECT pg_notify('calibration', 'x')"
                )
                commits += 1

        await asyncio.gather(*(insert(conn) for conn in conns))
        await admin.execute("DROP TABLE calibration")
    finally:
        for conn in (admin, *conns):
            await conn.close()
    return {
        "python_sum_of_squares_1e7_s": round(python_s, 3),
        "postgres_commits_per_s_8_clients": round(commits / seconds),
    }
