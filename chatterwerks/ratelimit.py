"""Token buckets: a burst allowance, then a steady refill.

`SharedLimiter` keeps its buckets in PostgreSQL (sql/010_shared_limits.sql),
so a limit holds across every process and host. A rule that sees many
requests (the message limit) leases tokens: a process takes up to `lease_max`
tokens from the shared row in one statement and spends them locally, so a
busy sender costs a round trip every few requests, not one each. Leased
tokens expire unspent after one bucket window (`burst * interval`), which
bounds the slack whatever the number of processes: in any T seconds at most
`burst + T / interval + min(processes * lease_max, burst)` requests pass
(docs/architecture.md, "Rate limits shared by every process").
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from dataclasses import dataclass

import asyncpg

from chatterwerks.db import QUERIES


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


def bucket_key(key: object) -> str:
    """A key (an int, a string, a tuple of them) as unambiguous text for the
    shared table; a long one (an attacker's username) by its digest."""
    text = json.dumps(key, ensure_ascii=True, separators=(",", ":"))
    if len(text) > 200:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


@dataclass(slots=True)
class _Lease:
    tokens: int  # still to spend here
    size: int  # how many were asked for
    expires: float  # time.monotonic() after which the rest is void
    refused_until: float = 0.0  # the bucket was empty: no token before then


class SharedLimiter:
    """A token bucket per key in PostgreSQL, shared by every process.

    `lease_max` 1 (the default) takes one token per request, a write each:
    exact, for rare requests (sign-ins). A larger `lease_max` lets this
    process take up to that many tokens at once, doubling the lease while a
    sender keeps spending it and halving it when tokens expire unspent.
    """

    def __init__(
        self,
        rule: str,
        limit: Limit | None,
        lease_max: int = 1,
        max_keys: int = 100_000,
    ) -> None:
        self.rule = rule
        self.limit = limit
        self.lease_max = max(1, lease_max)
        self._pool: asyncpg.Pool | None = None
        self._leases: dict[str, _Lease] = {}
        self._max_keys = max_keys
        self.clock = time.monotonic  # leases expire by this process's clock
        # A lease lives one bucket window: the time to refill from empty.
        self.lease_seconds = limit.burst * limit.interval if limit else 0.0

    def bind(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"rate limiter {self.rule!r} used before the pool exists")
        return self._pool

    async def retry_after(self, key: object) -> int:
        """0 if a request may go now, else whole seconds until it may (no token taken)."""
        if self.limit is None:
            return 0
        lease = self._leases.get(bucket_key(key))
        now = self.clock()
        if lease and lease.tokens > 0 and lease.expires > now:
            return 0
        if lease and lease.refused_until > now:
            return max(1, math.ceil(lease.refused_until - now))
        tokens = await self.pool.fetchval(
            QUERIES.peek_tokens,
            self.rule,
            bucket_key(key),
            float(self.limit.burst),
            self.limit.interval,
        )
        return self._wait(tokens)

    async def take(self, key: object) -> int:
        """Takes a token if there is one: 0, else the seconds to wait."""
        if self.limit is None:
            return 0
        text = bucket_key(key)
        now = self.clock()
        lease = self._leases.get(text)
        if lease is None:
            size = 1
        elif lease.refused_until > now:
            # Refused a moment ago: the bucket cannot have a token yet, so a
            # client hammering over the limit costs no statement per request.
            return max(1, math.ceil(lease.refused_until - now))
        elif lease.expires > now:
            if lease.tokens > 0:
                lease.tokens -= 1
                return 0
            size = min(self.lease_max, lease.size * 2)  # spent in time: ask for more
        elif lease.tokens > 0:
            size = max(1, lease.size // 2)  # tokens expired unspent: ask for fewer
        else:
            size = lease.size
        # The clock starts before the question, so the lease ends no later
        # than one window after the database granted it.
        row = await self.pool.fetchrow(
            QUERIES.take_tokens,
            self.rule,
            text,
            float(self.limit.burst),
            self.limit.interval,
            size,
        )
        granted, left = row["granted"], row["tokens"]
        if not granted:
            # Nobody gets a token before the bucket refills to one (leases
            # held elsewhere are never given back), so this process can
            # answer the next requests of this key itself until then.
            until = now + (1 - left) * self.limit.interval
            self._remember(text, _Lease(0, 1, now, refused_until=until))
            return self._wait(left)
        if self.lease_max > 1:
            self._remember(text, _Lease(granted - 1, size, now + self.lease_seconds))
        return 0

    def _wait(self, tokens: float | None) -> int:
        assert self.limit is not None
        if tokens is None or tokens >= 1:
            return 0
        return max(1, math.ceil((1 - tokens) * self.limit.interval))

    def _remember(self, text: str, lease: _Lease) -> None:
        if len(self._leases) >= self._max_keys and text not in self._leases:
            now = self.clock()
            self._leases = {k: v for k, v in self._leases.items() if v.expires > now}
            if len(self._leases) >= self._max_keys:
                self._leases.clear()  # only under attack; forgetting leases only refuses more
        self._leases[text] = lease


def lease_max_for(limit: Limit | None) -> int:
    """A quarter of the burst, 1 to 16: a busy sender asks the database every
    few messages, and the slack stays a fraction of the burst."""
    return max(1, min(16, limit.burst // 4)) if limit else 1


class Limiters:
    """The server's limiters, one per rule, built from the settings. The
    shared ones need the pool: `bind(pool)` once it exists (app.py)."""

    def __init__(
        self,
        login_address: Limit | None,
        login_failures: Limit | None,
        login_username: Limit | None,
        register_address: Limit | None,
        messages_user: Limit | None,
        typing_user: Limit | None = None,
        search_user: Limit | None = None,
        uploads_user: Limit | None = None,
    ) -> None:
        # Sign-ins and registrations are rare and guard against guessing: a
        # token per request, exact. Messages are frequent: leased.
        self.login_address = SharedLimiter("login_address", login_address)
        self.login_failures = SharedLimiter("login_failures", login_failures)
        self.login_username = SharedLimiter("login_username", login_username)
        self.register_address = SharedLimiter("register_address", register_address)
        self.messages_user = SharedLimiter(
            "messages_user", messages_user, lease_max_for(messages_user)
        )
        # Typing notices: each is a NOTIFY to every process, so the limit holds
        # across hosts too; leased like messages (a token each while small).
        self.typing_user = SharedLimiter("typing_user", typing_user, lease_max_for(typing_user))
        # Searches: each may read thousands of index entries; leased, frequent.
        self.search_user = SharedLimiter("search_user", search_user, lease_max_for(search_user))
        self.uploads_user = SharedLimiter("uploads_user", uploads_user, lease_max_for(uploads_user))

    def shared(self) -> list[SharedLimiter]:
        return [value for value in vars(self).values() if isinstance(value, SharedLimiter)]

    def bind(self, pool: asyncpg.Pool) -> None:
        for limiter in self.shared():
            limiter.bind(pool)

    async def login_wait(self, username: str, address: str) -> int:
        """Seconds until this address may try this username again (0: now).
        Every attempt counts against the address; only failures against the
        username, per address and (looser) from anywhere."""
        username = username.lower()
        return (
            await self.login_failures.retry_after((username, address))
            or await self.login_username.retry_after(username)
            or await self.login_address.take(address)
        )

    async def login_failed(self, username: str, address: str) -> None:
        """Counts a failure; shielded, so a guesser who hangs up is still counted."""
        await asyncio.shield(self._count_failure(username.lower(), address))

    async def _count_failure(self, username: str, address: str) -> None:
        await self.login_failures.take((username, address))
        await self.login_username.take(username)


async def forget_full_buckets(pool: asyncpg.Pool) -> int:
    """Deletes the shared buckets that have refilled (they hold nothing)."""
    status = await pool.execute(QUERIES.forget_full_buckets)
    return int(status.split()[-1])
