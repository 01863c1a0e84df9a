"""File bytes in an S3-compatible object store (AWS S3, SeaweedFS, MinIO,
Garage...), through aiobotocore (the `s3` extra: pip install chatterwerks[s3]).

CHATTERWERKS_STORAGE_URL=s3://KEY:SECRET@HOST:PORT/BUCKET?region=R&secure=0
(secure=1, the default, speaks HTTPS; path-style addressing, which every
S3-compatible server understands). The bucket must exist.

An upload of at most one PART_SIZE is one PutObject; a bigger one is a
multipart upload whose parts are sent as they fill, so at most one part is
in memory per upload; an abort aborts the multipart upload.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from chatterwerks.storage import StorageConfigError

# S3's smallest part (but the last) is 5 MiB.
PART_SIZE = 5 * 1024 * 1024
READ_SIZE = 256 * 1024


def parse_url(url: str) -> dict[str, Any]:
    """The client's settings from an s3:// URL; StorageConfigError if incomplete."""
    parts = urlsplit(url)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    bucket = parts.path.strip("/")
    if not parts.hostname or not bucket or "/" in bucket:
        raise StorageConfigError("an s3:// storage URL needs a host and a bucket: s3://host/bucket")
    if parts.username is None or parts.password is None:
        raise StorageConfigError("an s3:// storage URL needs KEY:SECRET@ before its host")
    secure = query.get("secure", "1").lower() not in ("0", "false", "no", "off")
    scheme = "https" if secure else "http"
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    endpoint = f"{scheme}://{host}" + (f":{parts.port}" if parts.port else "")
    return {
        "bucket": bucket,
        "endpoint_url": endpoint,
        "aws_access_key_id": unquote(parts.username),
        "aws_secret_access_key": unquote(parts.password),
        "region_name": query.get("region", "us-east-1"),
    }


class S3Writer:
    def __init__(self, storage: S3Storage, key: str) -> None:
        self._s3 = storage
        self._key = key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    async def write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= PART_SIZE:
            part = bytes(self._buffer[:PART_SIZE])
            del self._buffer[:PART_SIZE]
            await self._send_part(part)

    async def _send_part(self, part: bytes) -> None:
        client, bucket = self._s3.client, self._s3.bucket
        if self._upload_id is None:
            created = await client.create_multipart_upload(Bucket=bucket, Key=self._key)
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        sent = await client.upload_part(
            Bucket=bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=part
        )
        self._parts.append({"ETag": sent["ETag"], "PartNumber": number})

    async def finish(self) -> None:
        client, bucket = self._s3.client, self._s3.bucket
        if self._upload_id is None:
            await client.put_object(Bucket=bucket, Key=self._key, Body=bytes(self._buffer))
        else:
            if self._buffer:
                await self._send_part(bytes(self._buffer))
            await client.complete_multipart_upload(
                Bucket=bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        self._buffer.clear()

    async def abort(self) -> None:
        self._buffer.clear()
        if self._upload_id is not None:
            with contextlib.suppress(Exception):  # best effort: the store expires it
                await self._s3.client.abort_multipart_upload(
                    Bucket=self._s3.bucket, Key=self._key, UploadId=self._upload_id
                )
        with contextlib.suppress(Exception):
            await self._s3.delete(self._key)


class S3Storage:
    name = "s3"

    def __init__(self, bucket: str, exit_stack: contextlib.AsyncExitStack, client: Any) -> None:
        self.bucket = bucket
        self.client = client
        self._exit_stack = exit_stack

    @classmethod
    async def open(cls, url: str) -> S3Storage:
        settings = parse_url(url)
        try:
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session
        except ImportError:
            raise StorageConfigError(
                "s3:// storage needs aiobotocore: pip install 'chatterwerks[s3]'"
            ) from None
        bucket = settings.pop("bucket")
        config = AioConfig(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            # botocore's default checksums (2025) need trailers some
            # S3-compatible servers refuse; MD5-free streaming is enough here.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        stack = contextlib.AsyncExitStack()
        client = await stack.enter_async_context(
            get_session().create_client("s3", config=config, **settings)
        )
        return cls(bucket, stack, client)

    def new_key(self) -> str:
        # Random: a key says nothing about the file, and is never reused.
        return "files/" + secrets.token_hex(16)

    def writer(self, file_id: int, key: str) -> S3Writer:
        return S3Writer(self, key)

    async def read(self, file_id: int, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        if end <= start:
            return
        answer = await self.client.get_object(
            Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}"
        )
        body = answer["Body"]
        try:
            while data := await body.read(READ_SIZE):
                yield data
        finally:
            # Read to the end, the connection went back to the pool already;
            # cut short (the client hung up), it is closed, not reused.
            body.close()

    async def delete(self, key: str) -> None:
        await self.client.delete_object(Bucket=self.bucket, Key=key)

    async def close(self) -> None:
        await self._exit_stack.aclose()
