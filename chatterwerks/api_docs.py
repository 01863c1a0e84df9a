"""GET /api/openapi.json: the OpenAPI 3.1 description of the API (docs/api.md in prose)."""

from __future__ import annotations

import functools
from pathlib import Path

from aiohttp import web

from chatterwerks.auth import public

routes = web.RouteTableDef()
SPEC_PATH = Path(__file__).with_name("openapi.json")  # package data (setup.cfg)


@functools.cache
def spec_text() -> str:
    return SPEC_PATH.read_text(encoding="utf-8")


@routes.get("/api/openapi.json")
@public
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(text=spec_text(), content_type="application/json")
