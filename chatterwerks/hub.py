"""The notification hub: one LISTEN connection per process, and the waiters it wakes.

PostgreSQL sends a NOTIFY at commit (payloads in sql/queries/channels.sql).
The hub keeps the long-polls of this process in memory, keyed by channel and
by user, and wakes only those a notification concerns. A woken waiter reads
the database (or the shared MessageCache) from its own cursor, so a missed
notification can cost latency but never a message: after a reconnect every
waiter is woken to re-read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

import asyncpg

from chatterwerks.db import CONNECTION_ERRORS, QUERIES, DatabaseUnavailable, connect
from chatterwerks.shapes import message_json

log = logging.getLogger(__name__)

CHANNEL = "chatterwerks"
APPLICATION_NAME = "chatterwerks-listener"


class Waiter:
    """One parked long-poll: what woke it since it last looked."""

    __slots__ = ("_future", "channel_ids", "full", "notified", "pending", "user_id")

    def __init__(self, user_id: int, channel_ids: Iterable[int]) -> None:
        self.user_id = user_id
        self.channel_ids = tuple(channel_ids)
        # full: re-read everything from the database (a user-level change, a
        # reconnect, shutdown); notified: channel id -> highest seq announced.
        self.full = False
        self.notified: dict[int, int] = {}
        self.pending = False
        self._future: asyncio.Future[None] | None = None

    def wake(self) -> None:
        self.pending = True
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    async def wait(self, timeout: float) -> bool:
        """Sleeps until woken (True) or timeout seconds pass (False)."""
        if self.pending:
            return True
        if timeout <= 0:
            return False
        self._future = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._future, timeout)
        except TimeoutError:
            return self.pending
        finally:
            self._future = None
        return True

    def take(self) -> tuple[bool, dict[int, int]]:
        """What woke this waiter, clearing it: (full re-read needed, {channel: seq})."""
        full, notified = self.full, self.notified
        self.full, self.notified, self.pending = False, {}, False
        return full, notified


class MessageCache:
    """Recent messages per channel, so one message that wakes N waiters in this
    process costs one database read, not N. Messages never change once
    committed, so a cached message is never stale."""

    def __init__(self, pool: asyncpg.Pool, per_channel: int = 256, channels: int = 2048) -> None:
        self._pool = pool
        self._per_channel = per_channel
        self._max_channels = channels
        # channel id -> messages with consecutive seqs, oldest first
        self._recent: OrderedDict[int, list[dict[str, Any]]] = OrderedDict()
        self._loads: dict[tuple[int, int, int], asyncio.Task[list[dict[str, Any]]]] = {}
        self.database_reads = 0  # for tests and the benchmark

    async def range(self, channel_id: int, after: int, upto: int) -> list[dict[str, Any]]:
        """Messages with after < seq <= upto, oldest first."""
        if upto <= after:
            return []
        cached = self._slice(channel_id, after, upto)
        if cached is not None:
            return cached
        key = (channel_id, after, upto)
        load = self._loads.get(key)
        if load is None:
            load = asyncio.create_task(self._load(channel_id, after, upto))
            self._loads[key] = load
            load.add_done_callback(lambda _: self._loads.pop(key, None))
        # Shielded: one waiter that goes away must not cancel the others' read.
        return await asyncio.shield(load)

    def _slice(self, channel_id: int, after: int, upto: int) -> list[dict[str, Any]] | None:
        recent = self._recent.get(channel_id)
        if not recent or recent[0]["seq"] > after + 1 or recent[-1]["seq"] < upto:
            return None
        self._recent.move_to_end(channel_id)
        first = recent[0]["seq"]
        return recent[after + 1 - first : upto + 1 - first]

    async def _load(self, channel_id: int, after: int, upto: int) -> list[dict[str, Any]]:
        self.database_reads += 1
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(QUERIES.messages_range, channel_id, after, upto)
        messages = [message_json(row) for row in rows]
        self._remember(channel_id, messages)
        return messages

    def _remember(self, channel_id: int, messages: list[dict[str, Any]]) -> None:
        if not messages:
            return
        recent = self._recent.get(channel_id)
        if recent and recent[0]["seq"] <= messages[0]["seq"] <= recent[-1]["seq"] + 1:
            # Overlaps or extends what we have: keep one consecutive run.
            keep = messages[0]["seq"] - recent[0]["seq"]
            recent = recent[:keep] + messages
        else:
            recent = list(messages)
        self._recent[channel_id] = recent[-self._per_channel :]
        self._recent.move_to_end(channel_id)
        while len(self._recent) > self._max_channels:
            self._recent.popitem(last=False)


class Hub:
    """The LISTEN connection of this process and its waiters."""

    def __init__(
        self,
        database_url: str,
        pool: asyncpg.Pool,
        *,
        ping_interval: float = 5.0,
        ping_timeout: float = 3.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._url = database_url
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._max_backoff = max_backoff
        self._by_channel: dict[int, set[Waiter]] = {}
        self._by_user: dict[int, set[Waiter]] = {}
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self.cache = MessageCache(pool)
        self.closing = False
        self.connected = asyncio.Event()
        self.connections_made = 0  # for tests: a reconnect makes it 2

    # -- waiters ---------------------------------------------------------

    @property
    def waiter_count(self) -> int:
        return sum(len(waiters) for waiters in self._by_user.values())

    def polls_of(self, user_id: int) -> int:
        return len(self._by_user.get(user_id, ()))

    def register(self, user_id: int, channel_ids: Iterable[int]) -> Waiter:
        """Parks a waiter; register BEFORE reading the database (no lost wake-ups)."""
        waiter = Waiter(user_id, channel_ids)
        self._by_user.setdefault(user_id, set()).add(waiter)
        for channel_id in waiter.channel_ids:
            self._by_channel.setdefault(channel_id, set()).add(waiter)
        if self.closing:
            waiter.full = True
            waiter.wake()
        return waiter

    @contextlib.contextmanager
    def waiting(self, user_id: int, channel_ids: Iterable[int]) -> Iterator[Waiter]:
        """A registered waiter for the length of a long-poll."""
        waiter = self.register(user_id, channel_ids)
        try:
            yield waiter
        finally:
            self.unregister(waiter)

    def unregister(self, waiter: Waiter) -> None:
        _discard(self._by_user, waiter.user_id, waiter)
        for channel_id in waiter.channel_ids:
            _discard(self._by_channel, channel_id, waiter)

    def wake_all(self) -> None:
        """Every waiter re-reads from its cursor (after a reconnect, at shutdown)."""
        for waiters in self._by_user.values():
            for waiter in waiters:
                waiter.full = True
                waiter.wake()

    def _on_notification(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        kind, _, rest = payload.partition(":")
        try:
            if kind == "m":
                channel_text, _, seq_text = rest.partition(":")
                channel_id, seq = int(channel_text), int(seq_text)
                for waiter in self._by_channel.get(channel_id, ()):
                    if seq > waiter.notified.get(channel_id, 0):
                        waiter.notified[channel_id] = seq
                    waiter.wake()
            elif kind == "u":
                for waiter in self._by_user.get(int(rest), ()):
                    waiter.full = True
                    waiter.wake()
            else:
                log.warning("ignoring notification %r", payload)
        except ValueError:
            log.warning("ignoring malformed notification %r", payload)

    # -- the connection --------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chatterwerks-hub")

    async def close(self) -> None:
        """Answers every parked poll at once, then drops the connection."""
        self.closing = True
        self.wake_all()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                conn = await connect(
                    self._url, server_settings={"application_name": APPLICATION_NAME}
                )
            except DatabaseUnavailable as exc:
                failures += 1
                delay = min(self._max_backoff, 0.1 * 2**failures) * random.uniform(0.5, 1.0)
                log.warning("listener cannot connect (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            try:
                self._lost.clear()
                conn.add_termination_listener(lambda _conn: self._lost.set())
                await conn.add_listener(CHANNEL, self._on_notification)
                self.connections_made += 1
                if failures or self.connections_made > 1:
                    log.info("listener reconnected; waking every waiter to re-read")
                failures = 0
                self.connected.set()
                # Anything notified while we were not listening is in the database.
                self.wake_all()
                await self._watch(conn)
            except CONNECTION_ERRORS as exc:
                log.warning("listener connection lost: %r", exc)
            finally:
                self.connected.clear()
                conn.terminate()
            failures += 1
            await asyncio.sleep(min(self._max_backoff, 0.05 * 2**failures))

    async def _watch(self, conn: asyncpg.Connection) -> None:
        """Returns when the connection is dead: terminated, or a ping timed out."""
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), self._ping_interval)
                return
            except TimeoutError:
                pass
            try:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), self._ping_timeout)
            except (TimeoutError, *CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                log.warning("listener ping failed: %r", exc)
                return


def _discard(index: dict[int, set[Waiter]], key: int, waiter: Waiter) -> None:
    waiters = index.get(key)
    if waiters is not None:
        waiters.discard(waiter)
        if not waiters:
            del index[key]
