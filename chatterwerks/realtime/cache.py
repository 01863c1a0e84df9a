"""The recent positions of each channel's stream (new messages and other
changes), each serialised once, so that one change that wakes N polls in
this process costs at most one database read, not N."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

# (reader id, channel id, after, upto) -> [(seq, is a new message, JSON)], or
# None if the reader is not a member: the store's membership-checked read.
Loader = Callable[[int, int, int, int], Awaitable[list[tuple[int, bool, str | None]] | None]]


class NotMember(Exception):
    """The reader of a load is not a member of the channel (any more)."""


class CachedMessage:
    """One position of a channel's stream: a new message (json: the Message)
    or another change (json: the whole event; None when there is nothing to
    tell any more, as for an edit of a message deleted since). And whether
    it reached this process by its NOTIFY (or a read that a NOTIFY
    triggered): notifications arrive in commit order, so an announced
    position came after any earlier change to memberships, which the view
    has already applied; one read from the database by some other poll has
    no such order (see view.py)."""

    __slots__ = ("announced", "is_message", "json", "seq")

    def __init__(
        self, seq: int, json_text: str | None, announced: bool = True, is_message: bool = True
    ) -> None:
        self.seq = seq
        self.json = json_text
        self.announced = announced
        self.is_message = is_message

    @property
    def size(self) -> int:
        return len(self.json) if self.json is not None else 0


class MessageCache:
    """Bounded by positions per channel and by bytes in all (least recently
    used channels go first). A position's JSON is what was true when it was
    committed; an edit or a deletion makes the hub forget the channel, so
    that text taken back is never served from here again.

    A channel holds enough positions for its slowest polls to catch up from
    here: at 500 messages a second, a poll 100 ms behind is 50 positions
    back, and one that falls past the cache reads the database, which slows
    every send (bench/delivery.py's throughput run found that cliff at 64)."""

    def __init__(self, load: Loader, per_channel: int = 512, max_bytes: int = 4 * 1024 * 1024):
        self._load_from_store = load
        self._per_channel = per_channel
        self._max_bytes = max_bytes
        # channel id -> messages with consecutive seqs, oldest first
        self._recent: OrderedDict[int, list[CachedMessage]] = OrderedDict()
        self._sizes: dict[int, int] = {}  # channel id -> bytes of JSON held
        self._used: dict[int, float] = {}  # channel id -> when last read or extended
        self._bytes = 0
        self._loads: dict[tuple[int, ...], asyncio.Task[list[CachedMessage]]] = {}
        # Bumped when a channel is forgotten (per channel) or all is (the
        # generation): a read begun before is not kept.
        self._epochs: dict[int, int] = {}
        self._generation = 0
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

    def newest(self, channel_id: int) -> int | None:
        recent = self._recent.get(channel_id)
        return recent[-1].seq if recent else None

    def add(self, channel_id: int, message: CachedMessage) -> None:
        """A message that arrived in its NOTIFY payload."""
        self._remember(channel_id, [message])

    async def range(
        self,
        reader_id: int,
        channel_id: int,
        after: int,
        upto: int,
        *,
        shared: bool = True,
        announced: bool = False,
    ) -> list[CachedMessage]:
        """Messages with after < seq <= upto, oldest first, read from the
        database as reader_id may (NotMember if not), and kept. A shared read
        serves every caller asking for the same range meanwhile."""
        if upto <= after:
            return []
        cached = self.cached(channel_id, after, upto)
        if cached and cached[-1].seq == upto and (shared or all(m.announced for m in cached)):
            return cached
        key: tuple[int, ...] = (
            (channel_id, after, upto) if shared else (channel_id, after, upto, reader_id)
        )
        load = self._loads.get(key)
        if load is None:
            load = asyncio.create_task(self._load(reader_id, channel_id, after, upto, announced))
            self._loads[key] = load
            load.add_done_callback(lambda _: self._loads.pop(key, None))
        # Shielded: one poll that goes away must not cancel the others' read.
        return await asyncio.shield(load)

    async def _load(
        self, reader_id: int, channel_id: int, after: int, upto: int, announced: bool
    ) -> list[CachedMessage]:
        self.database_reads += 1
        epoch = self._generation, self._epochs.get(channel_id)
        rows = await self._load_from_store(reader_id, channel_id, after, upto)
        if rows is None:
            raise NotMember(channel_id)
        messages = [
            CachedMessage(seq, text, announced, is_message) for seq, is_message, text in rows
        ]
        if (self._generation, self._epochs.get(channel_id)) == epoch:
            self._remember(channel_id, messages)
        return messages

    def forget(self, channel_id: int) -> None:
        """Drops what is held of a channel, and voids the reads in flight."""
        if channel_id in self._recent:
            self._drop(channel_id)
        if len(self._epochs) >= 10_000:
            self._generation += 1  # voids every read in flight: the table restarts
            self._epochs.clear()
        self._epochs[channel_id] = self._epochs.get(channel_id, 0) + 1

    async def close(self) -> None:
        """Cancels the reads in flight, and waits for them to end."""
        loads = list(self._loads.values())
        for load in loads:
            load.cancel()
        await asyncio.gather(*loads, return_exceptions=True)

    def clear(self) -> None:
        self._recent.clear()
        self._sizes.clear()
        self._used.clear()
        self._bytes = 0
        self._generation += 1  # voids every read in flight
        self._epochs.clear()

    def forget_idle(self, idle: float) -> None:
        """Drops the channels nobody here has read for `idle` seconds: the cache
        holds what is being read now, not all that was ever said."""
        cutoff = time.monotonic() - idle
        for channel_id in list(self._recent):  # least recently used first
            if self._used[channel_id] > cutoff:
                break
            self._drop(channel_id)

    def _touch(self, channel_id: int) -> None:
        self._used[channel_id] = time.monotonic()
        self._recent.move_to_end(channel_id)

    def _drop(self, channel_id: int) -> None:
        del self._recent[channel_id], self._used[channel_id]
        self._bytes -= self._sizes.pop(channel_id)

    def _remember(self, channel_id: int, messages: list[CachedMessage]) -> None:
        if not messages:
            return
        recent = self._recent.get(channel_id)
        if recent and messages[0].seq == recent[-1].seq + 1:
            # The usual case, the next messages: bookkeeping in O(new ones).
            recent.extend(messages)
            size = self._sizes[channel_id] + sum(message.size for message in messages)
            overflow = len(recent) - self._per_channel
            if overflow > 0:
                size -= sum(message.size for message in recent[:overflow])
                del recent[:overflow]
        else:
            if (
                recent
                and messages[0].seq <= recent[-1].seq + 1
                and messages[-1].seq >= recent[0].seq - 1
            ):
                # The runs overlap or touch (loads finish in any order): merge,
                # keeping a message's announced copy where there is one.
                by_seq = {message.seq: message for message in messages}
                by_seq.update((m.seq, m) for m in recent if m.announced or m.seq not in by_seq)
                recent = [by_seq[seq] for seq in range(min(by_seq), max(by_seq) + 1)]
            elif not recent or messages[-1].seq > recent[-1].seq:
                recent = list(messages)  # a gap between them: keep the newer run
            else:
                return  # an older run than the one held: not worth the swap
            del recent[: -self._per_channel]
            size = sum(message.size for message in recent)
        self._bytes += size - self._sizes.get(channel_id, 0)
        self._sizes[channel_id] = size
        self._recent[channel_id] = recent
        self._touch(channel_id)
        while self._bytes > self._max_bytes and len(self._recent) > 1:
            self._drop(next(iter(self._recent)))
