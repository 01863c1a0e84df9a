"""The in-process cache of checked sessions."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any


class SessionCache:
    """Recently checked sessions, so most requests skip the session query.

    Trusted only while the hub's listener is connected: ending a session
    notifies every process ('s:<user_id>'), and a reconnect clears it all.
    An entry lives at most `ttl` seconds, and never past its session's expiry.
    """

    def __init__(self, ttl: float = 30.0, max_entries: int = 100_000) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: dict[bytes, tuple[dict[str, Any], float]] = {}
        self._ended = 0  # bumps whenever sessions end: a read begun before is stale
        self._heard: dict[int, list[asyncio.Future[None]]] = {}

    def get(self, digest: bytes) -> dict[str, Any] | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[1] < time.monotonic():
            del self._entries[digest]
            return None
        return entry[0]

    def version(self) -> int:
        return self._ended

    def put(self, digest: bytes, user: dict[str, Any], expires_at: datetime, version: int) -> None:
        if version != self._ended:
            return
        if len(self._entries) >= self._max_entries:
            self._entries.clear()  # simplest bound; it refills from the database
        left = (expires_at - datetime.now(UTC)).total_seconds()
        self._entries[digest] = (user, time.monotonic() + min(self._ttl, left))

    def forget(self, user_id: int | None) -> None:
        """Drops a user's cached sessions (None: everybody's)."""
        self._ended += 1
        if user_id is None:
            self._entries.clear()
        else:
            self._entries = {k: v for k, v in self._entries.items() if v[0]["id"] != user_id}
        for waiting_id in list(self._heard) if user_id is None else [user_id]:
            for future in self._heard.pop(waiting_id, []):
                if not future.done():
                    future.set_result(None)

    @contextlib.asynccontextmanager
    async def propagated(self, user_id: int, timeout: float) -> AsyncIterator[None]:
        """Around a statement that ends a user's sessions and notifies every
        process: on leaving, waits (at most `timeout`) until this process has
        heard its own notification. Every listener is signalled at the same
        commit, so by then the other hosts have heard it too, and the client's
        next request, to any host, finds the session gone (docs/architecture.md)."""
        future = asyncio.get_running_loop().create_future()
        self._heard.setdefault(user_id, []).append(future)
        try:
            yield
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(future), timeout)
        finally:
            waiting = self._heard.get(user_id, [])
            if future in waiting:
                waiting.remove(future)
                if not waiting:
                    del self._heard[user_id]
