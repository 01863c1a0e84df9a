"""Channels, members and direct channels."""

from __future__ import annotations

from aiohttp import web

from chatterwerks import keys
from chatterwerks.auth import current_user
from chatterwerks.store import channels
from chatterwerks.validation import (
    CHANNEL_NAME_MAX_CHARS,
    DESCRIPTION_MAX_CHARS,
    bad_input,
    json_object,
    notify_setting,
    path_id,
    string_field,
    username_field,
    username_value,
)

routes = web.RouteTableDef()
MAX_INITIAL_MEMBERS = 100


@routes.get("/api/channels")
async def list_channels(request: web.Request) -> web.Response:
    found = await channels.list_channels(request.app[keys.POOL], current_user(request)["id"])
    hub = request.app[keys.HUB]
    return web.json_response({"channels": [hub.with_presence(c) for c in found]})


@routes.post("/api/channels")
async def create_channel(request: web.Request) -> web.Response:
    body = await json_object(request)
    name = string_field(body, "name").strip()
    if not 1 <= len(name) <= CHANNEL_NAME_MAX_CHARS:
        raise bad_input(
            "invalid_name", f"A channel name has 1 to {CHANNEL_NAME_MAX_CHARS} characters."
        )
    description = string_field(body, "description", required=False).strip()
    if len(description) > DESCRIPTION_MAX_CHARS:
        raise bad_input(
            "invalid_description", f"A description has at most {DESCRIPTION_MAX_CHARS} characters."
        )
    members = body.get("members")
    members = [] if members is None else members
    if not isinstance(members, list) or len(members) > MAX_INITIAL_MEMBERS:
        raise bad_input(
            "invalid_members", f"members must be a list of at most {MAX_INITIAL_MEMBERS} usernames."
        )
    members = [username_value(member, "members") for member in members]
    channel = await channels.create_group(
        request.app[keys.POOL], current_user(request)["id"], name, description, members
    )
    return web.json_response({"channel": request.app[keys.HUB].with_presence(channel)}, status=201)


@routes.get("/api/channels/{id}")
async def get_channel(request: web.Request) -> web.Response:
    channel = await channels.channel_with_members(
        request.app[keys.POOL], current_user(request)["id"], path_id(request)
    )
    return web.json_response({"channel": request.app[keys.HUB].with_presence(channel)})


@routes.post("/api/channels/{id}/members")
async def add_member(request: web.Request) -> web.Response:
    channel_id = path_id(request)
    username = username_field(await json_object(request))
    channel = await channels.add_member(
        request.app[keys.POOL], channel_id, current_user(request)["id"], username
    )
    return web.json_response({"channel": request.app[keys.HUB].with_presence(channel)})


@routes.delete("/api/channels/{id}/members/{username}")
async def remove_member(request: web.Request) -> web.Response:
    channel_id = path_id(request)
    username = username_value(request.match_info["username"])
    await channels.remove_member(
        request.app[keys.POOL], channel_id, current_user(request)["id"], username
    )
    return web.Response(status=204)


@routes.post("/api/direct")
async def open_direct(request: web.Request) -> web.Response:
    username = username_field(await json_object(request))
    channel, created = await channels.open_direct(
        request.app[keys.POOL], current_user(request)["id"], username
    )
    channel = request.app[keys.HUB].with_presence(channel)
    return web.json_response({"channel": channel}, status=201 if created else 200)


# Notifications (issue 11): settings per channel, and "mark all as read".
# Not rate-limited, like POST /api/channels/{id}/read: each is one bounded
# statement on the user's own rows (docs/api.md).
@routes.put("/api/channels/{id}/settings")
async def put_settings(request: web.Request) -> web.Response:
    channel_id = path_id(request)
    notify = notify_setting(await json_object(request))
    channel = await channels.set_notify(
        request.app[keys.POOL], channel_id, current_user(request)["id"], notify
    )
    return web.json_response({"channel": channel})


@routes.post("/api/read-all")
async def read_all(request: web.Request) -> web.Response:
    await channels.read_all(request.app[keys.POOL], current_user(request)["id"])
    return web.Response(status=204)
