"""Soak test: N users for M minutes, then a consistency check.

The script creates its own database on a real PostgreSQL (dropped and
re-created at every start, kept afterwards for inspection), starts the server
with gunicorn (the Procfile's command) as a child process, drives it over
loopback with aiohttp, stops it, checks, and prints one JSON document on
stdout (progress goes to stderr). It exits non-zero if any check fails.

Every simulated user has two halves:

  * an events follower: GET /api/me, then GET /api/events?cursor=...&timeout=
    (5-10 s), following the cursor chain and recording every message event
    (channel, seq, id, a CRC of the text) and every channel_added/removed;
  * a random actor: sends messages at a human-ish rate (exponential think
    time), some users now and then burst to provoke 429s (whose Retry-After
    is checked and honoured), opens direct channels with random users,
    creates a few group channels and adds/removes members (or leaves),
    marks read, reads history, tails one channel (?after=&wait=), asks Otter
    a sum now and then, and "reconnects" its follower: it drops the poll in
    flight and starts again either from a fresh /api/me cursor (a new
    "stint") or from its last cursor (the same stint goes on). A fifth of
    the users never reconnect, so their followers cover the whole run.

After the run (senders stopped, every follower drained until an empty
answer to a poll that began after the last send ended) it checks:

  1. database: per channel, seqs are exactly 1..last_seq and channels.last_seq
     agrees; every accepted send (201) is stored exactly once at the channel,
     seq and id its answer gave; no rejected send (429 ...) was stored; no
     message of a soak user exists that the soak did not send; Otter wrote
     one welcome per user plus one reply per accepted "Hey Otter";
  2. followers: within a stint, each channel's messages arrive once, in seq
     order, without gaps, from the seq the stint (GET /api/me) or the
     membership (joined_seq) began at; a follower's last stint (connected
     until the end) has every message up to channels.last_seq of every
     channel it is a member of, and exactly the channels the database says;
     ids and texts match the database;
  3. errors: every answer is tallied by endpoint and status: only the 429s
     the bursts provoked are allowed, each with a Retry-After; a send
     repeated after honouring it must not be refused again; no transport
     errors, no ERROR or traceback in the server log, no worker restarts;
  4. memory: the RSS of each gunicorn worker, sampled every few seconds, has
     settled: the peak in the last quarter of the run is at most 10% above
     the peak in the second quarter (--rss-tolerance).

The server keeps its default rate limits, except registration per address
(all users come from 127.0.0.1): CHATTERWERKS_LIMIT_REGISTER_ADDRESS=1000/1;
argon2 is made cheap (time cost 1, 64 KiB) since registration is not what is
soaked. Both are reported in the output.

    /work/venv/bin/python bench/soak.py                      # 50 users, 10 minutes
    /work/venv/bin/python bench/soak.py --minutes 0.5        # the CI-sized run
    /work/venv/bin/python bench/soak.py --users 20 --minutes 2 --seed 7 --json-out /tmp/s.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import sys
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
from benchlib import (
    Answer,
    Client,
    chatterwerks_server,
    check_sequence,
    cpu_seconds,
    free_port,
    fresh_database,
    http_session,
    memory_report,
    mib,
    raise_fd_limit,
    sample_rss,
    summary_ms,
)

PASSWORD = "soak-password-1"

# What the soak changes in the server's environment (reported in the output).
# The message rate limit (a burst of 30, then 5 a second, per user and worker)
# and the sign-in limits keep their defaults: the bursts are meant to hit them.
SERVER_ENV = {
    "CHATTERWERKS_LOG_LEVEL": "WARNING",
    "CHATTERWERKS_ARGON2_TIME_COST": "1",
    "CHATTERWERKS_ARGON2_MEMORY_KIB": "64",
    "CHATTERWERKS_LIMIT_REGISTER_ADDRESS": "1000/1",
}

POLL_TIMEOUT = (5.0, 10.0)  # events long-poll timeout, seconds, drawn per poll
SEND_LABEL = "POST /api/channels/{id}/messages"


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Small utilities


def crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


# ---------------------------------------------------------------------------
# The server log


def scan_server_log(text: str) -> dict[str, Any]:
    """ERROR/CRITICAL lines and tracebacks fail the run; warnings are reported."""
    errors, warnings = [], []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "Traceback" in line or re.search(r"\b(ERROR|CRITICAL)\b", line):
            errors.append("\n".join(lines[i : i + 25]))
        elif re.search(r"\bWARNING\b", line):
            warnings.append(line)
    return {
        "error_count": len(errors),
        "warning_count": len(warnings),
        "errors": errors[:5],
        "warnings": warnings[:10],
    }


# ---------------------------------------------------------------------------
# Shared state of the simulation


class Gate:
    """A readers-writer lock for one group: sends and reads in the group hold it
    shared, membership removals exclusively, so the soak never sends into a
    group its user is being removed from (which would be a legitimate 404)."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._writer and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            async with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._cond:
            self._writers_waiting += 1
            try:
                await self._cond.wait_for(lambda: not self._writer and self._readers == 0)
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            async with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass
class Group:
    id: int
    name: str
    moderator: int  # user index
    members: set[int]
    gate: Gate = field(default_factory=Gate)


@dataclass
class Accepted:
    channel_id: int
    seq: int
    id: int
    text: str
    user: int
    started: float


