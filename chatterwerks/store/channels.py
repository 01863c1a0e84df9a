"""Channels, memberships and read markers, and what an events poll compares
its cursor with."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import asyncpg

from chatterwerks.db import QUERIES
from chatterwerks.errors import Conflict, Forbidden, Invalid, NotFound
from chatterwerks.shapes import channel_json, user_json


def channel_not_found() -> NotFound:
    # The same answer whether the channel does not exist or you are not in it.
    return NotFound("channel_not_found", "No such channel.")


def user_not_found(username: str) -> NotFound:
    return NotFound("user_not_found", f"There is no user called {username!r}.")


async def list_channels(pool: asyncpg.Pool, user_id: int) -> list[dict[str, Any]]:
    return [channel_json(row) for row in await pool.fetch(QUERIES.list_channels, user_id)]


async def snapshot(pool: asyncpg.Pool, user_id: int) -> tuple[list[dict[str, Any]], list[Any]]:
    """The user's channels and sync_state rows, read in one snapshot: a client
    that starts from both misses nothing and sees nothing twice."""
    async with pool.acquire() as conn:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await conn.fetch(QUERIES.list_channels, user_id)
            state = await conn.fetch(QUERIES.sync_state, user_id)
    return [channel_json(row) for row in rows], state


async def sync_state(pool: asyncpg.Pool, user_id: int) -> list[asyncpg.Record]:
    """Each membership of the user: channel_id, subscription_id, joined_seq,
    last_read_seq, and the channel's last_seq."""
    return await pool.fetch(QUERIES.sync_state, user_id)


async def channels_by_ids(
    pool: asyncpg.Pool, user_id: int, channel_ids: Iterable[int]
) -> list[asyncpg.Record]:
    """channel_views rows of those channels the user is a member of."""
    return await pool.fetch(QUERIES.channels_by_ids, user_id, list(channel_ids))


async def _with_members(conn: asyncpg.Connection, user_id: int, channel_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(QUERIES.get_channel, user_id, channel_id)
    if row is None:
        raise channel_not_found()
    channel = channel_json(row)
    members = await conn.fetch(QUERIES.channel_members, channel_id, user_id)
    # A member is a User plus their role, so a client can show the moderator.
    channel["members"] = [{**user_json(member), "role": member["role"]} for member in members]
    return channel


async def channel_with_members(pool: asyncpg.Pool, user_id: int, channel_id: int) -> dict[str, Any]:
    async with pool.acquire() as conn:
        return await _with_members(conn, user_id, channel_id)


async def create_group(
    pool: asyncpg.Pool, moderator_id: int, name: str, description: str, members: list[str]
) -> dict[str, Any]:
    async with pool.acquire() as conn:
        async with conn.transaction():
            channel_id = await conn.fetchval(QUERIES.insert_group, name, description)
            if channel_id is None:
                raise Conflict("channel_exists", f"A channel called {name!r} already exists.")
            await conn.execute(QUERIES.subscribe, channel_id, moderator_id, "moderator")
            wanted = {member.lower() for member in members}
            found = await conn.fetch(QUERIES.users_by_names, list(wanted))
            missing = wanted - {row["username"].lower() for row in found}
            if missing:
                raise user_not_found(sorted(missing)[0])
            for row in found:
                if row["id"] != moderator_id:
                    await conn.execute(QUERIES.subscribe, channel_id, row["id"], "member")
        return await _with_members(conn, moderator_id, channel_id)


async def _moderated_target(
    conn: asyncpg.Connection, channel_id: int, actor_id: int, username: str, *, adding: bool
) -> asyncpg.Record:
    """Locks the actor's membership and returns the target user, if the actor
    may change the target's membership: their own in a group, or anyone's as
    its moderator. Home and direct channels keep their members: nobody
    moderates them, and this checks the kind rather than rely on that."""
    actor = await conn.fetchrow(QUERIES.membership_for_update, channel_id, actor_id)
    if actor is None:
        raise channel_not_found()
    target = await conn.fetchrow(QUERIES.user_by_name, username)
    if target is None:
        raise user_not_found(username)
    if adding and target["id"] == actor_id:
        raise Invalid("already_member", "You are already a member of this channel.")
    if actor["kind"] != "group" and target["id"] == actor_id:
        raise Forbidden("cannot_leave", f"Nobody leaves a {actor['kind']} channel.")
    if actor["kind"] != "group" or (target["id"] != actor_id and actor["role"] != "moderator"):
        raise Forbidden("not_moderator", "Only the channel's moderator may do that.")
    return target


async def add_member(
    pool: asyncpg.Pool, channel_id: int, actor_id: int, username: str
) -> dict[str, Any]:
    async with pool.acquire() as conn:
        async with conn.transaction():
            target = await _moderated_target(conn, channel_id, actor_id, username, adding=True)
            await conn.execute(QUERIES.subscribe, channel_id, target["id"], "member")
        return await _with_members(conn, actor_id, channel_id)


async def remove_member(pool: asyncpg.Pool, channel_id: int, actor_id: int, username: str) -> None:
    """A moderator removes someone, or a member leaves; Home and direct keep everyone."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(QUERIES.lock_membership_changes, channel_id)
        target = await _moderated_target(conn, channel_id, actor_id, username, adding=False)
        removed = await conn.fetch(QUERIES.unsubscribe, channel_id, target["id"])
        if not removed:
            raise NotFound("member_not_found", f"{username!r} is not a member of this channel.")
        await conn.execute(QUERIES.ensure_moderator, channel_id)


async def open_direct(
    pool: asyncpg.Pool, actor_id: int, username: str
) -> tuple[dict[str, Any], bool]:
    """The one direct channel between the actor and username: (channel, created)."""
    async with pool.acquire() as conn:
        peer = await conn.fetchrow(QUERIES.user_by_name, username)
        if peer is None:
            raise user_not_found(username)
        if peer["id"] == actor_id:
            raise Invalid("direct_with_self", "A direct channel needs another person.")
        low, high = sorted((actor_id, peer["id"]))
        async with conn.transaction():
            channel_id = await conn.fetchval(QUERIES.insert_direct, low, high)
            created = channel_id is not None
            if created:
                await conn.execute(QUERIES.subscribe, channel_id, low, "member")
                await conn.execute(QUERIES.subscribe, channel_id, high, "member")
            else:
                channel_id = await conn.fetchval(QUERIES.direct_channel_id, low, high)
        return await _with_members(conn, actor_id, channel_id), created


async def mark_read(pool: asyncpg.Pool, channel_id: int, user_id: int, seq: int) -> None:
    row = await pool.fetchrow(QUERIES.mark_read, channel_id, user_id, seq)
    if not row["is_member"]:
        raise channel_not_found()


async def set_notify(
    pool: asyncpg.Pool, channel_id: int, user_id: int, notify: str
) -> dict[str, Any]:
    """Sets the user's notification setting of a channel they are a member of;
    the channel with members as they now see it."""
    async with pool.acquire() as conn:
        if await conn.fetchval(QUERIES.set_notify, channel_id, user_id, notify) is None:
            raise channel_not_found()
        return await _with_members(conn, user_id, channel_id)


async def read_all(pool: asyncpg.Pool, user_id: int) -> int:
    """Moves every read marker of the user to its channel's end (one
    statement); how many moved."""
    return await pool.fetchval(QUERIES.read_all, user_id)
