"""Hardening: rate limits, the long-poll cap, session idle timeout, password
change, and security headers."""

from __future__ import annotations

import asyncio

import pytest
from helpers import assert_error

from chatterwerks import keys, ratelimit
from chatterwerks.app import create_app
from chatterwerks.ratelimit import Limit


@pytest.fixture
def client_with(settings, aiohttp_client):
    async def make(**overrides):
        app = await create_app(settings.replace(**overrides))
        return await aiohttp_client(app, server_kwargs={"handler_cancellation": True})

    return make


async def register(client, username, password="password9"):
    response = await client.post("/api/register", json={"username": username, "password": password})
    assert response.status == 201, await response.text()
    return (await response.json())["token"]


async def login(client, username, password):
    return await client.post("/api/login", json={"username": username, "password": password})


def test_limit_parse():
    assert Limit.parse("10/30") == Limit(10, 30.0)
    assert Limit.parse("off") is None
    for bad in ("10", "0/5", "5/0", "x/y", "-1/3"):
        with pytest.raises(ValueError):
            Limit.parse(bad)


async def test_failed_logins_per_username_are_limited(client_with):
    client = await client_with(limit_login_username=Limit(3, 60.0))
    await register(client, "victim", "right-password")
    for _ in range(3):
        assert (await login(client, "victim", "guess-guess")).status == 401
    response = await login(client, "victim", "guess-guess")
    assert response.status == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert_error(await response.json(), "rate_limited")
    # Other accounts are untouched.
    await register(client, "other", "right-password")
    assert (await login(client, "other", "right-password")).status == 200


async def test_successful_logins_do_not_use_up_the_username_limit(client_with):
    client = await client_with(limit_login_username=Limit(2, 60.0))
    await register(client, "regular", "right-password")
    for _ in range(5):
        assert (await login(client, "regular", "right-password")).status == 200


async def test_login_attempts_per_address_are_limited(client_with):
    client = await client_with(limit_login_address=Limit(4, 60.0))
    await register(client, "someone", "right-password")
    statuses = [(await login(client, f"user{i}", "whatever-pw")).status for i in range(5)]
    assert statuses == [401, 401, 401, 401, 429]


async def test_registrations_per_address_are_limited(client_with):
    client = await client_with(limit_register_address=Limit(2, 60.0))
    await register(client, "first")
    await register(client, "second")
    response = await client.post(
        "/api/register", json={"username": "third", "password": "password9"}
    )
    assert response.status == 429 and "Retry-After" in response.headers
    assert_error(await response.json(), "rate_limited")


async def test_messages_per_user_are_limited(client_with):
    client = await client_with(limit_messages_user=Limit(5, 60.0))
    alice = {"Authorization": f"Bearer {await register(client, 'alice')}"}
    bob = {"Authorization": f"Bearer {await register(client, 'bob')}"}
    home = (await (await client.get("/api/me", headers=alice)).json())["channels"][0]["id"]
    path = f"/api/channels/{home}/messages"
    statuses = [
        (await client.post(path, json={"text": f"m{i}"}, headers=alice)).status for i in range(7)
    ]
    assert statuses == [201] * 5 + [429] * 2
    assert (await client.post(path, json={"text": "bob is fine"}, headers=bob)).status == 201
    texts = [m["text"] for m in (await (await client.get(path, headers=alice)).json())["messages"]]
    assert "m5" not in texts and "m6" not in texts and "bob is fine" in texts


async def test_long_polls_per_user_are_capped(client_with):
    client = await client_with(max_polls_per_user=2)
    headers = {"Authorization": f"Bearer {await register(client, 'poller')}"}
    me = await (await client.get("/api/me", headers=headers)).json()
    url = f"/api/events?cursor={me['cursor']}&timeout=2"
    parked = [asyncio.create_task(client.get(url, headers=headers)) for _ in range(2)]
    hub = client.server.app[keys.HUB]
    while hub.polls_of(me["user"]["id"]) < 2:
        await asyncio.sleep(0.01)
    response = await client.get(url, headers=headers)
    assert response.status == 429
    assert_error(await response.json(), "too_many_polls")
    assert all(r.status == 200 for r in await asyncio.gather(*parked))
    # Once they have answered, polling works again.
    assert (await client.get(url.replace("timeout=2", "timeout=0"), headers=headers)).status == 200


async def test_idle_session_ends(app, make_user):
    alice = await make_user()
    async with app[keys.POOL].acquire() as conn:
        await conn.execute("UPDATE sessions SET last_seen_at = now() - interval '15 days'")
    response = await alice.client.get("/api/me", headers=alice.headers)
    assert response.status == 401


