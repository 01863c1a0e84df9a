"""Files and images (issue 12): upload, attach, download, authorization,
limits, images and thumbnails, deletion and the sweep."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
from typing import Any

import pytest
from helpers import assert_error
from PIL import Image

from chatterwerks import keys
from chatterwerks.config import Settings

LIMIT = 320 * 1024 + 17  # a small upload limit, not a multiple of any chunk size


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    # A test parametrized with `quota` gets that quota.
    quota = request.getfixturevalue("quota") if "quota" in request.fixturenames else None
    return settings.replace(
        max_upload_bytes=LIMIT,
        limit_uploads_user=None,
        upload_quota_bytes=quota or settings.upload_quota_bytes,
    )


async def group(owner, *members, name="team"):
    body = await owner.post("/api/channels", {"name": name, "members": list(members)}, expect=201)
    return body["channel"]["id"]


async def upload(user, cid: int, data: bytes, name: str = "a.bin", expect: int | None = 201) -> Any:
    """A multipart upload, as `curl -F file=@a.bin` sends it."""
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(data), filename=name, content_type="application/octet-stream")
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


async def test_a_caption_can_be_edited_away_but_a_text_only_message_keeps_text(make_user):
    alice = await make_user()
    cid = await group(alice)
    shot = (await upload(alice, cid, png(), "shot.png"))["file"]
    sent = await alice.post(
        f"/api/channels/{cid}/messages", {"text": "look", "files": [shot["id"]]}, expect=201
    )
    path = f"/api/channels/{cid}/messages/{sent['message']['seq']}"
    edited = (await alice.call("PATCH", path, {"text": "  "}, expect=200))["message"]
    assert edited["text"] == "" and [f["id"] for f in edited["files"]] == [shot["id"]]
    assert edited["edited_at"] is not None
    plain = await alice.send(cid, "words only")
    refused = await alice.call(
        "PATCH", f"/api/channels/{cid}/messages/{plain['seq']}", {"text": ""}, expect=400
    )
    assert_error(refused, "invalid_text")
    history = await alice.get(f"/api/channels/{cid}/messages")
    assert history["messages"][-1]["text"] == "words only"


async def test_raw_body_past_the_limit_is_refused_up_front(make_user, app):
    alice = await make_user()
    cid = await group(alice)
    response = await alice.client.post(
        f"/api/channels/{cid}/files?name=big.bin",
        data=io.BytesIO(b"z" * (LIMIT + 1)),
        headers={**alice.headers, "Content-Length": str(LIMIT + 1)},
    )
    assert response.status == 413
    assert_error(await response.json(), "file_too_large")
    async with app[keys.POOL].acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM files") == 0


async def test_multipart_needs_the_file_field(make_user):
    import aiohttp

    alice = await make_user()
    cid = await group(alice)
    form = aiohttp.FormData()
    form.add_field("other", io.BytesIO(b"x"), filename="x.txt")
    response = await alice.client.post(
        f"/api/channels/{cid}/files", data=form, headers=alice.headers
    )
    assert response.status == 400
    assert_error(await response.json(), "missing_file")


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\cat.png", "cat.png"),
        ("evil\u202egnp.exe", "evilgnp.exe"),
        ("tab\there.txt", "tabhere.txt"),
        ("..", "file"),
        ("x" * 300 + ".pdf", "x" * 251 + ".pdf"),
    ],
)
async def test_file_names_are_cleaned(make_user, given, kept):
    alice = await make_user()
    cid = await group(alice)
    file = (await upload(alice, cid, b"data", given))["file"]
    assert file["name"] == kept
    response, _ = await download(alice, file["url"])
    assert "filename*=UTF-8''" in response.headers["Content-Disposition"]


async def test_authorization_on_upload_attach_and_download(make_user):
    alice = await make_user()
    bob = await make_user()
    eve = await make_user()
    cid = await group(alice, bob.username)
    other = await group(alice, name="elsewhere")
    # An outsider cannot upload to the channel (it does not exist for them).
    assert_error(await upload(eve, cid, b"x", expect=404), "channel_not_found")
    file = (await upload(alice, cid, b"secret"))["file"]
    missing = await eve.get("/api/files/999999", expect=404)
    assert_error(missing, "file_not_found")
    # Before it is sent, only its uploader reads it; to anyone else it is missing.
    for user in (bob, eve):
        response, _ = await download(user, file["url"])
        assert response.status == 404 and await response.json() == missing
    # Someone else's upload, an upload to another channel, an unknown id.
    path = f"/api/channels/{cid}/messages"
    assert_error(await bob.post(path, {"text": "mine", "files": [file["id"]]}), "invalid_file")
    elsewhere = (await upload(alice, other, b"other"))["file"]
    assert_error(await alice.post(path, {"text": "", "files": [elsewhere["id"]]}), "invalid_file")
    assert_error(await alice.post(path, {"text": "", "files": [987654]}), "invalid_file")
    assert_error(await alice.post(path, {"text": "", "files": []}), "invalid_text")
    for bad in ["1", [0], [True], [1, 1], list(range(1, 12)), [2**63]]:
        assert_error(await alice.post(path, {"text": "x", "files": bad}), "invalid_file")
    # Nothing was written by the refused sends.
    assert (await alice.get(path))["messages"] == []
    await alice.post(path, {"text": "see", "files": [file["id"]]}, expect=201)
    response, body = await download(bob, file["url"])
    assert response.status == 200 and body == b"secret"
    response, _ = await download(eve, file["url"])
    assert response.status == 404 and await response.json() == missing
    # A removed member loses it at once.
    await alice.call("DELETE", f"/api/channels/{cid}/members/{bob.username}", expect=204)
    response, _ = await download(bob, file["url"])
    assert response.status == 404 and await response.json() == missing
    # Removed, bob can upload there no more.
    assert_error(await upload(bob, cid, b"x", expect=404), "channel_not_found")


async def test_idempotent_send_with_files_attaches_once(make_user, app):
    alice = await make_user()
    cid = await group(alice)
    file = (await upload(alice, cid, b"once"))["file"]
    path = f"/api/channels/{cid}/messages"
    headers = {**alice.headers, "Idempotency-Key": "k-1"}
    first = await alice.client.post(path, json={"text": "", "files": [file["id"]]}, headers=headers)
    again = await alice.client.post(path, json={"text": "", "files": [file["id"]]}, headers=headers)
    assert (first.status, again.status) == (201, 200)
    assert (await first.json()) == (await again.json())
    async with app[keys.POOL].acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM message_files") == 1


async def test_two_sends_race_for_one_file(make_user, app):
    alice = await make_user()
    cid = await group(alice)
    file = (await upload(alice, cid, b"contested"))["file"]
    path = f"/api/channels/{cid}/messages"
    answers = await asyncio.gather(
        *[alice.post(path, {"text": str(i), "files": [file["id"]]}) for i in range(6)]
    )
    sent = [a for a in answers if "message" in a]
    assert len(sent) == 1, answers
    for other in answers:
        if other is not sent[0]:
            assert_error(other, "invalid_file")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a canvas of width x height (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


async def test_image_gets_size_and_thumbnail(make_user):
    alice = await make_user()
    cid = await group(alice)
    file = (await upload(alice, cid, png(1600, 900), "wide.bin"))["file"]
    assert file["content_type"] == "image/png"
    assert (file["width"], file["height"]) == (1600, 900)
    assert file["thumbnail_url"] == f"/api/files/{file['id']}/thumbnail"
    response, body = await download(alice, file["url"])
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Content-Disposition"].startswith("inline")
    response, body = await download(alice, file["thumbnail_url"])
    assert response.status == 200 and response.headers["Content-Type"] == "image/webp"
    with Image.open(io.BytesIO(body)) as thumb:
        assert thumb.format == "WEBP" and thumb.size == (720, 405)
    etag = response.headers["ETag"]
    response, _ = await download(alice, file["thumbnail_url"], {"If-None-Match": etag})
    assert response.status == 304


async def test_exif_orientation_applied_and_metadata_stripped(make_user):
    alice = await make_user()
    cid = await group(alice)
    im = Image.new("RGB", (400, 100), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 0.0)}  # a GPS position
    out = io.BytesIO()
    im.save(out, "JPEG", exif=exif)
    assert b"Exif" in out.getvalue()
    file = (await upload(alice, cid, out.getvalue(), "photo.jpg"))["file"]
    assert file["content_type"] == "image/jpeg"
    assert (file["width"], file["height"]) == (100, 400)  # as shown, upright
    _, body = await download(alice, file["thumbnail_url"])
    with Image.open(io.BytesIO(body)) as thumb:
        assert thumb.size == (100, 400)
        assert not thumb.getexif() and "exif" not in thumb.info and "icc_profile" not in thumb.info


@pytest.mark.parametrize(("width", "height"), [(8000, 8000), (100_000, 100_000)])
async def test_decompression_bomb_is_kept_as_a_plain_attachment(make_user, width, height):
    alice = await make_user()
    cid = await group(alice)
    data = png_header_only(width, height)
    file = (await upload(alice, cid, data, "bomb.png"))["file"]
    assert file["thumbnail_url"] is None
    response, body = await download(alice, file["url"])
    assert body == data
    # Never inline: a browser would try to decode it.
    assert response.headers["Content-Disposition"].startswith("attachment")
    response, _ = await download(alice, f"/api/files/{file['id']}/thumbnail")
    assert response.status == 404


async def test_polyglot_html_named_png_is_not_an_image(make_user):
    alice = await make_user()
    cid = await group(alice)
    html = b"<!doctype html><html><script>alert(document.cookie)</script></html>"
    file = (await upload(alice, cid, html, "cute.png"))["file"]
    assert file["content_type"] == "text/plain; charset=utf-8"
    assert file["thumbnail_url"] is None and file["width"] is None
    response, body = await download(alice, file["url"])
    assert body == html
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"].split(";")[0] == "sandbox"


async def test_svg_with_script_is_served_as_attachment(make_user):
    alice = await make_user()
    cid = await group(alice)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    file = (await upload(alice, cid, svg, "logo.svg"))["file"]
    assert file["content_type"] == "image/svg+xml" and file["thumbnail_url"] is None
    response, body = await download(alice, file["url"])
    assert body == svg
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert response.headers["Content-Security-Policy"].split(";")[0] == "sandbox"


async def test_ranges_and_etags(make_user):
    alice = await make_user()
    cid = await group(alice)
    data = os.urandom(300_000)  # two PostgreSQL chunks and a bit
    file = (await upload(alice, cid, data))["file"]
    url = file["url"]
    for header, status, want, content_range in [
        ("bytes=0-0", 206, data[:1], "bytes 0-0/300000"),
        ("bytes=10-19", 206, data[10:20], "bytes 10-19/300000"),
        ("bytes=262140-262150", 206, data[262140:262151], "bytes 262140-262150/300000"),
        ("bytes=299990-", 206, data[299990:], "bytes 299990-299999/300000"),
        ("bytes=-5", 206, data[-5:], "bytes 299995-299999/300000"),
        ("bytes=-999999", 206, data, "bytes 0-299999/300000"),
        ("bytes=299000-400000", 206, data[299000:], "bytes 299000-299999/300000"),
        ("bytes=0-1,5-6", 200, data, None),  # several ranges: the whole file
        ("lines=1-2", 200, data, None),
    ]:
        response, body = await download(alice, url, {"Range": header})
        assert response.status == status, header
        assert body == want, header
        assert response.headers.get("Content-Range") == content_range, header
    for header in ["bytes=300000-", "bytes=-0", "bytes=400000-400001"]:
        response, _ = await download(alice, url, {"Range": header})
        assert response.status == 416, header
        assert response.headers["Content-Range"] == "bytes */300000"
    response, _ = await download(alice, url)
    etag = response.headers["ETag"]
    assert response.headers["Accept-Ranges"] == "bytes"
    response, body = await download(alice, url, {"If-None-Match": etag})
    assert response.status == 304 and body == b""
    response, body = await download(alice, url, {"If-None-Match": '"other"'})
    assert response.status == 200 and body == data
    # If-Range with a stale tag: the whole file, not a piece of a changed one.
    response, body = await download(alice, url, {"Range": "bytes=0-9", "If-Range": '"old"'})
    assert response.status == 200 and body == data
    response, body = await download(alice, url, {"Range": "bytes=0-9", "If-Range": etag})
    assert response.status == 206 and body == data[:10]
    response = await alice.client.head(url, headers=alice.headers)
    assert response.status == 200 and response.headers["Content-Length"] == "300000"


@pytest.mark.parametrize("quota", [3 * 100_000 + 10])
async def test_concurrent_uploads_never_pass_the_quota(make_user, app, quota):
    alice = await make_user()
    cid = await group(alice)
    size = 100_000
    answers = await asyncio.gather(
        *[upload(alice, cid, os.urandom(size), f"{i}.bin", expect=None) for i in range(8)]
    )
    ok = [a for a in answers if "file" in a]
    assert len(ok) == 3, answers
    for answer in answers:
        if "file" not in answer:
            assert_error(answer, "quota_exceeded")
    async with app[keys.POOL].acquire() as conn:
        assert await conn.fetchval("SELECT sum(size) FROM files") == 3 * size
        assert await conn.fetchval("SELECT count(DISTINCT file_id) FROM file_chunks") == 3
    # Deleting a message with a file frees its share.
    sent = await alice.post(
        f"/api/channels/{cid}/messages", {"text": "", "files": [ok[0]["file"]["id"]]}, expect=201
    )
    assert_error(await upload(alice, cid, os.urandom(size), expect=413), "quota_exceeded")
    seq = sent["message"]["seq"]
    await alice.call("DELETE", f"/api/channels/{cid}/messages/{seq}", expect=204)
    await upload(alice, cid, os.urandom(size))


async def test_deleting_a_message_deletes_its_files(make_user, app):
    alice = await make_user()
    bob = await make_user()
    cid = await group(alice, bob.username)
    ids = [(await upload(alice, cid, png(), f"{i}.png"))["file"]["id"] for i in range(3)]
    keep = (await upload(alice, cid, b"kept"))["file"]["id"]
    path = f"/api/channels/{cid}/messages"
    sent = (await alice.post(path, {"text": "pics", "files": ids}, expect=201))["message"]
    await alice.post(path, {"text": "other", "files": [keep]}, expect=201)
    await alice.call("DELETE", f"{path}/{sent['seq']}", expect=204)
    page = await bob.get(path)
    assert page["messages"][0]["deleted"] and page["messages"][0]["files"] == []
    for file_id in ids:
        for user in (alice, bob):
            response, _ = await download(user, f"/api/files/{file_id}")
            assert response.status == 404
    async with app[keys.POOL].acquire() as conn:
        assert await conn.fetchval("SELECT array_agg(id) FROM files") == [keep]
        assert await conn.fetchval("SELECT count(*) FROM thumbnails") == 0
        assert (
            await conn.fetchval("SELECT count(*) FROM file_chunks WHERE file_id <> $1", keep) == 0
        )
    response, body = await download(bob, f"/api/files/{keep}")
    assert body == b"kept"


async def test_sweep_deletes_old_unsent_and_dead_uploads(make_user, app):
    alice = await make_user()
    cid = await group(alice)
    old_unsent = (await upload(alice, cid, b"old"))["file"]["id"]
    new_unsent = (await upload(alice, cid, b"new"))["file"]["id"]
    old_sent = (await upload(alice, cid, b"sent"))["file"]["id"]
    await alice.post(f"/api/channels/{cid}/messages", {"text": "", "files": [old_sent]}, expect=201)
    async with app[keys.POOL].acquire() as conn:
        dead = await conn.fetchval(
            "INSERT INTO files (uploader_id, channel_id, name, storage, storage_key) "
            "VALUES ($1, $2, 'dead', 'postgres', 'file') RETURNING id",
            alice.id,
            cid,
        )
        await conn.execute("INSERT INTO file_chunks VALUES ($1, 0, 'x')", dead)
        await conn.execute(
            "UPDATE files SET created_at = now() - interval '2 days' WHERE id = ANY($1)",
            [old_unsent, old_sent, dead],
        )
    assert await app[keys.FILE_SWEEPER].sweep() == 2
    async with app[keys.POOL].acquire() as conn:
        left = await conn.fetchval("SELECT array_agg(id ORDER BY id) FROM files")
        assert left == sorted([new_unsent, old_sent])
        assert await conn.fetchval("SELECT count(*) FROM file_chunks WHERE file_id = $1", dead) == 0


MiB = 1024 * 1024


async def test_upload_streams_and_another_process_serves_it(settings, make_user, home_id):
    """A 25 MiB upload (the default limit, exactly) through one `chatterwerks
    serve` process: its memory stays flat while the bytes stream through (a
    server that held the file would grow by 25 MiB or more); another process
    serves the same bytes, from the database."""
    import aiohttp
    import psutil
    from helpers import start_server, stop_server

    alice = await make_user()
    (one, base_one), (two, base_two) = await asyncio.gather(
        start_server(settings.database_url), start_server(settings.database_url)
    )
    try:
        server = psutil.Process(one.pid)
        piece = os.urandom(MiB)
        digest = hashlib.sha256(piece * 25).hexdigest()

        async def body() -> Any:
            for _ in range(25):
                yield piece
                await asyncio.sleep(0.02)  # a client at a realistic pace

        samples: list[int] = []

        async def sample() -> None:
            while True:
                samples.append(server.memory_info().rss)
                await asyncio.sleep(0.02)

        async with aiohttp.ClientSession() as session:
            # Warm up: the first upload loads Pillow, the statements' plans...
            url = f"{base_one}/api/channels/{home_id}/files?name=warm.bin"
            async with session.post(url, data=b"w" * MiB, headers=alice.headers) as response:
                assert response.status == 201
            baseline = server.memory_info().rss
            sampler = asyncio.create_task(sample())
            url = f"{base_one}/api/channels/{home_id}/files?name=big.bin"
            async with session.post(url, data=body(), headers=alice.headers) as response:
                file = (await response.json())["file"]
                assert response.status == 201
            sampler.cancel()
            assert file["size"] == 25 * MiB
            growth = max(samples) - baseline
            print(f"RSS baseline {baseline / MiB:.1f} MiB, peak growth {growth / MiB:.1f} MiB")
            assert growth < 12 * MiB, f"the server grew by {growth / MiB:.1f} MiB"
            # One byte more than the limit is refused.
            url = f"{base_one}/api/channels/{home_id}/files?name=too.bin"
            data = io.BytesIO(b"x" * (25 * MiB + 1))
            async with session.post(url, data=data, headers=alice.headers) as response:
                assert response.status == 413
            async with session.get(f"{base_two}{file['url']}", headers=alice.headers) as response:
                assert response.status == 200
                served = hashlib.sha256()
                async for chunk in response.content.iter_chunked(MiB):
                    served.update(chunk)
            assert served.hexdigest() == digest
    finally:
        stop_server(one)
        stop_server(two)


async def test_a_client_that_hangs_up_leaves_nothing(make_user, app):
    """An upload cut off mid-body (the client goes away) is cleaned up: no
    row, no chunk, although the handler was cancelled."""
    alice = await make_user()
    cid = await group(alice)
    sent_enough = asyncio.Event()

    async def body() -> Any:
        for _ in range(3):
            yield os.urandom(100_000)
        sent_enough.set()
        await asyncio.sleep(3600)  # then nothing more, ever

    async def count() -> tuple[int, int]:
        async with app[keys.POOL].acquire() as conn:
            return (
                await conn.fetchval("SELECT count(*) FROM files"),
                await conn.fetchval("SELECT count(*) FROM file_chunks"),
            )

    request = asyncio.create_task(
        alice.client.post(
            f"/api/channels/{cid}/files?name=cut.bin", data=body(), headers=alice.headers
        )
    )
    await sent_enough.wait()
    # The server has the upload's row and its first chunk before long.
    for _ in range(500):
        if await count() == (1, 1):
            break
        await asyncio.sleep(0.01)
    assert await count() == (1, 1)
    request.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await request
    for _ in range(500):
        if await count() == (0, 0):
            break
        await asyncio.sleep(0.01)
    assert await count() == (0, 0)


async def test_other_multipart_fields_are_skipped_but_bounded(make_user):
    import aiohttp

    alice = await make_user()
    cid = await group(alice)
    form = aiohttp.FormData()
    form.add_field("note", "a small field first")
    form.add_field("file", io.BytesIO(b"payload"), filename="p.txt")
    response = await alice.client.post(
        f"/api/channels/{cid}/files", data=form, headers=alice.headers
    )
    assert response.status == 201 and (await response.json())["file"]["size"] == 7
    form = aiohttp.FormData()
    form.add_field("padding", io.BytesIO(b"p" * 70_000), filename="pad.bin")
    form.add_field("file", io.BytesIO(b"payload"), filename="p.txt")
    response = await alice.client.post(
        f"/api/channels/{cid}/files", data=form, headers=alice.headers
    )
    assert response.status == 400
    assert_error(await response.json(), "invalid_multipart")


async def test_missing_bytes_cut_the_download_short(make_user, app):
    """Storage that fails mid-download (here: a chunk gone) never sends wrong
    bytes: the connection ends short of Content-Length."""
    import aiohttp

    alice = await make_user()
    cid = await group(alice)
    data = os.urandom(300_000)
    file = (await upload(alice, cid, data))["file"]
    async with app[keys.POOL].acquire() as conn:
        await conn.execute("DELETE FROM file_chunks WHERE file_id = $1 AND n = 1", file["id"])
    response = await alice.client.get(file["url"], headers=alice.headers)
    assert response.status == 200 and response.content_length == 300_000
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()


async def test_concurrent_image_uploads_all_get_thumbnails(make_user):
    """More images at once than are decoded at once: they take turns."""
    alice = await make_user()
    cid = await group(alice)
    answers = await asyncio.gather(
        *[upload(alice, cid, png(900 + i, 300), f"{i}.png") for i in range(5)]
    )
    assert [a["file"]["width"] for a in answers] == [900 + i for i in range(5)]
    assert all(a["file"]["thumbnail_url"] for a in answers)
