"""Typing (POST /api/channels/{id}/typing); presence rides on the events
poll (api_messages.py, `idle`) and on channel JSON (realtime/hub.py)."""

from __future__ import annotations

from aiohttp import web

from chatterwerks import keys
from chatterwerks.auth import current_user
from chatterwerks.errors import rate_limited
from chatterwerks.store import live
from chatterwerks.validation import path_id

routes = web.RouteTableDef()


@routes.post("/api/channels/{id}/typing")
async def typing(request: web.Request) -> web.Response:
    """204; the channel's other members' events polls get a typing event.
    Not stored: best-effort (docs/api.md)."""
    channel_id = path_id(request)
    user_id = current_user(request)["id"]
    if wait := await request.app[keys.LIMITERS].typing_user.take(user_id):
        raise rate_limited(wait, "You are sending typing notices too fast; wait a moment.")
    await live.send_typing(request.app[keys.POOL], channel_id, user_id)
    return web.Response(status=204)
