"""What a file is, from its bytes (never the client's name or type), and
the thumbnail of an image, made with Pillow in a worker thread."""

from __future__ import annotations

import asyncio
import hashlib
import io
import weakref
from dataclasses import dataclass
from typing import IO

from PIL import Image, ImageOps

# How many bytes sniff() looks at.
SNIFF_BYTES = 4096
# Raster images we decode, thumbnail and serve inline: the formats browsers
# render as pictures only (no script, no markup).
RASTER_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}
_PIL_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
# An image of more pixels is kept as a plain attachment (no thumbnail, never
# inline): decoding it would take hundreds of MB (a decompression bomb is a
# small file that claims a huge canvas).
MAX_PIXELS = 40_000_000
THUMBNAIL_MAX = 720
ORIENTATION = 0x0112  # the EXIF tag
# Decoding is CPU and memory: at most this many at once per event loop
# (one per process when serving; a semaphore belongs to one loop).
DECODING_AT_ONCE = 2
_decoding: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def sniff(head: bytes) -> str:
    """The content type that the first bytes of a file show."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"PK\x03\x04"):
        return "application/zip"
    if head.startswith(b"\x1f\x8b"):
        return "application/gzip"
    try:
        # A multi-byte character may be cut at the end of the head.
        text = head.decode("utf-8") if len(head) < SNIFF_BYTES else head[:-4].decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"
    if "\x00" in text:
        return "application/octet-stream"
    lowered = text.lstrip("\ufeff \t\r\n").lower()
    if "<svg" in lowered[:1024] and lowered.startswith(("<svg", "<?xml", "<!--", "<!doctype svg")):
        return "image/svg+xml"
    # HTML and everything else readable: plain text (never rendered as markup).
    return "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Thumbnail:
    content_type: str
    width: int
    height: int
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True, slots=True)
class ImageFacts:
    width: int | None
    height: int | None
    thumbnail: Thumbnail | None


def _examine(source: IO[bytes], content_type: str) -> ImageFacts:
    """Width and height (as displayed: EXIF orientation applied) and a
    thumbnail; no thumbnail for what cannot be decoded or is too big."""
    source.seek(0)
    formats = [name for name, kind in _PIL_FORMATS.items() if kind == content_type]
    try:
        with Image.open(source, formats=formats) as im:
            width, height = im.size  # from the header: nothing decoded yet
            if width * height > MAX_PIXELS:
                return ImageFacts(width, height, None)
            if im.getexif().get(ORIENTATION) in (5, 6, 7, 8):  # turned a quarter
                width, height = height, width
            if im.format == "JPEG":
                # Decode at a reduced scale when that still covers the
                # thumbnail: much less memory and time.
                im.draft("RGB", (THUMBNAIL_MAX, THUMBNAIL_MAX))
            im.load()
            oriented = ImageOps.exif_transpose(im)
            frame = oriented.convert("RGBA" if _has_alpha(oriented) else "RGB")
            frame.thumbnail((THUMBNAIL_MAX, THUMBNAIL_MAX), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            # A new image from pixels only: no EXIF (GPS), ICC or comments.
            frame.save(out, "WEBP", quality=80, method=4)
            thumb = Thumbnail("image/webp", frame.width, frame.height, out.getvalue())
            return ImageFacts(width, height, thumb)
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,  # an error where warnings are (the tests)
    ):
        return ImageFacts(None, None, None)


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)


async def examine(source: IO[bytes], content_type: str) -> ImageFacts:
    """_examine in a worker thread, at most DECODING_AT_ONCE at a time."""
    loop = asyncio.get_running_loop()
    if loop not in _decoding:
        _decoding[loop] = asyncio.Semaphore(DECODING_AT_ONCE)
    async with _decoding[loop]:
        return await asyncio.to_thread(_examine, source, content_type)
