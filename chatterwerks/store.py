"""Every read and write of chat data, with the membership check inside the
same statement or transaction: a handler cannot forget it."""

from __future__ import annotations

import datetime
from typing import Any

import asyncpg

from chatterwerks import otter
from chatterwerks.db import QUERIES
from chatterwerks.errors import ApiError
from chatterwerks.shapes import channel_json, message_json, user_json

HISTORY_MAX = 200


def channel_not_found() -> ApiError:
    # The same answer whether the channel does not exist or you are not in it.
    return ApiError(404, "channel_not_found", "No such channel.")


def user_not_found(username: str) -> ApiError:
    return ApiError(404, "user_not_found", f"There is no user called {username!r}.")


async def create_user(
    conn: asyncpg.Connection, username: str, password_hash: str, welcome: str, otter_id: int
) -> dict[str, Any] | None:
    """Registers a user in Home, where Otter welcomes them; None if the name is taken."""
    async with conn.transaction():
        row = await conn.fetchrow(QUERIES.insert_user, username, password_hash)
        if row is None:
            return None
        home_id = await conn.fetchval(QUERIES.subscribe_home, row["id"])
        await send_message(conn, home_id, otter_id, welcome)
    return user_json(row)


async def channel_with_members(
    conn: asyncpg.Connection, user_id: int, channel_id: int
) -> dict[str, Any]:
    row = await conn.fetchrow(QUERIES.get_channel, user_id, channel_id)
    if row is None:
        raise channel_not_found()
    channel = channel_json(row)
    members = await conn.fetch(QUERIES.channel_members, channel_id, user_id)
    # A member is a User plus their role, so a client can show the moderator.
    channel["members"] = [{**user_json(member), "role": member["role"]} for member in members]
    return channel


async def create_group(
    conn: asyncpg.Connection, moderator_id: int, name: str, description: str, members: list[str]
) -> dict[str, Any]:
    async with conn.transaction():
        channel_id = await conn.fetchval(QUERIES.insert_group, name, description)
        if channel_id is None:
            raise ApiError(409, "channel_exists", f"A channel called {name!r} already exists.")
        await conn.execute(QUERIES.subscribe, channel_id, moderator_id, "moderator")
        wanted = {member.lower() for member in members}
        found = await conn.fetch(QUERIES.users_by_names, list(wanted))
        missing = wanted - {row["username"].lower() for row in found}
        if missing:
            raise user_not_found(sorted(missing)[0])
        for row in found:
            if row["id"] != moderator_id:
                await conn.execute(QUERIES.subscribe, channel_id, row["id"], "member")
    return await channel_with_members(conn, moderator_id, channel_id)


async def _moderated_target(
    conn: asyncpg.Connection, channel_id: int, actor_id: int, username: str
) -> tuple[dict[str, Any], str]:
    """Locks the actor's membership; returns (target user, channel kind)."""
    actor = await conn.fetchrow(QUERIES.membership_for_update, channel_id, actor_id)
    if actor is None:
        raise channel_not_found()
    target = await conn.fetchrow(QUERIES.user_by_name, username)
    if target is None:
        raise user_not_found(username)
    if target["id"] != actor_id and actor["role"] != "moderator":
        raise ApiError(403, "not_moderator", "Only the channel's moderator may do that.")
    return dict(target), actor["kind"]


async def add_member(
    conn: asyncpg.Connection, channel_id: int, actor_id: int, username: str
) -> dict[str, Any]:
    async with conn.transaction():
        target, _ = await _moderated_target(conn, channel_id, actor_id, username)
        if target["id"] == actor_id:
            raise ApiError(400, "already_member", "You are already a member of this channel.")
        await conn.execute(QUERIES.subscribe, channel_id, target["id"], "member")
    return await channel_with_members(conn, actor_id, channel_id)