class Stats:
    """Every answer by endpoint and status; transport errors; anomalies."""

    def __init__(self) -> None:
        self.statuses: dict[str, Counter[int]] = defaultdict(Counter)
        self.transport: Counter[str] = Counter()
        self.unexpected: list[str] = []  # examples
        self.bad_error_shape = 0
        self.anomalies: list[str] = []
        self.anomaly_count = 0

    def answer(self, label: str, status: int, body: bytes, expected: tuple[int, ...]) -> None:
        self.statuses[label][status] += 1
        if status >= 400:
            try:
                error = json.loads(body)["error"]
                if not (isinstance(error["code"], str) and isinstance(error["message"], str)):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                self.bad_error_shape += 1
        allowed = status in expected or (status == 429 and label == SEND_LABEL)
        if not allowed and len(self.unexpected) < 20:
            self.unexpected.append(f"{label} -> {status}: {body[:300]!r}")

    def transport_error(self, label: str, exc: BaseException) -> None:
        key = f"{label}: {type(exc).__name__}"
        self.transport[key] += 1
        if len(self.unexpected) < 20:
            self.unexpected.append(f"{key} {exc!r}"[:400])

    def anomaly(self, text: str) -> None:
        self.anomaly_count += 1
        if len(self.anomalies) < 30:
            self.anomalies.append(text)
        log(f"ANOMALY: {text}")


def endpoint(method: str, path: str) -> str:
    """The label answers are tallied under: "POST /api/channels/{id}/messages"."""
    label = f"{method} {re.sub(r'/members/[^/]+$', '/members/{username}', path)}"
    return re.sub(r"/\d+", "/{id}", label)


class SoakClient(Client):
    """The shared client, with every answer and transport error tallied in stats."""

    def __init__(self, session: aiohttp.ClientSession, base: str, stats: Stats) -> None:
        super().__init__(session, base)
        self.stats = stats

    def observe(
        self, method: str, path: str, expected: tuple[int, ...], outcome: Answer | BaseException
    ) -> None:
        label = endpoint(method, path)
        if isinstance(outcome, Answer):
            self.stats.answer(label, outcome.status, outcome.body, expected)
        else:
            self.stats.transport_error(label, outcome)


@dataclass
class SimUser:
    idx: int
    name: str
    id: int
    token: str
    steady: bool  # never reconnects its follower
    bursty: bool  # now and then sends in bursts
    rng: random.Random
    actor_api: SoakClient | None = None
    follower_api: SoakClient | None = None
    follower: Follower | None = None
    groups_created: int = 0
    sent: int = 0


class World:
    def __init__(self, base: str, run_id: str, stop_at: float) -> None:
        self.base = base
        self.run_id = run_id
        self.stop_at = stop_at
        self.users: list[SimUser] = []
        self.home_id = 0
        self.groups: dict[int, Group] = {}
        self.directs: dict[tuple[int, int], int] = {}  # (low idx, high idx) -> channel id
        self.known_last: dict[int, int] = defaultdict(int)  # channel -> highest seq seen in a 201
        self.accepted: list[Accepted] = []
        self.rejected: set[str] = set()
        self.uncertain: set[str] = set()
        self.send_started: dict[str, float] = {}
        self.hey_otter_accepted = 0
        self.stats = Stats()
        self.latencies: list[float] = []
        self.send_rtts: list[float] = []
        self.provoked_429 = 0
        self.missing_retry_after = 0
        self.refused_after_honouring = 0
        self.retries_after_honouring = 0
        self.bursts = 0
        self.reconnects = Counter()
        self.actions = Counter()
        self.drain_after: float | None = None
        self.text_counter = 0

    def remaining(self) -> float:
        return self.stop_at - time.monotonic()

    def client(self, token: str | None, limit: int) -> SoakClient:
        # A precaution: the client drops idle connections (1 s) before gunicorn's
        # keep-alive (2 s) does, so a send cannot race the server closing an idle
        # connection (an outcome the soak could not know). A 1-minute run with
        # aiohttp's default (15 s) saw no such error either.
        session = http_session(limit=limit, keepalive_timeout=1.0, token=token)
        return SoakClient(session, self.base, self.stats)

    async def call(
        self,
        api: Client,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        expected: tuple[int, ...] = (200, 201, 204),
        timeout: float = 30.0,
    ) -> tuple[int | None, Any, Any]:
        """(status, parsed JSON body or None, headers); status None on a transport error."""
        try:
            answer = await api.request(
                method, path, body=body, params=params, timeout=timeout, expected=expected
            )
        except (aiohttp.ClientError, TimeoutError):
            return None, None, {}  # tallied by SoakClient.observe
        data = None
        if answer.body:
            try:
                data = answer.json()
            except ValueError:
                self.stats.anomaly(
                    f"{endpoint(method, path)}: {answer.status} with a body that is not JSON:"
                    f" {answer.body[:200]!r}"
                )
        return answer.status, data, answer.headers

    def new_text(self, user: SimUser) -> str:
        self.text_counter += 1
        rng = user.rng
        words = rng.choices(
            ["ok", "lunch?", "deploy", "ship it", "héllo", "日本語", "🦦", "seq", "poll", "soak"],
            k=rng.randint(0, 12),
        )
        if rng.random() < 0.01:
            words = ["x" * rng.randint(500, 3000)]
        return f"{self.run_id}/u{user.idx}/{self.text_counter} {' '.join(words)}".strip()


# ---------------------------------------------------------------------------
# Followers


