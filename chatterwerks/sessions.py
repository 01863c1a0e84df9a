"""The in-process cache of checked sessions."""

from __future__ import annotations

import time
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
