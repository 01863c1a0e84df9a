"""Messages (send, edit, delete, react, threads, mentions), read markers,
and the long-polls (GET and POST /api/events) and the events stream."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from chatterwerks import events, keys
from chatterwerks.auth import current_user
from chatterwerks.db import CONNECTION_ERRORS, DatabaseUnavailable
from chatterwerks.errors import ApiError, rate_limited
from chatterwerks.store import channels, messages, search
from chatterwerks.validation import (
    INT64_MAX,
    bad_input,
    edit_text,
    emoji_value,
    file_ids,
    idempotency_key,
    idle_flag,
    int_value,
    json_object,
    message_seq,
    message_text_with_files,
    path_id,
    query_int,
    query_seconds,
    reply_to,
    seconds_value,
)

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
DEFAULT_PAGE = 50
_sending: set[asyncio.Future[tuple[str, bool]]] = set()


def _check_poll_cap(request: web.Request, user_id: int) -> None:
    """A user may park only so many long-polls in this process."""
    if request.app[keys.HUB].polls_of(user_id) >= request.app[keys.SETTINGS].max_polls_per_user:
        raise ApiError(
            429,
            "too_many_polls",
            "You have too many long-polls open; close some first.",
            headers={"Retry-After": "1"},
        )


# No HEAD (aiohttp adds one to every GET): a HEAD would park a long-poll.
@routes.get("/api/channels/{id}/messages", allow_head=False)
async def list_messages(request: web.Request) -> web.Response:
    channel_id = path_id(request)
    user_id = current_user(request)["id"]
    limit = query_int(request, "limit", DEFAULT_PAGE, minimum=1, clamp_to=messages.HISTORY_MAX)
    if "around" in request.query:
        return await _around(request, channel_id, user_id, limit)
    if "after" in request.query:
        after = query_int(request, "after", 0)
        settings = request.app[keys.SETTINGS]
        wait = query_seconds(request, "wait", 0.0, settings.poll_max_timeout)
        _check_poll_cap(request, user_id)
        body = await events.poll_channel(
            request.app[keys.HUB], user_id, channel_id, after, wait, limit
        )
        return _json_text(body)
    before = query_int(request, "before", INT64_MAX, minimum=1)
    page, has_more = await messages.history(
        request.app[keys.POOL], channel_id, user_id, before, limit
    )
    # Messages arrive as JSON text (message_json() in SQL): joined, not re-encoded.
    more = "true" if has_more else "false"
    return _json_text('{"messages": [' + ", ".join(page) + '], "has_more": ' + more + "}")


async def _around(request: web.Request, channel_id: int, user_id: int, limit: int) -> web.Response:
    """?around=SEQ: the page with message SEQ in its middle (a search hit or a
    mention opened in context); the client pages on with before= and around=."""
    if "before" in request.query or "after" in request.query:
        raise bad_input("invalid_around", "around cannot be combined with before or after.")
    seq = query_int(request, "around", 0, minimum=1)
    if seq == 0:
        raise bad_input("invalid_around", "around must be the seq of a message.")
    page, has_before, has_after = await search.around(
        request.app[keys.POOL], channel_id, user_id, seq, limit
    )
    return _json_text(
        '{"messages": ['
        + ", ".join(page)
        + '], "has_more_before": '
        + ("true" if has_before else "false")
        + ', "has_more_after": '
        + ("true" if has_after else "false")
        + "}"
    )


async def _take_write(request: web.Request) -> None:
    """Sends, edits, deletions and reactions share the per-user write limit
    (shared by every process: await it)."""
    if wait := await request.app[keys.LIMITERS].messages_user.take(current_user(request)["id"]):
        raise rate_limited(wait, "You are sending messages too fast; wait a moment.")


def _json_text(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="application/json")


@routes.post("/api/channels/{id}/messages")
async def send_message(request: web.Request) -> web.Response:
    channel_id = path_id(request)
    body = await json_object(request)
    files = file_ids(body)
    text, answers = message_text_with_files(body, files), reply_to(body)
    key = idempotency_key(request)
    author = current_user(request)
    app = request.app
    await _take_write(request)

    # Shielded: a client that hangs up mid-request does not undo its message
    # (nor skip Otter's reply); the task runs to the end either way, held in
    # _sending meanwhile (the loop itself keeps only weak references).
    task = asyncio.ensure_future(
        app[keys.SEND_QUEUE].send(channel_id, author["id"], text, key, answers, files)
    )
    _sending.add(task)
    task.add_done_callback(_sending.discard)
    message, created = await asyncio.shield(task)
    return _json_text('{"message": ' + message + "}", 201 if created else 200)


@routes.patch("/api/channels/{id}/messages/{seq}")
async def edit_message(request: web.Request) -> web.Response:
    channel_id, seq = path_id(request), message_seq(request)
    text = edit_text(await json_object(request))
    await _take_write(request)
    message = await messages.edit(
        request.app[keys.POOL], channel_id, seq, current_user(request)["id"], text
    )
    return _json_text('{"message": ' + message + "}")


@routes.delete("/api/channels/{id}/messages/{seq}")
async def delete_message(request: web.Request) -> web.Response:
    channel_id, seq = path_id(request), message_seq(request)
    await _take_write(request)
    await messages.delete(request.app[keys.POOL], channel_id, seq, current_user(request)["id"])
    # Its files' rows went in the deletion; objects in an external store go now.
    request.app[keys.FILE_SWEEPER].poke()
    return web.Response(status=204)


async def _react(request: web.Request, add: bool) -> web.Response:
    channel_id, seq = path_id(request), message_seq(request)
    emoji = emoji_value(request.match_info["emoji"])
    await _take_write(request)
    await messages.react(
        request.app[keys.POOL], channel_id, seq, current_user(request)["id"], emoji, add
    )
    return web.Response(status=204)


@routes.put("/api/channels/{id}/messages/{seq}/reactions/{emoji}")
async def add_reaction(request: web.Request) -> web.Response:
    return await _react(request, add=True)


@routes.delete("/api/channels/{id}/messages/{seq}/reactions/{emoji}")
async def remove_reaction(request: web.Request) -> web.Response:
    return await _react(request, add=False)


@routes.get("/api/channels/{id}/messages/{seq}/replies")
async def list_replies(request: web.Request) -> web.Response:
    channel_id, seq = path_id(request), message_seq(request)
    after = query_int(request, "after", 0)
    limit = query_int(request, "limit", DEFAULT_PAGE, minimum=1, clamp_to=messages.HISTORY_MAX)
    page, has_more = await messages.replies(
        request.app[keys.POOL], channel_id, current_user(request)["id"], seq, after, limit
    )
    more = "true" if has_more else "false"
    return _json_text('{"messages": [' + ", ".join(page) + '], "has_more": ' + more + "}")


@routes.get("/api/mentions")
async def list_mentions(request: web.Request) -> web.Response:
    """The messages that mention you, newest first; `next` pages on."""
    before = query_int(request, "before", INT64_MAX, minimum=1)
    limit = query_int(request, "limit", DEFAULT_PAGE, minimum=1, clamp_to=messages.HISTORY_MAX)
    page, next_before = await messages.mentions_of(
        request.app[keys.POOL], current_user(request)["id"], before, limit
    )
    items = ", ".join(f'{{"channel_id": {cid}, "message": {json}}}' for cid, json in page)
    after = "null" if next_before is None else f'"{next_before}"'
    return _json_text('{"mentions": [' + items + '], "next": ' + after + "}")


@routes.post("/api/channels/{id}/read")
async def mark_read(request: web.Request) -> web.Response:
    channel_id = path_id(request)
    body = await json_object(request)
    if body.get("seq") is None:
        raise bad_input("missing_seq", "seq is required.")
    seq = int_value(body["seq"], "seq")
    await channels.mark_read(request.app[keys.POOL], channel_id, current_user(request)["id"], seq)
    return web.Response(status=204)


@routes.get("/api/events", allow_head=False)
async def poll_events(request: web.Request) -> web.Response:
    settings = request.app[keys.SETTINGS]
    timeout = query_seconds(
        request, "timeout", settings.poll_default_timeout, settings.poll_max_timeout
    )
    idle = idle_flag(request.query.get("idle"), "idle")
    ephemeral = idle_flag(request.query.get("ephemeral"), "ephemeral")
    return await _poll(request, request.query.get("cursor"), timeout, idle, ephemeral)


@routes.post("/api/events")
async def poll_events_by_body(request: web.Request) -> web.Response:
    """The same poll with the cursor in the body: a user in thousands of
    channels has a cursor longer than a URL may be."""
    settings = request.app[keys.SETTINGS]
    body = await json_object(request)
    cursor = body.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise bad_input("invalid_cursor", "cursor must be a string.")
    timeout = seconds_value(
        body.get("timeout"), "timeout", settings.poll_default_timeout, settings.poll_max_timeout
    )
    idle, ephemeral = body.get("idle"), body.get("ephemeral")
    for name, value in (("idle", idle), ("ephemeral", ephemeral)):
        if isinstance(value, str):
            raise bad_input("invalid_" + name, f"{name} must be true or false.")
    return await _poll(
        request, cursor, timeout, idle_flag(idle, "idle"), idle_flag(ephemeral, "ephemeral")
    )


# A stream whose client stops reading ends: its waiter must not be held by
# a full socket buffer.
STREAM_WRITE_TIMEOUT = 30.0


@routes.get("/api/events/stream", allow_head=False)
async def stream_events(request: web.Request) -> web.StreamResponse:
    """The events poll's answers, one JSON line each, over one response."""
    settings = request.app[keys.SETTINGS]
    timeout = query_seconds(
        request, "timeout", settings.poll_default_timeout, settings.poll_max_timeout
    )
    idle = idle_flag(request.query.get("idle"), "idle")
    ephemeral = idle_flag(request.query.get("ephemeral"), "ephemeral")
    cursor_text = request.query.get("cursor")
    cursor = events.decode_cursor(cursor_text) if cursor_text is not None else None
    user_id = current_user(request)["id"]
    _check_poll_cap(request, user_id)
    response = web.StreamResponse(headers={"X-Accel-Buffering": "no"})  # nginx: pass lines on
    response.content_type = "application/x-ndjson"
    response.charset = "utf-8"
    await response.prepare(request)

    async def write(answer: str) -> None:
        async with asyncio.timeout(STREAM_WRITE_TIMEOUT):
            await response.write(answer.encode() + b"\n")

    try:
        await events.stream_events(
            request.app[keys.POOL],
            request.app[keys.HUB],
            user_id,
            cursor,
            timeout,
            idle,
            ephemeral,
            write,
        )
    except TimeoutError:
        return response  # the client stopped reading: end without the last chunk
    except (ConnectionError, DatabaseUnavailable, *CONNECTION_ERRORS) as exc:
        # Headers are sent: no error answer can follow. The stream ends, and
        # the client goes on from its last whole line (with a new request,
        # which gets the 503 while the database is away).
        log.warning("event stream of user %d ended: %r", user_id, exc)
        return response
    await response.write_eof()
    return response


async def _poll(
    request: web.Request,
    cursor: str | None,
    timeout: float,
    idle: bool = False,
    ephemeral: bool = False,
) -> web.Response:
    _check_poll_cap(request, current_user(request)["id"])
    body = await events.poll_events(
        request.app[keys.POOL],
        request.app[keys.HUB],
        current_user(request)["id"],
        cursor,
        timeout,
        idle,
        ephemeral,
    )
    # The body is assembled from JSON serialised once per change (realtime/).
    return _json_text(body)
