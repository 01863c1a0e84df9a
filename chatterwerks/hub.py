"""The notification hub: one LISTEN connection per process, the waiters it
wakes, and what it learns from the notifications.

PostgreSQL sends a NOTIFY at commit (payloads in sql/queries/channels.sql).
The hub keeps the long-polls of this process in memory, keyed by channel and
by user, and wakes only those a notification concerns. A woken waiter reads
from its own cursor, so a missed notification can cost latency but never a
message: after a reconnect every waiter is woken to re-read.

While the listener is connected, the notifications also keep three caches
exact enough to answer most polls without the database: the newest seq of
each channel, each user's memberships (dropped at any change to them), and
the recent messages of each channel. A reconnect clears them all, since
notifications may have been missed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg

from chatterwerks.db import CONNECTION_ERRORS, QUERIES, DatabaseUnavailable, connect
from chatterwerks.shapes import message_json

log = logging.getLogger(__name__)

CHANNEL = "chatterwerks"
APPLICATION_NAME = "chatterwerks-listener"
# Adaptive batching of wake-ups (Hub._wake_soon), in seconds.
BURST_GAP = 0.005
CACHE_IDLE = 60.0  # seconds a channel's recent messages stay cached unread
LINGER = 0.050


class Waiter:
    """One parked long-poll."""

    __slots__ = ("_future", "_timer", "channel_ids", "pending", "user_id")

    def __init__(self, user_id: int, channel_ids: Iterable[int]) -> None:
        self.user_id = user_id
        self.channel_ids = tuple(channel_ids)
        self.pending = False  # woken since it last looked
        self._future: asyncio.Future[bool] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def parked(self) -> bool:
        """Armed and asleep: its read found nothing and it waits to be woken."""
        return self._future is not None and not self._future.done()

    def wake(self) -> None:
        self.pending = True
        if self._future is not None and not self._future.done():
            self._future.set_result(True)

    def _expire(self) -> None:
        if self._future is not None and not self._future.done():
            self._future.set_result(False)

    def arm(self, timeout: float) -> asyncio.Future[bool]:
        """A future that turns True when woken, False after timeout seconds.
        One future and one timer handle, and no coroutine of its own: a
        parked poll should weigh little when ten thousand are parked."""
        loop = asyncio.get_running_loop()
        self._future = loop.create_future()
        self._timer = loop.call_later(timeout, self._expire)
        return self._future

    def disarm(self) -> bool:
        """Ends a wait; True if the waiter was woken since it last looked."""
        if self._timer is not None:
            self._timer.cancel()
        self._future = self._timer = None
        woken, self.pending = self.pending, False
        return woken


@dataclass(frozen=True, slots=True)
class Membership:
    subscription_id: int
    joined_seq: int
    last_read_seq: int


UserState = dict[int, Membership]  # channel id -> the user's membership


class CachedMessage:
    """A message, serialised once as JSON for every answer that carries it."""

    __slots__ = ("json", "seq")

    def __init__(self, seq: int, json_text: str) -> None:
        self.seq = seq
        self.json = json_text


class MessageCache:
    """Recent messages per channel, so one message that wakes N waiters in this
    process costs at most one database read, not N. Messages never change
    once committed, so a cached message is never stale. Bounded by messages
    per channel and by bytes in all (least recently used channels go first)."""

    def __init__(
        self, pool: asyncpg.Pool, per_channel: int = 64, max_bytes: int = 4 * 1024 * 1024
    ) -> None:
        self._pool = pool
        self._per_channel = per_channel
        self._max_bytes = max_bytes
        # channel id -> messages with consecutive seqs, oldest first
        self._recent: OrderedDict[int, list[CachedMessage]] = OrderedDict()
        self._sizes: dict[int, int] = {}  # channel id -> bytes of JSON held
        self._used: dict[int, float] = {}  # channel id -> when last read or extended
        self._bytes = 0
        self._loads: dict[tuple[int, int, int], asyncio.Task[list[CachedMessage]]] = {}
        self.database_reads = 0  # for tests and the benchmark

    def holds(self, channel_id: int) -> bool:
        return channel_id in self._recent

    def cached(self, channel_id: int, after: int, upto: int) -> list[CachedMessage] | None:
        """The cached messages after `after`, up to `upto` (or fewer, if the
        cache ends sooner); None if the cache does not hold seq after + 1."""
        recent = self._recent.get(channel_id)
        if not recent or not recent[0].seq <= after + 1 <= recent[-1].seq:
            return None
        self._touch(channel_id)
        first = recent[0].seq
        return recent[after + 1 - first : upto + 1 - first]

    def clear(self) -> None:
        self._recent.clear()
        self._sizes.clear()
        self._used.clear()
        self._bytes = 0

    def _touch(self, channel_id: int) -> None:
        self._used[channel_id] = time.monotonic()
        self._recent.move_to_end(channel_id)

    def forget_idle(self, idle: float) -> None:
        """Drops the channels nobody here has read for `idle` seconds: the cache
        holds what is being read now, not all that was ever said."""
        cutoff = time.monotonic() - idle
        for channel_id in list(self._recent):  # least recently used first
            if self._used[channel_id] > cutoff:
                break
            self._drop(channel_id)

    def _drop(self, channel_id: int) -> None:
        del self._recent[channel_id], self._used[channel_id]
        self._bytes -= self._sizes.pop(channel_id)

    async def range(self, channel_id: int, after: int, upto: int) -> list[CachedMessage]:
        """Messages with after < seq <= upto, oldest first."""
        if upto <= after:
            return []
        cached = self.cached(channel_id, after, upto)
        if cached is not None and (cached and cached[-1].seq == upto):
            return cached
        key = (channel_id, after, upto)
        load = self._loads.get(key)
        if load is None:
            load = asyncio.create_task(self._load(channel_id, after, upto))
            self._loads[key] = load
            load.add_done_callback(lambda _: self._loads.pop(key, None))
        # Shielded: one waiter that goes away must not cancel the others' read.
        return await asyncio.shield(load)

    async def _load(self, channel_id: int, after: int, upto: int) -> list[CachedMessage]:
        self.database_reads += 1
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(QUERIES.messages_range, channel_id, after, upto)
        messages = [CachedMessage(row["seq"], json.dumps(message_json(row))) for row in rows]
        self._remember(channel_id, messages)
        return messages

    def add(self, channel_id: int, message: CachedMessage) -> None:
        """A message that arrived in its NOTIFY payload."""
        self._remember(channel_id, [message])

    def newest(self, channel_id: int) -> int | None:
        recent = self._recent.get(channel_id)
        return recent[-1].seq if recent else None

    def _remember(self, channel_id: int, messages: list[CachedMessage]) -> None:
        if not messages:
            return
        recent = self._recent.get(channel_id)
        if recent and messages[0].seq == recent[-1].seq + 1:
            # The usual case, the next messages: bookkeeping in O(new ones).
            recent.extend(messages)
            size = self._sizes[channel_id] + sum(len(message.json) for message in messages)
            overflow = len(recent) - self._per_channel
            if overflow > 0:
                size -= sum(len(message.json) for message in recent[:overflow])
                del recent[:overflow]
        else:
            if (
                recent
                and messages[0].seq <= recent[-1].seq + 1
                and messages[-1].seq >= recent[0].seq - 1
            ):
                # The runs overlap or touch (loads finish in any order): merge.
                by_seq = {message.seq: message for message in recent}
                by_seq.update((message.seq, message) for message in messages)
                recent = [by_seq[seq] for seq in range(min(by_seq), max(by_seq) + 1)]
            elif not recent or messages[-1].seq > recent[-1].seq:
                recent = list(messages)  # a gap between them: keep the newer run
            else:
                return  # an older run than the one held: not worth the swap
            del recent[: -self._per_channel]
            size = sum(len(message.json) for message in recent)
        self._bytes += size - self._sizes.get(channel_id, 0)
        self._sizes[channel_id] = size
        self._recent[channel_id] = recent
        self._touch(channel_id)
        while self._bytes > self._max_bytes and len(self._recent) > 1:
            self._drop(next(iter(self._recent)))


class Hub:
    """The LISTEN connection of this process, its waiters and its caches."""

    def __init__(
        self,
        database_url: str,
        pool: asyncpg.Pool,
        *,
        on_sessions_changed: Callable[[int | None], None] = lambda _user_id: None,
        ping_interval: float = 5.0,
        ping_timeout: float = 3.0,
        max_backoff: float = 5.0,
        max_users: int = 50_000,
    ) -> None:
        self._url = database_url
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._max_backoff = max_backoff
        self._max_users = max_users
        # Told of a user's sessions ending (user id), or None: forget them all.
        self._on_sessions_changed = on_sessions_changed
        self._by_channel: dict[int, set[Waiter]] = {}
        self._by_user: dict[int, set[Waiter]] = {}
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._prefetching: dict[int, int] = {}  # channel id -> prefetches in flight
        self._wake_channels: set[int] = set()
        self._last_message_at = 0.0
        self._last_gap = float("inf")
        self._wake_handle: asyncio.Handle | asyncio.TimerHandle | None = None
        # The caches; valid only while connected.
        self.channel_seqs: dict[int, int] = {}
        self._user_states: OrderedDict[int, UserState] = OrderedDict()
        self._user_versions: dict[int, int] = {}
        self.cache = MessageCache(pool)
        self.closing = False
        self.connected = asyncio.Event()
        self.generation = 0  # one per connection; a cache read in an older one is void
        self.connections_made = 0

    # -- waiters ---------------------------------------------------------

    @property
    def waiter_count(self) -> int:
        return sum(len(waiters) for waiters in self._by_user.values())

    @property
    def parked_count(self) -> int:
        """Waiters asleep; the others are still reading (for tests)."""
        return sum(waiter.parked for waiters in self._by_user.values() for waiter in waiters)

    def polls_of(self, user_id: int) -> int:
        return len(self._by_user.get(user_id, ()))

    def register(self, user_id: int, channel_ids: Iterable[int]) -> Waiter:
        """Parks a waiter. Register BEFORE reading: a commit between the read
        and the wait still finds it. Always unregister (try/finally)."""
        waiter = Waiter(user_id, channel_ids)
        self._by_user.setdefault(user_id, set()).add(waiter)
        for channel_id in waiter.channel_ids:
            self._by_channel.setdefault(channel_id, set()).add(waiter)
        return waiter

    def unregister(self, waiter: Waiter) -> None:
        _discard(self._by_user, waiter.user_id, waiter)
        for channel_id in waiter.channel_ids:
            _discard(self._by_channel, channel_id, waiter)

    def wake_all(self) -> None:
        """Every waiter re-reads from its cursor (after a reconnect, at shutdown)."""
        for waiters in self._by_user.values():
            for waiter in waiters:
                waiter.wake()

    # -- the caches ------------------------------------------------------

    def user_state(self, user_id: int) -> UserState | None:
        if not self.connected.is_set():
            return None
        state = self._user_states.get(user_id)
        if state is not None:
            self._user_states.move_to_end(user_id)
        return state

    def snapshot_version(self, user_id: int) -> tuple[int, int]:
        """Take before a database read whose result is to be remembered."""
        return self.generation, self._user_versions.get(user_id, 0)

    def remember(
        self,
        user_id: int,
        version: tuple[int, int],
        state: UserState,
        last_seqs: dict[int, int],
    ) -> None:
        """Caches a user's memberships and their channels' newest seqs, read
        from the database, unless something changed since the read began."""
        if not self.connected.is_set() or version != self.snapshot_version(user_id):
            return
        for channel_id, seq in last_seqs.items():
            if seq > self.channel_seqs.get(channel_id, -1):
                self.channel_seqs[channel_id] = seq
        self._user_states[user_id] = state
        self._user_states.move_to_end(user_id)
        while len(self._user_states) > self._max_users:
            self._user_states.popitem(last=False)

    def prefetching(self, channel_id: int) -> bool:
        return channel_id in self._prefetching

    def _clear_caches(self) -> None:
        self.channel_seqs.clear()
        self._user_states.clear()
        self._user_versions.clear()
        self.cache.clear()
        self._on_sessions_changed(None)

    # -- notifications ---------------------------------------------------

    def _on_notification(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        kind, _, rest = payload.partition(":")
        try:
            if kind == "M":
                channel_text, seq_text, message_json_text = rest.split(":", 2)
                channel_id, seq = int(channel_text), int(seq_text)
                # Kept only where someone here reads that channel, or lately did.
                if channel_id in self._by_channel or self.cache.holds(channel_id):
                    self.cache.add(channel_id, CachedMessage(seq, message_json_text))
                self._message_committed(channel_id, seq, prefetch=False)
            elif kind == "m":
                channel_text, _, seq_text = rest.partition(":")
                self._message_committed(int(channel_text), int(seq_text), prefetch=True)
            elif kind == "u":
                user_id = int(rest)
                # Its memberships or read markers changed: forget them, and make
                # any read that began before now unfit to be remembered.
                self._user_versions[user_id] = self._user_versions.get(user_id, 0) + 1
                self._user_states.pop(user_id, None)
                for waiter in self._by_user.get(user_id, ()):
                    waiter.wake()
            elif kind == "s":
                self._on_sessions_changed(int(rest))
            else:
                log.warning("ignoring notification %r", payload[:100])
        except ValueError:
            log.warning("ignoring malformed notification %r", payload[:100])

    def _message_committed(self, channel_id: int, seq: int, *, prefetch: bool) -> None:
        if seq > self.channel_seqs.get(channel_id, -1):
            self.channel_seqs[channel_id] = seq
        if channel_id not in self._by_channel:
            return
        if not prefetch:  # the message came in its payload: wake its readers
            self._wake_soon(channel_id)
            return
        # Read the message once for every waiter here, then wake them.
        self._prefetching[channel_id] = self._prefetching.get(channel_id, 0) + 1
        task = asyncio.create_task(self.cache.range(channel_id, seq - 1, seq))
        task.add_done_callback(lambda done: self._prefetched(channel_id, done))

    def _wake_soon(self, channel_id: int) -> None:
        """Wakes a channel's waiters on the next turn of the loop, once for all
        the notifications read in this turn. Under a burst of messages (less
        than BURST_GAP apart) it lingers up to LINGER first, so that one answer
        carries several messages: fewer answers and re-polls per message is
        what lets throughput grow. At a conversational pace nothing waits."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._last_gap, self._last_message_at = now - self._last_message_at, now
        burst = self.bursting()
        self._wake_channels.add(channel_id)
        if self._wake_handle is None:
            if burst:
                self._wake_handle = loop.call_later(LINGER, self._wake_pending)
            else:
                self._wake_handle = loop.call_soon(self._wake_pending)

    def bursting(self) -> bool:
        """The last two messages came less than BURST_GAP apart, and lately."""
        since = asyncio.get_running_loop().time() - self._last_message_at
        return self._last_gap < BURST_GAP and since < 10 * BURST_GAP

    def _wake_pending(self) -> None:
        channels, self._wake_channels, self._wake_handle = self._wake_channels, set(), None
        for channel_id in channels:
            for waiter in self._by_channel.get(channel_id, ()):
                waiter.wake()

    def _prefetched(self, channel_id: int, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.warning("prefetch of channel %d failed: %r", channel_id, task.exception())
        left = self._prefetching.pop(channel_id) - 1
        if left:
            self._prefetching[channel_id] = left
        for waiter in self._by_channel.get(channel_id, ()):
            waiter.wake()

    # -- the connection --------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chatterwerks-hub")

    async def close(self) -> None:
        """Answers every parked poll at once, then drops the connection."""
        self.closing = True
        self.wake_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

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
                if self.connections_made > 1:
                    log.info("listener reconnected; waking every waiter to re-read")
                failures = 0
                # Whatever was notified while we were not listening is in the
                # database, not in the caches: start them afresh.
                self.generation += 1
                self._clear_caches()
                self.connected.set()
                self.wake_all()
                await self._watch(conn)
            except CONNECTION_ERRORS as exc:
                log.warning("listener connection lost: %r", exc)
            finally:
                self.connected.clear()
                self.generation += 1
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
            self.cache.forget_idle(CACHE_IDLE)
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
