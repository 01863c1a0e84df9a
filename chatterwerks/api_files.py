"""Files: upload (POST /api/channels/{id}/files), download (GET
/api/files/{id} and its /thumbnail), and the storage's lifetime.

An upload streams: each chunk read from the request goes to the storage
backend before the next is read, so a process holds at most a chunk or two
per upload whatever the file's size (docs/architecture.md "Files")."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import io
import logging
import re
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import IO, Any
from urllib.parse import quote, unquote

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from chatterwerks import keys, ratelimit
from chatterwerks.auth import current_user
from chatterwerks.errors import ApiError, rate_limited
from chatterwerks.images import RASTER_TYPES, SNIFF_BYTES, ImageFacts, examine, sniff
from chatterwerks.ratelimit import Limit
from chatterwerks.storage import Storage, open_storage
from chatterwerks.storage.postgres import PostgresStorage
from chatterwerks.storage.sweeper import FileSweeper
from chatterwerks.store import files
from chatterwerks.validation import bad_input, file_name, path_id

routes = web.RouteTableDef()
log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
# A client that sends nothing for this long is cut off.
CHUNK_TIMEOUT = 60.0
# The most a multipart body may carry besides the file (boundaries, headers).
MULTIPART_OVERHEAD = 64 * 1024
# Files never change under their id: browsers may keep them, privately.
CACHE_CONTROL = "private, max-age=31536000, immutable"
# Opened on its own, a file can run nothing and load nothing (an image
# shown by the browser itself still shows).
FILE_CSP = "sandbox; default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_cleanups: set[asyncio.Task[None]] = set()
# What aiohttp's multipart reader raises on a malformed body (a warning about
# a bad Content-Disposition is an error where warnings are, as in the tests).
MALFORMED = (ValueError, AssertionError, RuntimeError, HttpProcessingError, Warning)


def malformed(exc: BaseException) -> ApiError:
    return bad_input("invalid_multipart", f"The multipart body is malformed: {exc}"[:300])


async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
    """The storage backend and the sweeper, for the app's lifetime."""
    settings = app[keys.SETTINGS]
    storage = await open_storage(settings.storage_url, app[keys.POOL])
    app[keys.STORAGE] = storage
    app[keys.UPLOAD_LIMITER] = upload_limiter(settings.limit_uploads_user, app[keys.POOL])
    sweeper = FileSweeper(app[keys.POOL], storage)
    app[keys.FILE_SWEEPER] = sweeper
    sweeper.start()
    try:
        yield
    finally:
        await sweeper.close()
        if _cleanups:
            await asyncio.gather(*_cleanups, return_exceptions=True)
        await storage.close()


def upload_limiter(limit: Limit | None, pool: object) -> Any:
    """Uploads per user. Written against both rate limiters of this moment:
    the per-process RateLimiter, and issue 13's SharedLimiter (buckets in
    PostgreSQL, shared by all processes), whichever chatterwerks.ratelimit
    has. Once both branches are in, this is one more rule of Limiters."""
    shared = getattr(ratelimit, "SharedLimiter", None)
    if shared is None:
        return ratelimit.RateLimiter(limit)  # type: ignore[attr-defined]
    limiter = shared("uploads_user", limit, ratelimit.lease_max_for(limit))  # type: ignore[attr-defined]
    limiter.bind(pool)
    return limiter


async def take_upload(limiter: Any, user_id: int) -> int:
    """A token for one upload: 0, or the seconds to wait."""
    wait = limiter.take(user_id)
    return await wait if inspect.isawaitable(wait) else wait


def too_large(limit: int) -> ApiError:
    return ApiError(413, "file_too_large", f"A file has at most {limit / 2**20:g} MiB.")


