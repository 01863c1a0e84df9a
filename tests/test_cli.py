"""The command line: migrate, reset-db, clear errors, and the embedded default."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import psutil
import pytest
from helpers import free_port

import chatterwerks
from chatterwerks.config import ConfigError, Settings, redact_url
from chatterwerks.db import migration_files
from chatterwerks.realtime import APPLICATION_NAME

# Every numbered script in sql/, in order.
MIGRATIONS = [version for version, _, _ in migration_files()]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-m", "chatterwerks", *args],
        env={**os.environ, "CHATTERWERKS_LOG_LEVEL": "WARNING", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_serve(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "chatterwerks", "serve", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def embedded_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """No DATABASE_URL: serve starts the embedded PostgreSQL in data_dir."""
    env = {**os.environ, "CHATTERWERKS_DATA_DIR": str(data_dir), **extra}
    env.pop("DATABASE_URL", None)
    return env


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data directory for the embedded server, outside pytest's tmp_path:
    as root the wheel runs postgres as another user and opens the path's
    parents to it, and any concurrent pytest run resets
    /tmp/pytest-of-root to 0700 (postgres then fails: permission denied)."""
    with tempfile.TemporaryDirectory(prefix="chatterwerks-cli-") as tmp:
        yield Path(tmp) / "data"


