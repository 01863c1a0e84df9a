"""The ceiling of one PostgreSQL primary: durable commits per second of a
message send, with NOTIFY, against listening connections.

Each commit is the real `send_message` statement (sql/queries/messages.sql)
on the real schema: one message into a channel of the writer's own, the
channel's seq bumped, a NOTIFY on 'chatterwerks' with the message as
payload, in autocommit, so every send is one durable commit (the server's
synchronous_commit and fsync are printed with the results). For every count
of listening connections (1, 4, 16, 64: LISTEN 'chatterwerks', as each
server process does, draining every notification) and of writers (1 to 32
connections sending as fast as they are answered), it measures commits per
second; then the same statement with pg_notify swapped for a function that
does nothing, for the cost of NOTIFY itself.

The listeners run in a child process that reads their sockets raw (the
wire protocol's startup and one LISTEN, then bytes discarded unparsed), so
that draining 64 x the commit rate costs the client little; it falls back
to asyncpg listeners if the server asks for a password. The writers are
asyncpg connections in this process; both processes' CPU is printed, to show
the client is not what limits.

    /work/venv/bin/python bench/ceiling.py                 # the whole grid (~3 min)
    /work/venv/bin/python bench/ceiling.py --quick         # a smoke run (~20 s)
    /work/venv/bin/python bench/ceiling.py --own-cluster   # on a throwaway cluster

--own-cluster runs the same binaries on a cluster of its own (initdb in a
temporary directory, on this machine's disk): for a shared server whose
max_connections cannot take 64 listeners and 32 writers besides its users.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import calibrate, drop_database, fresh_database, percentile

from chatterwerks import db
from chatterwerks.store import accounts, channels

CHANNEL = "chatterwerks"  # what every server process listens on (realtime/)
TEXT = "a message of ordinary length, about as long as most chat lines are"


def log(message: str) -> None:
    print(f"[ceiling {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Listeners: a child process holding N connections that LISTEN and drain.


class NeedsPassword(Exception):
    pass


def _read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    header = _read_exactly(sock, 5)
    length = struct.unpack("!i", header[1:])[0]
    return header[:1], _read_exactly(sock, length - 4)


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("server closed the connection")
        data += chunk
    return data


def _until_ready(sock: socket.socket) -> None:
    while True:
        kind, body = _read_message(sock)
        if kind == b"R" and struct.unpack("!i", body[:4])[0] != 0:
            raise NeedsPassword
        if kind == b"E":
            raise RuntimeError(body.replace(b"\0", b" ").decode(errors="replace"))
        if kind == b"Z":
            return


def raw_listener(url: str) -> socket.socket:
    """A connection that has sent LISTEN, speaking just enough of the protocol."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432))
    params = b"user\0%s\0database\0%s\0\0" % (
        (parts.username or "postgres").encode(),
        parts.path.lstrip("/").encode(),
    )
    sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
    _until_ready(sock)
    query = f"LISTEN {CHANNEL}".encode() + b"\0"
    sock.sendall(b"Q" + struct.pack("!i", 4 + len(query)) + query)
    _until_ready(sock)
    sock.setblocking(False)
    return sock


def listener_process(url: str, count: int, ready: Any, stop: Any, report: Any) -> None:
    """Holds `count` listening connections until `stop`; reports bytes and CPU."""
    try:
        socks = [raw_listener(url) for _ in range(count)]
    except NeedsPassword:
        asyncio.run(_asyncpg_listeners(url, count, ready, stop, report))
        return
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    received = 0
    ready.set()
    cpu0 = time.process_time()
    while not stop.is_set():
        for key, _ in selector.select(0.1):
            with contextlib.suppress(BlockingIOError):
                received += len(key.fileobj.recv(1 << 16))  # type: ignore[union-attr]
    report.put({"bytes": received, "cpu_s": time.process_time() - cpu0, "raw": True})
    for sock in socks:
        sock.close()


