"""What bench/delivery.py and bench/soak.py share: the server they start, the
client they drive it with, the meters, the calibration and the delivery checks.
Each script keeps only its workload and its report.

  figures      percentile, summary_ms
  PostgreSQL   fresh_database, drop_database, calibrate
  the server   procfile_web_argv, chatterwerks_server, Server
  the client   http_session, Client (register, create_group, cursors, send, poll)
  meters       cpu_seconds, CpuMeter, wait_for_quiet, rss_bytes, sample_rss, memory_report
  checks       check_sequence, exactly_once
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import resource
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import psutil

HOST = "127.0.0.1"  # loopback only
ROOT = Path(__file__).resolve().parent.parent
PROCFILE = ROOT / "Procfile"
MIB = 1024 * 1024


# ---------------------------------------------------------------------------
# Figures


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


def mib(value: float) -> float:
    return round(value / MIB, 1)


# ---------------------------------------------------------------------------
# PostgreSQL


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


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


async def drop_database(admin_url: str, name: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


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


# ---------------------------------------------------------------------------
# The server: the Procfile's gunicorn command as a child process


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


class Server:
    """A gunicorn master started as a child process in its own session, its
    output in a log file; stopped with SIGTERM (then SIGKILL of its process
    group if it lingers). Remembers every worker it has seen, so that a
    worker restart shows."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], port: int, workers: int
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.port = port
        self.workers_wanted = workers
        self.base = f"http://{HOST}:{port}"
        fd, path = tempfile.mkstemp(prefix=f"chatterwerks-{name}-", suffix=".log")
        os.close(fd)
        self.log_path = Path(path)
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen_workers: set[int] = set()
        # --pin: the cores gunicorn (and so every worker it forks) runs on.
        self.cpus: set[int] | None = None

    def workers(self) -> list[int]:
        if self.proc is None:
            return []
        try:
            pids = [child.pid for child in psutil.Process(self.proc.pid).children()]
        except psutil.Error:
            return []
        self.seen_workers.update(pids)
        return pids

    def all_pids(self) -> list[int]:
        return ([self.proc.pid] if self.proc else []) + self.workers()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=None if self.cpus is None else self._pin_child,
            )
        return self.proc

    def _pin_child(self) -> None:
        assert self.cpus is not None
        os.sched_setaffinity(0, self.cpus)

    async def start(self, session: aiohttp.ClientSession, timeout: float = 60.0) -> None:
        """Spawns gunicorn and waits until /healthz answers and every worker is up."""
        proc = self.spawn()
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name} did not become healthy:\n{self.log_text()[-3000:]}"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(self.base + "/healthz") as resp:
                    if resp.status == 200 and len(self.workers()) >= self.workers_wanted:
                        return
            await asyncio.sleep(0.1)

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stops the server (if running); its exit code."""
        if self.proc is None:
            return None
        code = stop_process_group(self.proc, timeout=timeout)
        self.proc = None
        return code


def chatterwerks_server(
    name: str, port: int, workers: int, database_url: str, env: Mapping[str, str]
) -> Server:
    """The Procfile's web command on loopback `port`, on database_url, with
    this environment plus `env` (the script's settings for the server)."""
    server_env = dict(os.environ)
    for key in ("PORT", "HOST", "WEB_CONCURRENCY"):
        server_env.pop(key, None)
    server_env.update(DATABASE_URL=database_url, **env)
    return Server(name, procfile_web_argv(port, workers), server_env, port, workers)


# ---------------------------------------------------------------------------
# The client


class ApiError(Exception):
    pass


@dataclass
class User:
    name: str
    id: int
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes
    at: float  # monotonic time the whole body had arrived

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def http_session(
    *,
    limit: int = 0,
    keepalive_timeout: float = 15.0,
    token: str | None = None,
    sent_counter: list[int] | None = None,
) -> aiohttp.ClientSession:
    """An aiohttp session with no overall timeout (long polls) and at most
    `limit` connections (0: no limit); `token` authorises every request;
    `sent_counter[0]` counts requests whose headers have been written."""
    traces = []
    if sent_counter is not None:
        trace = aiohttp.TraceConfig()

        async def on_sent(*_: Any) -> None:
            sent_counter[0] += 1

        trace.on_request_headers_sent.append(on_sent)
        traces.append(trace)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=limit,
            limit_per_host=0,
            keepalive_timeout=keepalive_timeout,
            enable_cleanup_closed=False,
        ),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=60),
        headers={"Authorization": f"Bearer {token}"} if token else None,
        trace_configs=traces,
    )