def postgres_processes(pgdata: Path) -> list[psutil.Process]:
    """The live postgres processes serving pgdata."""
    found = []
    for process in psutil.process_iter(["name", "cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] == "postgres" and str(pgdata.resolve()) in cmdline:
            if process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(process)
    return found


def kill_postgres(pgdata: Path) -> None:
    """Cleans up after a failed test: no embedded server may outlive it."""
    for process in postgres_processes(pgdata):
        process.kill()


async def wait_healthy(session: aiohttp.ClientSession, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            async with session.get("/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if process.poll() is not None:
            raise AssertionError(f"serve exited: {process.communicate()}")
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)


async def test_migrate_twice_changes_nothing(database_url):
    # The test database is a copy of the migrated template: nothing left to apply.
    result = run_cli("migrate", env={"DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr
    assert "applied 0 migration(s)" in result.stdout
    conn = await asyncpg.connect(database_url)
    try:
        versions = [
            r["version"]
            for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
        ]
    finally:
        await conn.close()
    assert versions == MIGRATIONS


async def test_migrate_from_empty_and_concurrently(pg_server):
    from conftest import with_database

    name = f"cw_cli_{os.getpid()}"
    admin = await asyncpg.connect(pg_server.admin_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(pg_server.admin_url, name)
    try:
        # Two processes at once: the advisory lock makes them take turns.
        env = {**os.environ, "DATABASE_URL": url, "CHATTERWERKS_LOG_LEVEL": "WARNING"}
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "chatterwerks", "migrate"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=60) for p in procs]
        assert all(p.returncode == 0 for p in procs), outputs
        first, second = sorted(out for out, _ in outputs)
        assert first.startswith("applied 0 migration(s)")
        assert second.startswith(f"applied {len(MIGRATIONS)} migration(s)"), second
        conn = await asyncpg.connect(url)
        try:
            versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
            assert [r["version"] for r in versions] == MIGRATIONS
            assert await conn.fetchval("SELECT count(*) FROM channels WHERE kind = 'home'") == 1
            assert await conn.fetchval("SELECT count(*) FROM users WHERE username = 'otter'") == 1
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_reset_db_needs_yes_and_then_empties(database_url):
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("INSERT INTO users (username, password_hash) VALUES ('doomed', 'x')")
        refused = run_cli("reset-db", env={"DATABASE_URL": database_url})
        assert refused.returncode != 0 and "--yes" in refused.stderr
        assert await conn.fetchval("SELECT count(*) FROM users WHERE username = 'doomed'") == 1
    finally:
        await conn.close()
    done = run_cli("reset-db", "--yes", env={"DATABASE_URL": database_url})
    assert done.returncode == 0, done.stderr
    conn = await asyncpg.connect(database_url)
    try:
        assert [r["username"] for r in await conn.fetch("SELECT username FROM users")] == ["otter"]
        assert await conn.fetchval("SELECT password_hash FROM users") is None
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mysql://nope", "not a PostgreSQL URL"),
        ("postgresql://postgres@127.0.0.1:1/x", "cannot reach PostgreSQL"),
    ],
)
def test_bad_database_url_is_one_clear_line(url, fragment):
    result = run_cli("migrate", env={"DATABASE_URL": url})
    assert result.returncode == 1
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"chatterwerks {chatterwerks.__version__}\n"
    assert chatterwerks.__version__ == "0.1.0"


@pytest.mark.parametrize("workers", [1, 2])
def test_busy_port_is_one_clear_line_and_stops_the_embedded_server(data_dir, workers):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start_serve(
            embedded_env(data_dir, CHATTERWERKS_LOG_LEVEL="WARNING"),
            *("--port", str(port), "--workers", str(workers)),
        )
        try:
            _, stderr = process.communicate(timeout=120)
        finally:
            process.kill()
            kill_postgres(data_dir / "pgdata")
    assert process.returncode == 1, stderr
    assert stderr.strip() == (
        f"chatterwerks: cannot listen on 127.0.0.1:{port}: Address already in use"
    ), stderr
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()


async def test_embedded_server_stops_after_a_killed_serve(data_dir):
    """A serve killed with SIGKILL leaves its PID in the wheel's list of the
    embedded server's users; the next serve must still stop the server."""
    pgdata = data_dir / "pgdata"
    port = free_port()
    env = embedded_env(data_dir, CHATTERWERKS_LOG_LEVEL="WARNING")
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
            crashed = start_serve(env, "--port", str(port))
            await wait_healthy(session, crashed)
            crashed.kill()
            crashed.communicate(timeout=30)
            assert postgres_processes(pgdata)  # orphaned, still running

            process = start_serve(env, "--port", str(port))
            await wait_healthy(session, process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert not (pgdata / "postmaster.pid").exists()
        assert postgres_processes(pgdata) == []
    finally:
        kill_postgres(pgdata)


LOG_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: \S"
)


async def test_gunicorn_writes_nothing_outside_its_data_dir_and_logs_one_format(
    database_url, tmp_path
):
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "HOME": str(home),
        "DATABASE_URL": database_url,
        "CHATTERWERKS_DATA_DIR": str(tmp_path / "data"),
        "CHATTERWERKS_LOG_LEVEL": "INFO",
    }
    env.pop("XDG_RUNTIME_DIR", None)
    process = start_serve(env, "--port", str(port), "--workers", "2")
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
            await wait_healthy(session, process)
            async with session.get("/api/me") as response:
                assert response.status == 401
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert list(home.rglob("*")) == []
    lines = stderr.splitlines()
    assert any("Booting worker" in line for line in lines), stderr  # gunicorn's own
    assert any("listening on http://127.0.0.1" in line for line in lines), stderr  # ours
    assert [line for line in lines if not LOG_LINE.match(line)] == [], stderr
    assert stdout == ""


async def test_reset_db_refuses_while_a_server_is_connected(database_url, app, client):
    conn = await asyncpg.connect(database_url)
    try:

        async def listeners() -> int:
            return await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = $1",
                APPLICATION_NAME,
            )

        deadline = time.monotonic() + 30
        while await listeners() == 0:  # the hub connects in the background
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        await conn.execute("INSERT INTO users (username, password_hash) VALUES ('kept', 'x')")
        refused = await asyncio.to_thread(
            run_cli, "reset-db", "--yes", env={"DATABASE_URL": database_url}
        )
        assert refused.returncode == 1
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "1 server is connected" in refused.stderr, refused.stderr
        assert await conn.fetchval("SELECT count(*) FROM users WHERE username = 'kept'") == 1

        await client.close()  # the server stops; its listener disconnects
        deadline = time.monotonic() + 30
        while await listeners() > 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        done = await asyncio.to_thread(
            run_cli, "reset-db", "--yes", env={"DATABASE_URL": database_url}
        )
        assert done.returncode == 0, done.stderr
        assert await conn.fetchval("SELECT count(*) FROM users WHERE username = 'kept'") == 0
    finally:
        await conn.close()


def test_bad_setting_is_one_clear_line():
    result = run_cli("migrate", env={"PORT": "eighty"})
    assert result.returncode == 2
    assert result.stderr.strip() == "chatterwerks: PORT must be a number, got 'eighty'"


def test_settings_from_env():
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u:pw@db/chat",
            "PORT": "9000",
            "HOST": "0.0.0.0",
            "CHATTERWERKS_POOL_SIZE": "4",
            "CHATTERWERKS_DATA_DIR": "/srv/chat",
            "CHATTERWERKS_SECURE_COOKIES": "yes",
        }
    )
    assert (settings.port, settings.host, settings.pool_max_size) == (9000, "0.0.0.0", 4)
    assert str(settings.data_dir) == "/srv/chat" and settings.secure_cookies
    defaults = Settings.from_env({})
    assert (defaults.database_url, defaults.host, defaults.port) == (None, "127.0.0.1", 8080)
    for env in (
        {"PORT": "70000"},
        {"CHATTERWERKS_POOL_SIZE": "0"},
        {"CHATTERWERKS_SECURE_COOKIES": "maybe"},
    ):
        with pytest.raises(ConfigError):
            Settings.from_env(env)
    with pytest.raises(AttributeError):
        settings.port = 1  # frozen
    assert redact_url("postgresql://u:secret@db/chat") == "postgresql://u:***@db/chat"


