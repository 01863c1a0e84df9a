"""Messages: sending (with Otter's replies, Idempotency-Keys, thread replies
and @mentions), edits, deletions, reactions, history and thread pages, the
mentions view, and the stream positions that long-polls deliver.

A message leaves the database only as the text of SQL's message_json(): one
serialisation for history, sends, polls and NOTIFY payloads alike. Every
change takes the next position of its channel's stream in the statement
that makes it (sql/005_messages_that_live.sql).
"""

from __future__ import annotations

import datetime

import asyncpg

from chatterwerks import otter
from chatterwerks.db import QUERIES
from chatterwerks.errors import Conflict, Forbidden, Invalid, NotFound
from chatterwerks.store.channels import channel_not_found

HISTORY_MAX = 200
# One position of a channel's stream: (seq, is a new message, JSON: the
# Message for a new message, the whole event for another change, None for a
# change whose event is gone since, as an edit of a message deleted later).
StreamItem = tuple[int, bool, str | None]


def invalid_file() -> Invalid:
    return Invalid(
        "invalid_file",
        "files must be ids of your own uploads to this channel, not sent before.",
    )


def message_not_found() -> NotFound:
    return NotFound("message_not_found", "No such message in this channel.")


async def insert(
    conn: asyncpg.Connection,
    channel_id: int,
    author_id: int,
    text: str,
    idempotency_key: str | None = None,
    reply_to: int | None = None,
    files: list[int] | None = None,
) -> asyncpg.Record | None:
    """Commits one message (or adds it to the open transaction). The row has
    the message as JSON (`json`), and the channel facts Otter needs (`kind`,
    `direct_low`, `direct_high`). None if nothing was written: the author
    already sent a message with this idempotency key here, or reply_to is
    no live message of the channel, or the files are not all the author's
    unsent uploads to it (sql/queries/messages.sql)."""
    try:
        if reply_to is None and "@" not in text and not files:
            row = await conn.fetchrow(
                QUERIES.send_message, channel_id, author_id, text, idempotency_key
            )
        else:
            row = await conn.fetchrow(
                QUERIES.send_message_in_full,
                channel_id,
                author_id,
                text,
                idempotency_key,
                reply_to,
                files or None,
            )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "message_files_file_id_key":
            raise invalid_file() from None  # another send took the file first
        if exc.constraint_name != "messages_idempotency_key":
            raise
        return None  # the same key at the same moment: the other send committed
    except asyncpg.CheckViolationError as exc:
        if exc.constraint_name != "messages_reply_check":
            raise
        return None  # its root was deleted while the send waited: nothing written
    except asyncpg.ForeignKeyViolationError as exc:
        if exc.constraint_name != "message_files_file_id_fkey":
            raise
        raise invalid_file() from None  # the sweep deleted it meanwhile
    if row is None and idempotency_key is None and reply_to is None and not files:
        raise channel_not_found()
    return row


async def send(
    pool: asyncpg.Pool,
    channel_id: int,
    author_id: int,
    text: str,
    idempotency_key: str | None,
    otter_id: int,
    reply_to: int | None = None,
    files: list[int] | None = None,
) -> tuple[str, bool]:
    """Sends a message and Otter's reply to it, if it asks Otter something:
    (the message as JSON, whether this call created it). A repeat of an
    Idempotency-Key answers the first message and writes nothing.

    A message that asks Otter commits in one transaction with the reply, so
    a send that failed half-way leaves nothing behind, and its retry gets
    both; other messages are one statement, the fast path."""
    question = otter.addressed_question(text) if author_id != otter_id else None
    async with pool.acquire() as conn:
        if question is not None:
            async with conn.transaction():
                sent = await insert(
                    conn, channel_id, author_id, text, idempotency_key, reply_to, files
                )
                if sent is not None:
                    await _otter_reply(conn, otter_id, sent, question)
        else:
            sent = await insert(conn, channel_id, author_id, text, idempotency_key, reply_to, files)
        if sent is not None:
            return sent["json"], True
        if idempotency_key is not None:
            found = await conn.fetchval(
                QUERIES.sent_with_key, channel_id, author_id, idempotency_key
            )
            if found is not None:
                return found, False
        member = await conn.fetchval(QUERIES.is_member, channel_id, author_id)
        attachable = (
            await conn.fetchval(QUERIES.attachable_count, channel_id, author_id, files)
            if member and files
            else 0
        )
    if not member:
        raise channel_not_found()
    if files and attachable != len(files):
        raise invalid_file()
    raise Invalid("invalid_reply_to", "reply_to must be a message of this channel, not deleted.")


