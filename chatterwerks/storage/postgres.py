"""File bytes in PostgreSQL: file_chunks rows of CHUNK_SIZE bytes each
(the last one shorter), written through the pool one chunk per statement,
so an upload holds no connection between chunks and never a transaction
open for as long as a slow client takes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg

from chatterwerks.db import QUERIES

# Big enough that a 25 MiB file is 100 statements, small enough that a
# chunk in memory (and in one bytea value, TOASTed) is nothing to notice.
CHUNK_SIZE = 256 * 1024


class PostgresWriter:
    def __init__(self, pool: asyncpg.Pool, file_id: int) -> None:
        self._pool = pool
        self._file_id = file_id
        self._buffer = bytearray()
        self._n = 0

    async def write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= CHUNK_SIZE:
            await self._put(bytes(self._buffer[:CHUNK_SIZE]))
            del self._buffer[:CHUNK_SIZE]

    async def _put(self, chunk: bytes) -> None:
        await self._pool.execute(QUERIES.put_chunk, self._file_id, self._n, chunk)
        self._n += 1

    async def finish(self) -> None:
        if self._buffer:
            await self._put(bytes(self._buffer))
            self._buffer.clear()

    async def abort(self) -> None:
        # The chunks go with the file row (ON DELETE CASCADE), which the
        # caller deletes.
        self._buffer.clear()


class PostgresStorage:
    name = "postgres"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    def new_key(self) -> str | None:
        return None

    def writer(self, file_id: int, key: str) -> PostgresWriter:
        return PostgresWriter(self._pool, file_id)

    async def read(self, file_id: int, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        position = start
        while position < end:
            n, offset = divmod(position, CHUNK_SIZE)
            length = min(CHUNK_SIZE - offset, end - position)
            data = await self._pool.fetchval(QUERIES.get_chunk, file_id, n, offset, length)
            if not data:
                raise OSError(f"file {file_id}: chunk {n} is missing")
            yield data
            position += len(data)

    async def delete(self, key: str) -> None:
        """Nothing to do: the chunks went with their file row."""

    async def close(self) -> None:
        pass
