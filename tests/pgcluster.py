"""PostgreSQL clusters of a test's own, built from the machine's PostgreSQL 15
binaries: a primary, a synchronous standby made by pg_basebackup -R, and
PgBouncer in front of a database. Run as the `postgres` OS user when the
tests run as root (initdb and postgres refuse root). Everything lives in one
temporary directory, removed (servers stopped first) by close()."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
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
        self.bouncer: subprocess.Popen | None = None

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
        ini = self.base / "pgbouncer.ini"
        users = self.base / "userlist.txt"
        users.write_text(f'"{user}" ""\n')
        # The embedded server's URL names its socket directory: ?host=/dir
        host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
        server = f"host={host} port={parts.port or 5432} dbname={database} user={user}"
        if parts.password:
            server += f" password={parts.password}"
        self.bouncer_log = self.base / "pgbouncer.log"
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
        self.bouncer = subprocess.Popen(
            [PGBOUNCER, str(ini)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            **_as_owner(owner),
        )
        return f"postgresql://{user}@127.0.0.1:{listen}/{database}"

    def close(self) -> None:
        try:
            if self.bouncer is not None:
                self.bouncer.terminate()
                try:
                    self.bouncer.wait(10)
                except subprocess.TimeoutExpired:
                    self.bouncer.kill()
                    self.bouncer.wait()
            for node in self.nodes:
                if node.running():
                    try:
                        node.stop("immediate")
                    except (RuntimeError, subprocess.TimeoutExpired):
                        node.kill()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
