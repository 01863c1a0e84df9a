"""Search over the messages a user can read now (GET /api/search), and the
page of a channel around one message (GET /api/channels/{id}/messages?around=).

The query language is parsed by chatterwerks/search_query.py; the statement
(sql/queries/search.sql) checks membership itself and gets the query only as
parameters.
"""

from __future__ import annotations

import asyncpg

from chatterwerks.db import QUERIES
from chatterwerks.search_query import Query
from chatterwerks.store.channels import channel_not_found
from chatterwerks.store.messages import message_not_found

SEARCH_MAX = 50  # results per page


async def search(
    pool: asyncpg.Pool, user_id: int, query: Query, before: int, limit: int
) -> tuple[list[tuple[int, str, list[list[int]]]], int | None]:
    """(channel id, message JSON, highlights) of the matching messages, newest
    first, with message id below `before`; and the `before` of the next page
    (None on the last)."""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        # The pool plans generically (db.py); this statement is the exception:
        # which plan is fast depends on how common the words are, which only
        # a plan made for these values can see (docs/benchmarks.md).
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        rows = await conn.fetch(
            QUERIES.search_messages,
            user_id,
            before,
            limit,
            query.tsquery(),
            list(query.authors) or None,
            list(query.channels) or None,
            query.before_time(),
            query.after_time(),
        )
    page = [(row["channel_id"], row["json"], query.highlights(row["text"])) for row in rows[:limit]]
    return page, rows[limit - 1]["id"] if len(rows) > limit else None


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