async def test_embedded_default_keeps_data_across_restarts(data_dir: Path):
    """No DATABASE_URL: serve starts an embedded PostgreSQL in the data dir;
    an account made before a restart can log in after it."""
    port = free_port()
    env = {
        **os.environ,
        "CHATTERWERKS_DATA_DIR": str(data_dir),
        "CHATTERWERKS_ARGON2_TIME_COST": "1",
        "CHATTERWERKS_ARGON2_MEMORY_KIB": "64",
    }
    env.pop("DATABASE_URL", None)
    base = f"http://127.0.0.1:{port}"

    async def serve_and(action):
        process = subprocess.Popen(
            [sys.executable, "-m", "chatterwerks", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            async with aiohttp.ClientSession(base_url=base) as session:
                await wait_healthy(session, process)
                return await action(session)
        finally:
            process.terminate()
            output, _ = process.communicate(timeout=30)
            assert process.returncode == 0, output
            assert "embedded PostgreSQL" in output and f"http://127.0.0.1:{port}" in output

    async def register(session):
        async with session.post(
            "/api/register", json={"username": "keeper", "password": "password9"}
        ) as r:
            assert r.status == 201

    async def login(session):
        async with session.post(
            "/api/login", json={"username": "keeper", "password": "password9"}
        ) as r:
            assert r.status == 200
            token = (await r.json())["token"]
        async with session.get("/api/me", headers={"Authorization": f"Bearer {token}"}) as r:
            assert (await r.json())["user"]["username"] == "keeper"

    await serve_and(register)
    await serve_and(login)
    # The embedded server stopped with the last process that used it.
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()


async def test_installed_from_a_wheel_finds_its_sql_templates_and_static(pg_server, tmp_path):
    """`pip install .` (not -e): the wheel carries sql/, templates/ and static/
    as data files; the installed package migrates an empty database, renders
    its page and serves its script, without the checkout on its path."""
    # Built from a copy: setuptools builds in the source tree (build/, egg-info).
    source = tmp_path / "source"
    shutil.copytree(
        Path(__file__).resolve().parent.parent,
        source,
        ignore=shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__", "docs", "bench"),
    )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", tmp_path / "dist", source], check=True)
    [wheel] = (tmp_path / "dist").glob("chatterwerks-*.whl")
    prefix = tmp_path / "prefix"
    # --ignore-installed: without it pip first uninstalls the copy this test
    # suite runs from, prefix or not.
    install = [*pip, "install", "--no-deps", "--ignore-installed", "--prefix", prefix, wheel]
    subprocess.run(install, check=True)
    still_here = [sys.executable, "-c", "import chatterwerks"]
    subprocess.run(still_here, cwd=tmp_path, check=True)  # the suite's own copy
    [site_packages] = prefix.glob("lib/python*/site-packages")
    env = {**os.environ, "PYTHONPATH": str(site_packages), "CHATTERWERKS_LOG_LEVEL": "WARNING"}
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import chatterwerks; print(chatterwerks.__file__, chatterwerks.BASE_DIR)",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where[0].startswith(str(site_packages)), where
    assert Path(where[1]) == (prefix / "share" / "chatterwerks").resolve(), where

    from conftest import with_database

    name = f"cw_wheel_{os.getpid()}"
    admin = await asyncpg.connect(pg_server.admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
        env["DATABASE_URL"] = with_database(pg_server.admin_url, name)
        migrated = subprocess.run(
            [sys.executable, "-m", "chatterwerks", "migrate"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert migrated.returncode == 0, migrated.stderr
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "chatterwerks", "serve", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
                await wait_healthy(session, process)
                async with session.get("/") as page:
                    assert page.status == 200
                    [version] = re.findall(r"/static/([0-9a-f]{12})/app\.js", await page.text())
                # The entry module, and one it imports (the wheel carries them all).
                async with session.get(f"/static/{version}/app.js") as script:
                    assert script.status == 200 and '"./poll.js"' in await script.text()
                async with session.get(f"/static/{version}/poll.js") as script:
                    assert script.status == 200 and "/api/events" in await script.text()
        finally:
            process.terminate()
            output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
