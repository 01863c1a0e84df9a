"""Every typed key of the application's state, in one place."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from chatterwerks.config import Settings
from chatterwerks.passwords import PasswordHasher
from chatterwerks.ratelimit import Limiters
from chatterwerks.realtime import Hub
from chatterwerks.sessions import SessionCache
from chatterwerks.storage import Storage
from chatterwerks.storage.sweeper import FileSweeper
from chatterwerks.store.send_queue import SendQueue

SETTINGS = web.AppKey("settings", Settings)
DATABASE_URL = web.AppKey("database_url", str)
POOL = web.AppKey("pool", asyncpg.Pool)
HUB = web.AppKey("hub", Hub)
HASHER = web.AppKey("hasher", PasswordHasher)
OTTER_ID = web.AppKey("otter_id", int)
SEND_QUEUE = web.AppKey("send_queue", SendQueue)
LIMITERS = web.AppKey("limiters", Limiters)
SESSIONS = web.AppKey("sessions", SessionCache)
# Files (chatterwerks/api_files.py).
STORAGE = web.AppKey("storage", Storage)
FILE_SWEEPER = web.AppKey("file_sweeper", FileSweeper)