class Client:
    """The HTTP API over one session. request() answers whatever the status;
    call() raises ApiError unless it is one of `ok`. A subclass may override
    observe() to see every answer and transport error."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    def observe(
        self, method: str, path: str, expected: tuple[int, ...], outcome: Answer | BaseException
    ) -> None:
        """Called with every answer (or transport error); does nothing here."""

    async def request(
        self,
        method: str,
        path: str,
        *,
        user: User | None = None,
        body: Any = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
        expected: tuple[int, ...] = (200, 201, 204),
    ) -> Answer:
        options: dict[str, Any] = {"json": body, "params": params}
        if user is not None:
            options["headers"] = user.headers
        if timeout is not None:  # else the session's
            options["timeout"] = aiohttp.ClientTimeout(total=timeout)
        try:
            async with self.session.request(method, self.base + path, **options) as resp:
                raw = await resp.read()
                answer = Answer(resp.status, resp.headers, raw, time.monotonic())
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.observe(method, path, expected, exc)
            raise
        self.observe(method, path, expected, answer)
        return answer

    async def call(
        self,
        method: str,
        path: str,
        user: User | None = None,
        body: Any = None,
        ok: tuple[int, ...] = (200, 201),
    ) -> Any:
        answer = await self.request(method, path, user=user, body=body, expected=ok)
        if answer.status not in ok:
            raise ApiError(f"{method} {path}: {answer.status} {answer.body[:300]!r}")
        return answer.json()

    async def register(self, names: list[str], password: str, concurrency: int = 16) -> list[User]:
        gate = asyncio.Semaphore(concurrency)

        async def one(name: str) -> User:
            async with gate:
                data = await self.call(
                    "POST",
                    "/api/register",
                    body={"username": name, "password": password},
                    ok=(201,),
                )
            return User(name, data["user"]["id"], data["token"])

        return list(await asyncio.gather(*(one(name) for name in names)))

    async def create_group(self, owner: User, name: str, members: list[User]) -> int:
        """A group channel of owner and members (added 100 at creation, then one by one)."""
        others = [m.name for m in members if m.id != owner.id]
        first, rest = others[:100], others[100:]
        data = await self.call("POST", "/api/channels", owner, {"name": name, "members": first})
        channel_id = data["channel"]["id"]
        for username in rest:
            await self.call(
                "POST", f"/api/channels/{channel_id}/members", owner, {"username": username}
            )
        return channel_id

    async def cursors(self, users: list[User], concurrency: int = 16) -> list[str]:
        """Each user's events cursor from GET /api/me."""
        gate = asyncio.Semaphore(concurrency)

        async def one(user: User) -> str:
            async with gate:
                return (await self.call("GET", "/api/me", user))["cursor"]

        return list(await asyncio.gather(*(one(user) for user in users)))

    async def send(self, channel_id: int, text: str, user: User | None = None) -> Answer:
        """POST a message; 201 means accepted."""
        path = f"/api/channels/{channel_id}/messages"
        return await self.request("POST", path, user=user, body={"text": text}, expected=(201,))

    async def poll(self, cursor: str, timeout: float, user: User | None = None) -> Answer:
        """One GET /api/events long poll from cursor, answered within `timeout` s."""
        params = {"cursor": cursor, "timeout": f"{timeout:.1f}"}
        return await self.request("GET", "/api/events", user=user, params=params, expected=(200,))


# ---------------------------------------------------------------------------
# Meters: CPU and memory


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of these processes so far (0 for a gone one)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine so far (all cores)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def postmaster_pid(data_directory: str) -> int:
    """The PostgreSQL postmaster's PID, from its data directory's lock file."""
    return int(Path(data_directory, "postmaster.pid").read_text().split()[0])