async def test_sessions_are_touched_at_most_once_a_minute(app, make_user):
    alice = await make_user()
    async with app[keys.POOL].acquire() as conn:
        await conn.execute("UPDATE sessions SET last_seen_at = now() - interval '2 days'")
        await alice.get("/api/me")
        touched = await conn.fetchval(
            "SELECT now() - last_seen_at < interval '1 minute' FROM sessions"
        )
    assert touched


async def test_password_change_revokes_other_sessions(client, make_user):
    alice = await make_user("alice", password="old-password")
    response = await login(client, "alice", "old-password")
    other = {"Authorization": f"Bearer {(await response.json())['token']}"}
    body = await alice.post(
        "/api/me/password",
        {"current_password": "wrong-one", "new_password": "new-password"},
        expect=403,
    )
    assert_error(body, "wrong_password")
    body = await alice.post(
        "/api/me/password",
        {"current_password": "old-password", "new_password": "short"},
        expect=400,
    )
    assert_error(body, "invalid_new_password")
    await alice.post(
        "/api/me/password",
        {"current_password": "old-password", "new_password": "new-password"},
        expect=204,
    )
    assert (await client.get("/api/me", headers=alice.headers)).status == 200  # this session stays
    assert (await client.get("/api/me", headers=other)).status == 401  # every other one ends
    assert (await login(client, "alice", "old-password")).status == 401
    assert (await login(client, "alice", "new-password")).status == 200


async def test_security_headers(client, make_user):
    response = await client.get("/")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    api = await client.get("/api/me")
    assert api.headers["X-Content-Type-Options"] == "nosniff"
    assert api.headers["Cache-Control"] == "no-store"


async def test_secure_cookie_when_configured(client_with):
    client = await client_with(secure_cookies=True)
    response = await client.post("/api/register", json={"username": "tls", "password": "password9"})
    assert "Secure" in response.headers["Set-Cookie"]


async def test_trickled_body_is_cut_off(client, monkeypatch):
    """A body that never finishes arriving gets 408, not a handler held forever."""
    from chatterwerks import validation

    monkeypatch.setattr(validation, "BODY_READ_TIMEOUT", 0.5)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"POST /api/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"user'
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert b" 408 " in status_line
    writer.close()


async def test_oversized_header_is_refused(client):
    response = await client.get("/api/me", headers={"X-Big": "x" * 20000})
    assert response.status in (400, 431)


async def test_an_attackers_guesses_do_not_lock_the_owner_out(client_with):
    """Failures count per (username, address): one address guessing a name is
    stopped, while the owner, elsewhere, signs in. Many addresses together
    meet the looser cap per username."""
    client = await client_with(
        trust_forwarded_for=True,
        limit_login_failures=Limit(3, 60.0),
        limit_login_username=Limit(6, 60.0),
    )
    await register(client, "owner", "right-password")

    async def attempt(address, password):
        response = await client.post(
            "/api/login",
            json={"username": "owner", "password": password},
            headers={"X-Forwarded-For": address},
        )
        return response.status

    assert [await attempt("10.0.0.1", "guess-guess") for _ in range(4)] == [401] * 3 + [429]
    assert await attempt("10.0.0.2", "right-password") == 200
    assert [await attempt("10.0.0.3", "guess-guess") for _ in range(3)] == [401] * 3
    # 6 failures from anywhere: now the username itself waits.
    assert await attempt("10.0.0.4", "right-password") == 429


# Shared limits: the buckets live in PostgreSQL, so two apps on one database
# (two processes, or two hosts) draw from the same bucket.


@pytest.fixture
def two_clients(client_with):
    async def make(**overrides):
        return await client_with(**overrides), await client_with(**overrides)

    return make


async def test_registrations_are_limited_across_processes(two_clients):
    one, two = await two_clients(limit_register_address=Limit(3, 60.0))
    await register(one, "first")
    await register(two, "second")
    await register(one, "third")
    for client in (two, one):
        response = await client.post(
            "/api/register", json={"username": "fourth", "password": "password9"}
        )
        assert response.status == 429, await response.text()


async def test_login_failures_count_across_processes(two_clients):
    one, two = await two_clients(limit_login_failures=Limit(3, 60.0))
    await register(one, "owner", "right-password")
    assert (await login(one, "owner", "guess-guess")).status == 401
    assert (await login(two, "owner", "guess-guess")).status == 401
    assert (await login(one, "Owner", "guess-guess")).status == 401
    # Three failures between them: both processes now refuse this address.
    assert (await login(two, "owner", "right-password")).status == 429
    assert (await login(one, "owner", "right-password")).status == 429


