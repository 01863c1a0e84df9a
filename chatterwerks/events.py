"""Long-polls: GET /api/events for all of a user's channels, and the
per-channel ?after=&wait= form (docs/architecture.md, "Delivery"). This
module encodes cursors and runs the poll loop; what a poll reads, and when
it wakes, is the hub's (realtime/).

The events cursor is held by the client, so any process can answer any poll.
It records, per subscribed channel: the membership id (a re-join is a new
membership), the last seq delivered, and the last read marker reported.
A poll compares it with the database, or with the hub's caches of it while
the listener is connected, and answers the difference.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import asyncpg

from chatterwerks.errors import ApiError
from chatterwerks.realtime import Cursor, Hub, Position
from chatterwerks.store import channels

CURSOR_VERSION = 1
# aiohttp (like most proxies) caps a request line at 8 KiB; a cursor is about
# 12 bytes a channel, so this holds some 450 channels per user.
MAX_CURSOR_CHARS = 8_000


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


def cursor_from_state(rows: Iterable[Any]) -> str:
    """A cursor at "now" from the store's sync_state rows: every membership,
    at its channel's newest message."""
    return encode_cursor(
        {
            row["channel_id"]: Position(
                row["subscription_id"], row["last_seq"], row["last_read_seq"]
            )
            for row in rows
        }
    )


async def _long_poll(
    hub: Hub,
    user_id: int,
    channel_ids: Iterable[int],
    timeout: float,
    empty: str,
    read: Callable[..., Awaitable[str | None]],
    *args: Any,
) -> str:
    """Calls read(*args), then sleeps and reads again until it finds something
    (its answer), time runs out or the server shuts down (`empty`). A
    function and its arguments rather than a closure: a parked poll holds a
    tuple, not a function object and a cell per variable."""
    # Register first, then read: a commit between the read and the wait still
    # finds the waiter.
    waiter = hub.register(user_id, channel_ids)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = await read(*args)
            if found and timeout > 0 and (linger := hub.linger(channel_ids)):
                # Under a burst, an answer right away would carry a message or
                # two and be followed by a re-poll at once; a short linger lets
                # one answer carry many (realtime/waiters.py).
                await asyncio.sleep(linger)
                found = await read(*args)
            if found or hub.closing:
                return found or empty
            remaining = deadline - loop.time()
            if remaining > 0 and not waiter.pending:
                try:
                    await waiter.arm(remaining)
                finally:
                    woken = waiter.disarm()
            else:
                woken = waiter.disarm()
            if hub.closing:
                return empty
            if not woken:
                if hub.connected.is_set() or remaining <= 0:
                    return empty
                # The listener is down, so silence proves nothing: one last read.
                deadline = 0.0
    finally:
        hub.unregister(waiter)


def _answer(cursor: str, events: list[str]) -> str:
    return '{"cursor": "' + cursor + '", "events": [' + ", ".join(events) + "]}"


def poll_events(
    pool: asyncpg.Pool, hub: Hub, user_id: int, cursor_text: str | None, timeout: float
) -> Awaitable[str]:
    """GET /api/events: answers at once when anything is past the cursor,
    else waits for a notification, at most timeout seconds. Awaits to JSON.

    Not itself a coroutine: it hands back _long_poll's, so a parked poll
    carries one frame less (this matters at ten thousand)."""
    if cursor_text is None:
        return _answer_now(pool, user_id)
    cursor = decode_cursor(cursor_text)
    empty = _answer(cursor_text, [])
    return _long_poll(hub, user_id, cursor, timeout, empty, _read_events, hub, user_id, cursor)


async def _read_events(hub: Hub, user_id: int, cursor: Cursor) -> str | None:
    new_cursor, events = await hub.read(user_id, cursor)
    return _answer(encode_cursor(new_cursor), events) if events else None


async def _answer_now(pool: asyncpg.Pool, user_id: int) -> str:
    return _answer(cursor_from_state(await channels.sync_state(pool, user_id)), [])


def poll_channel(
    hub: Hub, user_id: int, channel_id: int, after: int, wait: float, limit: int
) -> Awaitable[str]:
    """GET /api/channels/{id}/messages?after=SEQ&wait=S: the same, for one
    channel. Awaits to JSON; a non-member gets the same 404 as everywhere."""
    args = (hub, user_id, channel_id, after, limit)
    return _long_poll(hub, user_id, (channel_id,), wait, '{"messages": []}', _read_channel, *args)


async def _read_channel(
    hub: Hub, user_id: int, channel_id: int, after: int, limit: int
) -> str | None:
    messages = await hub.read_channel(user_id, channel_id, after, limit)
    if messages is None:
        raise channels.channel_not_found()
    if not messages:
        return None
    return '{"messages": [' + ", ".join(message.json for message in messages) + "]}"