async def _asyncpg_listeners(url: str, count: int, ready: Any, stop: Any, report: Any) -> None:
    heard = 0

    def on_notify(*_: object) -> None:
        nonlocal heard
        heard += 1

    conns = [await asyncpg.connect(url) for _ in range(count)]
    for conn in conns:
        await conn.add_listener(CHANNEL, on_notify)
    ready.set()
    cpu0 = time.process_time()
    await asyncio.to_thread(stop.wait)
    report.put({"notifications": heard, "cpu_s": time.process_time() - cpu0, "raw": False})
    for conn in conns:
        await conn.close()


@contextlib.contextmanager
def listening(url: str, count: int) -> Iterator[dict[str, Any]]:
    """`count` listening connections in a child process, for the with-block;
    the dict gets the child's report when the block ends."""
    outcome: dict[str, Any] = {}
    if count == 0:
        yield outcome
        return
    context = multiprocessing.get_context("spawn")
    ready, stop, report = context.Event(), context.Event(), context.Queue()
    child = context.Process(target=listener_process, args=(url, count, ready, stop, report))
    child.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("listeners did not connect")
        yield outcome
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            outcome.update(report.get(timeout=30))
        child.join(30)
        if child.is_alive():
            child.kill()


# ---------------------------------------------------------------------------
# Writers: N connections in this process, each sending into its own channel.


async def prepare(url: str, writers: int) -> list[tuple[int, int]]:
    """Migrates the bench database; makes `writers` users, each with a
    channel: [(channel_id, author_id)]. Adds the no-op stand-in for pg_notify."""
    conn = await asyncpg.connect(url)
    try:
        await db.migrate(conn)
        await conn.execute(
            "CREATE FUNCTION bench_no_notify(text, text) RETURNS void "
            "LANGUAGE plpgsql AS $$ BEGIN END $$"
        )
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        otter = await accounts.otter_id(pool)
        assert otter is not None
        pairs = []
        for i in range(writers):
            user = await accounts.create_user(pool, f"writer{i}", "x", "hello", otter)
            assert user is not None
            group = await channels.create_group(pool, user["id"], f"ceiling-{i}", "", [])
            pairs.append((group["id"], user["id"]))
        return pairs
    finally:
        await pool.close()


async def run_writers(
    url: str, statement: str, pairs: list[tuple[int, int]], seconds: float
) -> dict[str, Any]:
    """Every writer sends as fast as it is answered for `seconds`."""
    conns = [await asyncpg.connect(url) for _ in pairs]
    latencies: list[float] = []
    try:
        for conn, (channel_id, author_id) in zip(conns, pairs, strict=True):
            await conn.fetchrow(statement, channel_id, author_id, TEXT, None)  # warm, prepared
        cpu0, started = time.process_time(), time.monotonic()
        stop = started + seconds

        async def write(conn: asyncpg.Connection, channel_id: int, author_id: int) -> int:
            done = 0
            while (now := time.monotonic()) < stop:
                await conn.fetchrow(statement, channel_id, author_id, TEXT, None)
                latencies.append(time.monotonic() - now)
                done += 1
            return done

        counts = await asyncio.gather(
            *(write(conn, c, a) for conn, (c, a) in zip(conns, pairs, strict=True))
        )
        elapsed = time.monotonic() - started
        cpu = time.process_time() - cpu0
    finally:
        for conn in conns:
            await conn.close()
    latencies.sort()
    return {
        "commits_per_s": round(sum(counts) / elapsed),
        "p50_ms": round(1000 * (percentile(latencies, 50) or 0), 2),
        "p99_ms": round(1000 * (percentile(latencies, 99) or 0), 2),
        "writer_cpu_pct": round(100 * cpu / elapsed),
    }


async def free_connections(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        )
    finally:
        await conn.close()


async def server_settings(url: str) -> dict[str, str]:
    conn = await asyncpg.connect(url)
    try:
        return {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method")
        }
    finally:
        await conn.close()


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    pairs = await prepare(url, max(args.writers))
    with_notify = db.QUERIES.send_message
    assert "pg_notify(" in with_notify
    without = with_notify.replace("pg_notify(", "bench_no_notify(")
    rows = []
    for listeners in [0, *args.listeners]:
        statement = without if listeners == 0 else with_notify
        with listening(url, listeners) as drained:
            for writers in args.writers:
                free = await free_connections(url)
                if free < writers + 2:
                    log(f"skipped {listeners} listeners x {writers} writers: {free} free")
                    rows.append({"listeners": listeners, "writers": writers, "skipped": True})
                    continue
                result = await run_writers(url, statement, pairs[:writers], args.seconds)
                row = {"notify": listeners > 0, "listeners": listeners, "writers": writers}
                rows.append({**row, **result})
                log(f"{row} -> {result}")
        if drained:
            log(f"listeners {listeners}: {drained}")
            for row in rows:
                if row["listeners"] == listeners:
                    row["listener_process"] = drained
    return {"rows": rows}


