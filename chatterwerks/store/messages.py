"""Messages: sending (with Otter's replies and Idempotency-Keys), history
pages, and the ranges that long-polls deliver.

A message leaves the database only as the text of SQL's message_json(): one
serialisation for history, sends, polls and NOTIFY payloads alike.
"""

from __future__ import annotations

import datetime

import asyncpg

from chatterwerks import otter
from chatterwerks.db import QUERIES
from chatterwerks.store.channels import channel_not_found

HISTORY_MAX = 200


async def insert(
    conn: asyncpg.Connection,
    channel_id: int,
    author_id: int,
    text: str,
    idempotency_key: str | None = None,
) -> asyncpg.Record | None:
    """Commits one message (or adds it to the open transaction). The row has
    the message as JSON (`json`), and the channel facts Otter needs (`kind`,
    `direct_low`, `direct_high`). None if the author already sent a message
    with this idempotency key here: nothing was written."""
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


async def send(
    pool: asyncpg.Pool,
    channel_id: int,
    author_id: int,
    text: str,
    idempotency_key: str | None,
    otter_id: int,
) -> tuple[str, bool]:
    """Sends a message and Otter's reply to it, if it asks Otter something:
    (the message as JSON, whether this call created it). A repeat of an
    Idempotency-Key answers the first message and writes nothing.

    A message that asks Otter commits in one transaction with the reply, so
    a send that failed half-way leaves nothing behind, and its retry gets
    both; other messages are one statement, the fast path."""
    asks_otter = author_id != otter_id and otter.addressed_question(text) is not None
    async with pool.acquire() as conn:
        if asks_otter:
            async with conn.transaction():
                sent = await insert(conn, channel_id, author_id, text, idempotency_key)
                if sent is not None:
                    await _otter_reply(conn, otter_id, sent, text)
        else:
            sent = await insert(conn, channel_id, author_id, text, idempotency_key)
        if sent is not None:
            return sent["json"], True
        assert idempotency_key is not None
        found = await conn.fetchval(QUERIES.sent_with_key, channel_id, author_id, idempotency_key)
    if found is None:  # not a member (any more)
        raise channel_not_found()
    return found, False


async def _otter_reply(
    conn: asyncpg.Connection, otter_id: int, sent: asyncpg.Record, text: str
) -> None:
    """Otter answers "Hey Otter ..." in Home and in its own direct channels only."""
    in_its_channel = sent["kind"] == "home" or otter_id in (sent["direct_low"], sent["direct_high"])
    question = otter.addressed_question(text) if in_its_channel else None
    if question is not None:
        reply = otter.answer(question, datetime.datetime.now(datetime.UTC))
        await insert(conn, sent["channel_id"], otter_id, reply)


def _member_rows(rows: list[asyncpg.Record]) -> list[asyncpg.Record] | None:
    """The message rows of a history-shaped answer; None for a non-member."""
    if not rows[0]["is_member"]:
        return None
    return [row for row in rows if row["seq"] is not None]


async def history(
    pool: asyncpg.Pool, channel_id: int, user_id: int, before: int, limit: int
) -> tuple[list[str], bool]:
    """One page before seq `before`, oldest first, as JSON texts; and whether
    older messages exist."""
    rows = _member_rows(await pool.fetch(QUERIES.history, channel_id, user_id, before, limit))
    if rows is None:
        raise channel_not_found()
    has_more = len(rows) > limit
    page = rows[:limit]
    page.reverse()
    return [row["json"] for row in page], has_more


async def in_range(
    pool: asyncpg.Pool, reader_id: int, channel_id: int, after: int, upto: int
) -> list[tuple[int, str]] | None:
    """(seq, JSON) of the messages with after < seq <= upto, oldest first, if
    the reader is a member now; None if not."""
    rows = _member_rows(
        await pool.fetch(QUERIES.messages_range, channel_id, after, upto, reader_id)
    )
    if rows is None:
        return None
    return [(row["seq"], row["json"]) for row in rows]
