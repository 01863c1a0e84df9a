"""Malformed input, case by case: lone surrogates, NUL bytes, out-of-range
numbers, wrong JSON types, deep nesting, oversized bodies. Each is refused
with the documented error code and writes nothing (the data snapshot before
equals the one after). These are the cases test_fuzz.py's random search found
or is meant to find, pinned down so that they run on every commit whatever
Hypothesis draws.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from helpers import assert_error
from snapshot import snapshot

from chatterwerks import keys


async def _snapshot(app: web.Application) -> Any:
    async with app[keys.POOL].acquire() as conn:
        return await snapshot(conn)


async def _raw_post(client: TestClient, path: str, raw: bytes, headers: Any = None) -> Any:
    response = await client.post(
        path, data=raw, headers={"Content-Type": "application/json", **(headers or {})}
    )
    return response.status, await response.json()


async def test_lone_surrogate_in_username(app: web.Application, client: TestClient) -> None:
    before = await _snapshot(app)
    status, body = await _raw_post(
        client, "/api/register", b'{"username": "al\\ud800ice", "password": "correct horse"}'
    )
    assert status == 400, body
    assert_error(body, "invalid_username")
    status, body = await _raw_post(
        client, "/api/login", b'{"username": "al\\ud800ice", "password": "correct horse"}'
    )
    assert status == 401, body
    assert_error(body, "invalid_credentials")
    assert await _snapshot(app) == before


async def test_lone_surrogate_in_login_password(
    app: web.Application, client: TestClient, make_user: Any
) -> None:
    alice = await make_user("alice")
    before = await _snapshot(app)
    for username in ("alice", "nobody"):
        status, body = await _raw_post(
            client,
            "/api/login",
            b'{"username": "%s", "password": "pass\\ud800word"}' % username.encode(),
        )
        assert status in (400, 401), (username, status, body)
        assert_error(body, body["error"]["code"])
    # The same verify path: the current password of a password change.
    status, body = await _raw_post(
        client,
        "/api/me/password",
        b'{"current_password": "pass\\ud800word", "new_password": "new password"}',
        alice.headers,
    )
    assert status in (400, 403), (status, body)
    assert_error(body, body["error"]["code"])
    assert await _snapshot(app) == before


async def test_nul_in_channel_name(app: web.Application, make_user: Any) -> None:
    alice = await make_user()
    before = await _snapshot(app)
    body = await alice.post("/api/channels", {"name": "gen\x00eral"}, expect=400)
    assert_error(body, "invalid_name")
    body = await alice.post("/api/channels", {"name": "ok", "description": "a\x00"}, expect=400)
    assert_error(body, "invalid_description")
    assert await _snapshot(app) == before


async def test_huge_seq(app: web.Application, make_user: Any, home_id: int) -> None:
    alice = await make_user()
    before = await _snapshot(app)
    for seq in (2**64, 2**63, -1, -(2**63) - 1, 1.5, "1", True, [1], float("nan")):
        body = await alice.post(f"/api/channels/{home_id}/read", {"seq": seq}, expect=400)
        assert_error(body, "invalid_seq")
    assert await _snapshot(app) == before
    await alice.post(f"/api/channels/{home_id}/read", {"seq": 2**63 - 1}, expect=204)


async def test_bad_limit_and_before(make_user: Any, home_id: int) -> None:
    alice = await make_user()
    path = f"/api/channels/{home_id}/messages"
    assert_error(await alice.get(path + "?limit=-1", expect=400), "invalid_limit")
    assert_error(await alice.get(path + "?limit=0", expect=400), "invalid_limit")
    assert_error(await alice.get(path + "?limit=abc", expect=400), "invalid_limit")
    assert_error(
        await alice.get(path + "?before=99999999999999999999", expect=400), "invalid_before"
    )
    assert_error(await alice.get(path + "?after=-1", expect=400), "invalid_after")
    assert_error(await alice.get(path + "?after=0&wait=nan", expect=400), "invalid_wait")
    assert_error(await alice.get(path + "?after=0&wait=-1", expect=400), "invalid_wait")
    # Above the maximum is clamped, not refused (API.md).
    body = await alice.get(path + "?limit=1000000")
    assert len(body["messages"]) <= 200
    body = await alice.get(path + f"?before={2**63 - 1}&limit=200")
    assert "has_more" in body
    assert_error(await alice.get("/api/events?timeout=soon", expect=400), "invalid_timeout")
    assert_error(await alice.get("/api/events?cursor=%00", expect=400), "invalid_cursor")


async def test_list_as_text(app: web.Application, make_user: Any, home_id: int) -> None:
    alice = await make_user()
    before = await _snapshot(app)
    for text in (["hello"], {"text": "hello"}, 5, True, "", "   ", "\x00", "x" * 4001):
        body = await alice.post(f"/api/channels/{home_id}/messages", {"text": text}, expect=400)
        assert_error(body, "invalid_text" if text != "" else body["error"]["code"])
    assert await _snapshot(app) == before


async def test_unknown_fields_are_ignored(client: TestClient, make_user: Any) -> None:
    response = await client.post(
        "/api/register",
        json={"username": "extra", "password": "correct horse", "is_bot": True, "id": 1},
    )
    body = await response.json()
    assert response.status == 201, body
    assert body["user"]["is_bot"] is False
    alice = await make_user()
    channel = await alice.post("/api/channels", {"name": "x", "kind": "home", "x": [1]}, expect=201)
    assert channel["channel"]["kind"] == "group"
    channel_id = channel["channel"]["id"]
    message = await alice.post(
        f"/api/channels/{channel_id}/messages", {"text": "hi", "seq": 99, "author": 1}, expect=201
    )
    assert message["message"]["seq"] == 1
    await alice.post(f"/api/channels/{channel_id}/read", {"seq": 1, "x": None}, expect=204)


async def test_members_must_be_a_list(app: web.Application, make_user: Any) -> None:
    """members is optional, but when given it is a list: a wrong type is refused
    like everywhere else, not taken as 'no members'."""
    alice = await make_user()
    before = await _snapshot(app)
    for members in ({}, "", 0, False, "bob", 5, {"bob": 1}):
        body = await alice.post(
            "/api/channels", {"name": f"m{members!r}", "members": members}, expect=400
        )
        assert_error(body, "invalid_members")
    assert await _snapshot(app) == before
    await alice.post("/api/channels", {"name": "ok", "members": []}, expect=201)
    await alice.post("/api/channels", {"name": "ok2", "members": None}, expect=201)


async def test_deeply_nested_json(app: web.Application, client: TestClient, make_user: Any) -> None:
    alice = await make_user()
    before = await _snapshot(app)
    for raw in (b"[" * 50_000, b'{"a":' * 12_000):  # both under 64 KiB
        status, body = await _raw_post(client, "/api/register", raw)
        assert status == 400, (status, body)
        assert_error(body, "invalid_json")
        status, body = await _raw_post(client, "/api/channels", raw, alice.headers)
        assert status == 400, (status, body)
        assert_error(body, "invalid_json")
    assert await _snapshot(app) == before


async def test_body_too_large(client: TestClient, make_user: Any) -> None:
    alice = await make_user()
    raw = json.dumps({"name": "big", "description": "x" * 70_000}).encode()
    status, body = await _raw_post(client, "/api/channels", raw, alice.headers)
    assert status == 413, body
    assert_error(body, "body_too_large")
