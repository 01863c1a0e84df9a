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
from chatterwerks.realtime.waiters import Waiter
from chatterwerks.store import channels

# Version 2 codes each channel as four varints: the channel id and the
# membership id as deltas from the previous channel's (zigzag: they may go
# down), the seq, and the read marker as a difference from the seq (zigzag).
# Both usually take a byte or two, so a channel costs about 6 bytes, 8 in
# base64: 5,000 channels fit a POST body (GET /api/events, in a URL capped
# at 8 KiB by aiohttp and most proxies, holds about 900). Version 1 (four
# plain varints) is still read, so cursors held across a deploy stay good.
CURSOR_VERSION = 2
MAX_CURSOR_CHARS = 60_000
INT64_MAX = 2**63 - 1


def invalid_cursor() -> ApiError:
    return ApiError(400, "invalid_cursor", "This cursor is malformed; start again without one.")


def encode_cursor(cursor: Cursor) -> str:
    """Versioned, compact (varints, deltas), base64url."""
    out = bytearray([CURSOR_VERSION])
    _put_varint(out, len(cursor))
    previous_channel = previous_subscription = 0
    for channel_id in sorted(cursor):
        position = cursor[channel_id]
        _put_varint(out, channel_id - previous_channel)
        _put_varint(out, _zigzag(position.subscription_id - previous_subscription))
        _put_varint(out, position.seq)
        _put_varint(out, _zigzag(position.seq - position.read_seq))
        previous_channel, previous_subscription = channel_id, position.subscription_id
    return base64.urlsafe_b64encode(bytes(out)).rstrip(b"=").decode("ascii")


def decode_cursor(text: str) -> Cursor:
    if not text or len(text) > MAX_CURSOR_CHARS or not text.isascii():
        raise invalid_cursor()
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise invalid_cursor() from None
    if not data or data[0] not in (1, 2):
        raise invalid_cursor()
    values = _read_varints(data, 1)
    if not values or len(values) != 1 + 4 * values[0]:
        raise invalid_cursor()
    cursor: Cursor = {}
    channel_id = subscription_id = 0
    for i in range(1, len(values), 4):
        delta, subscription, seq, read = values[i : i + 4]
        if delta == 0 and cursor:
            raise invalid_cursor()  # channel ids strictly increase
        channel_id += delta
        if data[0] == 1:
            subscription_id, read_seq = subscription, read
        else:
            subscription_id += _unzigzag(subscription)
            read_seq = seq - _unzigzag(read)
        if not (
            channel_id <= INT64_MAX
            and 0 <= subscription_id <= INT64_MAX
            and 0 <= read_seq <= INT64_MAX
            and seq <= INT64_MAX
        ):
            raise invalid_cursor()
        cursor[channel_id] = Position(subscription_id, seq, read_seq)
    return cursor


def _zigzag(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


def _unzigzag(value: int) -> int:
    return value // 2 if not value & 1 else -(value + 1) // 2


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
        if shift > 70:
            raise invalid_cursor()  # nothing in a cursor exceeds 64 bits
        if not byte & 0x80:
            values.append(value)
            value, shift = 0, 0
    if shift:
        raise invalid_cursor()  # truncated
    return values


def cursor_from_state(rows: Iterable[Any]) -> str:
    """A cursor at "now" from the store's sync_state rows: every membership,
    at its channel's newest message."""
    return encode_cursor(_cursor_now(rows))


def _cursor_now(rows: Iterable[Any]) -> Cursor:
    return {
        row["channel_id"]: Position(row["subscription_id"], row["last_seq"], row["last_read_seq"])
        for row in rows
    }


async def _long_poll(
    hub: Hub,
    user_id: int,
    channel_ids: Iterable[int],
    timeout: float,
    empty: str,
    live: tuple[bool, bool] | None,
    read: Callable[..., Awaitable[str | None]],
    *args: Any,
) -> str:
    """Calls read(waiter, *args), then sleeps and reads again until it finds
    something (its answer), time runs out or the server shuts down (`empty`).
    A function and its arguments rather than a closure: a parked poll holds a
    tuple, not a function object and a cell per variable. `live` None: a
    channel tail; else an events poll's (idle, ephemeral) (docs/api.md)."""
    # Register first, then read: a commit between the read and the wait still
    # finds the waiter.
    if live is None:
        waiter = hub.register(user_id, channel_ids)
    else:
        waiter = hub.register_events(user_id, channel_ids, idle=live[0], ephemeral=live[1])
    args = (waiter, *args)
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
                if found:
                    waiter.answered()  # what it peeked at is in this answer
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
    pool: asyncpg.Pool,
    hub: Hub,
    user_id: int,
    cursor_text: str | None,
    timeout: float,
    idle: bool = False,
    ephemeral: bool = False,
) -> Awaitable[str]:
    """GET /api/events: answers at once when anything is past the cursor,
    else waits for a notification, at most timeout seconds. Awaits to JSON.

    Not itself a coroutine: it hands back _long_poll's, so a parked poll
    carries one frame less (this matters at ten thousand)."""
    if cursor_text is None:
        return _answer_now(pool, user_id)
    cursor = decode_cursor(cursor_text)
    empty = _answer(cursor_text, [])
    # A list, so that a read may leave the cursor further on for the next.
    held = [cursor]
    return _long_poll(
        hub, user_id, cursor, timeout, empty, (idle, ephemeral), _read_events, hub, user_id, held
    )


