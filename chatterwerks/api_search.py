"""GET /api/search: the messages the user can read now that match a query."""

from __future__ import annotations

import datetime
import re

from aiohttp import web

from chatterwerks import keys
from chatterwerks.auth import current_user
from chatterwerks.errors import ApiError, rate_limited
from chatterwerks.search_query import QueryError, parse
from chatterwerks.store import search
from chatterwerks.validation import INT64_MAX, query_int

routes = web.RouteTableDef()
DEFAULT_PAGE = 20


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_CURSOR = re.compile(r"(-?[0-9]{1,18})\.([0-9]{1,19})")


def _cursor_text(cursor: search.Cursor) -> str:
    """A page's `next`: the last result's time (microseconds) and id. Opaque
    to clients; a cursor stays valid while the data changes underneath."""
    created_at, message_id = cursor
    return f"{(created_at - _EPOCH) // datetime.timedelta(microseconds=1)}.{message_id}"


def _cursor(request: web.Request) -> search.Cursor | None:
    raw = request.query.get("before")
    if raw is None or raw == "":
        return None
    match = _CURSOR.fullmatch(raw)
    try:
        if match is None or int(match.group(2)) > INT64_MAX:
            raise ValueError(raw)
        created_at = _EPOCH + datetime.timedelta(microseconds=int(match.group(1)))
    except (ValueError, OverflowError):
        raise ApiError(
            400, "invalid_before", "before must be the next cursor of a search page."
        ) from None
    return created_at, int(match.group(2))


@routes.get("/api/search")
async def search_messages(request: web.Request) -> web.Response:
    """Newest first; `next` pages on. Errors carry the position in `q`."""
    try:
        query = parse(request.query.get("q", ""))
    except QueryError as exc:
        raise ApiError(
            400, "invalid_query", f"{exc.reason} (at position {exc.position})."
        ) from None
    before = _cursor(request)
    limit = query_int(request, "limit", DEFAULT_PAGE, minimum=1, clamp_to=search.SEARCH_MAX)
    user_id = current_user(request)["id"]
    if wait := await request.app[keys.LIMITERS].search_user.take(user_id):
        raise rate_limited(wait, "You are searching too fast; wait a moment.")
    page, next_before = await search.search(request.app[keys.POOL], user_id, query, before, limit)
    # Messages arrive as JSON text (message_json() in SQL): joined, not re-encoded.
    items = ", ".join(
        f'{{"channel_id": {channel_id}, "message": {json}, "highlights": {_spans(highlights)}}}'
        for channel_id, json, highlights in page
    )
    next_text = "null" if next_before is None else f'"{_cursor_text(next_before)}"'
    return web.Response(
        text='{"results": [' + items + '], "next": ' + next_text + "}",
        content_type="application/json",
    )


def _spans(highlights: list[list[int]]) -> str:
    return "[" + ", ".join(f"[{start}, {end}]" for start, end in highlights) + "]"
