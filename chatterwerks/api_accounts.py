"""POST /api/register, /api/login, /api/logout; GET /api/me and /api/users."""

from __future__ import annotations

import contextlib

from aiohttp import web

from chatterwerks import events, keys, otter
from chatterwerks.auth import (
    SESSION_COOKIE,
    TOKEN_HASH,
    client_address,
    current_user,
    new_token,
    public,
    set_session_cookie,
)
from chatterwerks.errors import ApiError, rate_limited
from chatterwerks.shapes import user_json
from chatterwerks.store import accounts, channels
from chatterwerks.validation import (
    USERNAME_RE,
    bad_input,
    json_object,
    password_field,
    username_field,
)

routes = web.RouteTableDef()
USER_SEARCH_LIMIT = 50


async def _signed_in(request: web.Request, user: dict, status: int) -> web.Response:
    """Starts a session: the token in the body (curl) and in the cookie (browser)."""
    token, digest = new_token()
    await accounts.start_session(
        request.app[keys.POOL], digest, user["id"], request.app[keys.SETTINGS].session_days
    )
    response = web.json_response({"user": user, "token": token}, status=status)
    set_session_cookie(response, request, token)
    return response


@routes.post("/api/register")
@public
async def register(request: web.Request) -> web.Response:
    body = await json_object(request)
    username = username_field(body)
    password = password_field(body)
    if wait := await request.app[keys.LIMITERS].register_address.take(client_address(request)):
        raise rate_limited(wait, "Too many registrations from your address; try again later.")
    password_hash = await request.app[keys.HASHER].hash(password)
    user = await accounts.create_user(
        request.app[keys.POOL],
        username,
        password_hash,
        otter.welcome(username),
        request.app[keys.OTTER_ID],
    )
    if user is None:
        raise ApiError(409, "username_taken", f"The username {username!r} is taken.")
    return await _signed_in(request, user, 201)


@routes.post("/api/login")
@public
async def login(request: web.Request) -> web.Response:
    body = await json_object(request)
    username = body.get("username")
    password = body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise bad_input("invalid_credentials", "Send a username and a password, both strings.")
    # Guessing is slowed per address (every attempt) and per username (every
    # failure: per address, and looser from anywhere), so neither one address
    # nor many can try passwords quickly, and one cannot lock the owner out.
    limiters = request.app[keys.LIMITERS]
    address = client_address(request)
    if wait := await limiters.login_wait(username, address):
        raise rate_limited(wait, "Too many sign-in attempts; try again later.")
    row = None
    if USERNAME_RE.fullmatch(username):
        row = await accounts.user_for_login(request.app[keys.POOL], username)
    # Verify even for an unknown user (against a dummy hash): same time, same answer.
    if not await request.app[keys.HASHER].verify(row and row["password_hash"], password):
        await limiters.login_failed(username, address)
        raise ApiError(401, "invalid_credentials", "Wrong username or password.")
    return await _signed_in(request, user_json(row), 200)


@routes.post("/api/me/password")
async def change_password(request: web.Request) -> web.Response:
    """A new password, given the current one; every other session ends."""
    body = await json_object(request)
    current = body.get("current_password")
    if not isinstance(current, str):
        raise bad_input("missing_current_password", "current_password is required.")
    new_password = password_field(body, "new_password")
    user = current_user(request)
    limiters = request.app[keys.LIMITERS]
    address = client_address(request)
    if wait := await limiters.login_wait(user["username"], address):
        raise rate_limited(wait, "Too many wrong passwords; try again later.")
    pool, hasher = request.app[keys.POOL], request.app[keys.HASHER]
    stored = await accounts.password_hash_of(pool, user["id"])
    if not await hasher.verify(stored, current):
        await limiters.login_failed(user["username"], address)
        raise ApiError(403, "wrong_password", "The current password is not right.")
    new_hash = await hasher.hash(new_password)
    async with _sessions_end_everywhere(request, user["id"]):
        await accounts.change_password(pool, user["id"], new_hash, request[TOKEN_HASH])
    request.app[keys.SESSIONS].forget(user["id"])  # here at once; elsewhere by NOTIFY
    return web.Response(status=204)


def _sessions_end_everywhere(
    request: web.Request, user_id: int
) -> contextlib.AbstractAsyncContextManager[None]:
    """Answer only once this process has heard the NOTIFY that ends the
    sessions (every host is signalled at the same commit), so the client's
    next request finds them ended on every host. Not when the listener is
    down: then no process trusts its cache anyway."""
    listening = request.app[keys.HUB].connected.is_set()
    return request.app[keys.SESSIONS].propagated(user_id, 1.0 if listening else 0.0)


@routes.post("/api/logout")
async def logout(request: web.Request) -> web.Response:
    async with _sessions_end_everywhere(request, current_user(request)["id"]):
        await accounts.end_session(request.app[keys.POOL], request[TOKEN_HASH])
    # This process forgets it now; the others when the NOTIFY reaches them.
    request.app[keys.SESSIONS].forget(current_user(request)["id"])
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


@routes.get("/api/me")
async def me(request: web.Request) -> web.Response:
    """The signed-in user, their channels, and an events cursor taken in the
    same transaction, so a client that follows it misses nothing after this."""
    user = current_user(request)
    found, state = await channels.snapshot(request.app[keys.POOL], user["id"])
    found = [request.app[keys.HUB].with_presence(channel) for channel in found]
    return web.json_response(
        {"user": user, "channels": found, "cursor": events.cursor_from_state(state)}
    )


@routes.get("/api/users")
async def search_users(request: web.Request) -> web.Response:
    prefix = request.query.get("q", "").strip().lower()
    if prefix and not USERNAME_RE.fullmatch(prefix.ljust(3, "a")[:32]):
        return web.json_response({"users": []})  # no username can start with that
    users = await accounts.search_users(request.app[keys.POOL], prefix, USER_SEARCH_LIMIT)
    return web.json_response({"users": users})