async def _read_events(waiter: Waiter, hub: Hub, user_id: int, held: list[Cursor]) -> str | None:
    """The answer past the cursor, or None. Positions with nothing left to
    tell (an edit of a message deleted since) are passed over in place: the
    poll goes on from beyond them rather than answer with no event."""
    answer, _after, held[0] = await _next_answer(waiter, hub, user_id, held[0])
    return answer


async def _next_answer(
    waiter: Waiter, hub: Hub, user_id: int, cursor: Cursor
) -> tuple[str | None, Cursor, Cursor]:
    """The answer past the cursor (or None), the cursor after it, and the
    cursor it was read from: past any positions with nothing left to tell,
    which are passed over. The cursor given is not touched.

    Ephemeral events (typing, presence) come first, and only durable events
    move the cursor: an answer with ephemeral events alone carries the
    cursor it was asked with (or past positions passed over)."""
    while True:
        after, events, moved = await hub.read(user_id, cursor)
        if events:
            return _answer(encode_cursor(after), waiter.peek_ephemeral() + events), after, cursor
        if not moved:
            break
        cursor = after
    ephemeral = waiter.peek_ephemeral()
    return (_answer(encode_cursor(cursor), ephemeral) if ephemeral else None), cursor, cursor


async def _answer_now(pool: asyncpg.Pool, user_id: int) -> str:
    return _answer(cursor_from_state(await channels.sync_state(pool, user_id)), [])


def poll_channel(
    hub: Hub, user_id: int, channel_id: int, after: int, wait: float, limit: int
) -> Awaitable[str]:
    """GET /api/channels/{id}/messages?after=SEQ&wait=S: the same, for one
    channel. Awaits to JSON; a non-member gets the same 404 as everywhere."""
    args = (hub, user_id, channel_id, after, limit)
    empty = '{"messages": []}'
    return _long_poll(hub, user_id, (channel_id,), wait, empty, None, _read_channel, *args)


async def _read_channel(
    _waiter: Waiter, hub: Hub, user_id: int, channel_id: int, after: int, limit: int
) -> str | None:
    messages = await hub.read_channel(user_id, channel_id, after, limit)
    if messages is None:
        raise channels.channel_not_found()
    if not messages:
        return None
    return '{"messages": [' + ", ".join(message.json for message in messages) + "]}"


# ---------------------------------------------------------------------------
# The stream: GET /api/events/stream


async def stream_events(
    pool: asyncpg.Pool,
    hub: Hub,
    user_id: int,
    cursor: Cursor | None,
    timeout: float,
    idle: bool,
    ephemeral: bool,
    write: Callable[[str], Awaitable[None]],
) -> None:
    """GET /api/events/stream: the answers that a client following the cursor
    chain with long-polls would get, each handed to `write` as it comes, for
    `timeout` seconds, over one response (docs/api.md). One waiter holds the
    user's place for the whole stream, so an answer costs no request.

    The first answer comes at once (the cursor's news, else the cursor and
    no events), so the client holds a cursor from the start. The stream ends
    at its time, at shutdown, or when a write fails; the client goes on from
    the cursor of the last answer it read whole, which covers exactly the
    events up to it: nothing is lost or told twice across a reconnect."""
    first = True
    if cursor is None:
        cursor = _cursor_now(await channels.sync_state(pool, user_id))
        await write(_answer(encode_cursor(cursor), []))
        first = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    waiter = hub.register_events(user_id, cursor, idle=idle, ephemeral=ephemeral)
    try:
        while not hub.closing:
            answer, after, _ = await _next_answer(waiter, hub, user_id, cursor)
            if answer is not None and (linger := hub.linger(cursor)):
                await asyncio.sleep(linger)  # a burst: one answer carries more (as a poll)
                answer, after, _ = await _next_answer(waiter, hub, user_id, cursor)
            if answer is None and first:
                answer = _answer(encode_cursor(after), [])
            if after.keys() != cursor.keys():
                # Joined or left a channel: wait on the new set. Register the
                # new waiter before dropping the old, so that no wake-up falls
                # between them and presence does not flap.
                moved = hub.register_events(user_id, after, idle=idle, ephemeral=ephemeral)
                hub.unregister(waiter)
                waiter = moved
            cursor = after
            if answer is not None:
                waiter.answered()
                first = False
                await write(answer)
                if loop.time() < deadline:
                    continue  # more may have come while writing
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            if waiter.pending:
                waiter.disarm()
                continue
            try:
                await waiter.arm(remaining)
            finally:
                waiter.disarm()
    finally:
        hub.unregister(waiter)
