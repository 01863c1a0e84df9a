"""The JSON objects of docs/api.md (User, Channel), built from query rows. A
Message is built in SQL only (message_json(), sql/005_messages_that_live.sql)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Row = Mapping[str, Any]


def user_json(row: Row, prefix: str = "") -> dict[str, Any]:
    """A User from a row's id/username/is_bot columns (optionally prefixed)."""
    return {
        "id": row[prefix + "id"],
        "username": row[prefix + "username"],
        "is_bot": row[prefix + "is_bot"],
    }


def channel_json(row: Row) -> dict[str, Any]:
    """A Channel from a channel_views row."""
    channel = {
        "id": row["id"],
        "kind": row["kind"],
        "name": row["name"],
        "description": row["description"],
        "last_seq": row["last_seq"],
        "last_read_seq": row["last_read_seq"],
        # Messages, not stream positions (sql/005_messages_that_live.sql).
        "message_count": row["message_count"],
        "read_count": row["read_count"],
        "unread": max(0, row["message_count"] - row["read_count"]),
        # Unread mentions of the viewer there (sql/005_messages_that_live.sql).
        "mentions": row["mentions"],
        "role": row["role"],
        # The viewer's notification setting, defaults resolved (sql/007).
        "notify": row["notify"],
    }
    if row["kind"] == "direct":
        channel["peer"] = user_json(row, "peer_")
    return channel