@dataclass
class Segment:
    """The messages of one channel that one stint received over one membership."""

    channel_id: int
    start: int | None  # the seq before the first message due (None: unknown yet)
    how: str  # "initial" (from GET /api/me) or "added" (a channel_added event)
    seqs: list[int] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    crcs: list[int] = field(default_factory=list)
    removed: bool = False


@dataclass
class Stint:
    """One follower from one GET /api/me until a fresh reconnect (or the end)."""

    began: float
    segments: list[Segment] = field(default_factory=list)
    open: dict[int, Segment] = field(default_factory=dict)


class Follower:
    def __init__(self, world: World, user: SimUser) -> None:
        self.world = world
        self.user = user
        self.cursor: str | None = None
        self.stints: list[Stint] = []
        self.live_since = 0.0
        self.polls_answered = 0
        self.deliveries = 0
        self.reads = 0
        self.drained = False
        self.task: asyncio.Task[None] | None = None

    def start(self, fresh: bool) -> None:
        self.task = asyncio.create_task(self._run(fresh), name=f"follower-{self.user.idx}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def reconnect(self, fresh: bool) -> None:
        """Drops the poll in flight (the connection closes) and follows again."""
        await self.stop()
        self.start(fresh)

    async def _me(self) -> None:
        assert self.user.follower_api is not None
        while True:
            status, data, _ = await self.world.call(self.user.follower_api, "GET", "/api/me")
            if status == 200:
                break
            await asyncio.sleep(1.0)
        stint = Stint(began=time.monotonic())
        for channel in data["channels"]:
            segment = Segment(channel["id"], channel["last_seq"], "initial")
            stint.segments.append(segment)
            stint.open[channel["id"]] = segment
        self.stints.append(stint)
        self.cursor = data["cursor"]

    async def _run(self, fresh: bool) -> None:
        world, api = self.world, self.user.follower_api
        assert api is not None
        if fresh or self.cursor is None:
            await self._me()
        self.live_since = time.monotonic()
        while True:
            # Once draining, short polls: the answer that proves "nothing left" comes soon.
            timeout = 1.0 if world.drain_after else self.user.rng.uniform(*POLL_TIMEOUT)
            began = time.monotonic()
            status, data, headers = await world.call(
                api,
                "GET",
                "/api/events",
                params={"cursor": self.cursor or "", "timeout": f"{timeout:.1f}"},
                expected=(200,),
                timeout=timeout + 30,
            )
            if status != 200 or not isinstance(data, dict):
                retry = headers.get("Retry-After") if status == 429 else None
                await asyncio.sleep(float(retry) if retry and retry.isdigit() else 1.0)
                continue
            self.polls_answered += 1
            self._apply(data, time.monotonic())  # no await: a drop cannot split it
            if world.drain_after is not None and began >= world.drain_after and not data["events"]:
                self.drained = True
                return

    def _apply(self, data: dict[str, Any], now: float) -> None:
        stint = self.stints[-1]
        world = self.world
        for event in data["events"]:
            kind = event.get("type")
            if kind == "message":
                message = event["message"]
                segment = stint.open.get(message["channel_id"])
                if segment is None:
                    world.stats.anomaly(
                        f"u{self.user.idx}: message for channel {message['channel_id']}"
                        " it is not subscribed to (per its events)"
                    )
                    continue
                segment.seqs.append(message["seq"])
                segment.ids.append(message["id"])
                segment.crcs.append(crc(message["text"]))
                self.deliveries += 1
                started = world.send_started.get(message["text"])
                if started is not None and started >= self.live_since:
                    world.latencies.append(now - started)
            elif kind == "channel_added":
                channel_id = event["channel"]["id"]
                if channel_id in stint.open:
                    world.stats.anomaly(
                        f"u{self.user.idx}: channel_added for channel {channel_id},"
                        " already subscribed"
                    )
                segment = Segment(channel_id, None, "added")
                stint.segments.append(segment)
                stint.open[channel_id] = segment
            elif kind == "channel_removed":
                segment = stint.open.pop(event["channel_id"], None)
                if segment is None:
                    world.stats.anomaly(
                        f"u{self.user.idx}: channel_removed for channel {event['channel_id']},"
                        " not subscribed"
                    )
                else:
                    segment.removed = True
            elif kind == "read":
                self.reads += 1
            else:
                world.stats.anomaly(f"u{self.user.idx}: unknown event {event!r}"[:300])
        self.cursor = data["cursor"]


# ---------------------------------------------------------------------------
# Actors


async def sleep_bounded(world: World, seconds: float) -> None:
    await asyncio.sleep(max(0.0, min(seconds, world.remaining())))


def group_of(world: World, channel_id: int) -> Group | None:
    return world.groups.get(channel_id)


@contextlib.asynccontextmanager
async def in_channel(world: World, user: SimUser, channel_id: int) -> AsyncIterator[bool]:
    """Holds a group's gate shared; yields whether the user is (still) a member."""
    group = group_of(world, channel_id)
    if group is None:
        yield True
        return
    async with group.gate.shared():
        yield user.idx in group.members


def my_channels(world: World, user: SimUser) -> dict[str, list[int]]:
    directs = [cid for pair, cid in world.directs.items() if user.idx in pair]
    groups = [g.id for g in world.groups.values() if user.idx in g.members]
    return {"home": [world.home_id], "direct": directs, "group": groups}


def pick_channel(world: World, user: SimUser) -> int:
    channels = my_channels(world, user)
    kinds = [k for k in ("home", "direct", "group") if channels[k]]
    kind = user.rng.choices(
        kinds, weights=[{"home": 35, "direct": 35, "group": 30}[k] for k in kinds]
    )[0]
    return user.rng.choice(channels[kind])


async def send_one(world: World, user: SimUser, channel_id: int) -> tuple[int | None, float]:
    """One send; returns (status, seconds to wait before the next one)."""
    assert user.actor_api is not None
    text = world.new_text(user)
    hey_otter = channel_id == world.home_id and user.rng.random() < 0.01
    if hey_otter:
        a, b = user.rng.randint(1, 99), user.rng.randint(1, 99)
        text = f"Hey Otter, what is {a} + {b}? ({text})"
    async with in_channel(world, user, channel_id) as member:
        if not member:
            return 0, 0.0
        started = time.monotonic()
        world.send_started[text] = started
        status, data, headers = await world.call(
            user.actor_api,
            "POST",
            f"/api/channels/{channel_id}/messages",
            body={"text": text},
            expected=(201,),
        )
        if status == 201:
            world.send_rtts.append(time.monotonic() - started)
            message = data["message"]
            if (
                message.get("channel_id") != channel_id
                or message.get("text") != text
                or message.get("author", {}).get("id") != user.id
            ):
                world.stats.anomaly(f"u{user.idx}: 201 answer does not match the send: {message}")
            world.accepted.append(
                Accepted(channel_id, message["seq"], message["id"], text, user.idx, started)
            )
            world.known_last[channel_id] = max(world.known_last[channel_id], message["seq"])
            world.hey_otter_accepted += hey_otter
            user.sent += 1
            return status, 0.0
    if status is None:
        world.uncertain.add(text)
        return status, 1.0
    world.rejected.add(text)
    if status == 429:
        world.provoked_429 += 1
        retry = headers.get("Retry-After", "")
        if not retry.isdigit() or int(retry) < 1:
            world.missing_retry_after += 1
            return status, 1.0
        return status, float(retry)
    return status, 1.0


async def act_send(world: World, user: SimUser, count: int = 1) -> None:
    """count sends back to back (a burst when count > 1), honouring every 429."""
    honoured = False
    for _ in range(count):
        if world.remaining() <= 0:
            return
        status, wait = await send_one(world, user, pick_channel(world, user))
        if honoured:
            world.retries_after_honouring += 1
            if status == 429:
                world.refused_after_honouring += 1
                world.stats.anomaly(f"u{user.idx}: 429 again right after honouring Retry-After")
            honoured = False
        if wait:
            await sleep_bounded(world, wait)
            honoured = status == 429


async def act_direct(world: World, user: SimUser) -> None:
    peer = user.rng.choice([u for u in world.users if u is not user])
    status, data, _ = await world.call(
        user.actor_api, "POST", "/api/direct", body={"username": peer.name}, expected=(200, 201)
    )
    if status not in (200, 201):
        return
    channel = data["channel"]
    pair = (min(user.idx, peer.idx), max(user.idx, peer.idx))
    known = world.directs.get(pair)
    if known is not None and known != channel["id"]:
        world.stats.anomaly(f"two direct channels for one pair {pair}: {known}, {channel['id']}")
    if channel.get("peer", {}).get("id") != peer.id or channel.get("kind") != "direct":
        world.stats.anomaly(f"u{user.idx}: direct channel answer is wrong: {channel}")
    world.directs.setdefault(pair, channel["id"])
    if user.rng.random() < 0.5:
        await act_send(world, user)


async def act_create_group(world: World, user: SimUser) -> None:
    user.groups_created += 1
    name = f"{world.run_id}-g{user.idx}-{user.groups_created}"
    others = [u for u in world.users if u is not user]
    members = user.rng.sample(others, k=min(len(others), user.rng.randint(0, 4)))
    status, data, _ = await world.call(
        user.actor_api,
        "POST",
        "/api/channels",
        body={"name": name, "description": "soak", "members": [m.name for m in members]},
        expected=(201,),
    )
    if status != 201:
        return
    channel = data["channel"]
    got = {m["id"] for m in channel.get("members", [])}
    want = {user.id} | {m.id for m in members}
    if got != want or channel.get("role") != "moderator":
        world.stats.anomaly(f"u{user.idx}: new group {channel['id']} has members {got}, not {want}")
    world.groups[channel["id"]] = Group(
        channel["id"], name, user.idx, {user.idx} | {m.idx for m in members}
    )


async def act_add_member(world: World, user: SimUser) -> None:
    mine = [g for g in world.groups.values() if g.moderator == user.idx]
    if not mine:
        return
    group = user.rng.choice(mine)
    async with group.gate.exclusive():
        outside = [u for u in world.users if u.idx not in group.members]
        if not outside:
            return
        target = user.rng.choice(outside)
        status, _, _ = await world.call(
            user.actor_api,
            "POST",
            f"/api/channels/{group.id}/members",
            body={"username": target.name},
            expected=(200,),
        )
        if status == 200:
            group.members.add(target.idx)


async def act_remove_member(world: World, user: SimUser) -> None:
    """A moderator removes someone from its group, or a member leaves one."""
    moderated = [g for g in world.groups.values() if g.moderator == user.idx and len(g.members) > 1]
    joined = [g for g in world.groups.values() if g.moderator != user.idx and user.idx in g.members]
    choices = [(g, None) for g in moderated] + [(g, user.idx) for g in joined]
    if not choices:
        return
    group, target_idx = user.rng.choice(choices)
    async with group.gate.exclusive():
        if target_idx is None:
            candidates = [i for i in group.members if i != user.idx]
            if not candidates:
                return
            target_idx = user.rng.choice(sorted(candidates))
        elif target_idx not in group.members:
            return
        target = world.users[target_idx]
        status, _, _ = await world.call(
            user.actor_api,
            "DELETE",
            f"/api/channels/{group.id}/members/{target.name}",
            expected=(204,),
        )
        if status == 204:
            group.members.discard(target_idx)


async def act_mark_read(world: World, user: SimUser) -> None:
    channel_id = pick_channel(world, user)
    seq = world.known_last.get(channel_id, 0) + user.rng.choice([0, 0, 0, 5])
    async with in_channel(world, user, channel_id) as member:
        if member:
            await world.call(
                user.actor_api,
                "POST",
                f"/api/channels/{channel_id}/read",
                body={"seq": seq},
                expected=(204,),
            )


def contiguous(messages: list[dict[str, Any]]) -> bool:
    seqs = [m["seq"] for m in messages]
    return seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True


async def read_messages(
    world: World, user: SimUser, channel_id: int, params: dict[str, str]
) -> dict[str, Any] | None:
    """GET a channel's messages as a member; the answer, or None if not a 200
    (or the user is no longer a member of the group)."""
    async with in_channel(world, user, channel_id) as member:
        if not member:
            return None
        status, data, _ = await world.call(
            user.actor_api,
            "GET",
            f"/api/channels/{channel_id}/messages",
            params=params,
            expected=(200,),
        )
    return data if status == 200 else None


async def act_tail(world: World, user: SimUser) -> None:
    """The one-channel long-poll: ?after=SEQ&wait=S answers from SEQ+1 on."""
    channel_id = pick_channel(world, user)
    known = world.known_last.get(channel_id, 0)
    after = max(0, known - user.rng.randint(0, 3))
    params = {"after": str(after), "wait": str(user.rng.randint(1, 3))}
    data = await read_messages(world, user, channel_id, params)
    if data is not None:
        messages = data["messages"]
        if messages and (messages[0]["seq"] != after + 1 or not contiguous(messages)):
            seqs = [m["seq"] for m in messages]
            world.stats.anomaly(f"tail of channel {channel_id} after {after} gave seqs {seqs}")
        if known > after and not messages:
            world.stats.anomaly(f"tail of channel {channel_id} after {after} missed seq {known}")


async def act_history(world: World, user: SimUser) -> None:
    channel_id = pick_channel(world, user)
    known = world.known_last.get(channel_id, 0)
    limit = user.rng.randint(1, 60)
    data = await read_messages(world, user, channel_id, {"limit": str(limit)})
    if data is not None:
        messages = data["messages"]
        bad = not contiguous(messages) or len(messages) > limit
        if messages:
            bad = bad or data["has_more"] != (messages[0]["seq"] > 1)
            bad = bad or messages[-1]["seq"] < known
        elif known:
            bad = True
        if bad:
            seqs = [m["seq"] for m in messages]
            world.stats.anomaly(
                f"history of channel {channel_id} (limit {limit}, known {known}):"
                f" seqs {seqs[:5]}...{seqs[-5:]} has_more {data['has_more']}"
            )


async def act_channel_info(world: World, user: SimUser) -> None:
    channel_id = pick_channel(world, user)
    async with in_channel(world, user, channel_id) as member:
        if not member:
            return
        status, data, _ = await world.call(
            user.actor_api, "GET", f"/api/channels/{channel_id}", expected=(200,)
        )
        if status == 200 and user.id not in {m["id"] for m in data["channel"]["members"]}:
            world.stats.anomaly(f"u{user.idx} is not among the members of channel {channel_id}")


async def act_list_channels(world: World, user: SimUser) -> None:
    await world.call(user.actor_api, "GET", "/api/channels", expected=(200,))


async def act_reconnect(world: World, user: SimUser) -> None:
    assert user.follower is not None
    fresh = user.rng.random() < 0.5
    world.reconnects["fresh" if fresh else "resume"] += 1
    await user.follower.reconnect(fresh)


async def actor(world: World, user: SimUser, think: float, forced_burst_at: float | None) -> None:
    rng = user.rng
    await sleep_bounded(world, rng.uniform(0, think))
    table = [
        ("send", 55.0, lambda: act_send(world, user)),
        ("burst", 0.6 if user.bursty else 0.0, None),
        ("direct", 6.0, lambda: act_direct(world, user)),
        ("create_group", 1.5 if user.groups_created < 3 else 0.0, None),
        ("add_member", 4.0, lambda: act_add_member(world, user)),
        ("remove_member", 3.0, lambda: act_remove_member(world, user)),
        ("mark_read", 6.0, lambda: act_mark_read(world, user)),
        ("tail", 4.0, lambda: act_tail(world, user)),
        ("history", 3.0, lambda: act_history(world, user)),
        ("channel_info", 2.0, lambda: act_channel_info(world, user)),
        ("list_channels", 1.0, lambda: act_list_channels(world, user)),
        ("reconnect", 0.0 if user.steady else 3.0, lambda: act_reconnect(world, user)),
    ]
    while world.remaining() > 0:
        if forced_burst_at is not None and time.monotonic() >= forced_burst_at:
            name, forced_burst_at = "burst", None
        else:
            weights = [w for _, w, _ in table]
            weights[3] = 1.5 if user.groups_created < 3 else 0.0
            name = rng.choices([n for n, _, _ in table], weights=weights)[0]
        world.actions[name] += 1
        if name == "burst":
            world.bursts += 1
            await act_send(world, user, count=rng.randint(45, 80))
        elif name == "create_group":
            await act_create_group(world, user)
        else:
            await next(fn for n, _, fn in table if n == name)()
        await sleep_bounded(world, rng.expovariate(1 / think))


# ---------------------------------------------------------------------------
# Checks


async def database_checks(database_url: str, world: World) -> dict[str, Any]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT channel_id, seq, id, author_id, text FROM messages ORDER BY channel_id, seq"
        )
        last_seq = dict(await conn.fetch("SELECT id, last_seq FROM channels"))
        subs = await conn.fetch("SELECT user_id, channel_id, joined_seq FROM subscriptions")
        otter_id = await conn.fetchval("SELECT id FROM users WHERE username = 'otter'")
    finally:
        await conn.close()
    problems: list[str] = []
    by_channel: dict[int, list[int]] = defaultdict(list)
    stored: dict[tuple[int, int], tuple[int, int]] = {}  # (channel, seq) -> (id, crc)
    texts: Counter[str] = Counter()
    soak_ids = {u.id for u in world.users}
    soak_texts: dict[str, tuple[int, int, int]] = {}
    otter_messages = 0
    for row in rows:
        by_channel[row["channel_id"]].append(row["seq"])
        stored[(row["channel_id"], row["seq"])] = (row["id"], crc(row["text"]))
        if row["author_id"] in soak_ids:
            texts[row["text"]] += 1
            soak_texts[row["text"]] = (row["channel_id"], row["seq"], row["id"])
        elif row["author_id"] == otter_id:
            otter_messages += 1
    gapless = True
    for channel_id, last in last_seq.items():
        seqs = by_channel.get(channel_id, [])
        if seqs != list(range(1, last + 1)):
            gapless = False
            problems.append(f"channel {channel_id}: last_seq {last}, {len(seqs)} messages")
    accepted_ok = True
    for sent in world.accepted:
        if texts[sent.text] != 1 or soak_texts[sent.text] != (sent.channel_id, sent.seq, sent.id):
            accepted_ok = False
            problems.append(
                f"accepted {sent.channel_id}/{sent.seq}/{sent.id} stored {texts[sent.text]}x"
                f" at {soak_texts.get(sent.text)}"
            )
    rejected_stored = [t for t in world.rejected if texts[t]]
    accepted_texts = {a.text for a in world.accepted}
    phantoms = [t for t in texts if t not in accepted_texts and t not in world.uncertain]
    uncertain_stored = sum(1 for t in world.uncertain if texts[t])
    otter_expected = len(world.users) + world.hey_otter_accepted
    problems += [f"rejected send stored: {t[:80]!r}" for t in rejected_stored[:5]]
    problems += [f"message nobody sent: {t[:80]!r}" for t in phantoms[:5]]
    return {
        "stored": stored,
        "last_seq": last_seq,
        "subscriptions": {(r["user_id"], r["channel_id"]): r["joined_seq"] for r in subs},
        "report": {
            "messages_in_database": len(rows),
            "channels": len(last_seq),
            "seqs_gapless_and_last_seq_matches": gapless,
            "accepted_stored_exactly_once": accepted_ok,
            "rejected_sends_stored": len(rejected_stored),
            "messages_nobody_sent": len(phantoms),
            "uncertain_sends": len(world.uncertain),
            "uncertain_sends_stored": uncertain_stored,
            "otter_messages": otter_messages,
            "otter_messages_expected": otter_expected,
            "problems": problems[:20],
        },
    }


