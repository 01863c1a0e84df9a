"""Every typed key of the application's state, in one place."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from chatterwerks.config import Settings
from chatterwerks.passwords import PasswordHasher
from chatterwerks.ratelimit import Limiters
from chatterwerks.realtime import Hub
from chatterwerks.sessions import SessionCache

SETTINGS = web.AppKey("settings", Settings)
DATABASE_URL = web.AppKey("database_url", str)
POOL = web.AppKey("pool", asyncpg.Pool)
HUB = web.AppKey("hub", Hub)
HASHER = web.AppKey("hasher", PasswordHasher)
OTTER_ID = web.AppKey("otter_id", int)
LIMITERS = web.AppKey("limiters", Limiters)
SESSIONS = web.AppKey("sessions", SessionCache)