class CorePinning:
    """--pin: the load generator on one set of cores, the server and
    PostgreSQL on the others, so that what is measured is the server's work,
    not its contention with the load generator for the same cores.

    PostgreSQL is pinned by setting the affinity of its postmaster (which
    every new backend inherits at fork) and of the backends already running;
    both are put back as they were by restore()."""

    def __init__(self, loadgen_cpus: set[int], server_cpus: set[int]) -> None:
        self.loadgen_cpus = loadgen_cpus
        self.server_cpus = server_cpus
        self._saved: dict[int, set[int]] = {}
        self._postmaster: int | None = None

    @classmethod
    def split(cls) -> CorePinning:
        """Core 0 for the load generator, the rest for server and database."""
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise RuntimeError("--pin needs at least two cores")
        return cls({cpus[0]}, set(cpus[1:]))

    async def apply(self, admin_url: str) -> dict[str, Any]:
        import asyncpg

        self._set(os.getpid(), self.loadgen_cpus)
        admin = await asyncpg.connect(admin_url)
        try:
            data_directory = await admin.fetchval("SHOW data_directory")
        finally:
            await admin.close()
        postmaster = postmaster_pid(data_directory)
        self._postmaster = postmaster
        parent = psutil.Process(postmaster)
        for proc in [parent, *parent.children()]:
            self._set(proc.pid, self.server_cpus)
        return {
            "load_generator_cpus": sorted(self.loadgen_cpus),
            "server_and_postgres_cpus": sorted(self.server_cpus),
        }

    def _set(self, pid: int, cpus: set[int]) -> None:
        with contextlib.suppress(ProcessLookupError, psutil.Error):
            self._saved.setdefault(pid, os.sched_getaffinity(pid))
            os.sched_setaffinity(pid, cpus)

    def restore(self) -> None:
        """Gives every pinned process its old cores back, and the PostgreSQL
        backends born while pinned the postmaster's."""
        if self._postmaster in self._saved:
            with contextlib.suppress(psutil.Error):
                for proc in psutil.Process(self._postmaster).children():
                    self._saved.setdefault(proc.pid, self._saved[self._postmaster])
        for pid, cpus in self._saved.items():
            with contextlib.suppress(ProcessLookupError, OSError):
                os.sched_setaffinity(pid, cpus)
        self._saved.clear()


async def wait_for_quiet(limit_s: float, busy_cores: float = 0.3) -> dict[str, Any]:
    """Waits (at most limit_s) until the rest of the machine is nearly idle,
    since other work on these two cores would be measured as ours."""
    start = time.monotonic()
    busy = float("nan")
    while True:
        t0, m0 = time.monotonic(), machine_cpu_seconds()
        await asyncio.sleep(1.0)
        busy = (machine_cpu_seconds() - m0) / (time.monotonic() - t0)
        if busy <= busy_cores or time.monotonic() - start >= limit_s:
            break
    return {
        "quiet": busy <= busy_cores,
        "busy_cores_before": round(busy, 3),
        "waited_s": round(time.monotonic() - start, 1),
    }


