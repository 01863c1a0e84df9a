"""Long-polls: GET /api/events for all of a user's channels, and the
per-channel ?after=&wait= form. See ARCHITECTURE.md, "Delivery".

The events cursor is held by the client, so any process can answer any poll.
It records, per subscribed channel: the membership id (a re-join is a new
membership), the last seq delivered, and the last read marker reported.
A poll compares it with the database and answers the difference.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from chatterwerks import store
from chatterwerks.db import QUERIES
from chatterwerks.errors import ApiError
from chatterwerks.hub import Hub, Waiter
from chatterwerks.shapes import channel_json, message_json

CURSOR_VERSION = 1
# aiohttp (like most proxies) caps a request line at 8 KiB; a cursor is about
# 12 bytes a channel, so this holds some 450 channels per user.
MAX_CURSOR_CHARS = 8_000
# Bounded pages: a client far behind gets this many messages per answer and
# its next poll answers at once.
PAGE_MESSAGES = 500
PAGE_PER_CHANNEL = 200


@dataclasses.dataclass(slots=True)
class Position:
    subscription_id: int
    seq: int
    read_seq: int


Cursor = dict[int, Position]  # channel id -> position


def invalid_cursor() -> ApiError:
    return ApiError(400, "invalid_cursor", "This cursor is malformed; start again without one.")


def encode_cursor(cursor: Cursor) -> str:
    """Versioned, compact (varints, channel ids delta-coded), base64url."""
    out = bytearray([CURSOR_VERSION])
    _put_varint(out, len(cursor))
    previous = 0
    for channel_id in sorted(cursor):
        position = cursor[channel_id]
        for value in (
            channel_id - previous,
            position.subscription_id,
            position.seq,
            position.read_seq,
        ):
            _put_varint(out, value)
        previous = channel_id
    return base64.urlsafe_b64encode(bytes(out)).rstrip(b"=").decode("ascii")


def decode_cursor(text: str) -> Cursor:
    if not text or len(text) > MAX_CURSOR_CHARS or not text.isascii():
        raise invalid_cursor()
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise invalid_cursor() from None
    if not data or data[0] != CURSOR_VERSION:
        raise invalid_cursor()
    values = _read_varints(data, 1)
    if not values or len(values) != 1 + 4 * values[0]:
        raise invalid_cursor()
    cursor: Cursor = {}
    channel_id = 0
    for i in range(1, len(values), 4):
        delta, subscription_id, seq, read_seq = values[i : i + 4]
        if delta == 0 and cursor:
            raise invalid_cursor()  # channel ids strictly increase
        channel_id += delta
        cursor[channel_id] = Position(subscription_id, seq, read_seq)
    return cursor


def _put_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _read_varints(data: bytes, start: int) -> list[int]:
    values, value, shift = [], 0, 0
    for byte in data[start:]:
        value |= (byte & 0x7F) << shift
        shift += 7
        if shift > 63:
            raise invalid_cursor()  # nothing in a cursor exceeds int64
        if not byte & 0x80:
            values.append(value)
            value, shift = 0, 0
    if shift:
        raise invalid_cursor()  # truncated
    return values


async def current_cursor(conn: asyncpg.Connection, user_id: int) -> str:
    """A cursor at "now": every membership, at its channel's newest message."""
    rows = await conn.fetch(QUERIES.sync_state, user_id)
    return encode_cursor(
        {
            row["channel_id"]: Position(
                row["subscription_id"], row["last_seq"], row["last_read_seq"]
            )
            for row in rows
        }
    )


