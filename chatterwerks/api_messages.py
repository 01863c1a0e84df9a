"""Messages, read markers, and the long-polls (GET /api/events)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from chatterwerks import events, keys
from chatterwerks.auth import current_user
from chatterwerks.errors import ApiError, rate_limited
from chatterwerks.store import channels, messages
from chatterwerks.validation import (
    INT64_MAX,
    bad_input,
    idempotency_key,
    int_value,
    json_object,
    message_text,
    path_id,
    query_int,
    query_seconds,
)

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


@routes.get("/api/channels/{id}/messages")
async def list_messages(request: web.Request) -> web.Response:
    channel_id = path_id(request)
    user_id = current_user(request)["id"]
    limit = query_int(request, "limit", DEFAULT_PAGE, minimum=1, clamp_to=messages.HISTORY_MAX)
    if "after" in request.query:
        after = query_int(request, "after", 0)
        settings = request.app[keys.SETTINGS]
        wait = query_seconds(request, "wait", 0.0, settings.poll_max_timeout)
        _check_poll_cap(request, user_id)
        body = await events.poll_channel(
            request.app[keys.HUB], user_id, channel_id, after, wait, limit
        )
        return web.Response(text=body, content_type="application/json")
    before = query_int(request, "before", INT64_MAX, minimum=1)
    page, has_more = await messages.history(
        request.app[keys.POOL], channel_id, user_id, before, limit
    )
    body = (
        '{"messages": [' + ", ".join(page) + '], "has_more": ' + ("true" if has_more else "false")
    )
    return web.Response(text=body + "}", content_type="application/json")


@routes.post("/api/channels/{id}/messages")
async def send_message(request: web.Request) -> web.Response:
    channel_id = path_id(request)
    text = message_text(await json_object(request))
    key = idempotency_key(request)
    author = current_user(request)
    app = request.app
    if wait := app[keys.LIMITERS].messages_user.take(author["id"]):
        raise rate_limited(wait, "You are sending messages too fast; wait a moment.")

    # Shielded: a client that hangs up mid-request does not undo its message
    # (nor skip Otter's reply); the task runs to the end either way, held in
    # _sending meanwhile (the loop itself keeps only weak references).
    task = asyncio.ensure_future(
        messages.send(app[keys.POOL], channel_id, author["id"], text, key, app[keys.OTTER_ID])
    )
    _sending.add(task)
    task.add_done_callback(_sending.discard)
    message, created = await asyncio.shield(task)
    return web.Response(
        text='{"message": ' + message + "}",
        status=201 if created else 200,
        content_type="application/json",
    )


@routes.post("/api/channels/{id}/read")
async def mark_read(request: web.Request) -> web.Response:
    channel_id = path_id(request)
    body = await json_object(request)
    if body.get("seq") is None:
        raise bad_input("missing_seq", "seq is required.")
    seq = int_value(body["seq"], "seq")
    await channels.mark_read(request.app[keys.POOL], channel_id, current_user(request)["id"], seq)
    return web.Response(status=204)


@routes.get("/api/events")
async def poll_events(request: web.Request) -> web.Response:
    settings = request.app[keys.SETTINGS]
    timeout = query_seconds(
        request, "timeout", settings.poll_default_timeout, settings.poll_max_timeout
    )
    _check_poll_cap(request, current_user(request)["id"])
    body = await events.poll_events(
        request.app[keys.POOL],
        request.app[keys.HUB],
        current_user(request)["id"],
        request.query.get("cursor"),
        timeout,
    )
    # The body is assembled from JSON serialised once per message (hub.py).
    return web.Response(text=body, content_type="application/json")
