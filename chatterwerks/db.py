"""Database access: the named queries from sql/, the pool's lifetime, migrations."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from chatterwerks import BASE_DIR

log = logging.getLogger(__name__)

SQL_DIR = BASE_DIR / "sql"
QUERY_DIR = SQL_DIR / "queries"
# Any constant will do; it only has to be the same in every process.
MIGRATION_LOCK_ID = 0x43574D49  # "CWMI"
_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_MIGRATION_FILE = re.compile(r"^(\d{3})_[\w-]+\.sql$")


class DatabaseUnavailable(Exception):
    """PostgreSQL cannot be reached (or the URL is wrong); the message says why."""


class Queries:
    """The named SQL statements of sql/queries/*.sql, as attributes."""

    def __init__(self, directory: Path = QUERY_DIR) -> None:
        self._sql: dict[str, str] = {}
        for path in sorted(directory.glob("*.sql")):
            text = path.read_text()
            parts = _NAME_LINE.split(text)
            # parts = [preamble, name1, body1, name2, body2, ...]
            for name, body in zip(parts[1::2], parts[2::2], strict=True):
                if name in self._sql:
                    raise ValueError(f"query {name!r} is defined twice ({path.name})")
                self._sql[name] = body.strip()

    def __getattr__(self, name: str) -> str:
        try:
            return self._sql[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r} in {QUERY_DIR}") from None


QUERIES = Queries()

# Errors that mean "the database is not there", as opposed to a bad query.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # connection lost, never made, refused
    asyncpg.OperatorInterventionError,  # shutting down, starting up, terminated
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    # What asyncpg raises when it releases a connection that broke mid-query;
    # also TargetServerAttributeNotMatched: no host of the URL is the primary
    # (mid-failover: the old one is gone, the standby not yet promoted).
    asyncpg.InternalClientError,
    # A write reached a host in recovery: through a proxy (PgBouncer, HAProxy)
    # still pointing at a demoted primary. The pool's connections are then
    # expired (errors.py), so the next ones find the primary again.
    asyncpg.ReadOnlySQLTransactionError,
    # A login refused while a pool reconnects (a switchover, a proxy whose
    # auth query cannot reach the database): a 503 to retry, not a 500.
    # connect() below still names it as what it is at start-up.
    asyncpg.InvalidAuthorizationSpecificationError,
)


def session_attrs(url: str) -> dict[str, str]:
    """Every connection of ours writes, or LISTENs (which a standby refuses):
    with several hosts in the URL it must land on the primary. libpq's and
    asyncpg's default is any host; ours is read-write, unless the URL or
    PGTARGETSESSIONATTRS says otherwise."""
    try:
        query = urlsplit(url).query
    except ValueError:
        return {}  # asyncpg explains the URL's fault
    if "target_session_attrs" in query or os.environ.get("PGTARGETSESSIONATTRS"):
        return {}
    return {"target_session_attrs": "read-write"}


async def connect(url: str, **kwargs: object) -> asyncpg.Connection:
    """One connection, with the failure explained in one line."""
    try:
        return await asyncpg.connect(url, timeout=10, **session_attrs(url), **kwargs)
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        raise DatabaseUnavailable(f"PostgreSQL refused the login: {exc}") from None
    except asyncpg.InvalidCatalogNameError as exc:
        raise DatabaseUnavailable(f"no such database: {exc}") from None
    except (ValueError, asyncpg.ClientConfigurationError) as exc:
        raise DatabaseUnavailable(f"DATABASE_URL is not a PostgreSQL URL: {exc}") from None
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable(f"cannot reach PostgreSQL: {exc or type(exc).__name__}") from None


async def create_pool(
    url: str,
    min_size: int,
    max_size: int,
    *,
    pgbouncer: bool = False,
    on_connect: Callable[[], None] | None = None,
) -> asyncpg.Pool:
    """A pool whose first connection has been tried, so a bad URL fails at start.

    on_connect runs whenever the pool makes a connection: the database
    answers (again), which the hub's listener wants to know at once.
    pgbouncer: the URL is a PgBouncer in transaction mode (docs/deployment.md)."""
    await (await connect(url)).close()
    if pgbouncer:
        # A server connection is ours for one transaction only: a named
        # prepared statement would be missing (or another's) on the next.
        # PgBouncer also refuses startup parameters it does not know, like
        # plan_cache_mode, which unnamed statements ignore anyway: each is
        # planned at its execution (the cost measured below).
        per_connection: dict[str, object] = {"statement_cache_size": 0}
    else:
        # Every statement here finds rows by key, where a generic plan is as
        # good as a custom one. PostgreSQL would plan the sending statement
        # (ten CTEs) anew at each execution, which cost more than running it:
        # measured 1.05 ms a send with custom plans, 0.52 ms with generic.
        per_connection = {"server_settings": {"plan_cache_mode": "force_generic_plan"}}

    async def connected(_conn: asyncpg.Connection) -> None:
        if on_connect is not None:
            on_connect()

    try:
        return await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            # Connecting (to every host of the URL in turn) gives up after 5 s.
            timeout=5,
            # A query that runs this long is a fault, not a workload.
            command_timeout=30,
            reset=_rollback_if_needed,
            init=connected,
            **session_attrs(url),
            **per_connection,
        )
    except asyncpg.ProtocolViolationError as exc:
        if "startup parameter" not in str(exc):
            raise
        raise DatabaseUnavailable(
            f"{exc}: is DATABASE_URL a PgBouncer? Then set CHATTERWERKS_PGBOUNCER=1"
        ) from None


async def _rollback_if_needed(conn: asyncpg.Connection) -> None:
    """Pool reset: asyncpg's default (RESET ALL, UNLISTEN *, CLOSE ALL, ...) is a
    round trip per release, undoing state this app never sets; the LISTEN
    connection is not pooled. A transaction left open is still rolled back."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def migration_files(directory: Path = SQL_DIR) -> list[tuple[int, str, Path]]:
    """The numbered schema scripts, in order: (version, name, path)."""
    found = []
    for path in directory.glob("*.sql"):
        match = _MIGRATION_FILE.match(path.name)
        if match:
            found.append((int(match.group(1)), path.stem, path))
    found.sort()
    versions = [version for version, _, _ in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations share a number in {directory}")
    return found


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Applies the scripts not yet applied, each in its own transaction.

    An advisory lock makes concurrent runs (two workers, a release step) take
    turns; the second finds nothing left to do. Returns the names applied.
    """
    applied_now = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now()
               )"""
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, path in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            log.info("applied migration %s", name)
            applied_now.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied_now


async def reset(conn: asyncpg.Connection) -> list[str]:
    """Drops every table of the public schema and builds it again from sql/."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return await migrate(conn)


async def migrate_url(url: str) -> list[str]:
    conn = await connect(url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