async def _full_read(
    pool: asyncpg.Pool, user_id: int, cursor: Cursor
) -> tuple[Cursor, list[dict[str, Any]]]:
    """Everything that happened past the cursor, read from the database."""
    async with pool.acquire() as conn:
        state = {row["channel_id"]: row for row in await conn.fetch(QUERIES.sync_state, user_id)}
        events: list[dict[str, Any]] = []
        cursor = dict(cursor)
        for channel_id, position in list(cursor.items()):
            row = state.get(channel_id)
            if row is None or row["subscription_id"] != position.subscription_id:
                del cursor[channel_id]
                events.append({"type": "channel_removed", "channel_id": channel_id})
        added = [channel_id for channel_id in state if channel_id not in cursor]
        if added:
            for row in await conn.fetch(QUERIES.channels_by_ids, user_id, added):
                cursor[row["id"]] = Position(
                    row["subscription_id"], row["joined_seq"], row["last_read_seq"]
                )
                events.append({"type": "channel_added", "channel": channel_json(row)})
        for channel_id, position in cursor.items():
            row = state.get(channel_id)
            if row is not None and row["last_read_seq"] > position.read_seq:
                position.read_seq = row["last_read_seq"]
                events.append({"type": "read", "channel_id": channel_id, "seq": position.read_seq})
        behind = sorted(
            channel_id
            for channel_id, position in cursor.items()
            if channel_id in state and state[channel_id]["last_seq"] > position.seq
        )
        if behind:
            rows = await conn.fetch(
                QUERIES.messages_after_many,
                behind,
                [cursor[channel_id].seq for channel_id in behind],
                PAGE_PER_CHANNEL,
            )
            for row in rows[:PAGE_MESSAGES]:
                cursor[row["channel_id"]].seq = row["seq"]
                events.append({"type": "message", "message": message_json(row)})
    return cursor, events


async def _notified_messages(
    hub: Hub, cursor: Cursor, notified: dict[int, int]
) -> list[dict[str, Any]]:
    """The messages announced by NOTIFY, from the shared cache (one read per process)."""
    events = []
    for channel_id, seq in sorted(notified.items()):
        position = cursor.get(channel_id)
        if position is None or seq <= position.seq:
            continue
        upto = min(seq, position.seq + PAGE_PER_CHANNEL)
        for message in await hub.cache.range(channel_id, position.seq, upto):
            position.seq = message["seq"]
            events.append({"type": "message", "message": message})
    return events


Read = Callable[[bool, dict[int, int]], Awaitable[Any]]


async def _long_poll(hub: Hub, waiter: Waiter, timeout: float, read: Read) -> Any:
    """Reads, then sleeps and reads again until read() finds something (its
    result), time runs out or the server shuts down (None).

    read(full, notified) re-reads the database when full, else only what the
    notifications announced (from the shared cache)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    full, notified = True, {}
    while True:
        found = await read(full, notified)
        if found:
            return found
        remaining = deadline - loop.time()
        if hub.closing:
            return None
        if not await waiter.wait(remaining):
            if hub.connected.is_set() or remaining <= 0:
                return None
            # The listener is down, so silence proves nothing: one last read.
            full, notified, deadline = True, {}, 0.0
            continue
        if hub.closing:
            return None
        full, notified = waiter.take()


async def poll_events(
    pool: asyncpg.Pool, hub: Hub, user_id: int, cursor_text: str | None, timeout: float
) -> dict[str, Any]:
    """GET /api/events: answers at once when anything is past the cursor,
    else waits for a notification, at most timeout seconds."""
    if cursor_text is None:
        async with pool.acquire() as conn:
            return {"cursor": await current_cursor(conn, user_id), "events": []}
    cursor = decode_cursor(cursor_text)

    async def read(full: bool, notified: dict[int, int]) -> dict[str, Any] | None:
        if full:
            new_cursor, events = await _full_read(pool, user_id, cursor)
        else:
            new_cursor = {k: dataclasses.replace(v) for k, v in cursor.items()}
            events = await _notified_messages(hub, new_cursor, notified)
        return {"cursor": encode_cursor(new_cursor), "events": events} if events else None

    # Register first, then read: a commit between the read and the wait still
    # finds the waiter.
    with hub.waiting(user_id, cursor) as waiter:
        answer = await _long_poll(hub, waiter, timeout, read)
    return answer or {"cursor": cursor_text, "events": []}


async def poll_channel(
    pool: asyncpg.Pool, hub: Hub, user_id: int, channel_id: int, after: int, wait: float, limit: int
) -> list[dict[str, Any]]:
    """GET /api/channels/{id}/messages?after=SEQ&wait=S: the same, for one channel."""

    async def read(full: bool, notified: dict[int, int]) -> list[dict[str, Any]]:
        if full:
            async with pool.acquire() as conn:
                return await store.messages_after(conn, channel_id, user_id, after, limit)
        upto = min(notified.get(channel_id, after), after + limit)
        return await hub.cache.range(channel_id, after, upto)

    with hub.waiting(user_id, (channel_id,)) as waiter:
        return await _long_poll(hub, waiter, wait, read) or []
