"""Register, log in, log out, me; sessions, cookies and CSRF; the error shape."""

from __future__ import annotations

import asyncio
import time

from helpers import assert_error

from chatterwerks import keys
from chatterwerks.auth import CSRF_HEADER, CSRF_HEADER_VALUE, SESSION_COOKIE


async def test_register_login_me(client, home_id):
    response = await client.post(
        "/api/register", json={"username": "Alice", "password": "s3cret-pass"}
    )
    assert response.status == 201
    body = await response.json()
    assert body["user"]["username"] == "Alice" and body["user"]["is_bot"] is False
    assert len(body["token"]) >= 43  # 32 random bytes, base64url

    response = await client.post(
        "/api/login", json={"username": "ALICE", "password": "s3cret-pass"}
    )
    assert response.status == 200
    token = (await response.json())["token"]
    me = await (await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})).json()
    assert me["user"] == body["user"]
    assert [c["kind"] for c in me["channels"]] == ["home"]
    assert me["channels"][0]["id"] == home_id
    assert isinstance(me["cursor"], str)


async def test_registration_subscribes_to_home_and_otter_welcomes(make_user, home_id):
    alice = await make_user("alice")
    page = await alice.get(f"/api/channels/{home_id}/messages")
    welcome = page["messages"][-1]
    assert welcome["author"]["username"] == "otter" and welcome["author"]["is_bot"] is True
    assert "alice" in welcome["text"] and "Hey Otter" in welcome["text"]


async def test_username_taken_case_insensitively(client, make_user):
    await make_user("Alice")
    response = await client.post(
        "/api/register", json={"username": "alice", "password": "password9"}
    )
    assert response.status == 409
    assert_error(await response.json(), "username_taken")


async def test_register_validation(client):
    cases = [
        ({"username": "al", "password": "password9"}, "invalid_username"),
        ({"username": "a" * 33, "password": "password9"}, "invalid_username"),
        ({"username": "al ice", "password": "password9"}, "invalid_username"),
        ({"username": "élise", "password": "password9"}, "invalid_username"),
        ({"username": 12345, "password": "password9"}, "invalid_username"),
        ({"password": "password9"}, "missing_username"),
        ({"username": "alice", "password": "short"}, "invalid_password"),
        ({"username": "alice", "password": "x" * 1025}, "invalid_password"),
        ({"username": "alice", "password": ["password9"]}, "invalid_password"),
        ({"username": "alice", "password": "pass\x00word9"}, "invalid_password"),
    ]
    for payload, code in cases:
        response = await client.post("/api/register", json=payload)
        assert response.status == 400, payload
        assert_error(await response.json(), code)


