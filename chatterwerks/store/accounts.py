"""Users and sessions."""

from __future__ import annotations

from typing import Any

import asyncpg

from chatterwerks.db import QUERIES
from chatterwerks.shapes import user_json
from chatterwerks.store import messages


async def otter_id(pool: asyncpg.Pool) -> int | None:
    """The bot's user id; None when the schema is missing."""
    return await pool.fetchval(QUERIES.otter_id)


async def create_user(
    pool: asyncpg.Pool, username: str, password_hash: str, welcome: str, otter: int
) -> dict[str, Any] | None:
    """Registers a user in Home, where Otter welcomes them; None if the name is taken."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(QUERIES.insert_user, username, password_hash)
        if row is None:
            return None
        home_id = await conn.fetchval(QUERIES.subscribe_home, row["id"])
        await messages.insert(conn, home_id, otter, welcome)
    return user_json(row)


async def user_for_login(pool: asyncpg.Pool, username: str) -> asyncpg.Record | None:
    """The user (with password_hash) a sign-in verifies against."""
    return await pool.fetchrow(QUERIES.user_for_login, username)


async def password_hash_of(pool: asyncpg.Pool, user_id: int) -> str | None:
    return await pool.fetchval(QUERIES.password_hash_of, user_id)


async def change_password(
    pool: asyncpg.Pool, user_id: int, new_hash: str, kept_token_hash: bytes
) -> None:
    """Sets the hash and ends every other session of the user, in every process."""
    await pool.execute(QUERIES.change_password, user_id, new_hash, kept_token_hash)


async def start_session(pool: asyncpg.Pool, token_hash: bytes, user_id: int, days: int) -> None:
    await pool.execute(QUERIES.insert_session, token_hash, user_id, days)


async def end_session(pool: asyncpg.Pool, token_hash: bytes) -> None:
    """Ends one session; every process drops it from its cache (NOTIFY)."""
    await pool.execute(QUERIES.delete_session, token_hash)


async def session_user(
    pool: asyncpg.Pool, token_hash: bytes, idle_days: int
) -> asyncpg.Record | None:
    """The user (id, username, is_bot, expires_at) of a live session."""
    return await pool.fetchrow(QUERIES.session_user, token_hash, idle_days)


async def search_users(pool: asyncpg.Pool, prefix: str, limit: int) -> list[dict[str, Any]]:
    """Users whose lower-cased name starts with `prefix` (already lower-cased)."""
    return [user_json(row) for row in await pool.fetch(QUERIES.search_users, prefix, limit)]