def table(rows: list[dict[str, Any]], writers: list[int], listeners: list[int]) -> str:
    """Commits per second: a row per writer count, a column per listener count."""
    by = {(r["listeners"], r["writers"]): r for r in rows}
    head = ["writers", "no NOTIFY"] + [f"NOTIFY, {n} listening" for n in listeners]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w in writers:
        cells = [str(w)]
        for n in [0, *listeners]:
            row = by.get((n, w))
            if row is None or row.get("skipped"):
                cells.append("-")
            else:
                cells.append(f"{row['commits_per_s']} ({row['p99_ms']} ms p99)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# A throwaway cluster, for a shared server with few free connections.


@contextlib.contextmanager
def own_cluster() -> Iterator[str]:
    bindir = Path(
        subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()
    )
    initdb = shutil.which("initdb", path=str(bindir)) or shutil.which("initdb")
    pg_ctl = shutil.which("pg_ctl", path=str(bindir)) or shutil.which("pg_ctl")
    if not initdb or not pg_ctl:
        raise SystemExit("--own-cluster needs initdb and pg_ctl")
    # PostgreSQL refuses to run as root: then as the postgres OS user.
    owner: dict[str, Any] = {}
    tmp = tempfile.mkdtemp(prefix="ceiling-")
    if os.geteuid() == 0:
        owner = {"user": "postgres", "group": "postgres", "extra_groups": [], "cwd": "/"}
        shutil.chown(tmp, "postgres", "postgres")
    data = Path(tmp) / "data"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    subprocess.run(
        [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        stdout=subprocess.DEVNULL,
        **owner,
    )
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c max_connections=150 -k {tmp}"
    subprocess.run(
        [pg_ctl, "-D", str(data), "-o", options, "-l", str(Path(tmp) / "log"), "-w", "start"],
        check=True,
        stdout=subprocess.DEVNULL,
        **owner,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"],
            stdout=subprocess.DEVNULL,
            **owner,
        )
        shutil.rmtree(tmp, ignore_errors=True)


async def main_async(args: argparse.Namespace, admin_url: str) -> dict[str, Any]:
    url = await fresh_database(admin_url, args.database)
    try:
        settings = await server_settings(url)
        log(f"server: {settings}")
        calibration = await calibrate(url)
        log(f"calibration: {calibration}")
        outcome = await measure(url, args)
    finally:
        if not args.keep_database:
            await drop_database(admin_url, args.database)
    return {"server": settings, "calibration": calibration, **outcome}


def numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="chatterwerks_ceiling")
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument("--own-cluster", action="store_true", help="initdb a throwaway cluster")
    parser.add_argument("--listeners", type=numbers, default=[1, 4, 16, 64])
    parser.add_argument("--writers", type=numbers, default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured per cell")
    parser.add_argument("--quick", action="store_true", help="small numbers: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.listeners, args.writers, args.seconds = [1, 16], [1, 4, 16], 1.0
    started = time.monotonic()
    with own_cluster() if args.own_cluster else contextlib.nullcontext(args.admin_url) as admin:
        outcome = asyncio.run(main_async(args, admin))
    outcome.update(
        {
            "own_cluster": args.own_cluster,
            "seconds_per_cell": args.seconds,
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "wall_s": round(time.monotonic() - started),
        }
    )
    print(table(outcome["rows"], args.writers, args.listeners))
    print(f"server: {json.dumps(outcome['server'])}")
    print(f"calibration: {json.dumps(outcome['calibration'])}")
    if args.json:
        args.json.write_text(json.dumps(outcome, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
