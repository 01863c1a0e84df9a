"""Input checks shared by the handlers: every value is typed and bounded before
it reaches the database, and a bad one gets a 400 that names it."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import emoji
from aiohttp import web

from chatterwerks.errors import ApiError

BODY_READ_TIMEOUT = 10.0  # seconds for a body of at most 64 KiB
USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]{3,32}")
INT64_MAX = 2**63 - 1
MESSAGE_MAX_CHARS = 4000
CHANNEL_NAME_MAX_CHARS = 64
DESCRIPTION_MAX_CHARS = 500
PASSWORD_MIN_CHARS, PASSWORD_MAX_CHARS = 8, 1024


def bad_input(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (aiohttp enforces the 64 KiB cap).

    A client that trickles its body is cut off: it would hold a connection
    and a handler for as long as it liked."""
    if request.content.is_eof():
        raw = await request.read()  # all here already (a small body usually is): no wait
    else:
        try:
            async with asyncio.timeout(BODY_READ_TIMEOUT):
                raw = await request.read()
        except TimeoutError:
            raise ApiError(408, "body_timeout", "The request body arrived too slowly.") from None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # [[[[... nests past the stack
        raise bad_input("invalid_json", "The request body must be valid JSON.") from None
    if not isinstance(body, dict):
        raise bad_input("invalid_json", "The request body must be a JSON object.")
    return body


