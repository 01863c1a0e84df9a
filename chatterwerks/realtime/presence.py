"""Presence: who holds a long-poll here, who is online anywhere.

Locally, a user is online while one of their events polls held in this
process is not marked idle, away while all of them are, and offline once
none has been held for `grace` seconds (the moment between one poll's
answer and the next must not flap, and a client that vanished goes offline
a few seconds after its last poll). Only these local transitions are
written, by one task, batched, to the presence table (store/live.py), whose
functions announce a change of the user's global state with a 'p:' NOTIFY.
No timer polls the database for presence: a slow timer only sweeps the
rows of processes whose listener is gone, also done at each (re)connect.

The global states (everyone not offline) are kept from those NOTIFYs, and
read afresh at each listener connect.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass, field

import asyncpg

from chatterwerks.db import CONNECTION_ERRORS, DatabaseUnavailable
from chatterwerks.store import live
from chatterwerks.store.live import AWAY, NAMES, OFFLINE, ONLINE

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Local:
    polls: int = 0  # events polls held here
    active: int = 0  # of which not idle
    state: int = OFFLINE  # as last written
    ended_at: float = 0.0  # when the count of polls last fell to 0 (loop time)
    # At most one per user, never cancelled: a client re-polls at once after
    # each answer, and a timer made and cancelled each time cost more than
    # one that looks, when it fires, whether the user came back meanwhile.
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class Presence:
    pool: asyncpg.Pool
    application_name: str
    grace: float = 5.0
    sweep_interval: float = 60.0
    # Global states from the 'p:' notifications: user id -> AWAY or ONLINE.
    known: dict[int, int] = field(default_factory=dict)
    changes_written: int = 0  # local transitions written (for the bench)
    _local: dict[int, _Local] = field(default_factory=dict)
    _dirty: dict[int, int] = field(default_factory=dict)  # user -> state to write
    _server: live.Server | None = None
    _resync_pid: int | None = None
    _log: list[tuple[int, int]] | None = None  # notifications during a resync
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _writing: bool = False

    @property
    def settled(self) -> bool:
        """Nothing waits to be written, and no write is in flight (tests)."""
        return not self._dirty and not self._writing and self._resync_pid is None

    # -- polls of this process --------------------------------------------

    def poll_started(self, user_id: int, idle: bool) -> None:
        local = self._local.setdefault(user_id, _Local())
        local.polls += 1
        local.active += not idle
        self._settle(user_id, local)

    def poll_ended(self, user_id: int, idle: bool) -> None:
        local = self._local.get(user_id)
        if local is None:
            return
        local.polls -= 1
        local.active -= not idle
        if local.polls == 0:
            # Not offline yet: the client's next poll comes in a moment.
            loop = asyncio.get_running_loop()
            local.ended_at = loop.time()
            if local.timer is None:
                local.timer = loop.call_at(local.ended_at + self.grace, self._expire, user_id)
        else:
            self._settle(user_id, local)

    def _expire(self, user_id: int) -> None:
        local = self._local.get(user_id)
        if local is None:
            return
        local.timer = None
        if local.polls:
            return  # back, and holding a poll: its end arms a timer again
        loop = asyncio.get_running_loop()
        due = local.ended_at + self.grace
        if loop.time() < due:  # came back and left again since: wait the rest
            local.timer = loop.call_at(due, self._expire, user_id)
            return
        self._write(user_id, local, OFFLINE)
        del self._local[user_id]

    def _settle(self, user_id: int, local: _Local) -> None:
        self._write(user_id, local, ONLINE if local.active else AWAY)

    def _write(self, user_id: int, local: _Local, state: int) -> None:
        if state != local.state:
            local.state = state
            self._dirty[user_id] = state
            self.changes_written += 1
            self._wakeup.set()

    # -- global states -------------------------------------------------------

    def state_of(self, user_id: int) -> str:
        return NAMES[self.known.get(user_id, OFFLINE)]

    def notified(self, user_id: int, state: int) -> None:
        if self._log is not None:
            self._log.append((user_id, state))
        self._apply(user_id, state)

    def _apply(self, user_id: int, state: int) -> None:
        if state == OFFLINE:
            self.known.pop(user_id, None)
        else:
            self.known[user_id] = state

    def connected(self, listener_pid: int | None) -> None:
        """The listener (re)connected: write every local state anew under its
        name, sweep the rows of dead listeners (ours included), and read the
        global states; notifications from now on are replayed over that read."""
        self._server = None
        self._resync_pid = listener_pid
        self._log = []
        self._wakeup.set()

    def lost(self) -> None:
        self._server = None

    # -- the one task that writes --------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self.sweep_interval
        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), max(0.0, next_sweep - loop.time()))
            except TimeoutError:
                pass
            self._wakeup.clear()
            self._writing = True
            try:
                if self._resync_pid is not None:
                    await self._resync()
                    next_sweep = loop.time() + self.sweep_interval
                elif self._dirty and self._server is not None:
                    batch, self._dirty = self._dirty, {}
                    try:
                        await live.update_presence(self.pool, self._server, sorted(batch.items()))
                    except BaseException:
                        for user_id, state in batch.items():
                            self._dirty.setdefault(user_id, state)
                        raise
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + self.sweep_interval
                    if self._server is not None:
                        await live.sweep_presence(self.pool, self.application_name)
            except asyncio.CancelledError:
                raise
            except (DatabaseUnavailable, *CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                log.warning("presence: %s", str(exc) or type(exc).__name__)
                await asyncio.sleep(1.0)
                self._wakeup.set()
            finally:
                self._writing = False

    async def _resync(self) -> None:
        pid = self._resync_pid
        if pid is None:
            return
        start: datetime.datetime | None = await live.listener_start(
            self.pool, pid, self.application_name
        )
        if pid != self._resync_pid:
            return  # reconnected meanwhile; the next turn does it
        self._resync_pid = None
        if start is None:
            self._log = None
            return  # that listener is gone already; its successor resyncs
        server = (pid, start)
        self._dirty.clear()
        states = sorted((u, local.state) for u, local in self._local.items() if local.state)
        try:
            if states:
                await live.update_presence(self.pool, server, states)
            await live.sweep_presence(self.pool, self.application_name)
            known = await live.all_presence(self.pool)
        except BaseException:
            if self._resync_pid is None:
                self._resync_pid = pid  # try again
            raise
        self._server = server
        replay, self._log = self._log or [], None
        self.known = known
        for user_id, state in replay:
            self._apply(user_id, state)

    async def close(self) -> None:
        """Says goodbye for every user of this process: the rows go now rather
        than at another process's next sweep. Best-effort, briefly."""
        for local in self._local.values():
            if local.timer is not None:
                local.timer.cancel()
        states = [(u, OFFLINE) for u, local in sorted(self._local.items()) if local.state]
        self._local.clear()
        if self._server is None or not states:
            return
        try:
            await asyncio.wait_for(live.update_presence(self.pool, self._server, states), 2.0)
        except (TimeoutError, DatabaseUnavailable, *CONNECTION_ERRORS, asyncpg.PostgresError):
            pass  # the others' sweep removes them


__all__ = ["AWAY", "NAMES", "OFFLINE", "ONLINE", "Presence"]