async def _sends_until_refused(clients, limit):
    """Sends through the clients in turn until every one has answered 429;
    the number accepted."""
    alice = {"Authorization": f"Bearer {await register(clients[0], 'alice')}"}
    home = (await (await clients[0].get("/api/me", headers=alice)).json())["channels"][0]["id"]
    path = f"/api/channels/{home}/messages"
    accepted, refused, i = 0, set(), 0
    while len(refused) < len(clients):
        client = clients[i % len(clients)]
        response = await client.post(path, json={"text": f"m{i}"}, headers=alice)
        assert response.status in (201, 429), await response.text()
        if response.status == 201:
            accepted += 1
            refused.discard(i % len(clients))
        else:
            refused.add(i % len(clients))
        i += 1
        assert i < 10 * limit.burst, "never refused"
    return accepted


async def test_message_limit_is_shared_by_two_processes(two_clients):
    """A burst of 40 (leases of up to 10): through one process exactly 40
    messages pass; through two, never more than 40, and at most 9 fewer
    (what the other process may hold of its lease)."""
    limit = Limit(40, 600.0)
    one, two = await two_clients(limit_messages_user=limit)
    assert await _sends_until_refused([one, two], limit) in range(40 - 9, 41)


async def test_message_limit_through_one_process_is_exact(client_with):
    limit = Limit(40, 600.0)
    assert await _sends_until_refused([await client_with(limit_messages_user=limit)], limit) == 40


async def test_a_lease_spares_the_database(app, client):
    """Tokens are taken from the shared row in leases of 1, 2, 4, 8 ...: the
    row changes only when a lease runs out, not at every request. Tokens
    left unspent expire after one window, and the next lease is halved."""
    now = [1000.0]
    limiter = ratelimit.SharedLimiter("test", Limit(64, 600.0), lease_max=16)
    limiter.clock = lambda: now[0]
    limiter.bind(app[keys.POOL])
    async with app[keys.POOL].acquire() as conn:

        async def left() -> int:
            tokens = await conn.fetchval("SELECT tokens FROM rate_buckets WHERE rule = 'test'")
            return round(tokens)

        seen = []
        for _ in range(16):
            assert await limiter.take(7) == 0
            seen.append(await left())
        # 1, then 2, 4, 8 at a time (the 16th take opens a lease of 16).
        assert seen == [63, 61, 61, 57, 57, 57, 57] + [49] * 8 + [33]
        now[0] += limiter.lease_seconds + 1  # 15 leased tokens expire unspent
        assert await limiter.take(7) == 0
        assert await left() == 25  # a lease of 8: halved
        for _ in range(25 + 7):
            assert await limiter.take(7) == 0
        assert await limiter.take(7) == 600  # empty: a token in 600 s
        assert await limiter.retry_after(7) == 600


async def test_full_buckets_are_forgotten(app, client):
    limiter = ratelimit.SharedLimiter("test", Limit(2, 0.01))
    slow = ratelimit.SharedLimiter("slow", Limit(2, 600.0))
    for each in (limiter, slow):
        each.bind(app[keys.POOL])
        assert await each.take("k") == 0
    await asyncio.sleep(0.05)  # the fast bucket is full again
    assert await ratelimit.forget_full_buckets(app[keys.POOL]) == 1
    async with app[keys.POOL].acquire() as conn:
        assert await conn.fetchval("SELECT array_agg(rule) FROM rate_buckets") == ["slow"]


def test_bucket_keys_are_unambiguous():
    keys_ = [("a b", "c"), ("a", "b c"), "a b c", 7, "7", ("x" * 300, "1.2.3.4")]
    texts = [ratelimit.bucket_key(key) for key in keys_]
    assert len(set(texts)) == len(texts)
    assert all(len(text) <= 200 for text in texts)


async def test_concurrent_takes_never_lose_tokens(app, client):
    """Many takes of one bucket at once, from many connections: each waits
    for the row lock, and one that started before the last update must not
    count the time between as negative (it would drain the bucket)."""
    limiter = ratelimit.SharedLimiter("test", Limit(1000, 0.000001))
    limiter.bind(app[keys.POOL])
    for _ in range(5):
        waits = await asyncio.gather(*(limiter.take("k") for _ in range(20)))
        assert waits == [0] * 20


async def test_a_refused_key_costs_no_statement_until_it_may_go(app, client):
    """Over the limit, the process that refused remembers until when the
    bucket cannot have a token: a client hammering costs no statement each."""
    now = [1000.0]
    limiter = ratelimit.SharedLimiter("test", Limit(2, 60.0), lease_max=1)
    limiter.clock = lambda: now[0]
    limiter.bind(app[keys.POOL])
    assert [await limiter.take("k") for _ in range(3)] == [0, 0, 60]
    async with app[keys.POOL].acquire() as conn:
        await conn.execute("DELETE FROM rate_buckets")  # were it asked, it would say: full
        assert await limiter.take("k") == 60
        now[0] += 30
        assert await limiter.take("k") == 30
        assert await limiter.retry_after("k") == 30
        now[0] += 31
        assert await limiter.take("k") == 0  # asks again, and gets one
        assert await conn.fetchval("SELECT round(tokens) FROM rate_buckets") == 1
