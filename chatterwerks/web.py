"""The browser client's pages (server-rendered), static files and headers."""

from __future__ import annotations

import functools
import hashlib

import aiohttp_jinja2
from aiohttp import web

from chatterwerks import BASE_DIR, keys
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


@functools.cache
def static_version() -> str:
    """A short tag that changes whenever a static file does (read once per
    process): the page's links carry it (?v=), so a deploy never mixes a fresh
    page with a cached script."""
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.glob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:12]


@routes.get("/")
async def chat_page(request: web.Request) -> web.Response:
    """The one page of the browser client: sign-in and chat (static/app.js decides)."""
    response = aiohttp_jinja2.render_template("chat.html", request, {"version": static_version()})
    response.headers["Cache-Control"] = "no-cache"
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
