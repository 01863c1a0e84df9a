"""Search over the messages a user can read now (GET /api/search), and the
page of a channel around one message (GET /api/channels/{id}/messages?around=).

The query language is parsed by chatterwerks/search_query.py; the statement
(sql/queries/search.sql) checks membership itself and gets the query only as
parameters.
"""

from __future__ import annotations

import datetime

import asyncpg

from chatterwerks.db import QUERIES
from chatterwerks.search_query import Query
from chatterwerks.store.channels import channel_not_found
from chatterwerks.store.messages import message_not_found

SEARCH_MAX = 50  # results per page
# Channels holding at most this many messages in all are searched by reading
# their rows through the channel index (a few ms), whatever the words.
SMALL_SCOPE = 20_000


Cursor = tuple[datetime.datetime, int]  # (created_at, id) of the last result shown


async def search(
    pool: asyncpg.Pool, user_id: int, query: Query, before: Cursor | None, limit: int
) -> tuple[list[tuple[int, str, list[list[int]]]], Cursor | None]:
    """(channel id, message JSON, highlights) of the matching messages, newest
    first, older than the cursor `before`; and the cursor of the next page
    (None on the last)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        scope = await conn.fetchrow(
            QUERIES.search_scope,
            user_id,
            list(query.channels) or None,
            list(query.authors) or None,
            " ".join(query.all_words()) or None,
        )
        if not scope["channels"] or scope["authors"] == []:
            return [], None
        # The pool plans generically (db.py); this statement is the exception:
        # which plan is fast depends on how common the words are and on the
        # channels, which only a plan made for these values can see.
        await conn.execute(QUERIES.search_plan_custom)
        small = scope["scope_messages"] <= SMALL_SCOPE
        args = (
            scope["channels"],
            before[0] if before else None,
            before[1] if before else None,
            limit,
            query.tsquery(),
            scope["authors"],
            query.before_time(),
            query.after_time(),
            scope["common_words"],
            small,
        )
        if small or ((query.phrases or len(query.prefix) > 1) and not scope["common_words"]):
            # Bitmap plans only. A small scope: reading its channels' rows
            # through their index beats walking the whole table's newest
            # rows for them (in: a 2,000-message channel with a common word:
            # 39,000 rows walked). A phrase: the planner estimates it as
            # common as its words together, far above the truth, and walked
            # 700,000 rows (400 ms) for a phrase the word index finds in 10
            # ms (measured, docs/benchmarks.md).
            await conn.execute(QUERIES.search_plan_bitmap_only)
        rows = await conn.fetch(QUERIES.search_messages, *args)
    page = [(row["channel_id"], row["json"], query.highlights(row["text"])) for row in rows[:limit]]
    if len(rows) <= limit:
        return page, None
    last = rows[limit - 1]
    return page, (last["created_at"], last["id"])


async def around(
    pool: asyncpg.Pool, channel_id: int, user_id: int, seq: int, limit: int
) -> tuple[list[str], bool, bool]:
    """The page of `limit` messages around message `seq`, oldest first, as
    JSON texts: limit // 2 before it, then it and those after it; and
    whether older and newer messages exist beyond the page."""
    before_count = limit // 2
    after_count = limit - before_count
    rows = await pool.fetch(
        QUERIES.messages_around, channel_id, user_id, seq, before_count, after_count
    )
    if not rows[0]["is_member"]:
        raise channel_not_found()
    if not rows[0]["found"]:
        raise message_not_found()
    older = [row for row in rows if row["seq"] is not None and row["seq"] < seq]
    newer = [row for row in rows if row["seq"] is not None and row["seq"] >= seq]
    has_before = len(older) > before_count
    has_after = len(newer) > after_count
    page = older[len(older) - before_count :] if has_before else older
    page = page + newer[:after_count]
    return [row["json"] for row in page], has_before, has_after