async def remove_member(
    conn: asyncpg.Connection, channel_id: int, actor_id: int, username: str
) -> None:
    """A moderator removes someone, or a member leaves; Home and direct keep everyone."""
    async with conn.transaction():
        target, kind = await _moderated_target(conn, channel_id, actor_id, username)
        if kind != "group":
            raise ApiError(403, "cannot_leave", f"Nobody leaves a {kind} channel.")
        removed = await conn.fetch(QUERIES.unsubscribe, channel_id, target["id"])
        if not removed:
            raise ApiError(
                404, "member_not_found", f"{username!r} is not a member of this channel."
            )
        await conn.execute(QUERIES.ensure_moderator, channel_id)


async def open_direct(
    conn: asyncpg.Connection, actor_id: int, username: str
) -> tuple[dict[str, Any], bool]:
    """The one direct channel between the actor and username: (channel, created)."""
    peer = await conn.fetchrow(QUERIES.user_by_name, username)
    if peer is None:
        raise user_not_found(username)
    if peer["id"] == actor_id:
        raise ApiError(400, "direct_with_self", "A direct channel needs another person.")
    low, high = sorted((actor_id, peer["id"]))
    async with conn.transaction():
        channel_id = await conn.fetchval(QUERIES.insert_direct, low, high)
        created = channel_id is not None
        if created:
            await conn.execute(QUERIES.subscribe, channel_id, low, "member")
            await conn.execute(QUERIES.subscribe, channel_id, high, "member")
        else:
            channel_id = await conn.fetchval(QUERIES.direct_channel_id, low, high)
    return await channel_with_members(conn, actor_id, channel_id), created


async def send_message(
    conn: asyncpg.Connection,
    channel_id: int,
    author_id: int,
    text: str,
    idempotency_key: str | None = None,
) -> asyncpg.Record | None:
    """Commits one message. The row has the message as JSON (`json`), and the
    channel facts Otter needs (`kind`, `direct_low`, `direct_high`). None if
    the author already sent a message with this idempotency key here: nothing
    was written, and sent_with_key() has the first one."""
    try:
        row = await conn.fetchrow(
            QUERIES.send_message, channel_id, author_id, text, idempotency_key
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != "messages_idempotency_key":
            raise
        return None  # the same key at the same moment: the other send committed
    if row is None and idempotency_key is None:
        raise channel_not_found()
    return row


async def sent_with_key(
    conn: asyncpg.Connection, channel_id: int, author_id: int, idempotency_key: str
) -> str:
    """The message (as JSON) sent earlier with this key, or 404 as for any
    channel the author cannot post in."""
    found = await conn.fetchval(QUERIES.sent_with_key, channel_id, author_id, idempotency_key)
    if found is None:
        raise channel_not_found()
    return found


def _member_rows(rows: list[asyncpg.Record]) -> list[asyncpg.Record]:
    """Rows of the history-style queries; raises 404 for a non-member."""
    if not rows[0]["is_member"]:
        raise channel_not_found()
    return [row for row in rows if row["seq"] is not None]


async def history(
    conn: asyncpg.Connection, channel_id: int, user_id: int, before: int, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    rows = _member_rows(await conn.fetch(QUERIES.history, channel_id, user_id, before, limit))
    has_more = len(rows) > limit
    page = rows[:limit]
    page.reverse()
    return [message_json(row, channel_id) for row in page], has_more


async def mark_read(conn: asyncpg.Connection, channel_id: int, user_id: int, seq: int) -> None:
    row = await conn.fetchrow(QUERIES.mark_read, channel_id, user_id, seq)
    if not row["is_member"]:
        raise channel_not_found()


async def otter_reply(
    conn: asyncpg.Connection, otter_id: int, sent: asyncpg.Record, author_id: int, text: str
) -> None:
    """Otter answers "Hey Otter ..." in Home and in its own direct channels only."""
    if author_id == otter_id:
        return
    in_its_channel = sent["kind"] == "home" or otter_id in (sent["direct_low"], sent["direct_high"])
    question = otter.addressed_question(text) if in_its_channel else None
    if question is not None:
        reply = otter.answer(question, datetime.datetime.now(datetime.UTC))
        await send_message(conn, sent["channel_id"], otter_id, reply)
