"""A primary and its synchronous standby (tests/pgcluster.py), two server
processes on the multi-host URL, senders retrying with Idempotency-Keys and
long-pollers on both processes; the primary dies (SIGKILL) or is shut down
(a planned switchover), the standby is promoted. Nothing answered 201 is
lost or doubled, every poller hears every message once and in order, and
the same processes serve on without a restart. Prints the time from the
failure to the first successful send. The same again with the whole
replicated deployment: three server hosts, pools through PgBouncer, LISTEN
straight to the nodes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import asyncpg
import pytest
from helpers import assert_error, start_server, stop_server
from pgcluster import Clusters, Node, Patroni

from chatterwerks import db, keys
from chatterwerks.app import create_app
from chatterwerks.config import ConfigError, Settings, redact_url
from chatterwerks.realtime.listener import Listener

SENDERS = 3
RETRY_PAUSE = 0.05
RETRYABLE = (aiohttp.ClientError, asyncio.TimeoutError)


@pytest.fixture
async def pair(clusters_pair):
    return clusters_pair[1:]


@pytest.fixture
async def clusters_pair(monkeypatch):
    """(the Clusters, its primary, its synchronous standby), database chat
    migrated."""
    monkeypatch.setenv("CHATTERWERKS_LIMIT_MESSAGES_USER", "off")
    monkeypatch.setenv("CHATTERWERKS_LIMIT_REGISTER_ADDRESS", "off")
    clusters = await asyncio.to_thread(Clusters)
    try:
        primary = await asyncio.to_thread(clusters.primary)
        admin = await asyncpg.connect(primary.url())
        try:
            await admin.execute("CREATE DATABASE chat")
        finally:
            await admin.close()
        await db.migrate_url(primary.url("chat"))
        standby = await asyncio.to_thread(clusters.standby, primary)
        # Only now: a commit waits for the synchronous standby's flush.
        admin = await asyncpg.connect(primary.url())
        try:
            await admin.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            await admin.execute("SELECT pg_reload_conf()")
        finally:
            await admin.close()
        await wait_for_sync_standby(primary)
        yield clusters, primary, standby
    finally:
        await asyncio.to_thread(clusters.close)


async def wait_for_sync_standby(primary: Node) -> None:
    conn = await asyncpg.connect(primary.url())
    try:
        for _ in range(200):
            if await conn.fetchval(
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"
            ):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the standby never became synchronous")
    finally:
        await conn.close()


@dataclass
class Traffic:
    bases: list[str]
    home: int
    tokens: list[str]
    failed_at: float = 0.0
    first_send_after: float | None = None
    first_seq_after: int = 0  # that send's seq
    heard_at: dict[int, list[float]] = field(default_factory=dict)  # seq -> when pollers got it
    stop: bool = False
    answered: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (status, seq)
    slowest_503: float = 0.0
    unavailable: int = 0


async def send_loop(http: aiohttp.ClientSession, traffic: Traffic, user: int) -> None:
    """Sends one message after another, each retried with its key until it
    is answered; alternates between the servers."""
    i = 0
    while not traffic.stop:
        key = f"u{user}-{i}"
        attempt = 0
        while True:
            base = traffic.bases[(i + attempt) % len(traffic.bases)]
            started = time.monotonic()
            try:
                async with http.post(
                    f"{base}/api/channels/{traffic.home}/messages",
                    json={"text": f"message {key}"},
                    headers={
                        "Authorization": f"Bearer {traffic.tokens[user]}",
                        "Idempotency-Key": key,
                    },
                ) as response:
                    body = await response.json()
                    status = response.status
            except RETRYABLE:
                status = None
            if status in (200, 201):
                traffic.answered[key] = (status, body["message"]["seq"])
                # The first send begun after the failure (not one answered late).
                failed = traffic.failed_at
                if failed and started > failed and traffic.first_send_after is None:
                    traffic.first_send_after = time.monotonic() - traffic.failed_at
                    traffic.first_seq_after = body["message"]["seq"]
                break
            assert status in (503, None), (status, body)
            traffic.unavailable += 1
            if status == 503:
                traffic.slowest_503 = max(traffic.slowest_503, time.monotonic() - started)
            attempt += 1
            await asyncio.sleep(RETRY_PAUSE)
        i += 1


async def poll_loop(
    http: aiohttp.ClientSession, traffic: Traffic, base: str, user: int, after: int, got: list[int]
) -> None:
    """Follows Home from `after` on one server, through the failover."""
    cursor = after
    while True:
        try:
            async with http.get(
                f"{base}/api/channels/{traffic.home}/messages",
                params={"after": str(cursor), "wait": "2"},
                headers={"Authorization": f"Bearer {traffic.tokens[user]}"},
            ) as response:
                if response.status == 503:
                    await asyncio.sleep(RETRY_PAUSE)
                    continue
                assert response.status == 200, await response.text()
                found = (await response.json())["messages"]
        except RETRYABLE:
            await asyncio.sleep(RETRY_PAUSE)
            continue
        for message in found:
            got.append(message["seq"])
            traffic.heard_at.setdefault(message["seq"], []).append(time.monotonic())
            cursor = message["seq"]


async def register(http: aiohttp.ClientSession, base: str, name: str) -> str:
    async with http.post(
        f"{base}/api/register", json={"username": name, "password": "correct horse"}
    ) as response:
        assert response.status == 201, await response.text()
        return (await response.json())["token"]


async def me_status(http: aiohttp.ClientSession, base: str, token: str) -> int:
    async with http.get(f"{base}/api/me", headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status


async def run_failover(pair: tuple[Node, Node], planned: bool, url_query: str) -> None:
    primary, standby = pair
    hosts = [f"127.0.0.1:{primary.port}", f"127.0.0.1:{standby.port}"]
    if planned:
        hosts.reverse()  # the standby first: connections must pass it by

    async def promote() -> None:
        # As an operator would: a moment to notice, then promote.
        await asyncio.sleep(0.5)
        await asyncio.to_thread(standby.promote)

    await run_through_failure(
        f"postgresql://postgres@{','.join(hosts)}/chat{url_query}",
        lambda: primary.stop("fast") if planned else primary.kill(),
        promote,
        "switchover" if planned else "SIGKILL",
    )


async def run_through_failure(
    url: str,
    fail: Callable[[], None],
    promote: Callable[[], Awaitable[None]],
    label: str,
    wait_for_primary: float = 15,
    hosts: tuple[str, ...] = ("127.0.0.1", "127.0.0.1"),
    env: dict[str, str] | None = None,
    truth_url: str | None = None,
) -> None:
    """A server on url on each of hosts, senders and pollers; fail() takes
    the primary away, promote() (or Patroni) brings another; then the checks,
    reading the truth from truth_url (default url)."""
    servers = [await start_server(url, host=host, env=env) for host in hosts]
    timeout = aiohttp.ClientTimeout(total=15)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            bases = [base for _, base in servers]
            tokens = [await register(http, bases[0], f"sender{n}") for n in range(SENDERS)]
            # The one who logs out after the failover, known to both servers.
            leaver = await register(http, bases[0], "leaver")
            async with http.get(
                f"{bases[0]}/api/me", headers={"Authorization": f"Bearer {tokens[0]}"}
            ) as response:
                home = (await response.json())["channels"][0]["id"]
            async with http.get(
                f"{bases[0]}/api/channels/{home}/messages",
                params={"limit": "1"},
                headers={"Authorization": f"Bearer {tokens[0]}"},
            ) as response:
                start = max([m["seq"] for m in (await response.json())["messages"]], default=0)
            traffic = Traffic(bases, home, tokens)
            received = {(b, u): [] for b in bases for u in range(SENDERS)}
            pollers = [
                asyncio.create_task(poll_loop(http, traffic, b, u, start, got))
                for (b, u), got in received.items()
            ]
            senders = [asyncio.create_task(send_loop(http, traffic, u)) for u in range(SENDERS)]
            try:
                await asyncio.sleep(1.0)
                before = len(traffic.answered)
                assert before > 0, "no send went through before the failure"
                await asyncio.to_thread(fail)
                # From here no primary exists: the clock of the outage starts.
                traffic.failed_at = time.monotonic()
                await promote()
                promoted_after = time.monotonic() - traffic.failed_at
                for _ in range(int(wait_for_primary / 0.05)):
                    if traffic.first_send_after is not None:
                        break
                    await asyncio.sleep(0.05)
                assert traffic.first_send_after is not None, "no send succeeded after promotion"
                await asyncio.sleep(1.0)  # traffic on the new primary
            finally:
                traffic.stop = True
                await asyncio.gather(*senders)

            # The truth, from the new primary.
            conn = await db.connect(truth_url or url)
            try:
                rows = await conn.fetch(
                    "SELECT seq, idempotency_key FROM messages"
                    " WHERE channel_id = $1 AND seq > $2 ORDER BY seq",
                    home,
                    start,
                )
            finally:
                await conn.close()
            seqs = [row["seq"] for row in rows]
            keys = [row["idempotency_key"] for row in rows]
            assert seqs == list(range(start + 1, start + 1 + len(seqs))), "seqs have gaps"
            assert len(keys) == len(set(keys)), "a message was stored twice"
            stored = dict(zip(keys, seqs, strict=True))
            # Every send answered (201, or 200 for a repeat whose first try
            # committed) is there, once, at the seq it was answered with.
            assert {k: seq for k, (_, seq) in traffic.answered.items()} == stored
            created = [k for k, (status, _) in traffic.answered.items() if status == 201]
            assert len(created) > before

            # Every poller, on every server, hears every message once, in order.
            deadline = time.monotonic() + 20
            while any(got[-1:] != seqs[-1:] for got in received.values()):
                assert time.monotonic() < deadline, "a poller never caught up"
                await asyncio.sleep(0.05)
            for poller in pollers:
                poller.cancel()
            await asyncio.gather(*pollers, return_exceptions=True)
            for where, got in received.items():
                assert got == seqs, where

            # How long after its 201 the first send after the failure reached
            # the last of the six pollers: the listeners were back by then.
            heard = traffic.heard_at[traffic.first_seq_after]
            delivered = max(heard) - traffic.failed_at - traffic.first_send_after

            # A logout after the failover ends the session on another
            # server too, which had it cached.
            assert await me_status(http, bases[1], leaver) == 200
            async with http.post(
                f"{bases[0]}/api/logout", headers={"Authorization": f"Bearer {leaver}"}
            ) as response:
                assert response.status == 204
            deadline = time.monotonic() + 5
            while await me_status(http, bases[1], leaver) != 401:
                assert time.monotonic() < deadline, "the logout was not honoured on server 2"
                await asyncio.sleep(0.02)
            assert await me_status(http, bases[0], leaver) == 401

            # The same processes, never restarted.
            assert all(process.poll() is None for process, _ in servers)
            print(
                f"\n{label}: first send {traffic.first_send_after:.2f}s"
                f" after the failure (promote() returned at {promoted_after:.2f}s);"
                f" {len(seqs)} messages,"
                f" {traffic.unavailable} retried attempts, slowest 503 {traffic.slowest_503:.3f}s;"
                f" that first send reached all {len(heard)} pollers {delivered:.3f}s after its 201"
            )
    finally:
        for process, _ in servers:
            stop_server(process)


async def test_sigkilled_primary_loses_nothing_acknowledged(pair):
    await run_failover(pair, planned=False, url_query="?target_session_attrs=read-write")


async def test_sigkilled_primary_through_pgbouncer_on_three_hosts(clusters_pair):
    """The replicated deployment of docs/deployment.md whole: three server
    hosts (127.0.0.2-4), their pools through PgBouncer in transaction mode,
    their LISTEN connections straight to the nodes (multi-host). The primary
    is SIGKILLed; the standby is promoted and PgBouncer repointed to it, as
    a failover hook does. The same checks: nothing acknowledged lost or
    doubled, every poller on every host hears everything once and in order,
    a logout is honoured across hosts, no server restarted."""
    clusters, primary, standby = clusters_pair
    bouncer = await asyncio.to_thread(clusters.pgbouncer, primary.url("chat"))
    direct = (
        f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/chat"
        "?target_session_attrs=read-write"
    )

    async def promote() -> None:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(standby.promote)
        await asyncio.to_thread(clusters.repoint_bouncer, 0, standby)

    await run_through_failure(
        bouncer,
        primary.kill,
        promote,
        "SIGKILL through PgBouncer, three hosts",
        hosts=("127.0.0.2", "127.0.0.3", "127.0.0.4"),
        env={"CHATTERWERKS_PGBOUNCER": "true", "CHATTERWERKS_LISTEN_URL": direct},
        truth_url=direct,
    )


async def test_planned_switchover_loses_nothing(pair):
    # No target_session_attrs in the URL: chatterwerks asks for read-write
    # itself; the standby comes first in it.
    await run_failover(pair, planned=True, url_query="")


async def test_a_pool_connection_wakes_the_listener_out_of_its_backoff(database_url):
    """The database answers again: the listener reconnects at once, not at
    the end of its backoff (here half an hour at least), and a LISTEN
    refused in the meantime is retried like a lost connection."""
    down = True
    attempts = 0

    async def flaky_connect(url: str, **kwargs: object) -> asyncpg.Connection:
        nonlocal attempts
        attempts += 1
        if down:
            raise db.DatabaseUnavailable("cannot reach PostgreSQL: (the test says so)")
        return await db.connect(url, **kwargs)

    connected = asyncio.Event()
    listener = Listener(
        database_url,
        lambda _payload: None,
        connected.set,
        lambda: None,
        max_backoff=3600,
        connect=flaky_connect,
    )
    listener.failures = 20  # as after a long outage: the next delay is capped, >= 1800 s
    task = asyncio.create_task(listener.run())
    try:
        while attempts == 0:
            await asyncio.sleep(0.01)
        assert not connected.is_set()
        down = False
        listener.wake()
        await asyncio.wait_for(connected.wait(), 60)
        assert attempts == 2 and listener.failures == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_multi_host_urls_and_the_new_settings():
    url = "postgresql://chat:pw@db1:5432,db2:5433/chat?target_session_attrs=read-write"
    assert redact_url(url) == (
        "postgresql://chat:***@db1:5432,db2:5433/chat?target_session_attrs=read-write"
    )
    # Read-write unless the URL says otherwise.
    assert db.session_attrs("postgresql://db1,db2/chat") == {"target_session_attrs": "read-write"}
    assert db.session_attrs("postgresql://db1,db2/chat?target_session_attrs=any") == {}
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://bouncer:6432/chat",
            "CHATTERWERKS_LISTEN_URL": url,
            "CHATTERWERKS_PGBOUNCER": "true",
        }
    )
    assert (settings.listen_url, settings.pgbouncer) == (url, True)
    assert Settings.from_env({}).listen_url is None
    assert Settings.from_env({}).pgbouncer is False
    with pytest.raises(ConfigError, match="CHATTERWERKS_PGBOUNCER"):
        Settings.from_env({"CHATTERWERKS_PGBOUNCER": "maybe"})


async def test_a_read_only_primary_is_a_503_and_the_pool_starts_afresh(aiohttp_client):
    """A write that reaches a host that will not take it (here the primary
    turned read-only by a reload; in life a proxy still pointing at a demoted
    primary) answers 503, and every pooled connection is replaced: none of
    the server processes it used before serves the next request."""
    clusters = await asyncio.to_thread(Clusters)
    try:
        node = await asyncio.to_thread(clusters.primary)
        admin = await asyncpg.connect(node.url())
        await admin.execute("CREATE DATABASE chat")
        await db.migrate_url(node.url("chat"))
        settings = Settings(database_url=node.url("chat"), argon2_time_cost=1, argon2_memory_kib=64)
        client = await aiohttp_client(await create_app(settings))
        response = await client.post(
            "/api/register", json={"username": "alice", "password": "correct horse"}
        )
        auth = {"Authorization": f"Bearer {(await response.json())['token']}"}
        home = (await (await client.get("/api/me", headers=auth)).json())["channels"][0]["id"]
        pool = client.app[keys.POOL]

        async def backends() -> set[int]:
            async with pool.acquire() as a, pool.acquire() as b:
                return {
                    await a.fetchval("SELECT pg_backend_pid()"),
                    await b.fetchval("SELECT pg_backend_pid()"),
                }

        before = await backends()
        await admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        await admin.execute("SELECT pg_reload_conf()")
        for _ in range(100):  # each backend applies the reload at its next command
            response = await client.post(
                f"/api/channels/{home}/messages", json={"text": "refused"}, headers=auth
            )
            if response.status == 503:
                break
            await asyncio.sleep(0.05)
        assert response.status == 503
        assert_error(await response.json(), "database_unavailable")

        await admin.execute("SET default_transaction_read_only = off")
        await admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()
        for _ in range(100):
            response = await client.post(
                f"/api/channels/{home}/messages", json={"text": "taken"}, headers=auth
            )
            if response.status == 201:
                break
            await asyncio.sleep(0.05)
        assert response.status == 201
        assert not (await backends()) & before
    finally:
        await asyncio.to_thread(clusters.close)


async def test_patroni_fails_over_by_itself(monkeypatch):
    """docs/deployment.md's Patroni configuration (made local): the leader's
    machine dies (Patroni and PostgreSQL SIGKILLed); Patroni promotes the
    synchronous standby after its TTL, with nobody's help."""
    monkeypatch.setenv("CHATTERWERKS_LIMIT_MESSAGES_USER", "off")
    monkeypatch.setenv("CHATTERWERKS_LIMIT_REGISTER_ADDRESS", "off")
    clusters = await asyncio.to_thread(Clusters)
    patroni = None
    try:
        patroni = await asyncio.to_thread(Patroni, clusters)
        await asyncio.to_thread(
            patroni.wait_for, lambda: patroni.sync_standby() == "db2", "db2 never became sync"
        )
        admin = await db.connect(patroni.url("postgres"))
        try:
            await admin.execute("CREATE DATABASE chat")
        finally:
            await admin.close()
        await db.migrate_url(patroni.url("chat"))

        async def patroni_promotes() -> None:
            await asyncio.to_thread(
                patroni.wait_for, lambda: patroni.role("db2") == "primary", "no failover"
            )

        await run_through_failure(
            patroni.url("chat"),
            lambda: patroni.kill("db1"),
            patroni_promotes,
            "Patroni, SIGKILL",
            wait_for_primary=60,
        )
    finally:
        if patroni is not None:
            await asyncio.to_thread(patroni.close)
        await asyncio.to_thread(clusters.close)
