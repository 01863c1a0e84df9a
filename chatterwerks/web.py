"""The browser client's pages (server-rendered), static files and headers."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from chatterwerks import keys
from chatterwerks.db import CONNECTION_ERRORS
from chatterwerks.errors import error_response

routes = web.RouteTableDef()

# No inline script or style anywhere: the client is static/*.js and *.css.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


@routes.get("/")
@aiohttp_jinja2.template("chat.html")
async def chat_page(request: web.Request) -> dict[str, object]:
    return {}


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
