"""A fingerprint of the data a request may change: tests compare one taken
before a refused request with one taken after, so a 4xx that wrote anything
is caught (test_fuzz.py, test_input_validation.py)."""

from __future__ import annotations

from typing import Any

import asyncpg

# One statement: count and md5 of the ordered rows of every table a request
# may write (timestamps that a read may legitimately touch are left out).
SNAPSHOT_SQL = """
SELECT
  (SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), ''))
     FROM (SELECT id, username, password_hash, is_bot FROM users) t) AS users,
  (SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), ''))
     FROM (SELECT id, kind, name, description, last_seq, direct_low, direct_high
           FROM channels) t) AS channels,
  (SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), ''))
     FROM (SELECT id, channel_id, user_id, role, joined_seq, last_read_seq
           FROM subscriptions) t) AS subscriptions,
  (SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), ''))
     FROM (SELECT id, channel_id, seq, author_id, text FROM messages) t) AS messages,
  (SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY t.token_hash), ''))
     FROM (SELECT token_hash, user_id, expires_at FROM sessions) t) AS sessions
"""


async def snapshot(conn: asyncpg.Connection) -> dict[str, Any]:
    """Per table: row count and a hash of its rows."""
    return dict(await conn.fetchrow(SNAPSHOT_SQL))
