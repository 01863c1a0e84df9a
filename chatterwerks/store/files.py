"""Files: the rows of uploads, the quota, who may read what, the sweep.
The bytes are the storage backend's (chatterwerks/storage/)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import asyncpg

from chatterwerks.db import QUERIES
from chatterwerks.errors import DomainError, NotFound
from chatterwerks.images import ImageFacts
from chatterwerks.store.channels import channel_not_found

MAX_FILES_PER_MESSAGE = 10


class TooLarge(DomainError):
    status = 413


def file_not_found() -> NotFound:
    return NotFound("file_not_found", "No such file.")


def quota_exceeded(quota: int) -> TooLarge:
    return TooLarge(
        "quota_exceeded",
        f"Your files would take more than your quota of {quota // (1024 * 1024)} MiB; "
        "delete some messages with files first.",
    )


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: int
    name: str
    size: int
    content_type: str
    width: int | None
    height: int | None
    sha256: str
    storage: str
    storage_key: str
    has_thumbnail: bool


async def begin_upload(
    pool: asyncpg.Pool, user_id: int, channel_id: int, name: str, storage: str, key: str | None
) -> tuple[int, str]:
    """A new file row, 'uploading', for a member of the channel: (id, storage key)."""
    row = await pool.fetchrow(QUERIES.begin_upload, user_id, channel_id, name, storage, key)
    if row is None:
        raise channel_not_found()
    return row["id"], row["storage_key"]


async def quota_used(pool: asyncpg.Pool, user_id: int) -> int:
    return await pool.fetchval(QUERIES.quota_used, user_id)


async def finish_upload(
    pool: asyncpg.Pool,
    file_id: int,
    user_id: int,
    quota: int,
    size: int,
    sha256: str,
    content_type: str,
    image: ImageFacts,
) -> dict:
    """The file made ready (the File object), or quota_exceeded (the row gone)."""
    thumb = image.thumbnail
    row = await pool.fetchrow(
        QUERIES.finish_upload,
        file_id,
        user_id,
        quota,
        size,
        sha256,
        content_type,
        image.width,
        image.height,
        thumb and thumb.content_type,
        thumb and thumb.width,
        thumb and thumb.height,
        thumb and thumb.sha256,
        thumb and thumb.data,
    )
    if row["status"] == "quota_exceeded":
        raise quota_exceeded(quota)
    if row["status"] == "gone":
        raise file_not_found()
    return json.loads(row["body"])


async def abort_upload(pool: asyncpg.Pool, file_id: int) -> None:
    await pool.execute(QUERIES.abort_upload, file_id)


async def readable(pool: asyncpg.Pool, file_id: int, user_id: int) -> StoredFile:
    """A file the user may read (file_not_found otherwise, whichever the reason)."""
    row = await pool.fetchrow(QUERIES.readable_file, file_id, user_id)
    if row is None:
        raise file_not_found()
    return StoredFile(**dict(row))


async def thumbnail(pool: asyncpg.Pool, file_id: int, user_id: int) -> asyncpg.Record:
    """(content_type, width, height, sha256, data) of a readable file's thumbnail."""
    row = await pool.fetchrow(QUERIES.readable_thumbnail, file_id, user_id)
    if row is None:
        raise file_not_found()
    return row


async def attachable_count(
    conn: asyncpg.Connection | asyncpg.Pool, channel_id: int, user_id: int, file_ids: list[int]
) -> int:
    return await conn.fetchval(QUERIES.attachable_count, channel_id, user_id, file_ids)


async def sweep(pool: asyncpg.Pool, uploading_seconds: float, unused_seconds: float) -> int:
    """Deletes dead uploads and old unsent files; how many."""
    return await pool.fetchval(QUERIES.sweep_files, uploading_seconds, unused_seconds)


async def claim_deletions(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Queued external objects to delete (inside the caller's transaction)."""
    return await conn.fetch(QUERIES.claim_deletions, limit)


async def delete_claimed(conn: asyncpg.Connection, ids: list[int]) -> None:
    await conn.execute(QUERIES.delete_claimed, ids)
