"""Fixtures: a real PostgreSQL for the session, a fresh database per test.

CHATTERWERKS_TEST_DATABASE_URL names a server to use (any database on it; we
create our own beside it); without it an embedded PostgreSQL is started for
the test session. Each test gets a copy of a template database built once
from the migrations: real commits, so NOTIFY works (rollback isolation would
hide it).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatterwerks import db, keys
from chatterwerks.app import create_app
from chatterwerks.config import Settings

_counter = itertools.count()


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


@dataclass(frozen=True)
class Server:
    admin_url: str
    template: str


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    url = os.environ.get("CHATTERWERKS_TEST_DATABASE_URL")
    embedded = None
    tmp = None
    if not url:
        from chatterwerks.embedded import EmbeddedPostgres

        tmp = tempfile.TemporaryDirectory(prefix="chatterwerks-test-")
        embedded = EmbeddedPostgres(Path(tmp.name))
        url = embedded.start()
    template = f"cw_template_{os.getpid()}"

    async def build() -> None:
        admin = await asyncpg.connect(url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{template}"')
            await admin.execute(f'CREATE DATABASE "{template}"')
        finally:
            await admin.close()
        await db.migrate_url(with_database(url, template))

    async def drop() -> None:
        admin = await asyncpg.connect(url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(build())
    try:
        yield Server(url, template)
    finally:
        asyncio.run(drop())
        if embedded is not None:
            embedded.stop()
            tmp.cleanup()


@pytest.fixture
async def database_url(pg_server: Server) -> AsyncIterator[str]:
    name = f"cw_test_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(pg_server.admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_server.template}"')
    finally:
        await admin.close()
    yield with_database(pg_server.admin_url, name)
    admin = await asyncpg.connect(pg_server.admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def settings(database_url: str) -> Settings:
    # A cheap argon2 cost: the tests register hundreds of users. Rate limits
    # are off here; tests/test_limits.py turns them on.
    return Settings(
        database_url=database_url,
        argon2_time_cost=1,
        argon2_memory_kib=64,
        poll_default_timeout=5,
        limit_login_address=None,
        limit_login_failures=None,
        limit_login_username=None,
        limit_register_address=None,
        limit_messages_user=None,
        limit_search_user=None,
        limit_typing_user=None,
        max_polls_per_user=100,
        limit_uploads_user=None,
    )


@pytest.fixture
async def app(settings: Settings) -> web.Application:
    return await create_app(settings)


@pytest.fixture
async def client(app: web.Application, aiohttp_client: Any) -> TestClient:
    # app first: its database is set up before, so torn down after, the server.
    return await aiohttp_client(app, server_kwargs={"handler_cancellation": True})


@dataclass
class User:
    """A registered user and a bearer-authenticated way to call the API."""

    client: TestClient
    id: int
    username: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def call(
        self, method: str, path: str, json: Any = None, expect: int | None = None, **kwargs: Any
    ) -> Any:
        response = await self.client.request(
            method, path, json=json, headers=self.headers, **kwargs
        )
        body = await response.json() if response.status != 204 else None
        if expect is not None:
            assert response.status == expect, (response.status, body)
        return body

    async def get(self, path: str, expect: int | None = 200, **kwargs: Any) -> Any:
        return await self.call("GET", path, expect=expect, **kwargs)

    async def post(self, path: str, json: Any = None, expect: int | None = None) -> Any:
        return await self.call("POST", path, json=json if json is not None else {}, expect=expect)

    async def send(self, channel_id: int, text: str) -> dict[str, Any]:
        body = await self.post(f"/api/channels/{channel_id}/messages", {"text": text}, expect=201)
        return body["message"]


@pytest.fixture
def make_user(client: TestClient) -> Any:
    async def make(username: str | None = None, password: str = "correct horse") -> User:
        username = username or f"user{next(_counter)}"
        response = await client.post(
            "/api/register", json={"username": username, "password": password}
        )
        body = await response.json()
        assert response.status == 201, body
        return User(client, body["user"]["id"], body["user"]["username"], body["token"])

    return make


@pytest.fixture
async def home_id(app: web.Application, client: TestClient) -> int:
    async with app[keys.POOL].acquire() as conn:
        return await conn.fetchval("SELECT id FROM channels WHERE kind = 'home'")
