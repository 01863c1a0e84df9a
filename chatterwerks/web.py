"""The browser client's pages (server-rendered), static files and headers."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import aiohttp_jinja2
from aiohttp import web

from chatterwerks import BASE_DIR, keys
from chatterwerks.auth import SESSION_COOKIE, session_user, token_hash
from chatterwerks.db import CONNECTION_ERRORS
from chatterwerks.errors import error_response

routes = web.RouteTableDef()

# No inline script or style anywhere: the client is static/*.js and *.css.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


STATIC_DIR = BASE_DIR / "static"
# What /static/<version>/ answers when the version is today's: that URL's
# content can never change, so browsers may keep it without asking again.
IMMUTABLE = "public, max-age=31536000, immutable"


@functools.cache
def static_files() -> dict[str, Path]:
    """The client's files by name (listed once per process): exactly what
    /static/<version>/ serves and what the version is made from."""
    return {path.name: path for path in sorted(STATIC_DIR.iterdir()) if path.is_file()}


@functools.cache
def static_version() -> str:
    """A short tag of the static files' names and contents (read once per
    process). The page loads its script, style and icon from /static/<tag>/,
    and the modules' relative imports inherit the tag, so a deploy never
    mixes a fresh page with cached old modules. Equal files give an equal
    tag on every host, whatever their mtimes."""
    digest = hashlib.sha256()
    for name, path in static_files().items():
        content = path.read_bytes()
        digest.update(f"{name}:{len(content)}:".encode())
        digest.update(content)
    return digest.hexdigest()[:12]


@routes.get(r"/static/{version:[0-9a-f]{12}}/{name}")
async def versioned_static(request: web.Request) -> web.FileResponse:
    """A static file under the versioned path. Another tag (a page rendered
    by a process from before a deploy) still gets today's file, but with
    no-cache, so it is never kept under a tag whose content it is not."""
    path = static_files().get(request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound()
    response = web.FileResponse(path)
    current = request.match_info["version"] == static_version()
    response.headers["Cache-Control"] = IMMUTABLE if current else "no-cache"
    return response


async def signed_in(request: web.Request) -> bool:
    """Whether the request's session cookie belongs to a live session, found
    the way the API's auth middleware finds it. Unsure (the database is
    unreachable) counts as yes: the page then asks GET /api/me, which retries."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return False
    try:
        return await session_user(request.app, token_hash(token)) is not None
    except CONNECTION_ERRORS:
        return True


@routes.get("/")
async def chat_page(request: web.Request) -> web.Response:
    """The one page of the browser client: sign-in and chat (static/app.js
    decides). It says whether the session cookie is good (data-signed-in), so
    a signed-out page shows the form without a failing GET /api/me."""
    context = {
        "version": static_version(),
        "signed_in": await signed_in(request),
        # Seconds without input before the page reports its user away (live.js).
        "away_after": request.app[keys.SETTINGS].away_after,
        # The largest upload, so the page refuses a bigger file before sending it.
        "max_upload_bytes": request.app[keys.SETTINGS].max_upload_bytes,
    }
    response = aiohttp_jinja2.render_template("chat.html", request, context)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Vary"] = "Cookie"
    return response


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    try:
        async with request.app[keys.POOL].acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1", timeout=2)
    except CONNECTION_ERRORS:
        return error_response(503, "database_unavailable", "The database is unreachable.")
    return web.json_response({"status": "ok"})


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Frame-Options", "DENY")
    if request.path.startswith("/api/"):
        headers.setdefault("Cache-Control", "no-store")
