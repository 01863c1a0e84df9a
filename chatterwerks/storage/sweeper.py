"""The files' background work, one tracked task per process: deleting
uploads that died with their process, files never sent (older than a day),
and the external objects of deleted files (after the commit that deleted
their rows; a crash in between leaves the queue row, retried here)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import asyncpg

from chatterwerks.db import CONNECTION_ERRORS
from chatterwerks.storage import Storage
from chatterwerks.store import files

log = logging.getLogger(__name__)

# An upload still 'uploading' after this long died with its process
# (a live one reads a chunk at least every minute).
DEAD_UPLOAD_SECONDS = 3600.0
UNUSED_FILE_SECONDS = 86400.0
SWEEP_EVERY_SECONDS = 3600.0
DELETION_BATCH = 100


class FileSweeper:
    def __init__(self, pool: asyncpg.Pool, storage: Storage) -> None:
        self._pool = pool
        self._storage = storage
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="file-sweeper")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def poke(self) -> None:
        """Something was queued for deletion: purge soon, not in an hour."""
        self._poked.set()

    async def _run(self) -> None:
        # A little later than start, and at random times: processes that
        # start together do not sweep together (SKIP LOCKED makes it safe).
        next_sweep = asyncio.get_running_loop().time() + random.uniform(30, 300)
        while True:
            timeout = max(0.0, next_sweep - asyncio.get_running_loop().time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._poked.wait()
            self._poked.clear()
            try:
                if asyncio.get_running_loop().time() >= next_sweep:
                    await self.sweep()
                    next_sweep = asyncio.get_running_loop().time() + SWEEP_EVERY_SECONDS * (
                        0.9 + 0.2 * random.random()
                    )
                await self.purge()
            except CONNECTION_ERRORS as exc:
                log.warning("file sweep: database unavailable: %r", exc)
            except Exception:
                log.exception("file sweep failed; retrying at the next round")

    async def sweep(
        self,
        dead_upload_seconds: float = DEAD_UPLOAD_SECONDS,
        unused_seconds: float = UNUSED_FILE_SECONDS,
    ) -> int:
        """Deletes dead uploads and old unsent files, then their objects."""
        count = await files.sweep(self._pool, dead_upload_seconds, unused_seconds)
        if count:
            log.info("file sweep: %d files deleted", count)
        await self.purge()
        return count

    async def purge(self) -> int:
        """Deletes the queued external objects; how many."""
        done = 0
        while True:
            async with self._pool.acquire() as conn, conn.transaction():
                rows = await files.claim_deletions(conn, DELETION_BATCH)
                for row in rows:
                    if row["storage"] == self._storage.name:
                        await self._storage.delete(row["storage_key"])
                    else:
                        log.warning("file sweep: no %s storage to delete from", row["storage"])
                        return done
                await files.delete_claimed(conn, [row["id"] for row in rows])
            done += len(rows)
            if len(rows) < DELETION_BATCH:
                return done
