"""Where a file's bytes live: one small interface, two backends.

- "postgres" (the default, postgres.py): chunks in the database itself, so
  any host serves any file and a database backup holds everything;
- "s3" (s3.py): an S3-compatible object store, configured by
  CHATTERWERKS_STORAGE_URL=s3://KEY:SECRET@HOST:PORT/BUCKET?region=R&secure=0.

Every file row names its backend (files.storage), so files written before a
switch are still served from where they are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import asyncpg


class Writer(Protocol):
    """The bytes of one file, written in order, a chunk at a time."""

    async def write(self, data: bytes) -> None: ...

    async def finish(self) -> None:
        """All bytes are written and durable."""

    async def abort(self) -> None:
        """Nothing of the file is kept (best effort; the sweep does the rest)."""


class Storage(Protocol):
    name: str  # as in files.storage

    def new_key(self) -> str | None:
        """A storage key for a new file (None: the backend keys by file id)."""

    def writer(self, file_id: int, key: str) -> Writer: ...

    def read(self, file_id: int, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes [start, end) of a file, in pieces of a bounded size."""

    async def delete(self, key: str) -> None:
        """Deletes an object (done if it was gone already)."""

    async def close(self) -> None: ...


class StorageConfigError(ValueError):
    """CHATTERWERKS_STORAGE_URL cannot be used; the message says why."""


async def open_storage(url: str | None, pool: asyncpg.Pool) -> Storage:
    """The backend a storage URL names (None or "postgres:": the database)."""
    from chatterwerks.storage.postgres import PostgresStorage

    if not url or url in ("postgres", "postgres:", "postgresql", "postgresql:"):
        return PostgresStorage(pool)
    if url.startswith("s3://"):
        from chatterwerks.storage.s3 import S3Storage

        return await S3Storage.open(url)
    raise StorageConfigError("CHATTERWERKS_STORAGE_URL must be postgres: or s3://...")
