"""In-process token buckets: a burst allowance, then a steady refill.

Counters live in each worker process, so with W workers (and H hosts) a
client can get up to W x H times a limit; see README, "Rate limits".
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limit:
    """`burst` requests at once, then one more every `interval` seconds."""

    burst: int
    interval: float

    @classmethod
    def parse(cls, spec: str) -> Limit | None:
        """'BURST/SECONDS', e.g. '10/30'; 'off' disables the limit (None)."""
        if spec.strip().lower() == "off":
            return None
        burst, _, interval = spec.partition("/")
        value = cls(int(burst), float(interval))
        if value.burst < 1 or not value.interval > 0:
            raise ValueError(spec)
        return value


class RateLimiter:
    """Buckets by key (an address, a username, a user id), bounded in memory."""

    def __init__(self, limit: Limit | None, max_keys: int = 100_000) -> None:
        self.limit = limit
        self._max_keys = max_keys
        self._buckets: dict[object, tuple[float, float]] = {}  # key -> (tokens, at)

    def _tokens(self, key: object, now: float) -> float:
        assert self.limit is not None
        tokens, at = self._buckets.get(key, (self.limit.burst, now))
        return min(self.limit.burst, tokens + (now - at) / self.limit.interval)

    def retry_after(self, key: object) -> int:
        """0 if a request may go now, else whole seconds until it may (no token taken)."""
        if self.limit is None:
            return 0
        tokens = self._tokens(key, time.monotonic())
        return 0 if tokens >= 1 else math.ceil((1 - tokens) * self.limit.interval)

    def take(self, key: object) -> int:
        """Takes a token if there is one: 0, else the seconds to wait (see retry_after)."""
        if self.limit is None:
            return 0
        now = time.monotonic()
        tokens = self._tokens(key, now)
        if tokens < 1:
            return math.ceil((1 - tokens) * self.limit.interval)
        if len(self._buckets) >= self._max_keys and key not in self._buckets:
            self._forget_full(now)
        self._buckets[key] = (tokens - 1, now)
        return 0

    def _forget_full(self, now: float) -> None:
        """Drops buckets that have refilled (they hold no information), and if
        that is not enough, the oldest half: memory stays bounded under attack."""
        assert self.limit is not None
        full_after = self.limit.burst * self.limit.interval
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
        if len(self._buckets) >= self._max_keys:
            oldest = sorted(self._buckets.items(), key=lambda item: item[1][1])
            self._buckets = dict(oldest[len(oldest) // 2 :])


class Limiters:
    """The server's limiters, one per rule, built from the settings."""

    def __init__(
        self,
        login_address: Limit | None,
        login_failures: Limit | None,
        login_username: Limit | None,
        register_address: Limit | None,
        messages_user: Limit | None,
    ) -> None:
        self.login_address = RateLimiter(login_address)
        self.login_failures = RateLimiter(login_failures)
        self.login_username = RateLimiter(login_username)
        self.register_address = RateLimiter(register_address)
        self.messages_user = RateLimiter(messages_user)

    def login_wait(self, username: str, address: str) -> int:
        """Seconds until this address may try this username again (0: now).
        Every attempt counts against the address; only failures against the
        username, per address and (looser) from anywhere."""
        username = username.lower()
        return (
            self.login_failures.retry_after((username, address))
            or self.login_username.retry_after(username)
            or self.login_address.take(address)
        )

    def login_failed(self, username: str, address: str) -> None:
        username = username.lower()
        self.login_failures.take((username, address))
        self.login_username.take(username)
