"""PostgreSQL clusters of a test's own, built from the machine's PostgreSQL 15
binaries: a primary, a synchronous standby made by pg_basebackup -R, and
PgBouncer in front of a database. Run as the `postgres` OS user when the
tests run as root (initdb and postgres refuse root). Everything lives in one
temporary directory, removed (servers stopped first) by close()."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from helpers import free_port

PG_BIN = Path(os.environ.get("CHATTERWERKS_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
OS_USER = "postgres"


def require_pg_binaries() -> None:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL binaries in {PG_BIN} (apt-get install postgresql-15)")


def _as_owner(user: str = OS_USER) -> dict[str, object]:
    """Popen's arguments to run as that OS user when we are root (in CI), as
    ourselves otherwise; from a directory that user may enter."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "cwd": "/"}
    return {}


def _run(argv: list[str], timeout: float = 60) -> None:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, **_as_owner()
    )
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


class Node:
    """One PostgreSQL data directory, on 127.0.0.1:port."""

    def __init__(self, base: Path, name: str) -> None:
        self.name = name
        self.pgdata = base / name
        self.port = free_port()
        self.socket_dir = base

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def configure(self, **settings: str) -> None:
        # postgresql.auto.conf is read last: its lines win.
        with open(self.pgdata / "postgresql.auto.conf", "a") as conf:
            for name, value in settings.items():
                conf.write(f"{name} = '{value}'\n")

    def start(self) -> None:
        _run([str(PG_BIN / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self.log), "-w", "start"])

    def stop(self, mode: str = "fast") -> None:
        _run([str(PG_BIN / "pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w", "stop"])

    def promote(self) -> None:
        _run([str(PG_BIN / "pg_ctl"), "-D", str(self.pgdata), "-w", "promote"])

    @property
    def log(self) -> Path:
        return self.pgdata.parent / f"{self.name}.log"

    def running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    def kill(self) -> None:
        """SIGKILL the postmaster and every process of it at once: the
        machine died (its clients see their connections reset)."""
        pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        family = [pid, *_children(pid)]
        for member in family:
            try:
                os.kill(member, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in family) and time.monotonic() < deadline:
            time.sleep(0.01)
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces, so split after ")".
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Clusters:
    """A temporary directory owned by the postgres user, for nodes and a
    PgBouncer; close() stops whatever runs there and removes it."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="chatterwerks-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.base, OS_USER, OS_USER)
        self.nodes: list[Node] = []
        self.bouncers: list[subprocess.Popen] = []
        self.bouncer_inis: list[Path] = []

    def primary(self, name: str = "primary", **settings: str) -> Node:
        require_pg_binaries()
        node = Node(self.base, name)
        self.nodes.append(node)
        _run(
            [
                *(str(PG_BIN / "initdb"), "-D", str(node.pgdata), "-U", "postgres", "-A"),
                *("trust", "-E", "UTF8", "--locale=C", "--no-sync"),
            ]
        )
        node.configure(
            port=str(node.port),
            listen_addresses="127.0.0.1",
            unix_socket_directories=str(self.base),
            # The promise under test is replication's, not the disk's: a
            # SIGKILL leaves the page cache, and CI's disk is shared.
            fsync="off",
            **settings,
        )
        node.start()
        return node

    def standby(self, primary: Node, name: str = "standby") -> Node:
        """A streaming standby of primary (pg_basebackup -R), running. It will
        not wait for a synchronous standby of its own once promoted."""
        node = Node(self.base, name)
        self.nodes.append(node)
        _run(
            [
                *(str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port)),
                *("-U", "postgres", "-D", str(node.pgdata), "-R", "-X", "stream", "-c", "fast"),
            ]
        )
        node.configure(
            port=str(node.port),
            synchronous_standby_names="",
            primary_conninfo=f"host=127.0.0.1 port={primary.port} user=postgres"
            f" application_name={name}",
        )
        node.start()
        return node

    def pgbouncer(self, url: str) -> str:
        """PgBouncer in transaction mode on a free port, in front of the
        database of url (which it logs in to with url's credentials); the
        URL to reach that database through it."""
        if not Path(PGBOUNCER).exists():
            pytest.skip("no pgbouncer (apt-get install pgbouncer)")
        parts = urlsplit(url)
        database = parts.path.lstrip("/")
        user = parts.username or "postgres"
        listen = free_port()
        # One of several (a PgBouncer beside each node): files of its own.
        ini = self.base / f"pgbouncer-{listen}.ini"
        users = self.base / "userlist.txt"
        users.write_text(f'"{user}" ""\n')
        # The embedded server's URL names its socket directory: ?host=/dir
        host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
        server = f"host={host} port={parts.port or 5432} dbname={database} user={user}"
        if parts.password:
            server += f" password={parts.password}"
        self.bouncer_log = self.base / f"pgbouncer-{listen}.log"
        ini.write_text(
            "[databases]\n"
            f"{database} = {server}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {listen}\n"
            f"unix_socket_dir = {self.base}\n"
            "auth_type = trust\n"
            f"auth_file = {users}\n"
            "pool_mode = transaction\n"
            "default_pool_size = 10\nmax_client_conn = 200\n"
            # After a failed login to a dead node, retry in 1 s, not the
            # default 15 (docs/deployment.md's example sets the same).
            "server_login_retry = 1\n"
            f"logfile = {self.bouncer_log}\n"
        )
        # As the owner of the server's socket directory (the embedded
        # server's is private to its own OS user), else as postgres.
        owner = OS_USER
        if host.startswith("/"):
            owner = pwd.getpwuid(os.stat(host).st_uid).pw_name
        if os.geteuid() == 0:
            for path in (self.base, ini, users):
                os.chown(path, pwd.getpwnam(owner).pw_uid, pwd.getpwnam(owner).pw_gid)
        bouncer = subprocess.Popen(
            [PGBOUNCER, str(ini)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            **_as_owner(owner),
        )
        self.bouncers.append(bouncer)
        self.bouncer_inis.append(ini)
        return f"postgresql://{user}@127.0.0.1:{listen}/{database}"

    def repoint_bouncer(self, index: int, node: Node) -> None:
        """What a failover hook does (docs/deployment.md): PgBouncer `index`
        sends to `node` from now on; its config rewritten, then SIGHUP
        (RELOAD)."""
        ini = self.bouncer_inis[index]
        text = re.sub(r"port=[0-9]+", f"port={node.port}", ini.read_text(), count=1)
        ini.write_text(text)
        self.bouncers[index].send_signal(signal.SIGHUP)

    def close(self) -> None:
        try:
            for bouncer in self.bouncers:
                bouncer.terminate()
                try:
                    bouncer.wait(10)
                except subprocess.TimeoutExpired:
                    bouncer.kill()
                    bouncer.wait()
            for node in self.nodes:
                if node.running():
                    try:
                        node.stop("immediate")
                    except (RuntimeError, subprocess.TimeoutExpired):
                        node.kill()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


PATRONI_NODE = """scope: chatterwerks
name: {name}
restapi:
  listen: 127.0.0.1:{rest}
  connect_address: 127.0.0.1:{rest}
etcd3:
  hosts: 127.0.0.1:{etcd}
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 4
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    synchronous_mode_strict: false
    postgresql:
      use_pg_rewind: true
      parameters:
        synchronous_commit: "on"
        wal_level: replica
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        fsync: "off"
  initdb:
    - encoding: UTF8
    - locale: C
  pg_hba:
    - host replication all 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
    - local all all trust
postgresql:
  listen: 127.0.0.1:{port}
  connect_address: 127.0.0.1:{port}
  data_dir: {data_dir}
  bin_dir: {bin_dir}
  pgpass: {base}/pgpass-{name}
  parameters:
    unix_socket_directories: {base}
  authentication:
    superuser: {{username: postgres}}
    replication: {{username: postgres}}
    rewind: {{username: postgres}}
"""


class Patroni:
    """etcd (one member) and two Patroni nodes in synchronous mode, in the
    Clusters' directory: Patroni elects, promotes and demotes by itself. The
    configuration is docs/deployment.md's, made local (ports, trust)."""

    def __init__(self, clusters: Clusters) -> None:
        require_pg_binaries()
        for tool in ("patroni", "etcd"):
            if shutil.which(tool) is None:
                pytest.skip(f"no {tool} (apt-get install patroni etcd-server)")
        self.clusters = clusters
        self.base = clusters.base
        self.processes: dict[str, subprocess.Popen] = {}
        self.nodes: dict[str, Node] = {}
        self.rest: dict[str, int] = {}
        client, peer = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                *("etcd", "--data-dir", str(self.base / "etcd")),
                *("--listen-client-urls", f"http://127.0.0.1:{client}"),
                *("--advertise-client-urls", f"http://127.0.0.1:{client}"),
                *("--listen-peer-urls", f"http://127.0.0.1:{peer}"),
                *("--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}"),
                *("--initial-cluster", f"default=http://127.0.0.1:{peer}"),
            ],
        )
        for name in ("db1", "db2"):
            node = Node(self.base, name)
            self.nodes[name] = node
            self.rest[name] = free_port()
            config = self.base / f"{name}.yml"
            config.write_text(
                PATRONI_NODE.format(
                    name=name,
                    rest=self.rest[name],
                    etcd=client,
                    port=node.port,
                    data_dir=node.pgdata,
                    bin_dir=PG_BIN,
                    base=self.base,
                )
            )
            if os.geteuid() == 0:
                shutil.chown(config, OS_USER, OS_USER)
            self._spawn(name, ["patroni", str(config)])
            if name == "db1":
                self.wait_for(lambda: self.role("db1") == "primary", "db1 never led")

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.base / f"{name}.log", "w")
        self.processes[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, **_as_owner()
        )
        log.close()

    def status(self, name: str) -> dict[str, object]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.rest[name]}/patroni", timeout=1
            ) as r:
                return json.load(r)
        except (OSError, ValueError):
            return {}

    def role(self, name: str) -> str | None:
        found = self.status(name)
        if found.get("state") != "running":
            return None
        role = found.get("role")
        return "primary" if role in ("master", "primary") else str(role)

    def sync_standby(self) -> str | None:
        for name in self.nodes:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.rest[name]}/sync", timeout=1
                ) as response:
                    if response.status == 200:
                        return name
            except OSError:
                pass
        return None

    def wait_for(self, condition, what: str, timeout: float = 90) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                logs = {n: (self.base / f"{n}.log").read_text()[-2000:] for n in self.processes}
                raise AssertionError(f"{what}: {logs}")
            time.sleep(0.2)

    def url(self, database: str) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes.values())
        return f"postgresql://postgres@{hosts}/{database}"

    def kill(self, name: str) -> None:
        """The machine dies: its Patroni and its PostgreSQL, SIGKILLed."""
        self.processes[name].kill()
        self.processes[name].wait()
        self.nodes[name].kill()

    def close(self) -> None:
        # Patroni stops its PostgreSQL on SIGTERM; etcd goes last.
        for name in ("db2", "db1", "etcd"):
            process = self.processes.get(name)
            if process is None:
                continue
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for node in self.nodes.values():
            if node.running():
                node.kill()