def follower_checks(world: World, db: dict[str, Any]) -> dict[str, Any]:
    stored, last_seq, subs = db["stored"], db["last_seq"], db["subscriptions"]
    problems: list[str] = []
    stints = dropped = segments = complete_segments = 0
    fully_verified = 0
    steady_verified = one_stint_verified = 0

    def problem(text: str) -> None:
        if len(problems) < 30:
            problems.append(text)

    for user in world.users:
        follower = user.follower
        assert follower is not None
        user_ok = True
        for i, stint in enumerate(follower.stints):
            stints += 1
            final = i == len(follower.stints) - 1
            dropped += not final
            seen: set[tuple[int, int]] = set()
            for segment in stint.segments:
                segments += 1
                cid = segment.channel_id
                where = f"u{user.idx} stint {i} channel {cid} ({segment.how})"
                start = segment.start
                still_open = final and stint.open.get(cid) is segment
                if start is None and still_open and (user.id, cid) in subs:
                    start = subs[(user.id, cid)]  # the membership's joined_seq
                seqs = segment.seqs
                first = (start + 1) if start is not None else (seqs[0] if seqs else 0)
                # Due: every seq from the first on, up to the last one received.
                if not check_sequence(seqs, range(first, max(seqs, default=first - 1) + 1)).ok:
                    bad = [
                        (a, b)
                        for a, b in zip(seqs, range(first, first + len(seqs)), strict=False)
                        if a != b
                    ][:3]
                    problem(f"{where}: gap, duplicate or disorder from seq {first}: {bad}")
                    user_ok = False
                for seq, msg_id, text_crc in zip(seqs, segment.ids, segment.crcs, strict=True):
                    if (cid, seq) in seen:
                        problem(f"{where}: seq {seq} received twice in one stint")
                        user_ok = False
                    seen.add((cid, seq))
                    if stored.get((cid, seq)) != (msg_id, text_crc):
                        problem(f"{where}: message {cid}/{seq} differs from the database")
                        user_ok = False
                if still_open:
                    if (user.id, cid) not in subs:
                        problem(f"{where}: open, but the user is no longer a member")
                        user_ok = False
                        continue
                    end = seqs[-1] if seqs else (start if start is not None else None)
                    if end != last_seq[cid]:
                        problem(f"{where}: ended at seq {end}, the channel at {last_seq[cid]}")
                        user_ok = False
                    else:
                        complete_segments += 1
            if final:
                for uid, cid in subs:
                    if uid == user.id and cid not in stint.open:
                        problem(f"u{user.idx}: member of channel {cid}, but no channel_added")
                        user_ok = False
        if not follower.drained:
            problem(f"u{user.idx}: follower did not drain")
            user_ok = False
        fully_verified += user_ok
        steady_verified += user_ok and user.steady
        one_stint_verified += user_ok and len(follower.stints) == 1
    return {
        "ok": not problems,
        "followers": len(world.users),
        "followers_fully_verified": fully_verified,
        "steady_followers": sum(u.steady for u in world.users),
        "steady_followers_verified": steady_verified,
        "single_stint_followers_verified": one_stint_verified,
        "stints": stints,
        "stints_dropped_by_fresh_reconnect": dropped,
        "channel_segments": segments,
        "segments_complete_to_last_seq": complete_segments,
        "problems": problems,
    }