async def _otter_reply(
    conn: asyncpg.Connection, otter_id: int, sent: asyncpg.Record, question: str
) -> None:
    """Otter answers "Hey Otter ..." in Home and in its own direct channels only."""
    if sent["kind"] == "home" or otter_id in (sent["direct_low"], sent["direct_high"]):
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
) -> list[StreamItem] | None:
    """The stream positions after < seq <= upto of a channel, oldest first, if
    the reader is a member now; None if not."""
    rows = await pool.fetch(QUERIES.stream_range, channel_id, after, upto, reader_id)
    if not rows[0]["is_member"]:
        return None
    return [(row["seq"], row["kind"] == "message", row["json"]) for row in rows if row["seq"]]


async def replies(
    pool: asyncpg.Pool, channel_id: int, user_id: int, root_seq: int, after: int, limit: int
) -> tuple[list[str], bool]:
    """One page of a thread's replies after seq `after`, oldest first."""
    rows = await pool.fetch(QUERIES.replies, channel_id, user_id, root_seq, after, limit)
    if not rows[0]["is_member"]:
        raise channel_not_found()
    if not rows[0]["root_found"]:
        raise message_not_found()
    page = [row["json"] for row in rows if row["seq"] is not None]
    return page[:limit], len(page) > limit


async def edit(pool: asyncpg.Pool, channel_id: int, seq: int, user_id: int, text: str) -> str:
    """The author's new text; the message as JSON. Empty text only for a
    message with files (messages_text_check, sql/009_files.sql)."""
    try:
        row = await pool.fetchrow(QUERIES.edit_message, channel_id, seq, user_id, text)
    except asyncpg.CheckViolationError as exc:
        if exc.constraint_name != "messages_text_check":
            raise
        raise Invalid("invalid_text", "A message needs some text, unless it has files.") from None
    _raise_for(row["status"])
    return row["body"]


async def delete(pool: asyncpg.Pool, channel_id: int, seq: int, user_id: int) -> None:
    """Deletes a message (its author, or a group's moderator); done if done before."""
    _raise_for(await pool.fetchval(QUERIES.delete_message, channel_id, seq, user_id))


async def react(
    pool: asyncpg.Pool, channel_id: int, seq: int, user_id: int, emoji: str, add: bool
) -> None:
    """Adds or removes the user's reaction; done if it was so already."""
    _raise_for(await pool.fetchval(QUERIES.set_reaction, channel_id, seq, user_id, emoji, add))


def _raise_for(status: str) -> None:
    """The status of a change function (sql/005_messages_that_live.sql) as a
    domain error; 'ok' and 'unchanged' pass."""
    if status in ("ok", "unchanged"):
        return
    if status == "channel_not_found":
        raise channel_not_found()
    if status == "message_not_found":
        raise message_not_found()
    if status == "not_author":
        raise Forbidden("not_author", "Only its author may edit a message.")
    if status == "not_allowed":
        raise Forbidden(
            "not_allowed", "Only its author, or the moderator of a group, may delete a message."
        )
    if status == "too_many_reactions":
        raise Conflict("too_many_reactions", "A message has at most 20 different reactions.")
    raise AssertionError(f"unknown change status {status!r}")


async def mentions_of(
    pool: asyncpg.Pool, user_id: int, before: int, limit: int
) -> tuple[list[tuple[int, str]], int | None]:
    """(channel id, message JSON) of the messages mentioning the user, newest
    first, before message id `before`; and the `before` of the next page."""
    rows = await pool.fetch(QUERIES.mentions_of, user_id, before, limit)
    page = [(row["channel_id"], row["json"]) for row in rows[:limit]]
    return page, rows[limit - 1]["message_id"] if len(rows) > limit else None
