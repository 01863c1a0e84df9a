"""The read-through view: what lies past a poll's cursor, answered from the
caches when they hold it, else from the store (and then cached).

While the listener is connected, the notifications keep the caches exact
enough: the newest seq of each channel, each user's memberships (dropped at
any change to them) and the recent messages of each channel. A reconnect
clears them all, since notifications may have been missed meanwhile.

A poll at the head of its channels therefore makes no query. The one thing
a cache cannot prove is a membership that ended while the listener was
silently gone (before its ping noticed): so a user whose memberships come
from the cache is served only announced messages from it (see
cache.CachedMessage); anything else is read with the membership check in
the statement, and a removal found that way drops the cached memberships.
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from collections.abc import Callable
from itertools import takewhile
from typing import Any

import asyncpg

from chatterwerks.realtime.cache import CachedMessage, MessageCache, NotMember
from chatterwerks.shapes import channel_json
from chatterwerks.store import channels, messages

# Bounded pages: a client far behind gets this many messages per answer and
# its next poll answers at once.
PAGE_MESSAGES = 500
PAGE_PER_CHANNEL = 200
INT64_MAX = 2**63 - 1  # above any seq: a channel whose newest seq is not known


@dataclasses.dataclass(slots=True)
class Position:
    """Where a client is in one channel: its membership (a re-join is a new
    one), the last seq delivered, and the last read marker reported."""

    subscription_id: int
    seq: int
    read_seq: int


Cursor = dict[int, Position]  # channel id -> position


@dataclasses.dataclass(frozen=True, slots=True)
class Membership:
    subscription_id: int
    joined_seq: int
    last_read_seq: int
    read_count: int  # messages read, up to last_read_seq


UserState = dict[int, Membership]  # channel id -> the user's membership


class View:
    """The caches and the reads through them. `valid` is the listener's
    word that notifications flow; without it nothing cached is trusted."""

    def __init__(
        self, pool: asyncpg.Pool, *, max_users: int = 50_000, max_channels: int = 200_000
    ) -> None:
        self._pool = pool
        self._max_users = max_users
        self._max_channels = max_channels
        self.valid = False
        self.generation = 0  # bumped whenever cached state may have been missed
        self.channel_seqs: dict[int, int] = {}
        self._user_states: OrderedDict[int, UserState] = OrderedDict()
        # Bumped at each change of a user's memberships: a database read that
        # began before is not remembered.
        self._user_versions: dict[int, int] = {}
        self.cache = MessageCache(self._load)
        self.prefetching: dict[int, int] = {}  # channel id -> prefetches in flight
        # Adds what is not in the database's channel JSON (presence; hub.py).
        self.decorate: Callable[[dict[str, Any]], dict[str, Any]] = lambda channel: channel

    async def _load(
        self, reader_id: int, channel_id: int, after: int, upto: int
    ) -> list[tuple[int, str]] | None:
        return await messages.in_range(self._pool, reader_id, channel_id, after, upto)

    # -- what the notifications say -------------------------------------

    def invalidate(self) -> None:
        """Notifications may have been missed: forget everything."""
        self.generation += 1
        self.channel_seqs.clear()
        self._user_states.clear()
        self._user_versions.clear()
        self.cache.clear()

    def message_committed(
        self, channel_id: int, seq: int, author_id: int | None = None, number: int = 0
    ) -> None:
        """A change took position `seq`; a new message (its author and number
        given) also moved the author's read marker."""
        if seq > self.channel_seqs.get(channel_id, -1):
            if len(self.channel_seqs) >= self._max_channels:
                self.invalidate()  # rare: cheaper than tracking which to evict
            self.channel_seqs[channel_id] = seq
        if author_id is None:
            return
        # Sending moved the author's read marker (sql/queries/messages.sql).
        state = self._user_states.get(author_id)
        membership = state.get(channel_id) if state is not None else None
        if membership is not None and membership.last_read_seq < seq:
            state[channel_id] = dataclasses.replace(  # type: ignore[index]
                membership, last_read_seq=seq, read_count=number
            )
        self._bump_version(author_id)

    def memberships_changed(self, user_id: int) -> None:
        """Its memberships or read markers changed: forget them, and make any
        read that began before now unfit to be remembered."""
        self._bump_version(user_id)
        self._user_states.pop(user_id, None)

    def _bump_version(self, user_id: int) -> None:
        if user_id not in self._user_versions and len(self._user_versions) >= self._max_users:
            # Versions only matter to reads in flight; a new generation voids
            # them all at once, so the table can start again.
            self.generation += 1
            self._user_versions.clear()
        self._user_versions[user_id] = self._user_versions.get(user_id, 0) + 1

    # -- reads ------------------------------------------------------------

    async def read(self, user_id: int, cursor: Cursor) -> tuple[Cursor, list[str], bool]:
        """Everything past the cursor: a new cursor, the events as JSON, and
        whether the cursor moved (it may pass over positions with nothing
        left to tell, without an event)."""
        if self._at_head(user_id, cursor):
            return cursor, [], False
        try:
            return await self._read(user_id, cursor, use_cache=True)
        except NotMember:
            # The cached memberships were stale: read them again.
            self.memberships_changed(user_id)
            return await self._read(user_id, cursor, use_cache=False)

    def _at_head(self, user_id: int, cursor: Cursor) -> bool:
        """Whether the caches prove nothing is past the cursor: what most reads
        find (a poll's first read, at the head of its channels), answered
        without building a new cursor. The same test as _read's, in short."""
        state = self._user_states.get(user_id) if self.valid else None
        if state is None or len(state) != len(cursor):
            return False
        channel_seqs = self.channel_seqs
        for channel_id, position in cursor.items():
            membership = state.get(channel_id)
            if (
                membership is None
                or membership.subscription_id != position.subscription_id
                or membership.last_read_seq > position.read_seq
                or channel_seqs.get(channel_id, INT64_MAX) > position.seq
            ):
                return False
        self._user_states.move_to_end(user_id)
        return True

    async def read_channel(
        self, user_id: int, channel_id: int, after: int, limit: int
    ) -> list[CachedMessage] | None:
        """New messages after seq `after` in one channel (at most limit); None
        if the user is not a member. Other changes are passed over, however
        many follow the last message (they come by the events poll)."""
        try:
            state, last_seqs, fresh = await self._user_state(user_id, use_cache=True)
            if channel_id not in state:
                return None
            found: list[CachedMessage] = []
            while not found and after < last_seqs[channel_id]:
                upto = min(last_seqs[channel_id], after + limit)
                positions = await self._messages(user_id, channel_id, after, upto, fresh)
                if not positions:
                    break  # being read (a prefetch): its arrival wakes us
                found = [position for position in positions if position.is_message]
                after = positions[-1].seq
            return found
        except NotMember:
            self.memberships_changed(user_id)
            return None

    async def _user_state(
        self, user_id: int, *, use_cache: bool
    ) -> tuple[UserState, dict[int, int], bool]:
        """The user's memberships, their channels' newest seqs, and whether
        they were just read from the database (else from the caches)."""
        state = self._user_states.get(user_id) if use_cache and self.valid else None
        if state is not None:
            self._user_states.move_to_end(user_id)
            last_seqs = {channel_id: self.channel_seqs.get(channel_id) for channel_id in state}
            if None not in last_seqs.values():
                return state, last_seqs, False  # type: ignore[return-value]
        version = self.generation, self._user_versions.get(user_id, 0)
        rows = await channels.sync_state(self._pool, user_id)
        state = {
            row["channel_id"]: Membership(
                row["subscription_id"], row["joined_seq"], row["last_read_seq"], row["read_count"]
            )
            for row in rows
        }
        last_seqs = {row["channel_id"]: row["last_seq"] for row in rows}
        self._remember(user_id, version, state, last_seqs)
        return state, last_seqs, True

    def _remember(
        self,
        user_id: int,
        version: tuple[int, int],
        state: UserState,
        last_seqs: dict[int, int],
    ) -> None:
        """Caches what a database read found, unless something changed since
        the read began."""
        if not self.valid or version != (self.generation, self._user_versions.get(user_id, 0)):
            return
        for channel_id, seq in last_seqs.items():
            if seq > self.channel_seqs.get(channel_id, -1):
                self.channel_seqs[channel_id] = seq
        self._user_states[user_id] = state
        self._user_states.move_to_end(user_id)
        while len(self._user_states) > self._max_users:
            self._user_states.popitem(last=False)

    async def _messages(
        self, user_id: int, channel_id: int, after: int, upto: int, fresh: bool
    ) -> list[CachedMessage]:
        """Messages after seq `after`, up to `upto`, from the shared cache when
        it may serve them: one database read serves every poll here."""
        if upto <= after:
            return []
        cached = self.cache.cached(channel_id, after, upto)
        if cached:
            if fresh:
                return cached  # upto comes from this user's own checked read
            announced = list(takewhile(lambda message: message.announced, cached))
            if announced:
                return announced
        if self.prefetching.get(channel_id) and self.cache.newest(channel_id) == after:
            return []  # the next message is being read; its arrival wakes us
        return await self.cache.range(user_id, channel_id, after, upto, shared=fresh)

    async def _read(
        self, user_id: int, cursor: Cursor, *, use_cache: bool
    ) -> tuple[Cursor, list[str], bool]:
        state, last_seqs, fresh = await self._user_state(user_id, use_cache=use_cache)
        cursor = {c: Position(p.subscription_id, p.seq, p.read_seq) for c, p in cursor.items()}
        events: list[str] = []
        for channel_id, position in list(cursor.items()):
            membership = state.get(channel_id)
            if membership is None or membership.subscription_id != position.subscription_id:
                del cursor[channel_id]
                events.append(json.dumps({"type": "channel_removed", "channel_id": channel_id}))
        added = [channel_id for channel_id in state if channel_id not in cursor]
        if added:
            for row in await channels.channels_by_ids(self._pool, user_id, added):
                cursor[row["id"]] = Position(
                    row["subscription_id"], row["joined_seq"], row["last_read_seq"]
                )
                last_seqs[row["id"]] = max(last_seqs.get(row["id"], 0), row["last_seq"])
                channel = self.decorate(channel_json(row))
                events.append(json.dumps({"type": "channel_added", "channel": channel}))
        for channel_id, position in cursor.items():
            membership = state.get(channel_id)
            if membership is not None and membership.last_read_seq > position.read_seq:
                position.read_seq = membership.last_read_seq
                events.append(
                    json.dumps(
                        {
                            "type": "read",
                            "channel_id": channel_id,
                            "seq": position.read_seq,
                            "read_count": membership.read_count,
                        }
                    )
                )
        budget = PAGE_MESSAGES
        moved = False
        for channel_id in sorted(cursor):
            position = cursor[channel_id]
            upto = min(last_seqs[channel_id], position.seq + min(PAGE_PER_CHANNEL, budget))
            try:
                found = await self._messages(user_id, channel_id, position.seq, upto, fresh)
            except NotMember:
                if not fresh:
                    raise
                found = []  # removed since our read: the NOTIFY of it wakes us
            for item in found:
                position.seq = item.seq
                moved = True
                budget -= 1
                if item.json is None:
                    continue  # nothing left to tell of this change
                if item.is_message:
                    events.append('{"type": "message", "message": ' + item.json + "}")
                else:
                    events.append(item.json)
            if budget <= 0:
                break
        return cursor, events, moved or bool(events)