# ---------------------------------------------------------------------------
# The run


async def register_users(world: World, args: argparse.Namespace, api: Client) -> None:
    rng = random.Random(args.seed)
    steady = set(rng.sample(range(args.users), k=max(1, args.users // 5)))
    bursty = set(rng.sample(range(args.users), k=max(1, args.users * 3 // 10)))
    names = [f"s{world.run_id[-6:]}u{idx}" for idx in range(args.users)]
    registered = await api.register(names, PASSWORD, concurrency=8)
    world.users = [
        SimUser(
            idx,
            user.name,
            user.id,
            user.token,
            steady=idx in steady,
            bursty=idx in bursty,
            rng=random.Random(args.seed * 100_003 + idx),
        )
        for idx, user in enumerate(registered)
    ]


async def run(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    fd_limit = raise_fd_limit(8192)
    database_url = await fresh_database(args.admin_url, args.database)
    port = args.port or free_port()
    server = chatterwerks_server("soak", port, args.workers, database_url, SERVER_ENV)
    run_id = f"soak{args.seed}x{int(time.time()) % 100000}"
    duration = args.minutes * 60
    world = World(server.base, run_id, stop_at=math.inf)
    samples: list[tuple[float, int, int]] = []
    stop_sampling = asyncio.Event()
    setup_api = world.client(None, 16)
    sampler: asyncio.Task[None] | None = None
    try:
        await server.start(setup_api.session)
        initial_workers = sorted(server.workers())
        log(f"server up on {server.base}, workers {initial_workers}; log {server.log_path}")
        interval = max(0.5, min(3.0, duration / 60))
        sampler = asyncio.create_task(sample_rss(server.workers, samples, interval, stop_sampling))
        await register_users(world, args, setup_api)
        for user in world.users:
            user.actor_api = world.client(user.token, 2)
            user.follower_api = world.client(user.token, 2)
            user.follower = Follower(world, user)
        _, data, _ = await world.call(world.users[0].actor_api, "GET", "/api/me")
        world.home_id = next(c["id"] for c in data["channels"] if c["kind"] == "home")
        log(f"{len(world.users)} users registered; running for {duration:.0f} s")

        for user in world.users:
            user.follower.start(fresh=True)
        began = time.monotonic()
        cpu_before = (cpu_seconds(initial_workers), cpu_seconds([os.getpid()]))
        world.stop_at = began + duration
        forced_burst = began + duration * 0.2  # at least one burst, even in a short run
        actors = [
            asyncio.create_task(
                actor(world, user, args.think, forced_burst if user.idx == 0 else None)
            )
            for user in world.users
        ]
        progress_every = max(10.0, duration / 10)

        async def progress() -> None:
            while world.remaining() > 0:
                await sleep_bounded(world, progress_every)
                rss = [mib(s[2]) for s in samples[-len(initial_workers) :]]
                log(
                    f"t={time.monotonic() - began:.0f}s accepted={len(world.accepted)}"
                    f" 429={world.provoked_429} deliveries="
                    f"{sum(u.follower.deliveries for u in world.users)} rss_mib={rss}"
                )

        await asyncio.gather(*actors, progress())
        ended = time.monotonic()
        cpu_after = (cpu_seconds(initial_workers), cpu_seconds([os.getpid()]))
        world.drain_after = ended
        log(f"senders stopped after {ended - began:.1f} s; draining followers")
        drain_deadline = POLL_TIMEOUT[1] + 30
        followers = [u.follower.task for u in world.users if u.follower.task is not None]
        _, pending = await asyncio.wait(followers, timeout=drain_deadline)
        drained_in = time.monotonic() - ended
        for user in world.users:
            await user.follower.stop()
        stop_sampling.set()
        await sampler
        workers_after = sorted(server.workers())
    finally:
        stop_sampling.set()
        if sampler is not None and not sampler.done():
            sampler.cancel()
        for user in world.users:
            if user.follower is not None:
                await user.follower.stop()
            for api in (user.actor_api, user.follower_api):
                if api is not None:
                    await api.session.close()
        await setup_api.session.close()
        exit_code = server.stop()
    server_log = scan_server_log(server.log_text())
    log("checking the database and the followers")
    db = await database_checks(database_url, world)
    followers = follower_checks(world, db)
    memory = memory_report(samples, began, ended, args.rss_tolerance)

    statuses = {label: dict(sorted(c.items())) for label, c in sorted(world.stats.statuses.items())}
    other_errors = sum(
        n
        for label, c in world.stats.statuses.items()
        for status, n in c.items()
        if status >= 400 and not (status == 429 and label == SEND_LABEL)
    )
    transport = sum(world.stats.transport.values())
    elapsed = ended - began
    deliveries = sum(u.follower.deliveries for u in world.users)
    latency = summary_ms(world.latencies)
    dbr = db["report"]
    checks = {
        "database_seqs_gapless": dbr["seqs_gapless_and_last_seq_matches"],
        "accepted_stored_exactly_once": dbr["accepted_stored_exactly_once"],
        "rejected_not_stored": dbr["rejected_sends_stored"] == 0,
        "no_unsent_messages": dbr["messages_nobody_sent"] == 0,
        "otter_one_reply_each": dbr["otter_messages"] == dbr["otter_messages_expected"],
        "followers_exactly_once_and_complete": followers["ok"],
        "followers_drained": not pending,
        "memory_settled": memory["settled"],
        "errors_only_provoked_429": other_errors == 0 and transport == 0,
        "rate_limit_provoked": world.provoked_429 > 0,
        "retry_after_on_every_429": world.missing_retry_after == 0,
        "retry_after_honoured_works": world.refused_after_honouring == 0,
        "error_bodies_have_api_shape": world.stats.bad_error_shape == 0,
        "no_anomalies": world.stats.anomaly_count == 0,
        "server_log_clean": server_log["error_count"] == 0,
        "workers_stable": workers_after == initial_workers
        and len(server.seen_workers) == len(initial_workers),
    }
    ok = all(checks.values())
    summary = {
        "ok": ok,
        "checks": checks,
        "figures": {
            "users": args.users,
            "minutes": args.minutes,
            "workers": args.workers,
            "seconds": round(elapsed, 1),
            "messages_accepted": len(world.accepted),
            "messages_per_s": round(len(world.accepted) / elapsed, 2),
            "deliveries": deliveries,
            "deliveries_per_s": round(deliveries / elapsed, 1),
            "polls_answered": sum(u.follower.polls_answered for u in world.users),
            "rate_limited_429": world.provoked_429,
            "sends_refused": len(world.rejected),
            "other_errors": other_errors,
            "transport_errors": transport,
            "delivery_latency": latency,
            "send_round_trip": summary_ms(world.send_rtts),
            "cpu_cores_used": {
                "server_workers": round((cpu_after[0] - cpu_before[0]) / elapsed, 2),
                "soak_client": round((cpu_after[1] - cpu_before[1]) / elapsed, 2),
                "machine_cores": psutil.cpu_count(),
            },
            "rss_mib": {
                pid: {k: w[k] for k in ("start_mib", "end_mib", "peak_mib")}
                for pid, w in memory["workers"].items()
            },
        },
        "activity": {
            "actions": dict(world.actions.most_common()),
            "bursts": world.bursts,
            "sends_retried_after_honouring_retry_after": world.retries_after_honouring,
            "reconnects": dict(world.reconnects),
            "read_events": sum(u.follower.reads for u in world.users),
            "groups": len(world.groups),
            "direct_channels": len(world.directs),
            "drained_in_s": round(drained_in, 1),
        },
        "database": dbr,
        "followers": followers,
        "memory": memory,
        "statuses": statuses,
        "transport_errors": dict(world.stats.transport),
        "unexpected_examples": world.stats.unexpected,
        "anomalies": world.stats.anomalies,
        "server": {
            "command": " ".join(server.argv[1:]),
            "env": SERVER_ENV,
            "note": "default rate limits kept except registration per address;"
            " argon2 made cheap for registration speed",
            "log": str(server.log_path),
            "log_scan": server_log,
            "exit_code": exit_code,
            "workers": initial_workers,
            "workers_seen": sorted(server.seen_workers),
        },
        "client": {
            "think_mean_s": args.think,
            "poll_timeout_s": list(POLL_TIMEOUT),
            "seed": args.seed,
            "fd_limit": fd_limit,
        },
    }
    return summary, ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=10.0, help="fractions allowed: 0.5")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--think", type=float, default=3.0, help="mean seconds between actions")
    parser.add_argument(
        "--rss-tolerance",
        type=float,
        default=0.10,
        help="allowed RSS growth, last quarter's peak over the second quarter's (0.10 = 10%%)",
    )
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="chatterwerks_soak")
    parser.add_argument("--json-out", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    if args.users < 2:
        parser.error("--users must be at least 2")
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summary, ok = asyncio.run(run(args))
    text = json.dumps(summary, indent=2, ensure_ascii=False)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    log("PASS" if ok else "FAIL: " + ", ".join(k for k, v in summary["checks"].items() if not v))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
