"""Files and images (issue 12): upload, attach, download, authorization,
limits, images and thumbnails, deletion and the sweep."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from typing import Any

import pytest
from helpers import assert_error
from PIL import Image

from chatterwerks import keys
from chatterwerks.config import Settings

LIMIT = 256 * 1024 + 17  # a small upload limit, not a multiple of any chunk size


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(max_upload_bytes=LIMIT, limit_uploads_user=None)


async def group(owner, *members, name="team"):
    body = await owner.post("/api/channels", {"name": name, "members": list(members)}, expect=201)
    return body["channel"]["id"]


async def upload(user, cid: int, data: bytes, name: str = "a.bin", expect: int | None = 201) -> Any:
    """A multipart upload, as `curl -F file=@a.bin` sends it."""
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    response = await user.client.post(f"/api/channels/{cid}/files", data=form, headers=user.headers)
    body = await response.json()
    if expect is not None:
        assert response.status == expect, (response.status, body)
    return body


async def download(user, path: str, headers: dict[str, str] | None = None) -> Any:
    response = await user.client.get(path, headers={**user.headers, **(headers or {})})
    return response, await response.read()


def png(width: int = 64, height: int = 48, **save: Any) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG", **save)
    return out.getvalue()


@pytest.mark.parametrize("size", [0, 1, 1000, 256 * 1024, LIMIT])
async def test_round_trip_is_byte_exact(make_user, size):
    alice = await make_user()
    cid = await group(alice)
    data = os.urandom(size)
    file = (await upload(alice, cid, data, "notes.bin"))["file"]
    assert file["size"] == size and file["name"] == "notes.bin"
    assert file["url"] == f"/api/files/{file['id']}"
    assert file["thumbnail_url"] is None and file["width"] is None
    response, body = await download(alice, file["url"])
    assert response.status == 200 and body == data
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"].startswith("sandbox")
    assert response.headers["Cache-Control"].startswith("private")


async def test_one_byte_over_the_limit_is_413(make_user, app):
    alice = await make_user()
    cid = await group(alice)
    assert_error(await upload(alice, cid, b"x" * (LIMIT + 1), expect=413), "file_too_large")
    async with app[keys.POOL].acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM files") == 0
        assert await conn.fetchval("SELECT count(*) FROM file_chunks") == 0


async def test_raw_body_upload(make_user):
    alice = await make_user()
    cid = await group(alice)
    data = b"hello, raw world\n"
    response = await alice.client.post(
        f"/api/channels/{cid}/files?name=dir/../hello.txt", data=data, headers=alice.headers
    )
    body = await response.json()
    assert response.status == 201, body
    assert body["file"]["name"] == "hello.txt"
    assert body["file"]["content_type"] == "text/plain; charset=utf-8"
    _, got = await download(alice, body["file"]["url"])
    assert got == data


async def test_send_with_files_and_read_back(make_user):
    alice = await make_user()
    bob = await make_user()
    cid = await group(alice, bob.username)
    one = (await upload(alice, cid, b"first"))["file"]
    two = (await upload(alice, cid, png(), "p.png"))["file"]
    sent = await alice.post(
        f"/api/channels/{cid}/messages", {"text": "", "files": [two["id"], one["id"]]}, expect=201
    )
    message = sent["message"]
    assert message["text"] == "" and [f["id"] for f in message["files"]] == [two["id"], one["id"]]
    assert message["files"][0] == two
    page = await bob.get(f"/api/channels/{cid}/messages")
    assert page["messages"][-1] == message
    response, body = await download(bob, one["url"])
    assert response.status == 200 and body == b"first"
    # Used once: a second send with it is refused, and nothing is written.
    again = await alice.post(f"/api/channels/{cid}/messages", {"text": "x", "files": [one["id"]]})
    assert_error(again, "invalid_file")
    plain = await alice.send(cid, "no files")
    assert plain["files"] == []