def file_path_id(request: web.Request) -> int:
    raw = request.match_info["file_id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ApiError(404, "file_not_found", "No such file.")
    return int(raw)


# ---------------------------------------------------------------- upload


def _timed(read: Callable[[int], Awaitable[bytes]]) -> Callable[[], Awaitable[bytes]]:
    async def next_chunk() -> bytes:
        try:
            async with asyncio.timeout(CHUNK_TIMEOUT):
                return await read(READ_SIZE)
        except TimeoutError:
            raise ApiError(408, "body_timeout", "The file arrived too slowly.") from None
        except MALFORMED as exc:
            raise malformed(exc) from None

    return next_chunk


async def _source(
    request: web.Request, limit: int
) -> tuple[str | None, Callable[[], Awaitable[bytes]]]:
    """(the client's file name, a reader of the next chunk: b'' at the end)
    from a multipart/form-data body (field `file`) or a raw body (the name
    in ?name= or a Content-Disposition header)."""
    length = request.content_length
    if request.content_type == "multipart/form-data":
        if length is not None and length > limit + MULTIPART_OVERHEAD:
            raise too_large(limit)
        try:
            reader = await request.multipart()
            for _ in range(10):  # a few small fields before the file are tolerated
                part = await asyncio.wait_for(reader.next(), CHUNK_TIMEOUT)
                if part is None:
                    break
                if isinstance(part, BodyPartReader) and part.name == "file":
                    # Browsers and aiohttp percent-encode some characters of
                    # a multipart file name (", CR, LF...): decoded back.
                    name = part.filename
                    return (unquote(name) if name else name), _timed(part.read_chunk)
                if not isinstance(part, BodyPartReader):
                    raise bad_input("invalid_multipart", "A nested multipart body is not a file.")
                # Another field: skipped, but not at any length.
                skipped = 0
                while chunk := await asyncio.wait_for(part.read_chunk(READ_SIZE), CHUNK_TIMEOUT):
                    skipped += len(chunk)
                    if skipped > MULTIPART_OVERHEAD:
                        raise bad_input(
                            "invalid_multipart", "Fields besides file have at most 64 KiB."
                        )
        except MALFORMED as exc:
            raise malformed(exc) from None
        except TimeoutError:
            raise ApiError(408, "body_timeout", "The file arrived too slowly.") from None
        raise bad_input("missing_file", "The multipart body has no field named file.")
    if length is not None and length > limit:
        raise too_large(limit)
    name = request.query.get("name")
    if name is None and "Content-Disposition" in request.headers:
        disposition = request.headers["Content-Disposition"]
        found = re.search(r"filename\*=UTF-8''([^;]+)", disposition, re.IGNORECASE)
        if found:
            name = unquote(found.group(1), errors="strict")
        else:
            found = re.search(r'filename="?([^";]+)"?', disposition, re.IGNORECASE)
            name = found.group(1) if found else None
    return name, _timed(request.content.read)


@routes.post("/api/channels/{id}/files")
async def upload(request: web.Request) -> web.Response:
    channel_id = path_id(request)
    user_id = current_user(request)["id"]
    app = request.app
    settings = app[keys.SETTINGS]
    limit, quota = settings.max_upload_bytes, settings.upload_quota_bytes
    if wait := await take_upload(app[keys.UPLOAD_LIMITER], user_id):
        raise rate_limited(wait, "You are uploading too fast; wait a moment.")
    try:
        raw_name, next_chunk = await _source(request, limit)
        name = file_name(raw_name)
    except UnicodeDecodeError:
        raise bad_input("invalid_file_name", "The file name must be valid UTF-8.") from None
    pool, storage = app[keys.POOL], app[keys.STORAGE]
    used = await files.quota_used(pool, user_id)
    if request.content_type != "multipart/form-data" and request.content_length is not None:
        if used + request.content_length > quota:
            raise files.quota_exceeded(quota)
    file_id, key = await files.begin_upload(
        pool, user_id, channel_id, name, storage.name, storage.new_key()
    )
    writer = storage.writer(file_id, key)
    spool: IO[bytes] | None = None
    try:
        size, digest, head = 0, hashlib.sha256(), bytearray()
        content_type: str | None = None
        while chunk := await next_chunk():
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            if used + size > quota:
                raise files.quota_exceeded(quota)
            digest.update(chunk)
            if content_type is None:
                head += chunk[: SNIFF_BYTES - len(head)]
                if len(head) >= SNIFF_BYTES:
                    content_type = sniff(bytes(head))
                    if content_type in RASTER_TYPES:
                        # The decoder needs the whole image: on disk, not in
                        # memory. The chunks before this one are all in head.
                        spool = await asyncio.to_thread(tempfile.TemporaryFile)
                        seen = bytes(head[: size - len(chunk)]) + chunk
                        await asyncio.to_thread(spool.write, seen)
            elif spool is not None:
                await asyncio.to_thread(spool.write, chunk)
            await writer.write(chunk)
        await writer.finish()
        if content_type is None:
            content_type = sniff(bytes(head))
        image = ImageFacts(None, None, None)
        if content_type in RASTER_TYPES:
            image = await examine(spool if spool is not None else io.BytesIO(head), content_type)
        body = await files.finish_upload(
            pool, file_id, user_id, quota, size, digest.hexdigest(), content_type, image
        )
    except BaseException:
        # Nothing of a failed upload stays: shielded, so a client that hangs
        # up (which cancels this handler) does not skip it.
        task = asyncio.ensure_future(_discard(pool, writer, file_id))
        _cleanups.add(task)
        task.add_done_callback(_cleanups.discard)
        await asyncio.shield(task)
        raise
    finally:
        if spool is not None:
            spool.close()
    return web.json_response({"file": body}, status=201)


async def _discard(pool, writer, file_id: int) -> None:  # type: ignore[no-untyped-def]
    try:
        await writer.abort()
    finally:
        await files.abort_upload(pool, file_id)


# -------------------------------------------------------------- download


def _disposition(kind: str, name: str) -> str:
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name
    )
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _safe_headers(etag: str) -> dict[str, str]:
    return {
        "ETag": etag,
        "Cache-Control": CACHE_CONTROL,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": FILE_CSP,
        "Cross-Origin-Resource-Policy": "same-origin",
        "Vary": "Cookie, Authorization",
    }