class CpuMeter:
    """CPU seconds over a window: the server's processes, the PostgreSQL
    backends of the bench database, the rest of PostgreSQL, this load
    generator, and everything else on the machine (other people's work
    shares these cores and is reported, not subtracted)."""

    def __init__(self, server_pids: Callable[[], list[int]], database: str) -> None:
        self._server_pids = server_pids
        self._database = database
        self._start: dict[str, dict[int, float]] = {}
        self._machine0 = 0.0
        self._t0 = 0.0

    def _sample(self) -> dict[str, dict[int, float]]:
        groups: dict[str, dict[int, float]] = {
            "server": {},
            "postgres_bench": {},
            "postgres_other": {},
            "loadgen": {},
        }
        for pid in self._server_pids():
            groups["server"][pid] = cpu_seconds([pid])
        for proc in psutil.process_iter(["name", "cmdline"]):
            if proc.info["name"] == "postgres":
                cmdline = " ".join(proc.info["cmdline"] or ())
                bench = f" {self._database} " in cmdline
                group = "postgres_bench" if bench else "postgres_other"
                groups[group][proc.pid] = cpu_seconds([proc.pid])
        groups["loadgen"][os.getpid()] = cpu_seconds([os.getpid()])
        return groups

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._machine0 = machine_cpu_seconds()
        self._start = self._sample()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self._t0
        end = self._sample()
        machine = machine_cpu_seconds() - self._machine0
        out: dict[str, Any] = {"wall_s": round(wall, 3), "cores": psutil.cpu_count()}
        accounted = 0.0
        for group, pids in end.items():
            before = self._start.get(group, {})
            seconds = sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in pids.items())
            accounted += seconds
            out[f"{group}_cpu_s"] = round(seconds, 4)
            out[f"{group}_cores"] = round(seconds / wall, 3) if wall else None
        out["machine_busy_cores"] = round(machine / wall, 3) if wall else None
        out["everything_else_cores"] = (
            round(max(0.0, machine - accounted) / wall, 3) if wall else None
        )
        out["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
        return out


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (raises psutil.Error if it is gone)."""
    return psutil.Process(pid).memory_info().rss


async def sample_rss(
    pids: Callable[[], list[int]],
    samples: list[tuple[float, int, int]],
    interval: float,
    stop: asyncio.Event,
) -> None:
    """Appends (monotonic time, pid, RSS bytes) of each of pids() every
    interval seconds until stop is set."""
    while not stop.is_set():
        now = time.monotonic()
        for pid in pids():
            with contextlib.suppress(psutil.Error):
                samples.append((now, pid, rss_bytes(pid)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def memory_report(
    samples: list[tuple[float, int, int]], began: float, ended: float, tolerance: float
) -> dict[str, Any]:
    """Per process: RSS at start, middle, end, peak; settled means the peak of
    the last quarter of the run is at most `tolerance` above the second quarter's."""
    span = max(ended - began, 1e-9)
    by_pid: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for t, pid, rss in samples:
        if began <= t <= ended:
            by_pid[pid].append(((t - began) / span, rss))
    workers = {}
    settled = bool(by_pid)
    for pid, series in sorted(by_pid.items()):
        q2 = [rss for x, rss in series if 0.25 <= x < 0.5]
        q4 = [rss for x, rss in series if x >= 0.75]
        mid = min(series, key=lambda s: abs(s[0] - 0.5))[1]
        report: dict[str, Any] = {
            "samples": len(series),
            "start_mib": mib(series[0][1]),
            "mid_mib": mib(mid),
            "end_mib": mib(series[-1][1]),
            "peak_mib": mib(max(rss for _, rss in series)),
        }
        if q2 and q4:
            growth = max(q4) - max(q2)
            report["q2_peak_mib"] = mib(max(q2))
            report["q4_peak_mib"] = mib(max(q4))
            report["growth_last_half_mib"] = mib(growth)
            report["growth_last_half_pct"] = round(100 * growth / max(q2), 2)
            report["settled"] = growth <= tolerance * max(q2)
        else:
            report["settled"] = False
        # Least-squares slope over the last half, for information.
        half = [(x * span / 60, rss) for x, rss in series if x >= 0.5]
        if len(half) >= 3:
            mx = sum(x for x, _ in half) / len(half)
            my = sum(y for _, y in half) / len(half)
            den = sum((x - mx) ** 2 for x, _ in half)
            if den > 0:
                slope = sum((x - mx) * (y - my) for x, y in half) / den
                report["slope_last_half_mib_per_min"] = round(slope / MIB, 3)
        settled = settled and report["settled"]
        workers[str(pid)] = report
    return {"tolerance_pct": round(tolerance * 100, 1), "settled": settled, "workers": workers}


# ---------------------------------------------------------------------------
# Checks: exactly once, in order


@dataclass
class SequenceCheck:
    """How one channel's received seqs differ from the seqs expected."""

    received_expected: int  # distinct expected seqs received
    duplicates: int  # receipts beyond the first of a seq
    missing: int  # expected, never received
    unexpected: int  # received, not expected
    out_of_order: int  # receipts not above the one before

    @property
    def ok(self) -> bool:
        """Each expected seq exactly once, nothing else, in increasing order."""
        return not (self.duplicates or self.missing or self.unexpected or self.out_of_order)


def check_sequence(received: Sequence[int], expected: Collection[int]) -> SequenceCheck:
    """Compares the seqs one receiver got, in arrival order, with those it was due."""
    seen: set[int] = set()
    duplicates = 0
    for seq in received:
        duplicates += seq in seen
        seen.add(seq)
    got_expected = sum(1 for seq in seen if seq in expected)
    return SequenceCheck(
        received_expected=got_expected,
        duplicates=duplicates,
        missing=len(expected) - got_expected,
        unexpected=len(seen) - got_expected,
        out_of_order=sum(1 for a, b in itertools.pairwise(received) if b <= a),
    )


def exactly_once(
    received: list[Mapping[int, Sequence[int]]], accepted: Mapping[int, Collection[int]]
) -> dict[str, Any]:
    """Every receiver must get every accepted message of every channel once:
    received is, per receiver, channel -> seqs in arrival order; accepted is
    channel -> the seqs the server accepted. Order is reported, not required."""
    expected = sum(len(seqs) for seqs in accepted.values()) * len(received)
    received_unique = duplicates = missing = unexpected = out_of_order = 0
    incomplete_receivers = 0
    for orders in received:
        complete = True
        for channel_id, seqs in accepted.items():
            check = check_sequence(orders.get(channel_id, ()), seqs)
            received_unique += check.received_expected
            duplicates += check.duplicates
            missing += check.missing
            unexpected += check.unexpected
            out_of_order += check.out_of_order
            complete = complete and not check.missing
        incomplete_receivers += not complete
    return {
        "expected_deliveries": expected,
        "received_deliveries": received_unique,
        "completeness": round(received_unique / expected, 6) if expected else None,
        "duplicates": duplicates,
        "missing": missing,
        "unexpected": unexpected,
        "out_of_order": out_of_order,
        "receivers_incomplete": incomplete_receivers,
        "exactly_once": duplicates == 0 and missing == 0 and unexpected == 0,
    }
