"""The storage backends, PostgreSQL and S3 (a real SeaweedFS: tests/s3server.py),
through the same tests: direct writes and reads, and the whole API on each."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from helpers import assert_error
from s3server import s3_url  # noqa: F401 (a fixture)

from chatterwerks import keys
from chatterwerks.config import Settings
from chatterwerks.storage import Storage, StorageConfigError, open_storage
from chatterwerks.storage.postgres import CHUNK_SIZE
from chatterwerks.storage.s3 import PART_SIZE, parse_url

BACKENDS = ["postgres", "s3"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def settings(settings: Settings, backend: str, request: pytest.FixtureRequest) -> Settings:
    url = request.getfixturevalue("s3_url") if backend == "s3" else None
    return settings.replace(
        storage_url=url, max_upload_bytes=PART_SIZE * 2 + 5, limit_uploads_user=None
    )


@pytest.fixture
async def storage(app: Any, client: Any) -> AsyncIterator[Storage]:
    yield app[keys.STORAGE]


async def _read(storage: Storage, file_id: int, key: str, start: int, end: int) -> bytes:
    return b"".join([piece async for piece in storage.read(file_id, key, start, end)])


async def _file_row(app: Any, user_id: int, storage: Storage) -> tuple[int, str]:
    async with app[keys.POOL].acquire() as conn:
        channel = await conn.fetchval("SELECT id FROM channels WHERE kind = 'home'")
        row = await conn.fetchrow(
            "INSERT INTO files (uploader_id, channel_id, name, storage, storage_key) "
            "VALUES ($1, $2, 'x', $3, COALESCE($4, 'file')) RETURNING id, storage_key",
            user_id,
            channel,
            storage.name,
            storage.new_key(),
        )
    return row["id"], row["storage_key"]


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE * 3 + 7])
async def test_write_then_read_any_range(app, storage, make_user, size):
    alice = await make_user()
    file_id, key = await _file_row(app, alice.id, storage)
    data = os.urandom(size)
    writer = storage.writer(file_id, key)
    # Pieces of odd sizes: the backend cuts its own chunks.
    for start in range(0, size, 100_003):
        await writer.write(data[start : start + 100_003])
    await writer.finish()
    assert await _read(storage, file_id, key, 0, size) == data
    for start, end in [(0, 1), (size // 3, size // 2 + 1), (size - 1, size), (5, CHUNK_SIZE + 9)]:
        start, end = max(0, min(start, size)), max(0, min(end, size))
        assert await _read(storage, file_id, key, start, end) == data[start:end]


async def test_big_upload_goes_in_parts_and_aborts_cleanly(app, storage, make_user):
    """Past one S3 part: a multipart upload; an abort leaves nothing readable."""
    alice = await make_user()
    file_id, key = await _file_row(app, alice.id, storage)
    data = os.urandom(PART_SIZE + CHUNK_SIZE + 3)
    writer = storage.writer(file_id, key)
    await writer.write(data[:PART_SIZE])
    await writer.write(data[PART_SIZE:])
    await writer.finish()
    assert await _read(storage, file_id, key, 0, len(data)) == data
    other_id, other_key = await _file_row(app, alice.id, storage)
    writer = storage.writer(other_id, other_key)
    await writer.write(data)
    await writer.abort()
    if storage.name == "s3":
        with pytest.raises(Exception, match=r"NoSuchKey|404|Not Found"):
            await _read(storage, other_id, other_key, 0, 10)


async def _upload(user: Any, cid: int, data: bytes, name: str = "f.bin", expect: int = 201) -> Any:
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(data), filename=name)
    response = await user.client.post(f"/api/channels/{cid}/files", data=form, headers=user.headers)
    body = await response.json()
    assert response.status == expect, body
    return body


async def test_api_round_trip_range_and_deletion(app, storage, make_user, home_id, backend):
    alice = await make_user()
    data = os.urandom(PART_SIZE + 12345)  # a multipart upload on S3
    file = (await _upload(alice, home_id, data))["file"]
    path = file["url"]
    response = await alice.client.get(path, headers=alice.headers)
    assert response.status == 200 and await response.read() == data
    response = await alice.client.get(path, headers={**alice.headers, "Range": "bytes=-100"})
    assert response.status == 206 and await response.read() == data[-100:]
    sent = await alice.post(
        f"/api/channels/{home_id}/messages", {"text": "here", "files": [file["id"]]}, expect=201
    )
    async with app[keys.POOL].acquire() as conn:
        key = await conn.fetchval("SELECT storage_key FROM files WHERE id = $1", file["id"])
    await alice.call(
        "DELETE", f"/api/channels/{home_id}/messages/{sent['message']['seq']}", expect=204
    )
    response = await alice.client.get(path, headers=alice.headers)
    assert_error(await response.json(), "file_not_found")
    # The bytes are gone too: the chunks with the row; the object after the
    # commit (the sweeper, poked by the deletion; purge() waits for it here).
    await app[keys.FILE_SWEEPER].purge()
    async with app[keys.POOL].acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM file_chunks") == 0
        assert await conn.fetchval("SELECT count(*) FROM file_deletions") == 0
    if backend == "s3":
        with pytest.raises(Exception, match=r"NoSuchKey|404|Not Found"):
            await _read(storage, file["id"], key, 0, 1)


async def _objects(storage: Storage) -> set[str]:
    listed = await storage.client.list_objects_v2(Bucket=storage.bucket, Prefix="files/")
    return {item["Key"] for item in listed.get("Contents", [])}


async def test_over_the_limit_leaves_nothing(app, storage, make_user, home_id):
    alice = await make_user()
    limit = app[keys.SETTINGS].max_upload_bytes
    before = await _objects(storage) if storage.name == "s3" else set()
    # Past one part: on S3 a multipart upload was under way, and is aborted.
    assert_error(await _upload(alice, home_id, b"y" * (limit + 1), expect=413), "file_too_large")
    async with app[keys.POOL].acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM files") == 0
        assert await conn.fetchval("SELECT count(*) FROM file_chunks") == 0
    if storage.name == "s3":
        assert await _objects(storage) == before
        uploads = await storage.client.list_multipart_uploads(Bucket=storage.bucket)
        assert not uploads.get("Uploads")


async def test_storage_url_is_checked():
    assert parse_url("s3://k:s@127.0.0.1:9000/b?secure=0&region=eu")["endpoint_url"] == (
        "http://127.0.0.1:9000"
    )
    for bad in ["s3://host/bucket", "s3://k:s@host/", "s3://k:s@host/a/b", "ftp://x"]:
        with pytest.raises(StorageConfigError):
            await open_storage(bad, None)  # type: ignore[arg-type]
