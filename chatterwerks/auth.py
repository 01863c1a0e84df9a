"""Session tokens, and the middleware that says who is asking (with the CSRF check)."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from chatterwerks import keys
from chatterwerks.errors import ApiError, Handler
from chatterwerks.store import accounts

SESSION_COOKIE = "chatterwerks_session"
# A cross-site form cannot set a custom header, and a cross-site fetch that
# sets one needs a CORS preflight we never grant.
CSRF_HEADER = "X-Requested-With"
CSRF_HEADER_VALUE = "chatterwerks"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The signed-in user's {id, username, is_bot}, and the sha256 of the token used.
USER = web.RequestKey("user", dict[str, Any])
TOKEN_HASH = web.RequestKey("token_hash", bytes)


def new_token() -> tuple[str, bytes]:
    """A fresh session token (32 random bytes) and the hash we store for it."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def public(handler: Handler) -> Handler:
    """Marks a handler that needs no signed-in user."""
    handler.public = True  # type: ignore[attr-defined]
    return handler


def _same_origin(request: web.Request) -> bool:
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if source is None:
        return True  # old browsers and privacy proxies drop both; the header check still holds
    return urlsplit(source).netloc.lower() == request.host.lower()


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Finds the session behind a bearer token or the cookie for every /api call.

    A cookie-authenticated unsafe request must also pass the CSRF check; a
    bearer request cannot be forged by another site, so it needs none.
    """
    if not request.path.startswith("/api/") or request.match_info.http_exception is not None:
        return await handler(request)  # pages, and the 404/405 of unknown routes
    if getattr(request.match_info.handler, "public", False):
        # Register, login: a stale session must not matter. But another site's
        # form must not sign this browser in (as the attacker: login CSRF).
        if request.method in UNSAFE_METHODS and not _same_origin(request):
            raise ApiError(403, "csrf_failed", "Sign in from this site, not another.")
        return await handler(request)
    digest, by_cookie = _credentials(request)
    user = await session_user(request.app, digest)
    if user is None:
        raise ApiError(
            401, "invalid_token", "This session has ended or never existed; sign in again."
        )
    if by_cookie and request.method in UNSAFE_METHODS:
        if request.headers.get(CSRF_HEADER) != CSRF_HEADER_VALUE or not _same_origin(request):
            raise ApiError(
                403,
                "csrf_failed",
                f"A cookie-authenticated {request.method} needs the header "
                f"'{CSRF_HEADER}: {CSRF_HEADER_VALUE}' from this site.",
            )
    request[USER] = user
    request[TOKEN_HASH] = digest
    return await handler(request)


def _credentials(request: web.Request) -> tuple[bytes, bool]:
    """The hash of the request's session token, and whether it came in the
    cookie. (Its own function so that no copy of the token stays alive in
    the middleware's frame while a long-poll waits.)"""
    authorization = request.headers.get("Authorization", "")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise ApiError(401, "invalid_token", "Use 'Authorization: Bearer <token>'.")
        return token_hash(value.strip()), False
    if SESSION_COOKIE in request.cookies:
        return token_hash(request.cookies[SESSION_COOKIE]), True
    raise ApiError(
        401, "not_signed_in", "Sign in first: send a bearer token or the session cookie."
    )


async def session_user(app: web.Application, digest: bytes) -> dict[str, Any] | None:
    """The user of a live session (by token hash), from this process's cache
    while the listener vouches for it, else from the store; None if none."""
    sessions = app[keys.SESSIONS]
    trusted = app[keys.HUB].connected.is_set()
    user = sessions.get(digest) if trusted else None
    if user is not None:
        return user
    version = sessions.version()
    row = await accounts.session_user(app[keys.POOL], digest, app[keys.SETTINGS].session_idle_days)
    if row is None:
        return None
    user = {"id": row["id"], "username": row["username"], "is_bot": row["is_bot"]}
    if trusted:
        sessions.put(digest, user, row["expires_at"], version)
    return user


def current_user(request: web.Request) -> dict[str, Any]:
    return request[USER]


def client_address(request: web.Request) -> str:
    """The address rate limits count by: the peer, or behind a trusted proxy
    the last X-Forwarded-For hop (the one the proxy itself appended)."""
    if request.app[keys.SETTINGS].trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last_hop = forwarded.rsplit(",", 1)[-1].strip()
        if last_hop:
            return last_hop
    return request.remote or "unknown"


def set_session_cookie(response: web.StreamResponse, request: web.Request, token: str) -> None:
    settings = request.app[keys.SETTINGS]
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.session_days * 86400,
        httponly=True,
        samesite="Lax",
        secure=settings.secure_cookies,
        path="/",
    )
