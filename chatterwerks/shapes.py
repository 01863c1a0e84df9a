"""The JSON objects of API.md (User, Channel, Message), built from query rows."""

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
        "unread": max(0, row["last_seq"] - row["last_read_seq"]),
        "role": row["role"],
    }
    if row["kind"] == "direct":
        channel["peer"] = user_json(row, "peer_")
    return channel


def message_json(row: Row, channel_id: int | None = None) -> dict[str, Any]:
    """A Message from a row with id, seq, text, created_at and author_* columns."""
    return {
        "id": row["id"],
        "channel_id": row["channel_id"] if channel_id is None else channel_id,
        "seq": row["seq"],
        "author": user_json(row, "author_"),
        "text": row["text"],
        # Always with microseconds, as sql/003_message_json.sql writes it.
        "created_at": row["created_at"].isoformat(timespec="microseconds"),
    }