def _not_modified(request: web.Request, etag: str) -> bool:
    header = request.headers.get("If-None-Match")
    if header is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in tags or etag in tags


def _byte_range(request: web.Request, size: int, etag: str) -> tuple[int, int] | None:
    """[start, end) of a single satisfiable Range, None for the whole file
    (no Range, several ranges, a malformed one, or a stale If-Range).
    Unsatisfiable: 416."""
    header = request.headers.get("Range")
    if header is None:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if first:
        start = int(first)
        end = size if not last else min(int(last) + 1, size)
        if last and int(last) < start:
            return None
    else:  # the last N bytes
        start, end = max(0, size - int(last)), size
        if int(last) == 0:
            start = size
    if start >= size or start >= end:
        raise ApiError(
            416,
            "range_not_satisfiable",
            f"The file has {size} bytes.",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, end


def _backend(app: web.Application, name: str) -> Storage:
    storage = app[keys.STORAGE]
    if storage.name == name:
        return storage
    if name == "postgres":
        return PostgresStorage(app[keys.POOL])
    raise ApiError(
        503, "storage_unavailable", f"This file is in {name} storage, not configured here."
    )


@routes.get("/api/files/{file_id}")
async def download(request: web.Request) -> web.StreamResponse:
    file_id = file_path_id(request)
    app = request.app
    found = await files.readable(app[keys.POOL], file_id, current_user(request)["id"])
    etag = f'"{found.sha256[:32]}"'
    headers = _safe_headers(etag)
    if _not_modified(request, etag):
        return web.Response(status=304, headers=headers)
    # Inline only what browsers render as a picture and we decoded as one.
    inline = found.content_type in RASTER_TYPES and found.has_thumbnail
    headers["Content-Type"] = found.content_type
    headers["Content-Disposition"] = _disposition("inline" if inline else "attachment", found.name)
    headers["Accept-Ranges"] = "bytes"
    span = _byte_range(request, found.size, etag)
    start, end = span if span is not None else (0, found.size)
    response = web.StreamResponse(status=200 if span is None else 206, headers=headers)
    if span is not None:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{found.size}"
    response.content_length = end - start
    storage = _backend(app, found.storage)
    await response.prepare(request)
    if request.method != "HEAD":
        try:
            async for data in storage.read(found.id, found.storage_key, start, end):
                await response.write(data)
        except Exception as exc:
            # The headers are gone: no error answer can follow. The client
            # sees a connection cut short of Content-Length, never wrong bytes.
            log.warning("file %d: download cut off: %r", found.id, exc)
            if request.transport is not None:
                request.transport.close()
            return response
    await response.write_eof()
    return response


@routes.get("/api/files/{file_id}/thumbnail")
async def thumbnail(request: web.Request) -> web.Response:
    file_id = file_path_id(request)
    row = await files.thumbnail(request.app[keys.POOL], file_id, current_user(request)["id"])
    etag = f'"t{row["sha256"][:32]}"'
    headers = _safe_headers(etag)
    if _not_modified(request, etag):
        return web.Response(status=304, headers=headers)
    headers["Content-Disposition"] = "inline"
    return web.Response(body=row["data"], content_type=row["content_type"], headers=headers)
