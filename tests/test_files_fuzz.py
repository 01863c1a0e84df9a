"""Hypothesis against the file endpoints (the fuzz world of test_fuzz.py):
random bodies, names, multipart shapes, file id lists, paths and Range
headers. No 5xx, the one error shape, and a refused upload or send leaves
no file row and no message behind."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fuzz import (
    EDGE_INTS,
    FUZZ_SETTINGS,
    World,
    bodies,
    channel_ids,
    check_answer,
    json_values,
    path_segments,
    text_values,
)
from test_fuzz import world as fuzz_world  # noqa: F401 (a fixture, by this name)
from yarl import URL

from chatterwerks import keys

# A third of test_fuzz.py's examples: each may upload a few files.
FILE_FUZZ = settings(FUZZ_SETTINGS, max_examples=max(10, FUZZ_SETTINGS.max_examples // 3))


@pytest.fixture(scope="module")
def files_world(fuzz_world: World) -> World:  # noqa: F811 (the fixture)
    # The fuzzer is one user sending thousands of uploads: no rate limit
    # (a 429 would hide the handler).
    fuzz_world.app[keys.UPLOAD_LIMITER].limit = None
    return fuzz_world


def file_rows(w: World) -> int:
    async def count() -> int:
        async with w.app[keys.POOL].acquire() as conn:
            return await conn.fetchval("SELECT count(*) FROM files")

    return w.run(count())


def upload_one(w: World, user: str, channel: str, data: bytes) -> int:
    answer = w.request(
        "POST",
        f"/api/channels/{w.channels[channel]}/files?name=f.txt",
        data,
        as_user=user,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert answer.status == 201, answer.describe()
    import json

    return json.loads(answer.raw)["file"]["id"]


def _multipart(boundary: str, parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode(
            "utf-8", "surrogatepass"
        )
        out += data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


names = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["a.png", "../x", "..", "", "%00", "a\x00b", "\u202etxt.exe", "é" * 300]),
)
contents = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(
        [
            b"",
            b"\x89PNG\r\n\x1a\n",
            b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
            b"\xff\xd8\xff\xe0",
            b"GIF89a",
        ]
    ),
)


@FILE_FUZZ
@given(
    data=st.data(),
    content=contents,
    name=st.one_of(st.none(), names),
    kind=st.sampled_from(["raw", "multipart", "broken-multipart", "no-boundary"]),
)
def test_fuzz_upload(files_world: World, data: st.DataObject, content: bytes, name, kind) -> None:
    w = files_world
    channel = data.draw(channel_ids(w), label="channel")
    before = file_rows(w)
    headers: dict[str, str]
    if kind == "raw":
        from urllib.parse import quote

        query = "" if name is None else "?name=" + quote(name.encode("utf-8", "surrogatepass"))
        path, body = f"/api/channels/{channel}/files{query}", content
        headers = {"Content-Type": data.draw(st.sampled_from(["application/octet-stream", ""]))}
    else:
        boundary = "b0undary"
        field = data.draw(st.sampled_from(["file", "other", ""]), label="field")
        body = _multipart(boundary, [(field, name, content)])
        if kind == "broken-multipart":
            body = body[: data.draw(st.integers(0, len(body)), label="cut")]
        path = f"/api/channels/{channel}/files"
        mime = "multipart/form-data"
        headers = {
            "Content-Type": mime if kind == "no-boundary" else f"{mime}; boundary={boundary}"
        }
    answer = w.request("POST", path, body, headers=headers)
    if answer.status >= 400:
        assert file_rows(w) == before, answer.describe()


@FILE_FUZZ
@given(
    data=st.data(),
    text=text_values,
    files=st.one_of(
        json_values, st.lists(st.one_of(st.sampled_from(EDGE_INTS), st.integers()), max_size=12)
    ),
    mine=st.integers(0, 3),
    theirs=st.booleans(),
)
def test_fuzz_send_with_files(
    files_world: World, data: st.DataObject, text: Any, files: Any, mine: int, theirs: bool
) -> None:
    w = files_world
    own = [upload_one(w, "alice", "general", b"mine") for _ in range(mine)]
    other = [upload_one(w, "bob", "general", b"bob's")] if theirs else []
    if isinstance(files, list):
        files = data.draw(st.permutations(files + own + other), label="files")
    channel = data.draw(channel_ids(w), label="channel")
    body = data.draw(bodies({"text": st.just(text), "files": st.just(files)}), label="body")
    w.request("POST", f"/api/channels/{channel}/messages", body)


@FILE_FUZZ
@given(
    data=st.data(),
    suffix=st.sampled_from(["", "/thumbnail"]),
    range_header=st.one_of(
        st.none(),
        st.text(max_size=30),
        st.builds(
            lambda a, b: f"bytes={a}-{b}",
            st.one_of(st.just(""), st.integers(-5, 10**20).map(str)),
            st.one_of(st.just(""), st.integers(-5, 10**20).map(str)),
        ),
    ),
    etag=st.one_of(st.none(), st.text(max_size=40)),
    user=st.sampled_from(["alice", "bob", "carol"]),
)
def test_fuzz_download(
    files_world: World, data: st.DataObject, suffix: str, range_header, etag, user: str
) -> None:
    w = files_world
    known = str(upload_one(w, "alice", "general", b"0123456789"))
    file_id = data.draw(path_segments([known, "0", "999999"]), label="file")
    headers = {"Authorization": f"Bearer {w.tokens[user]}"}
    # Header values as a client can send them (no control characters).
    printable = str.maketrans({chr(c): "?" for c in [*range(32), 127]})
    if range_header is not None:
        headers["Range"] = range_header.encode("ascii", "replace").decode().translate(printable)
    if etag is not None:
        headers["If-None-Match"] = etag.encode("ascii", "replace").decode().translate(printable)
    # Not w.request: a file's answer is its bytes, not JSON.
    url = URL(f"/api/files/{file_id}{suffix}", encoded=True)
    answer = w.run(w._send("GET", url, None, headers))
    if answer.status in (200, 206) and file_id == known and not suffix:
        assert answer.raw and answer.raw in b"0123456789", answer.describe()
    elif answer.status >= 400:
        check_answer(answer)
