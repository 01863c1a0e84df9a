"""Ephemeral events: typing, and the presence table's few writes
(sql/queries/live.sql, sql/008_presence.sql). Nothing here is stored in a
stream; the NOTIFYs are best-effort by design (docs/architecture.md)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import asyncpg

from chatterwerks.db import QUERIES
from chatterwerks.store.channels import channel_not_found

# Presence states as stored; offline has no row.
OFFLINE, AWAY, ONLINE = 0, 1, 2
NAMES = {OFFLINE: "offline", AWAY: "away", ONLINE: "online"}
STATES = {name: state for state, name in NAMES.items()}

Server = tuple[int, datetime.datetime]  # a listener's backend pid and start


async def send_typing(pool: asyncpg.Pool, channel_id: int, user_id: int) -> None:
    """Tells the channel's pollers that the user types; members only."""
    if await pool.fetchrow(QUERIES.send_typing, channel_id, user_id) is None:
        raise channel_not_found()


async def listener_start(
    pool: asyncpg.Pool, pid: int, application_name: str
) -> datetime.datetime | None:
    """When that listener connection began; None if it is gone."""
    return await pool.fetchval(QUERIES.listener_start, pid, application_name)


async def update_presence(
    pool: asyncpg.Pool, server: Server, states: Sequence[tuple[int, int]]
) -> int:
    """Sets this process's state of each (user, state); the global changes
    are announced by NOTIFY. Returns how many global states changed."""
    users = [user for user, _ in states]
    values = [state for _, state in states]
    return await pool.fetchval(QUERIES.presence_update, server[0], server[1], users, values)


async def sweep_presence(pool: asyncpg.Pool, application_name: str) -> int:
    """Drops the rows of processes whose listener is gone; returns how many."""
    return await pool.fetchval(QUERIES.presence_sweep, application_name)


async def all_presence(pool: asyncpg.Pool) -> dict[int, int]:
    """Every user who is not offline, with their global state."""
    return {row["user_id"]: row["state"] for row in await pool.fetch(QUERIES.presence_all)}
