"""Password hashing with argon2id, off the event loop."""

from __future__ import annotations

import asyncio
import secrets

import argon2


class PasswordHasher:
    """argon2id hashing, run in a thread so the event loop never waits on it."""

    def __init__(self, time_cost: int, memory_kib: int) -> None:
        self._hasher = argon2.PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
        # Verifying an unknown user against this costs what a real verify
        # costs, so login time does not reveal which usernames exist.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        def check() -> bool:
            try:
                return self._hasher.verify(password_hash or self._dummy_hash, password)
            except argon2.exceptions.VerificationError:
                return False
            except argon2.exceptions.InvalidHashError:
                return False
            except UnicodeEncodeError:
                return False  # a lone surrogate: no password we stored can match it

        ok = await asyncio.to_thread(check)
        return ok and password_hash is not None
