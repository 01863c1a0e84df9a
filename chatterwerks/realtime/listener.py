"""The one LISTEN connection of a process, kept up whatever fails."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

import asyncpg

from chatterwerks.db import CONNECTION_ERRORS, DatabaseUnavailable, connect

log = logging.getLogger(__name__)

CHANNEL = "chatterwerks"
APPLICATION_NAME = "chatterwerks-listener"

Connect = Callable[..., Awaitable[asyncpg.Connection]]


class Listener:
    """Connects, LISTENs, and watches the connection (a termination callback
    and a ping); on any failure (a dropped connection, but also an error from
    the server such as a LISTEN refused in recovery, or a bug of ours) it
    logs, backs off with jitter and starts again, until cancelled.

    on_connected runs once notifications flow; on_lost once they may not.

    wake() cuts a backoff short: whoever sees the database answer again (a
    new pool connection) calls it, so delivery resumes at once rather than
    up to max_backoff later. The URL's hosts are tried for a read-write one
    (db.connect): LISTEN on a standby would hear nothing, and is refused."""

    def __init__(
        self,
        url: str,
        on_notification: Callable[[str], None],
        on_connected: Callable[[], None],
        on_lost: Callable[[], None],
        *,
        on_ping: Callable[[], None] = lambda: None,
        ping_interval: float = 5.0,
        ping_timeout: float = 3.0,
        max_backoff: float = 5.0,
        connect: Connect = connect,
    ) -> None:
        self._url = url
        self._on_notification = on_notification
        self._on_connected = on_connected
        self._on_lost = on_lost
        self._on_ping = on_ping
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._max_backoff = max_backoff
        self._connect = connect
        self.connections_made = 0
        self.failures = 0  # in a row
        self.server_pid: int | None = None  # the backend of the live connection
        self._woken = asyncio.Event()

    def wake(self) -> None:
        """The database answers again: retry now if backing off (else nothing)."""
        if self.failures:
            self._woken.set()

    async def run(self) -> None:
        while True:
            conn = None
            try:
                conn = await self._connect(
                    self._url, server_settings={"application_name": APPLICATION_NAME}
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._notified)
                self.connections_made += 1
                self.failures = 0
                self.server_pid = conn.get_server_pid()
                self._woken.clear()
                if self.connections_made > 1:
                    log.info("listener reconnected; every waiter re-reads")
                self._on_connected()
                await self._watch(conn, lost)
            except asyncio.CancelledError:
                raise
            except (DatabaseUnavailable, *CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                log.warning("listener: %s", _describe(exc))
            except Exception as exc:
                # Not the database's doing: still no reason to stop delivering.
                log.exception("listener failed: %s", _describe(exc))
            finally:
                if conn is not None:
                    self._on_lost()
                    conn.terminate()
            self.failures += 1
            delay = min(self._max_backoff, 0.05 * 2**self.failures) * random.uniform(0.5, 1.0)
            log.info("listener retrying in %.2fs", delay)
            try:
                # A wake during the failed attempt counts too: retry at once.
                await asyncio.wait_for(self._woken.wait(), delay)
                log.info("listener: the database answers again; retrying now")
            except TimeoutError:
                pass
            self._woken.clear()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._on_notification(payload)

    async def _watch(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Returns when the connection is dead: terminated, or a ping failed."""
        while True:
            try:
                await asyncio.wait_for(lost.wait(), self._ping_interval)
                log.warning("listener connection lost")
                return
            except TimeoutError:
                pass
            self._on_ping()
            try:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), self._ping_timeout)
            except TimeoutError:
                log.warning("listener ping timed out")
                return


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
