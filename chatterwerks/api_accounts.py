"""POST /api/register, /api/login, /api/logout; GET /api/me and /api/users."""

from __future__ import annotations

from aiohttp import web

from chatterwerks import events, keys, otter, store
from chatterwerks.auth import (
    SESSION_COOKIE,
    TOKEN_HASH,
    client_address,
    current_user,
    new_token,
    public,
    set_session_cookie,
)
from chatterwerks.db import QUERIES
from chatterwerks.errors import ApiError, rate_limited
from chatterwerks.shapes import channel_json, user_json
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
    async with request.app[keys.POOL].acquire() as conn:
        await conn.execute(
            QUERIES.insert_session, digest, user["id"], request.app[keys.SETTINGS].session_days
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
    if wait := request.app[keys.LIMITERS].register_address.take(client_address(request)):
        raise rate_limited(wait, "Too many registrations from your address; try again later.")
    password_hash = await request.app[keys.HASHER].hash(password)
    async with request.app[keys.POOL].acquire() as conn:
        user = await store.create_user(
            conn, username, password_hash, otter.welcome(username), request.app[keys.OTTER_ID]
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
    # failure), so neither one address nor many can try passwords quickly.
    limiters = request.app[keys.LIMITERS]
    username_key = username.lower()
    wait = limiters.login_username.retry_after(username_key) or limiters.login_address.take(
        client_address(request)
    )
    if wait:
        raise rate_limited(wait, "Too many sign-in attempts; try again later.")
    row = None
    if USERNAME_RE.fullmatch(username):
        async with request.app[keys.POOL].acquire() as conn:
            row = await conn.fetchrow(QUERIES.user_for_login, username)
    # Verify even for an unknown user (against a dummy hash): same time, same answer.
    if not await request.app[keys.HASHER].verify(row and row["password_hash"], password):
        limiters.login_username.take(username_key)
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
    limiter = request.app[keys.LIMITERS].login_username
    if wait := limiter.retry_after(user["username"].lower()):
        raise rate_limited(wait, "Too many wrong passwords; try again later.")
    pool, hasher = request.app[keys.POOL], request.app[keys.HASHER]
    async with pool.acquire() as conn:
        stored = await conn.fetchval(QUERIES.password_hash_of, user["id"])
    if not await hasher.verify(stored, current):
        limiter.take(user["username"].lower())
        raise ApiError(403, "wrong_password", "The current password is not right.")
    new_hash = await hasher.hash(new_password)
    async with pool.acquire() as conn:
        await conn.execute(QUERIES.change_password, user["id"], new_hash, request[TOKEN_HASH])
    request.app[keys.SESSIONS].forget(user["id"])  # here at once; elsewhere by NOTIFY
    return web.Response(status=204)


@routes.post("/api/logout")
async def logout(request: web.Request) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        await conn.execute(QUERIES.delete_session, request[TOKEN_HASH])
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
    async with request.app[keys.POOL].acquire() as conn:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await conn.fetch(QUERIES.list_channels, user["id"])
            cursor = await events.current_cursor(conn, user["id"])
    return web.json_response(
        {"user": user, "channels": [channel_json(row) for row in rows], "cursor": cursor}
    )


@routes.get("/api/users")
async def search_users(request: web.Request) -> web.Response:
    prefix = request.query.get("q", "").strip().lower()
    if prefix and not USERNAME_RE.fullmatch(prefix.ljust(3, "a")[:32]):
        return web.json_response({"users": []})  # no username can start with that
    async with request.app[keys.POOL].acquire() as conn:
        rows = await conn.fetch(QUERIES.search_users, prefix, USER_SEARCH_LIMIT)
    return web.json_response({"users": [user_json(row) for row in rows]})