def clean_text(value: str, field: str) -> str:
    """Rejects what PostgreSQL text cannot hold or a person cannot see."""
    if "\x00" in value:
        raise bad_input("invalid_" + field, f"{field} must not contain NUL characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_input("invalid_" + field, f"{field} must be valid Unicode text.") from None
    return value


def string_field(
    body: dict[str, Any], field: str, *, required: bool = True, default: str = ""
) -> str:
    value = body.get(field)
    if value is None:
        if required:
            raise bad_input("missing_" + field, f"{field} is required.")
        return default
    if not isinstance(value, str):
        raise bad_input("invalid_" + field, f"{field} must be a string.")
    return clean_text(value, field)


def username_value(value: object, field: str = "username") -> str:
    if not isinstance(value, str):
        raise bad_input("invalid_" + field, f"{field} must be a string.")
    if not USERNAME_RE.fullmatch(value):
        raise bad_input(
            "invalid_" + field,
            "A username has 3 to 32 characters: letters, digits, '_', '.' or '-'.",
        )
    return value


def username_field(body: dict[str, Any], field: str = "username") -> str:
    if body.get(field) is None:
        raise bad_input("missing_" + field, f"{field} is required.")
    return username_value(body[field], field)


def password_field(body: dict[str, Any], field: str = "password") -> str:
    password = string_field(body, field)
    if not PASSWORD_MIN_CHARS <= len(password) <= PASSWORD_MAX_CHARS:
        raise bad_input(
            "invalid_" + field,
            f"A password has {PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} characters.",
        )
    return password


def message_text(body: dict[str, Any]) -> str:
    text = string_field(body, "text").strip()
    if not text:
        raise bad_input("invalid_text", "A message needs some text.")
    if len(text) > MESSAGE_MAX_CHARS:
        raise bad_input("invalid_text", f"A message has at most {MESSAGE_MAX_CHARS} characters.")
    return text


def edit_text(body: dict[str, Any]) -> str:
    """An edit's new text: as message_text, except that it may be empty, which
    the database allows only for a message with files (its caption removed)."""
    text = string_field(body, "text").strip()
    if len(text) > MESSAGE_MAX_CHARS:
        raise bad_input("invalid_text", f"A message has at most {MESSAGE_MAX_CHARS} characters.")
    return text


def reply_to(body: dict[str, Any]) -> int | None:
    """The optional seq a message answers (a thread reply)."""
    raw = body.get("reply_to")
    if raw is None:
        return None
    if not isinstance(raw, int) or isinstance(raw, bool) or not 1 <= raw <= INT64_MAX:
        raise bad_input("invalid_reply_to", "reply_to must be the seq of a message (1 or more).")
    return raw


NOTIFY_SETTINGS = ("all", "mentions", "none")


def notify_setting(body: dict[str, Any]) -> str:
    """A channel's notification setting: 'all', 'mentions' or 'none' (muted)."""
    raw = body.get("notify")
    if raw is None:
        raise bad_input("missing_notify", "notify is required.")
    if raw not in NOTIFY_SETTINGS:
        raise bad_input("invalid_notify", "notify must be 'all', 'mentions' or 'none'.")
    return raw


def emoji_value(raw: str) -> str:
    """One emoji (a single grapheme: skin tones, flags and ZWJ sequences
    count as one), by the emoji package's Unicode data, in its fully
    qualified form: ❤ and ❤️ are one reaction, not two."""
    if not emoji.is_emoji(raw):
        raise bad_input("invalid_emoji", "A reaction is one emoji, such as 👍.")
    return emoji.emojize(emoji.demojize(raw), variant=None)


def message_seq(request: web.Request) -> int:
    """The {seq} of a message path; one that cannot exist is not found."""
    raw = request.match_info["seq"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ApiError(404, "message_not_found", "No such message in this channel.")
    return int(raw)


IDEMPOTENCY_KEY_MAX = 64


def idempotency_key(request: web.Request) -> str | None:
    """The optional Idempotency-Key header of a send: 1-64 printable ASCII
    characters (a UUID fits), or None."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX or not (key.isascii() and key.isprintable()):
        raise bad_input(
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters.",
        )
    return key


def int_value(raw: object, name: str, *, minimum: int = 0, maximum: int = INT64_MAX) -> int:
    """A JSON integer in range; strings, booleans and floats are refused."""
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise bad_input("invalid_" + name, f"{name} must be an integer.")
    if not minimum <= raw <= maximum:
        raise bad_input("invalid_" + name, f"{name} must be between {minimum} and {maximum}.")
    return raw


def query_int(
    request: web.Request, name: str, default: int, *, minimum: int = 0, clamp_to: int = INT64_MAX
) -> int:
    """A query parameter; values above clamp_to are clamped (docs/api.md's rule for limits)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"[+-]?[0-9]{1,19}", raw):
        raise bad_input("invalid_" + name, f"{name} must be an integer.")
    value = int(raw)
    if clamp_to < INT64_MAX and value < minimum:
        raise bad_input(
            "invalid_" + name,
            f"{name} must be between {minimum} and {clamp_to} (larger values count as {clamp_to}).",
        )
    return min(int_value(value, name, minimum=minimum), clamp_to)


def query_seconds(request: web.Request, name: str, default: float, maximum: float) -> float:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise bad_input("invalid_" + name, f"{name} must be a number of seconds.") from None
    return seconds_value(value, name, default, maximum)


def seconds_value(raw: object, name: str, default: float, maximum: float) -> float:
    """A number of seconds from a query or a JSON body: none means the
    default, more than the maximum means the maximum."""
    if raw is None:
        return default
    if not isinstance(raw, int | float) or isinstance(raw, bool):
        raise bad_input("invalid_" + name, f"{name} must be a number of seconds.")
    if not raw >= 0:  # also refuses NaN
        raise bad_input("invalid_" + name, f"{name} must be zero or more seconds.")
    return min(float(raw), maximum)


def path_id(request: web.Request, name: str = "id") -> int:
    """A path id; one that cannot exist is 'not found', as docs/api.md asks."""
    raw = request.match_info[name]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ApiError(404, "channel_not_found", "No such channel.")
    return int(raw)


def idle_flag(raw: object, name: str) -> bool:
    """A flag of the events poll (`idle`, `ephemeral`): true/false in a JSON
    body, or 1/0/true/false in a query; absent means false."""
    if raw is None or raw == "":
        return False
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw in ("1", "true", "0", "false"):
        return raw in ("1", "true")
    raise bad_input("invalid_" + name, f"{name} must be true or false (1 or 0 in a query).")


# Files (issue 12; docs/api.md "Files").
MAX_FILES_PER_MESSAGE = 10
FILE_NAME_MAX_CHARS = 255


def file_ids(body: dict[str, Any]) -> list[int]:
    """The optional `files` of a send: 1 to 10 distinct file ids, in order."""
    raw = body.get("files")
    if raw is None or raw == []:
        return []
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_FILES_PER_MESSAGE:
        raise bad_input(
            "invalid_file", f"files must be a list of at most {MAX_FILES_PER_MESSAGE} file ids."
        )
    for item in raw:
        if not isinstance(item, int) or isinstance(item, bool) or not 1 <= item <= INT64_MAX:
            raise bad_input("invalid_file", "files must be a list of file ids.")
    if len(set(raw)) != len(raw):
        raise bad_input("invalid_file", "A file can be attached once to a message.")
    return raw


def message_text_with_files(body: dict[str, Any], files: list[int]) -> str:
    """message_text, except that a message with files may have no text."""
    if not files:
        return message_text(body)
    text = string_field(body, "text", required=False).strip()
    if len(text) > MESSAGE_MAX_CHARS:
        raise bad_input("invalid_text", f"A message has at most {MESSAGE_MAX_CHARS} characters.")
    return text


_BIDI_AND_CONTROLS = re.compile(r"[\x00-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def file_name(raw: str | None) -> str:
    """An uploaded file's name as shown and offered for download: the last
    path component, no control or direction-override characters (a
    "gnp.exe" shown as "exe.png"), at most 255 characters; "file" if
    nothing is left."""
    if raw is None:
        return "file"
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_input("invalid_file_name", "The file name must be valid Unicode.") from None
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = _BIDI_AND_CONTROLS.sub("", name).strip()
    if name in ("", ".", ".."):
        return "file"
    if len(name) > FILE_NAME_MAX_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: FILE_NAME_MAX_CHARS - len(ext) - 1] + "." + ext
        else:
            name = name[:FILE_NAME_MAX_CHARS]
    return name
