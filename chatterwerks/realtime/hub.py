"""The hub: delivery's one door. It owns the listener, the waiters and the
view, turns notifications into cache updates and wake-ups, and tracks every
task it starts.

A woken waiter reads from its own cursor, so a missed notification can cost
latency but never a message: after a reconnect every waiter is woken to
re-read. Payloads are described in sql/queries/channels.sql.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg

from chatterwerks.db import connect
from chatterwerks.realtime.cache import CachedMessage, MessageCache
from chatterwerks.realtime.listener import APPLICATION_NAME, Connect, Listener
from chatterwerks.realtime.presence import Presence
from chatterwerks.realtime.view import Cursor, View
from chatterwerks.realtime.waiters import LINGER, Waiter, Waiters
from chatterwerks.store.live import STATES

__all__ = ["APPLICATION_NAME", "Hub"]

log = logging.getLogger(__name__)

CACHE_IDLE = 60.0  # seconds a channel's recent messages stay cached unread


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
        connect: Connect = connect,
        presence_grace: float = 5.0,
        presence_sweep: float = 60.0,
    ) -> None:
        # Told of a user's sessions ending (user id), or None: forget them all.
        self._on_sessions_changed = on_sessions_changed
        self._waiters = Waiters()
        self._view = View(pool, max_users=max_users)
        self._listener = Listener(
            database_url,
            self._on_notification,
            self._on_connected,
            self._on_lost,
            on_ping=self._on_ping,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_backoff=max_backoff,
            connect=connect,
        )
        self.presence = Presence(
            pool, APPLICATION_NAME, grace=presence_grace, sweep_interval=presence_sweep
        )
        self._view.decorate = self.with_presence
        self._task: asyncio.Task[None] | None = None
        self._presence_task: asyncio.Task[None] | None = None
        self._prefetches: set[asyncio.Task[object]] = set()
        self.closing = False
        self.connected = asyncio.Event()

    # -- for events.py ----------------------------------------------------

    def register(self, user_id: int, channel_ids: Iterable[int]) -> Waiter:
        """Parks a waiter. Register BEFORE reading: a commit between the read
        and the wait still finds it. Always unregister (try/finally)."""
        return self._waiters.register(user_id, channel_ids)

    def register_events(
        self, user_id: int, channel_ids: Iterable[int], *, idle: bool, ephemeral: bool
    ) -> Waiter:
        """Parks an events poll: it holds its user online (away if idle) in
        this process, and if `ephemeral`, takes typing and presence events."""
        waiter = self._waiters.register(
            user_id, channel_ids, events_poll=True, idle=idle, takes_ephemeral=ephemeral
        )
        self.presence.poll_started(user_id, idle)
        return waiter

    def unregister(self, waiter: Waiter) -> None:
        self._waiters.unregister(waiter)
        if waiter.events_poll:
            self.presence.poll_ended(waiter.user_id, waiter.idle)

    def presence_of(self, user_id: int) -> str:
        """'online', 'away' or 'offline', as the notifications last said."""
        return self.presence.state_of(user_id)

    def with_presence(self, channel: dict[str, Any]) -> dict[str, Any]:
        """Adds "presence" to a channel's members and to a direct channel's
        peer (docs/api.md); returns the same dict."""
        peer = channel.get("peer")
        if isinstance(peer, dict):
            peer["presence"] = self.presence_of(peer["id"])
        for member in channel.get("members", ()):
            member["presence"] = self.presence_of(member["id"])
        return channel

    async def read(self, user_id: int, cursor: Cursor) -> tuple[Cursor, list[str], bool]:
        """Everything past the cursor: the new cursor, the events as JSON, and
        whether the cursor moved."""
        return await self._view.read(user_id, cursor)

    async def read_channel(
        self, user_id: int, channel_id: int, after: int, limit: int
    ) -> list[CachedMessage] | None:
        """One channel's messages after seq `after`; None for a non-member."""
        return await self._view.read_channel(user_id, channel_id, after, limit)

    def linger(self, channel_ids: Iterable[int]) -> float:
        """How long a poll that found something should wait to carry more: a
        moment in a burst of one of its channels, else not at all."""
        return LINGER if self._waiters.bursting(channel_ids) else 0.0

    def polls_of(self, user_id: int) -> int:
        return self._waiters.polls_of(user_id)

    def database_answered(self) -> None:
        """A connection to the database succeeded (the pool's hook): a
        listener backing off reconnects now."""
        self._listener.wake()

    # -- for tests and the benchmark -------------------------------------

    @property
    def waiter_count(self) -> int:
        return self._waiters.count

    @property
    def parked_count(self) -> int:
        """Waiters asleep; the others are still reading."""
        return self._waiters.parked_count

    @property
    def cache(self) -> MessageCache:
        return self._view.cache

    @property
    def connections_made(self) -> int:
        return self._listener.connections_made

    # -- notifications ---------------------------------------------------

    def _on_notification(self, payload: str) -> None:
        kind, _, rest = payload.partition(":")
        try:
            if kind == "M":
                channel_text, seq_text, author_text, number, message_json = rest.split(":", 4)
                channel_id, seq = int(channel_text), int(seq_text)
                # Kept only where someone here reads that channel, or lately did.
                if self._waiters.watched(channel_id) or self.cache.holds(channel_id):
                    self.cache.add(channel_id, CachedMessage(seq, message_json))
                self._view.message_committed(channel_id, seq, int(author_text), int(number))
                if self._waiters.watched(channel_id):
                    self._waiters.message_arrived(channel_id)
            elif kind == "m":
                channel_text, seq_text, author_text, number = rest.split(":")
                channel_id, seq = int(channel_text), int(seq_text)
                self._view.message_committed(channel_id, seq, int(author_text), int(number))
                self._prefetch(channel_id, seq)
            elif kind == "E":
                channel_text, seq_text, change, event_json = rest.split(":", 3)
                channel_id, seq = int(channel_text), int(seq_text)
                self._change_committed(channel_id, seq, change)
                if self._waiters.watched(channel_id) or self.cache.holds(channel_id):
                    self.cache.add(channel_id, CachedMessage(seq, event_json, is_message=False))
                if self._waiters.watched(channel_id):
                    self._waiters.message_arrived(channel_id)
            elif kind == "e":
                channel_text, seq_text, change = rest.split(":")
                channel_id, seq = int(channel_text), int(seq_text)
                self._change_committed(channel_id, seq, change)
                self._prefetch(channel_id, seq)
            elif kind == "u":
                user_id = int(rest)
                self._view.memberships_changed(user_id)
                self._waiters.wake_user(user_id)
            elif kind == "s":
                self._on_sessions_changed(int(rest))
            elif kind == "t":
                channel_text, user_text, user_json = rest.split(":", 2)
                channel_id = int(channel_text)
                if self._waiters.watched(channel_id):
                    event = (
                        '{"type": "typing", "channel_id": '
                        + str(channel_id)
                        + ', "user": '
                        + user_json
                        + "}"
                    )
                    self._waiters.typing(channel_id, int(user_text), event)
            elif kind == "p":
                user_text, state_text, user_json = rest.split(":", 2)
                user_id, state = int(user_text), STATES[state_text]
                self.presence.notified(user_id, state)
                event = (
                    '{"type": "presence", "user": '
                    + user_json
                    + ', "presence": "'
                    + state_text
                    + '"}'
                )
                self._waiters.presence(user_id, event)
            else:
                log.warning("ignoring notification %r", payload[:100])
        except (ValueError, KeyError):
            log.warning("ignoring malformed notification %r", payload[:100])

    def _change_committed(self, channel_id: int, seq: int, change: str) -> None:
        self._view.message_committed(channel_id, seq)
        if change in ("edited", "deleted"):
            # Text was changed or taken back: what is held of the channel
            # must not be served again.
            self.cache.forget(channel_id)

    def _prefetch(self, channel_id: int, seq: int) -> None:
        """A message too long for its payload: read it once for every waiter
        here (as one of them, membership checked), then wake them."""
        reader = next(iter(self._waiters.readers_of(channel_id)), None)
        if reader is None:
            return
        prefetching = self._view.prefetching
        prefetching[channel_id] = prefetching.get(channel_id, 0) + 1
        read = self.cache.range(reader.user_id, channel_id, seq - 1, seq, announced=True)
        task: asyncio.Task[object] = asyncio.create_task(read)
        self._prefetches.add(task)
        task.add_done_callback(lambda done: self._prefetched(channel_id, done))

    def _prefetched(self, channel_id: int, task: asyncio.Task[object]) -> None:
        self._prefetches.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("prefetch of channel %d failed: %r", channel_id, task.exception())
        prefetching = self._view.prefetching
        left = prefetching.pop(channel_id) - 1
        if left:
            prefetching[channel_id] = left
        self._waiters.wake_channel(channel_id)

    # -- the connection --------------------------------------------------

    def _on_connected(self) -> None:
        # Whatever was notified while we were not listening is in the
        # database, not in the caches: start them afresh.
        self._view.invalidate()
        self._on_sessions_changed(None)
        self._view.valid = True
        self.presence.connected(self._listener.server_pid)
        self.connected.set()
        self._waiters.wake_all()

    def _on_lost(self) -> None:
        self.connected.clear()
        self._view.valid = False
        self._view.invalidate()
        self.presence.lost()

    def _on_ping(self) -> None:
        self.cache.forget_idle(CACHE_IDLE)
        self._waiters.forget_calm()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listener.run(), name="chatterwerks-listener")
        self._presence_task = asyncio.create_task(self.presence.run(), name="chatterwerks-presence")

    async def close(self) -> None:
        """Answers every parked poll at once, then stops the listener and
        every read in flight, and waits for them."""
        self.closing = True
        self._waiters.close()
        if self._presence_task is not None:
            self._presence_task.cancel()
            await asyncio.gather(self._presence_task, return_exceptions=True)
        await self.presence.close()
        tasks = [t for t in (self._task, *self._prefetches) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.cache.close()
