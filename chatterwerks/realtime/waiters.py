"""The parked long-polls of this process, and when to wake them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

# Adaptive batching of wake-ups, in seconds: messages less than BURST_GAP
# apart in one channel are a burst, and its readers linger up to LINGER so
# that one answer carries several messages.
BURST_GAP = 0.005
LINGER = 0.050
# Presence changes are gathered this long before they wake a poll: a wave of
# them (a deploy, a network blip) costs each poll one answer, not one each.
PRESENCE_BATCH = 0.5
# Ephemeral events held for one poll at most (the newest win).
MAX_EPHEMERAL = 200


class Waiter:
    """One parked long-poll."""

    __slots__ = (
        "_future",
        "_timer",
        "channel_ids",
        "ephemeral",
        "events_poll",
        "idle",
        "pending",
        "takes_ephemeral",
        "user_id",
    )

    def __init__(
        self,
        user_id: int,
        channel_ids: Iterable[int],
        *,
        events_poll: bool = False,
        idle: bool = False,
        takes_ephemeral: bool = False,
    ) -> None:
        self.user_id = user_id
        self.channel_ids = tuple(channel_ids)
        self.pending = False  # woken since it last looked
        # An events poll counts for its user's presence; one that asked for
        # them also takes typing and presence events. A channel tail does not.
        self.events_poll = events_poll
        self.idle = idle
        self.takes_ephemeral = takes_ephemeral
        # Ephemeral events waiting for this poll's next read, by what they
        # are about (a newer one of a kind replaces the older), as JSON.
        self.ephemeral: dict[tuple[object, ...], str] | None = None
        self._future: asyncio.Future[bool] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def offer(self, key: tuple[object, ...], event_json: str) -> None:
        """Holds an ephemeral event for the next read; never blocks, never
        grows past MAX_EPHEMERAL (the oldest go)."""
        if self.ephemeral is None:
            self.ephemeral = {}
        self.ephemeral.pop(key, None)
        self.ephemeral[key] = event_json
        if len(self.ephemeral) > MAX_EPHEMERAL:
            del self.ephemeral[next(iter(self.ephemeral))]

    def peek_ephemeral(self) -> list[str]:
        """The ephemeral events held, left in place: a read may be repeated
        (a linger in a burst), and only the answer sent consumes them."""
        return list(self.ephemeral.values()) if self.ephemeral else []

    def answered(self) -> None:
        """The poll answered, with every ephemeral event it peeked at."""
        self.ephemeral = None

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


class Waiters:
    """The waiters by channel and by user, and the wake-up policy: at a
    conversational pace a message wakes its readers on the next turn of the
    loop; in a burst they linger, so fewer answers carry more messages."""

    def __init__(self) -> None:
        self._by_channel: dict[int, set[Waiter]] = {}
        self._by_user: dict[int, set[Waiter]] = {}
        # channel id -> (when its last message came, the gap before it)
        self._pace: dict[int, tuple[float, float]] = {}
        # Channels to wake on the next turn of the loop, and those in a burst,
        # to wake after LINGER: each kind with its own timer, so that one
        # bursting channel delays no other channel's readers.
        self._soon: set[int] = set()
        self._soon_handle: asyncio.Handle | None = None
        self._later: set[int] = set()
        self._later_handle: asyncio.TimerHandle | None = None
        self._events_polls: set[Waiter] = set()
        self._presence_handle: asyncio.TimerHandle | None = None

    def register(
        self,
        user_id: int,
        channel_ids: Iterable[int],
        *,
        events_poll: bool = False,
        idle: bool = False,
        takes_ephemeral: bool = False,
    ) -> Waiter:
        waiter = Waiter(
            user_id,
            channel_ids,
            events_poll=events_poll,
            idle=idle,
            takes_ephemeral=takes_ephemeral,
        )
        self._by_user.setdefault(user_id, set()).add(waiter)
        for channel_id in waiter.channel_ids:
            self._by_channel.setdefault(channel_id, set()).add(waiter)
        if takes_ephemeral:
            self._events_polls.add(waiter)
        return waiter

    def unregister(self, waiter: Waiter) -> None:
        _discard(self._by_user, waiter.user_id, waiter)
        for channel_id in waiter.channel_ids:
            _discard(self._by_channel, channel_id, waiter)
        self._events_polls.discard(waiter)

    # -- ephemeral events ---------------------------------------------------

    def typing(self, channel_id: int, user_id: int, event_json: str) -> int:
        """Hands a typing event to the parked events polls of the channel's
        other members, and wakes them now. Only parked ones: a parked poll's
        read found it a member, and a removal since would have woken it (its
        'u:' notification comes before any later typing), so a removed
        member never sees it. Returns how many polls took it."""
        taken = 0
        for waiter in self._by_channel.get(channel_id, ()):
            if waiter.takes_ephemeral and waiter.parked and waiter.user_id != user_id:
                waiter.offer(("typing", channel_id, user_id), event_json)
                waiter.wake()
                taken += 1
        return taken

    def presence(self, user_id: int, event_json: str) -> None:
        """Hands a presence event to every other user's poll here that takes
        them (every user shares Home with every other), woken after
        PRESENCE_BATCH."""
        for waiter in self._events_polls:
            if waiter.user_id != user_id:  # their own client knows
                waiter.offer(("presence", user_id), event_json)
        if self._presence_handle is None and self._events_polls:
            loop = asyncio.get_running_loop()
            self._presence_handle = loop.call_later(PRESENCE_BATCH, self._wake_presence)

    def _wake_presence(self) -> None:
        self._presence_handle = None
        for waiter in self._events_polls:
            if waiter.ephemeral:
                waiter.wake()

    def watched(self, channel_id: int) -> bool:
        return channel_id in self._by_channel

    def readers_of(self, channel_id: int) -> Iterable[Waiter]:
        return self._by_channel.get(channel_id, ())

    def polls_of(self, user_id: int) -> int:
        return len(self._by_user.get(user_id, ()))

    @property
    def count(self) -> int:
        return sum(len(waiters) for waiters in self._by_user.values())

    @property
    def parked_count(self) -> int:
        return sum(waiter.parked for waiters in self._by_user.values() for waiter in waiters)

    def wake_user(self, user_id: int) -> None:
        for waiter in self._by_user.get(user_id, ()):
            waiter.wake()

    def wake_channel(self, channel_id: int) -> None:
        for waiter in self._by_channel.get(channel_id, ()):
            waiter.wake()

    def wake_all(self) -> None:
        for waiters in self._by_user.values():
            for waiter in waiters:
                waiter.wake()

    # -- bursts ----------------------------------------------------------

    def message_arrived(self, channel_id: int) -> None:
        """Wakes a channel's readers on the next turn of the loop, once for all
        the notifications read in this turn; in a burst of that channel, after
        LINGER instead."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        last_at, _ = self._pace.get(channel_id, (float("-inf"), float("inf")))
        self._pace[channel_id] = (now, now - last_at)
        if self.bursting((channel_id,)):
            self._later.add(channel_id)
            if self._later_handle is None:
                self._later_handle = loop.call_later(LINGER, self._wake_later)
        else:
            self._soon.add(channel_id)
            if self._soon_handle is None:
                self._soon_handle = loop.call_soon(self._wake_soon)

    def bursting(self, channel_ids: Iterable[int]) -> bool:
        """One of these channels had its last two messages less than BURST_GAP
        apart, and lately."""
        if not self._pace:
            return False
        now = asyncio.get_running_loop().time()
        for channel_id in channel_ids:
            pace = self._pace.get(channel_id)
            if pace is not None and pace[1] < BURST_GAP and now - pace[0] < 10 * BURST_GAP:
                return True
        return False

    def forget_calm(self) -> None:
        """Drops the pace of channels quiet for a second: it no longer matters."""
        now = asyncio.get_running_loop().time()
        self._pace = {c: pace for c, pace in self._pace.items() if now - pace[0] < 1.0}

    def _wake_soon(self) -> None:
        channels, self._soon, self._soon_handle = self._soon, set(), None
        for channel_id in channels:
            self.wake_channel(channel_id)

    def _wake_later(self) -> None:
        channels, self._later, self._later_handle = self._later, set(), None
        for channel_id in channels:
            self.wake_channel(channel_id)

    def close(self) -> None:
        for handle in (self._soon_handle, self._later_handle, self._presence_handle):
            if handle is not None:
                handle.cancel()
        self._soon_handle = self._later_handle = self._presence_handle = None
        self.wake_all()


def _discard(index: dict[int, set[Waiter]], key: int, waiter: Waiter) -> None:
    waiters = index.get(key)
    if waiters is not None:
        waiters.discard(waiter)
        if not waiters:
            del index[key]