async def test_invalid_json_and_non_object(client):
    for data in (b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"):
        response = await client.post("/api/register", data=data)
        assert response.status == 400
        assert_error(await response.json(), "invalid_json")


async def test_body_over_64_kib_is_413_json(client):
    response = await client.post("/api/register", data=b"{" + b" " * (70 * 1024) + b"}")
    assert response.status == 413
    assert_error(await response.json(), "body_too_large")


async def test_unknown_route_and_method_are_json(client, make_user):
    response = await client.get("/api/no-such-thing")
    assert response.status == 404
    assert_error(await response.json(), "not_found")
    response = await client.delete("/api/me")
    assert response.status == 405
    assert_error(await response.json(), "method_not_allowed")


async def test_unexpected_exception_is_500_json_without_traceback(app, client, make_user, caplog):
    alice = await make_user()

    async def broken(*args, **kwargs):
        raise RuntimeError("boom: secret detail")

    app[keys.HASHER].hash = broken  # the next registration fails inside the handler
    response = await client.post(
        "/api/register", json={"username": "bobby", "password": "password9"}
    )
    assert response.status == 500
    text = await response.text()
    assert "secret detail" not in text and "Traceback" not in text
    assert_error(await response.json(), "internal_error")
    assert "boom: secret detail" in caplog.text  # logged with its traceback
    assert (await alice.get("/api/me"))["user"]["id"] == alice.id


async def test_login_wrong_password_and_unknown_user_look_the_same(client, make_user):
    await make_user("alice", password="right-password")
    answers = []
    for payload in (
        {"username": "alice", "password": "wrong-password"},
        {"username": "nobody", "password": "wrong-password"},
    ):
        started = time.perf_counter()
        response = await client.post("/api/login", json=payload)
        answers.append((response.status, await response.json(), time.perf_counter() - started))
    assert answers[0][0] == answers[1][0] == 401
    assert answers[0][1] == answers[1][1]
    assert_error(answers[0][1], "invalid_credentials")


async def test_unknown_user_login_still_runs_the_hash(app, client, monkeypatch):
    calls = []
    hasher = app[keys.HASHER]
    real = hasher._hasher

    class Counting:
        def verify(self, hash_, password):
            calls.append(hash_)
            return real.verify(hash_, password)

    monkeypatch.setattr(hasher, "_hasher", Counting())
    response = await client.post("/api/login", json={"username": "ghost", "password": "whatever1"})
    assert response.status == 401
    assert len(calls) == 1  # a real argon2 verify ran, against the dummy hash


async def test_otter_cannot_log_in(client):
    for password in ("", "password9", "otter-password"):
        response = await client.post("/api/login", json={"username": "otter", "password": password})
        assert response.status == 401


async def test_password_is_stored_as_argon2id(app, make_user):
    await make_user("alice", password="plain-text-pw")
    async with app[keys.POOL].acquire() as conn:
        stored = await conn.fetchval("SELECT password_hash FROM users WHERE username = 'alice'")
        tokens = await conn.fetch("SELECT token_hash FROM sessions")
    assert stored.startswith("$argon2id$") and "plain-text-pw" not in stored
    assert all(len(row["token_hash"]) == 32 for row in tokens)  # sha256, never the token


async def test_logout_revokes_only_that_token(client, make_user):
    alice = await make_user("alice", password="password9")
    response = await client.post("/api/login", json={"username": "alice", "password": "password9"})
    second = (await response.json())["token"]
    await alice.post("/api/logout", expect=204)
    response = await client.get("/api/me", headers=alice.headers)
    assert response.status == 401
    assert_error(await response.json(), "invalid_token")
    response = await client.get("/api/me", headers={"Authorization": f"Bearer {second}"})
    assert response.status == 200


async def test_expired_session_is_refused(app, make_user):
    alice = await make_user()
    async with app[keys.POOL].acquire() as conn:
        await conn.execute("UPDATE sessions SET expires_at = now() - interval '1 second'")
    response = await alice.client.get("/api/me", headers=alice.headers)
    assert response.status == 401


async def test_no_credentials_and_bad_scheme(client):
    response = await client.get("/api/me")
    assert response.status == 401
    assert_error(await response.json(), "not_signed_in")
    response = await client.get("/api/me", headers={"Authorization": "Basic abc"})
    assert response.status == 401
    assert_error(await response.json(), "invalid_token")
    response = await client.get("/api/me", headers={"Authorization": "Bearer nope"})
    assert response.status == 401


async def test_cookie_session_and_csrf(client, make_user, home_id):
    response = await client.post(
        "/api/register", json={"username": "carol", "password": "password9"}
    )
    cookie = response.cookies[SESSION_COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    # The test client keeps the cookie: reads work with it alone.
    assert (await client.get("/api/me")).status == 200
    path = f"/api/channels/{home_id}/messages"
    # A cookie-authenticated POST without the header: refused, nothing stored.
    response = await client.post(path, json={"text": "forged"})
    assert response.status == 403
    assert_error(await response.json(), "csrf_failed")
    # With the header but from another site: refused.
    response = await client.post(
        path,
        json={"text": "forged"},
        headers={CSRF_HEADER: CSRF_HEADER_VALUE, "Origin": "https://evil.example"},
    )
    assert response.status == 403
    # With the header from this site: accepted.
    host = f"{client.host}:{client.port}"
    response = await client.post(
        path,
        json={"text": "real"},
        headers={CSRF_HEADER: CSRF_HEADER_VALUE, "Origin": f"http://{host}"},
    )
    assert response.status == 201
    texts = [m["text"] for m in (await (await client.get(path)).json())["messages"]]
    assert "real" in texts and "forged" not in texts


async def test_healthz(client):
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_hashing_does_not_block_the_event_loop(settings, aiohttp_client):
    """With the real argon2 cost, the loop keeps ticking during registrations."""
    from chatterwerks.app import create_app

    app = await create_app(settings.replace(argon2_time_cost=3, argon2_memory_kib=65536))
    client = await aiohttp_client(app)
    gaps = []

    async def ticker():
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    responses = await asyncio.gather(
        *(
            client.post("/api/register", json={"username": f"slow{i}", "password": "password9"})
            for i in range(4)
        )
    )
    task.cancel()
    assert all(r.status == 201 for r in responses)
    # argon2 at this cost takes tens of ms per hash; on the loop it would stall it.
    assert max(gaps) < 0.25, max(gaps)


async def test_another_sites_form_cannot_sign_a_browser_in(client, make_user):
    """Login CSRF: a cross-site form (text/plain, so no preflight) posting the
    attacker's credentials is refused; curl (no Origin) and this site pass."""
    await make_user("attacker", "attacker-password")
    body = '{"username": "attacker", "password": "attacker-password"}'
    for path in ("/api/login", "/api/register"):
        response = await client.post(
            path,
            data=body,
            headers={"Content-Type": "text/plain", "Origin": "https://evil.example"},
        )
        assert response.status == 403, path
        assert_error(await response.json(), "csrf_failed")
        assert "Set-Cookie" not in response.headers
    ok = await client.post("/api/login", data=body)
    assert ok.status == 200
    same_site = await client.post(
        "/api/login", data=body, headers={"Origin": str(client.make_url("/")).rstrip("/")}
    )
    assert same_site.status == 200
