"""The pools through a real PgBouncer in transaction pooling mode
(CHATTERWERKS_PGBOUNCER=1), the LISTEN connection and the migrations straight
to PostgreSQL (CHATTERWERKS_LISTEN_URL): two server processes, sends with
Idempotency-Keys, long-polls on the other process, edits, reactions,
channels (their advisory locks are transaction-level), logout and password
change. A pool that kept named prepared statements, or sent plan_cache_mode
at startup, would fail here."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import aiohttp
import asyncpg
import pytest
from helpers import free_port, start_server, stop_server
from pgcluster import Clusters


@pytest.fixture
async def bouncer_url(database_url, monkeypatch):
    clusters = await asyncio.to_thread(Clusters)
    try:
        url = clusters.pgbouncer(database_url)
        # Up once a login through it reaches PostgreSQL.
        conn = None
        for _ in range(100):
            try:
                conn = await asyncpg.connect(url, statement_cache_size=0, timeout=5)
                break
            except (OSError, asyncpg.PostgresError):
                await asyncio.sleep(0.05)
        assert conn is not None, clusters.bouncer_log.read_text()
        await conn.close()
        monkeypatch.setenv("CHATTERWERKS_PGBOUNCER", "1")
        monkeypatch.setenv("CHATTERWERKS_LISTEN_URL", database_url)
        monkeypatch.setenv("CHATTERWERKS_LIMIT_MESSAGES_USER", "off")
        yield url
        # Connections did go through it.
        assert "login attempt" in clusters.bouncer_log.read_text()
    finally:
        await asyncio.to_thread(clusters.close)


class Api:
    def __init__(self, http: aiohttp.ClientSession, base: str, token: str = "") -> None:
        self.http, self.base, self.token = http, base, token

    async def call(self, method: str, path: str, body: object = None, **headers: str):
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        async with self.http.request(
            method, self.base + path, json=body, headers=headers
        ) as response:
            text = await response.text()
            return response.status, (await response.json() if text else None)


async def test_everything_through_pgbouncer_in_transaction_mode(bouncer_url):
    servers = [await start_server(bouncer_url), await start_server(bouncer_url)]
    try:
        async with aiohttp.ClientSession() as http:
            one, two = (Api(http, base) for _, base in servers)
            status, body = await one.call(
                "POST", "/api/register", {"username": "alice", "password": "correct horse"}
            )
            assert status == 201
            alice = Api(http, one.base, body["token"])
            alice_two = Api(http, two.base, body["token"])
            status, body = await two.call(
                "POST", "/api/register", {"username": "bob", "password": "correct horse"}
            )
            bob = Api(http, two.base, body["token"])

            status, body = await alice.call(
                "POST", "/api/channels", {"name": "pooled", "members": ["bob"]}
            )
            assert status == 201, body
            channel = body["channel"]["id"]

            # Bob polls on server two while alice sends on server one, many
            # at once (the pool's connections interleave on PgBouncer's).
            async def follow(want: int) -> list[int]:
                got: list[int] = []
                after = 0
                while len(got) < want:
                    status, body = await bob.call(
                        "GET", f"/api/channels/{channel}/messages?after={after}&wait=10"
                    )
                    assert status == 200, body
                    for message in body["messages"]:
                        got.append(message["seq"])
                        after = message["seq"]
                return got

            poll = asyncio.create_task(follow(40))
            sends = await asyncio.gather(
                *(
                    alice.call(
                        "POST",
                        f"/api/channels/{channel}/messages",
                        {"text": f"m{i}"},
                        **{"Idempotency-Key": f"k{i}"},
                    )
                    for i in range(40)
                )
            )
            assert all(status == 201 for status, _ in sends)
            seqs = sorted(body["message"]["seq"] for _, body in sends)
            assert await asyncio.wait_for(poll, 30) == seqs

            # A repeat of a key answers the first message, on either server.
            status, body = await alice_two.call(
                "POST",
                f"/api/channels/{channel}/messages",
                {"text": "again"},
                **{"Idempotency-Key": "k7"},
            )
            assert status == 200 and body["message"]["text"] == "m7"
            status, body = await alice.call("GET", f"/api/channels/{channel}/messages?limit=200")
            assert [m["seq"] for m in body["messages"]] == seqs

            # Edits, reactions, members, mentions.
            first = seqs[0]
            status, body = await alice.call(
                "PATCH", f"/api/channels/{channel}/messages/{first}", {"text": "m0, edited"}
            )
            assert status == 200 and body["message"]["edited_at"]
            status, _ = await bob.call(
                "PUT", f"/api/channels/{channel}/messages/{first}/reactions/%F0%9F%91%8D"
            )
            assert status == 204
            status, _ = await alice.call("DELETE", f"/api/channels/{channel}/members/bob")
            assert status == 204
            status, body = await bob.call("GET", f"/api/channels/{channel}/messages")
            assert status == 404, body

            # Logout on one server ends the session on the other (cached there).
            assert (await alice_two.call("GET", "/api/me"))[0] == 200
            status, body = await one.call(
                "POST", "/api/login", {"username": "alice", "password": "correct horse"}
            )
            alice_again = Api(http, two.base, body["token"])
            assert (await alice.call("POST", "/api/logout"))[0] == 204
            for _ in range(250):
                if (await alice_two.call("GET", "/api/me"))[0] == 401:
                    break
                await asyncio.sleep(0.02)
            assert (await alice_two.call("GET", "/api/me"))[0] == 401
            # A password change keeps its own session.
            status, _ = await alice_again.call(
                "POST",
                "/api/me/password",
                {"current_password": "correct horse", "new_password": "battery staple"},
            )
            assert status == 204
            assert (await alice_again.call("GET", "/api/me"))[0] == 200
    finally:
        for process, _ in servers:
            stop_server(process)


def test_pgbouncer_without_the_setting_is_one_clear_line(bouncer_url, monkeypatch):
    """PgBouncer refuses the pool's plan_cache_mode startup parameter: serve
    says what to set, rather than a traceback."""
    monkeypatch.setenv("CHATTERWERKS_PGBOUNCER", "0")
    done = subprocess.run(
        [sys.executable, "-m", "chatterwerks", "serve", "--port", str(free_port())],
        env={**os.environ, "DATABASE_URL": bouncer_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "set CHATTERWERKS_PGBOUNCER=1" in done.stderr.splitlines()[-1]
    assert "Traceback" not in done.stderr
