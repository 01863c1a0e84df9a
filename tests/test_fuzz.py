"""Property-based tests: random JSON, near-valid bodies, raw bytes, random
query strings and path segments at every endpoint.

For every request: no 5xx (and no hang); an error answer on /api has exactly
the shape of API.md; and a request that fails (4xx) changes no data.

Hypothesis runs sync test functions, so the server lives on an event loop in
a background thread (one app and one database for the whole module); each
example is sent to it with run_coroutine_threadsafe. CHATTERWERKS_FUZZ_EXAMPLES
scales the number of examples per test (default 120).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import math
import os
import re
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import Server, with_database
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from snapshot import snapshot
from yarl import URL

from chatterwerks import keys
from chatterwerks.app import create_app
from chatterwerks.config import Settings

EXAMPLES = int(os.environ.get("CHATTERWERKS_FUZZ_EXAMPLES", "120"))
REQUEST_TIMEOUT = 15.0  # seconds; a request that takes longer is a hang
# A long-poll wait or timeout above this is replaced: the tests must stay fast.
MAX_WAIT = 0.05

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)

ERROR_CODE_RE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")


# --------------------------------------------------------------------------
# The server on a background event loop
# --------------------------------------------------------------------------


class _Captured(logging.Handler):
    """Keeps the server's error log records (with tracebacks) for the report."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


@dataclass(repr=False)
class Answer:
    method: str
    url: str
    sent: bytes | None
    status: int
    content_type: str
    raw: bytes
    before: Any
    after: Any
    log: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"<Answer {self.method} {self.url[:100]} -> {self.status}>"

    def describe(self) -> str:
        sent = self.sent if self.sent is None or len(self.sent) < 300 else self.sent[:300] + b"..."
        text = (
            f"{self.method} {self.url} body={sent!r}\n"
            f"-> {self.status} {self.content_type} {self.raw[:500]!r}"
        )
        if self.log:
            text += "\nserver log:\n" + "\n".join(self.log)[-3000:]
        return text


@dataclass(repr=False)
class World:
    """The live server, its database, and the fixed cast of the fuzz tests."""

    def __repr__(self) -> str:
        return f"<World channels={self.channels}>"

    loop: asyncio.AbstractEventLoop
    app: web.Application
    client: TestClient
    captured: _Captured
    tokens: dict[str, str] = field(default_factory=dict)
    channels: dict[str, int] = field(default_factory=dict)
    cursor: str = ""

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = REQUEST_TIMEOUT) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise AssertionError(f"hang: no answer within {timeout} s") from None

    async def snapshot(self) -> Any:
        async with self.app[keys.POOL].acquire() as conn:
            return await snapshot(conn)

    async def _send(
        self, method: str, url: URL, body: bytes | None, headers: dict[str, str]
    ) -> Answer:
        before = await self.snapshot()
        del self.captured.records[:]
        response = await self.client.request(method, url, data=body, headers=headers)
        raw = await response.read()
        response.release()
        after = await self.snapshot()
        return Answer(
            method,
            str(url),
            body,
            response.status,
            response.headers.get("Content-Type", ""),
            raw,
            before,
            after,
            list(self.captured.records),
        )

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        as_user: str | None = "alice",
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """Sends one request (path already percent-encoded) and checks the
        invariants every answer must keep."""
        all_headers = {"Content-Type": "application/json"}
        if as_user is not None:
            all_headers["Authorization"] = f"Bearer {self.tokens[as_user]}"
        all_headers.update(headers or {})
        url = URL(path, encoded=True)
        try:
            answer = self.run(self._send(method, url, body, all_headers))
        except AssertionError as exc:
            raise AssertionError(f"{method} {path} body={body!r}: {exc}") from None
        # Seen with --hypothesis-show-statistics: what the examples reached.
        event(f"{method} {answer.status}")
        check_answer(answer)
        return answer


def check_answer(answer: Answer) -> None:
    assert answer.status < 500, "server error:\n" + answer.describe()
    if answer.status >= 400:
        mimetype = answer.content_type.split(";")[0].strip()
        assert mimetype == "application/json", "error not JSON:\n" + answer.describe()
        try:
            body = json.loads(answer.raw)
        except ValueError:
            raise AssertionError("error body not JSON:\n" + answer.describe()) from None
        shape_ok = (
            isinstance(body, dict)
            and set(body) == {"error"}
            and isinstance(body["error"], dict)
            and set(body["error"]) == {"code", "message"}
            and isinstance(body["error"]["code"], str)
            and ERROR_CODE_RE.fullmatch(body["error"]["code"]) is not None
            and isinstance(body["error"]["message"], str)
            and body["error"]["message"] != ""
        )
        assert shape_ok, "wrong error shape:\n" + answer.describe()
        assert answer.before == answer.after, (
            f"a failing request changed data: {answer.before} -> {answer.after}\n"
            + answer.describe()
        )
    elif answer.status != 204:
        try:
            body = json.loads(answer.raw)
        except ValueError:
            raise AssertionError("success body not JSON:\n" + answer.describe()) from None
        assert isinstance(body, dict), answer.describe()


def _start_loop() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-server", daemon=True)
    thread.start()
    return loop, thread


@pytest.fixture(scope="module")
def world(pg_server: Server) -> Iterator[World]:
    loop, thread = _start_loop()
    name = f"cw_fuzz_{os.getpid()}"

    def run(coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(pg_server.admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    run(admin(f'CREATE DATABASE "{name}" TEMPLATE "{pg_server.template}"'))
    captured = _Captured()
    loggers = [logging.getLogger(n) for n in ("chatterwerks", "aiohttp")]
    for logger in loggers:
        logger.addHandler(captured)

    async def start() -> World:
        wanted = {
            "database_url": with_database(pg_server.admin_url, name),
            "argon2_time_cost": 1,
            "argon2_memory_kib": 64,
            "poll_default_timeout": MAX_WAIT,
            # Rate limits off: the fuzzer sends thousands of requests as one
            # user from one address, and a 429 would hide the handler.
            "limit_login_address": None,
            "limit_login_username": None,
            "limit_register_address": None,
            "limit_messages_user": None,
            "max_polls_per_user": 1000,
        }
        known = {f.name for f in dataclasses.fields(Settings)}
        app = await create_app(Settings(**{k: v for k, v in wanted.items() if k in known}))
        server = TestServer(app, handler_cancellation=True)
        client = TestClient(server, cookie_jar=aiohttp.DummyCookieJar())
        await client.start_server()
        return World(loop, app, client, captured)

    world: World | None = None
    try:
        world = run(start())
        run(_populate(world))
        yield world
    finally:
        try:
            if world is not None:
                run(world.client.close())  # also runs the app's cleanup (pool, hub)
        finally:
            for logger in loggers:
                logger.removeHandler(captured)
            run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


async def _populate(world: World) -> None:
    """alice (who makes most requests), bob, carol, dave (only for the
    password change); a group of alice's with bob, a group of carol's (alice
    not in it), a direct channel alice-bob, a few messages."""
    client = world.client
    for username in ("alice", "bob", "carol", "dave"):
        response = await client.post(
            "/api/register", json={"username": username, "password": "correct horse"}
        )
        assert response.status == 201, await response.text()
        world.tokens[username] = (await response.json())["token"]

    async def call(user: str, method: str, path: str, body: Any, status: int) -> Any:
        response = await client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {world.tokens[user]}"}
        )
        assert response.status == status, await response.text()
        return await response.json() if status != 204 else None

    general = await call(
        "alice", "POST", "/api/channels", {"name": "general", "members": ["bob"]}, 201
    )
    secret = await call("carol", "POST", "/api/channels", {"name": "secret"}, 201)
    direct = await call("alice", "POST", "/api/direct", {"username": "bob"}, 201)
    async with world.app[keys.POOL].acquire() as conn:
        home = await conn.fetchval("SELECT id FROM channels WHERE kind = 'home'")
    world.channels.update(
        home=home,
        general=general["channel"]["id"],
        secret=secret["channel"]["id"],
        direct=direct["channel"]["id"],
    )
    for i in range(3):
        await call("alice", "POST", f"/api/channels/{general['channel']['id']}/messages",
                   {"text": f"hello {i}"}, 201)  # fmt: skip
    world.cursor = (await call("alice", "GET", "/api/me", None, 200))["cursor"]


# --------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------

EDGE_INTS = [
    0, 1, -1, 2, 3, 50, 199, 200, 201, 2**31 - 1, 2**31, 2**53 + 1,
    2**63 - 1, 2**63, 2**63 + 1, -(2**63), -(2**63) - 1, 2**64, 2**64 + 1,
    10**18, 10**19, 10**20, 99999999999999999999, -(10**30), 10**400,
]  # fmt: skip
NASTY_TEXT = [
    "", " ", "\t\n", "\x00", "a\x00b", "alice\x00", "\ud800", "\udfff", "ab\ud83d",
    "\ud83d\ude00", "\u202e", "\ufeff", "\u200b", "é", "ß", "İ", "\u212a", "ǅ",
    "alice", "ALICE", "bob", "Bob", "carol", "otter", "nobody", "general", "GENERAL",
    "secret", "x" * 33, "x" * 65, "x" * 501, "y" * 4001, " " * 10, "1e400", "NaN",
    "-1", "0", "9" * 30, "null", "true", "[]", "{}", "%00", "../..", "a/b", "a?b",
    "a#b", "Hey Otter, 2+2", "hey otter what is 2^999999", "Hey Otter help",
    "correct horse",
]  # fmt: skip
KNOWN_KEYS = [
    "username", "password", "name", "description", "members", "text", "seq",
    "limit", "before", "after", "cursor", "id", "__proto__", "", "USERNAME",
]  # fmt: skip

# Text that includes lone surrogates (st.text() leaves category Cs out).
any_chars = st.characters(exclude_categories=())
json_text = st.one_of(
    st.text(max_size=20),
    st.text(any_chars, max_size=12),
    st.sampled_from(NASTY_TEXT),
)
json_ints = st.one_of(st.integers(), st.sampled_from(EDGE_INTS))
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    json_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    json_text,
)
json_keys = st.one_of(st.sampled_from(KNOWN_KEYS), json_text)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(json_keys, children, max_size=5),
    ),
    max_leaves=15,
)

valid_usernames = st.from_regex(r"[A-Za-z0-9_.-]{3,32}", fullmatch=True)
known_usernames = st.sampled_from(["bob", "BOB", "carol", "Carol", "otter", "nobody", "alice"])
username_values = st.one_of(valid_usernames, known_usernames, json_values)
text_values = st.one_of(st.text(max_size=50), st.text(any_chars, max_size=20), json_values)


def encode_json(value: Any, ascii_escapes: bool = True) -> bytes:
    """Raw JSON: NaN/Infinity as Python writes them, lone surrogates as \\ud800
    escapes (ascii_escapes) or as CESU-8 bytes (invalid UTF-8)."""
    if ascii_escapes:
        return json.dumps(value).encode("ascii")
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def bodies(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes]:
    """Near-valid objects (the right keys, random values, extra keys) and
    arbitrary JSON, encoded."""
    near_valid = st.tuples(
        st.fixed_dictionaries({}, optional=fields),
        st.dictionaries(json_keys, json_values, max_size=2),
    ).map(lambda pair: {**pair[1], **pair[0]})
    values = st.one_of(near_valid, near_valid, near_valid, json_values)
    return st.builds(encode_json, values, st.sampled_from([True, True, True, False]))


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _cursor_from(version: int, values: list[int]) -> str:
    data = bytes([version % 256]) + b"".join(_varint(v) for v in values)
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


cursor_ints = st.one_of(st.integers(0, 2**70), st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64]))
# Well-formed base64 of version-1 varints: counts that do and do not match.
structured_cursors = st.one_of(
    st.builds(
        _cursor_from, st.sampled_from([1, 1, 1, 0, 2, 255]), st.lists(cursor_ints, max_size=9)
    ),
    st.lists(st.tuples(cursor_ints, cursor_ints, cursor_ints, cursor_ints), max_size=3).map(
        lambda quads: _cursor_from(1, [len(quads)] + [v for quad in quads for v in quad])
    ),
)


def _fits(value: str) -> str:
    """A wait/timeout the tests can afford: anything the server reads as a
    number above MAX_WAIT becomes MAX_WAIT (NaN and garbage stay)."""
    try:
        number = float(value)
    except ValueError:
        return value
    if math.isnan(number) or number <= MAX_WAIT:
        return value
    return str(MAX_WAIT)


query_keys = st.one_of(
    st.sampled_from(["limit", "before", "after", "wait", "cursor", "timeout", "q"]),
    st.text(max_size=8),
)
query_values = st.one_of(
    json_ints.map(str),
    st.integers(-5, 300).map(str),
    st.floats().map(str),
    st.from_regex(r"[+-]?[0-9]{1,25}", fullmatch=True),
    st.text(max_size=20),
    st.text(any_chars, max_size=10),
    st.sampled_from([*NASTY_TEXT, "+0", "-0", "0x10", "1_0", "１２", "٣", " 5", "5 ", "1e3"]),
)


def _quote(text: str) -> str:
    # Lone surrogates go out as the bytes they would be (invalid UTF-8).
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def query_string(pairs: list[tuple[str, str]]) -> str:
    fixed = [(k, _fits(v) if k in ("wait", "timeout") else v) for k, v in pairs]
    return "&".join(f"{_quote(k)}={_quote(v)}" for k, v in fixed)


queries = st.lists(st.tuples(query_keys, query_values), max_size=5).map(query_string)


def path_segments(known: list[str]) -> st.SearchStrategy[str]:
    """A path segment, percent-encoded; '.' and '..' are left out (the client
    would resolve them into another path)."""
    raw = st.one_of(
        st.sampled_from(known),
        st.sampled_from(known),
        st.sampled_from(known),
        st.integers(-(10**25), 10**25).map(str),
        st.sampled_from([str(v) for v in EDGE_INTS if v < 10**30]),
        st.text(min_size=1, max_size=20),
        st.text(any_chars, min_size=1, max_size=8),
        st.sampled_from(["0", "00", "٣", "１", "+1", "-1", "1.0", "1e3", " 1", "%", "x" * 300]),
    ).filter(lambda s: s not in (".", ".."))
    return raw.map(_quote)


RAW_BODIES = [
    b"",
    b" ",
    b"{",
    b"}",
    b"nul",
    b"null",
    b"[]",
    b'"str"',
    b"1",
    b"NaN",
    b"-Infinity",
    b"[" * 50_000,
    b'{"a":' * 20_000,
    b"[" * 2_000 + b"]" * 2_000,
    b"\xff\xfe{\x00}\x00",
    b"\xef\xbb\xbf{}",
    '{"username": "bob"}'.encode("utf-16"),
    '{"username": "bob"}'.encode("utf-32"),
    b"\xc3\x28",
    b'{"text": "\xed\xa0\x80"}',
    b'{"seq": ' + b"9" * 5_000 + b"}",
    b'{"seq": 1e400}',
    b'{"seq": -0}',
    b'{"username": "bob", "username": 5}',
    b'{"username": "\\u0000bob"}',
    b'{"text": "\\ud800"}',
    b'{"text": "\\ud800\\udc00"}',
    b'{"name": "\\udfff"}',
    b'{"password": "\\ud800\\ud800\\ud800\\ud800", "username": "alice"}',
    b"{" + b" " * 70_000 + b"}",
]


class Raw:
    """Bytes with a short repr: Hypothesis prints the failing example."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        if len(self.data) <= 80:
            return f"Raw({self.data!r})"
        return f"Raw({self.data[:40]!r} ... {len(self.data)} bytes)"


raw_bodies = st.one_of(
    st.sampled_from(RAW_BODIES),
    st.binary(max_size=64),
    st.text(max_size=40).map(lambda s: s.encode("utf-8")),
).map(Raw)


# --------------------------------------------------------------------------
# The property tests
# --------------------------------------------------------------------------

password_values = st.one_of(
    st.text(min_size=6, max_size=12),
    st.text(any_chars, min_size=8, max_size=12),
    st.sampled_from(["correct horse", "pass\ud800word", "\udfffcorrect horse", "nul\x00password"]),
    st.text(min_size=1020, max_size=1030),
    json_values,
)
account_fields = {"username": username_values, "password": password_values}


@FUZZ_SETTINGS
@given(body=bodies(account_fields))
def test_fuzz_register(world: World, body: bytes) -> None:
    world.request("POST", "/api/register", body, as_user=None)


@FUZZ_SETTINGS
@given(body=bodies(account_fields))
def test_fuzz_login(world: World, body: bytes) -> None:
    world.request("POST", "/api/login", body, as_user=None)


@FUZZ_SETTINGS
@given(
    body=bodies(
        {
            "current_password": password_values,
            "new_password": password_values,
            "password": password_values,
        }
    )
)
def test_fuzz_change_password(world: World, body: bytes) -> None:
    """As dave, whom no other test uses: a change ends his other sessions."""
    answer = world.request("POST", "/api/me/password", body, as_user="dave")
    assert answer.status != 401, answer.describe()  # his own session survives


header_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60
) | st.sampled_from(["", "Bearer", "Bearer ", "bearer x", "Basic abc", "Bearer \t"])


@FUZZ_SETTINGS
@given(
    body=st.one_of(bodies({}).map(Raw), raw_bodies),
    authorization=st.one_of(st.none(), st.just("fresh"), header_values),
)
def test_fuzz_logout(world: World, body: Raw, authorization: str | None) -> None:
    """Random bodies and Authorization headers; a valid token is a fresh
    throwaway session, so the fixed cast stays signed in."""
    headers = {}
    if authorization == "fresh":
        login = encode_json({"username": "bob", "password": "correct horse"})
        answer = world.request("POST", "/api/login", login, as_user=None)
        assert answer.status == 200
        headers["Authorization"] = "Bearer " + json.loads(answer.raw)["token"]
    elif authorization is not None:
        headers["Authorization"] = authorization
    answer = world.request("POST", "/api/logout", body.data, as_user=None, headers=headers)
    if authorization == "fresh":
        assert answer.status == 204, answer.describe()


@FUZZ_SETTINGS
@given(
    body=bodies(
        {
            "name": st.one_of(text_values, st.text(min_size=60, max_size=70)),
            "description": text_values,
            "members": st.one_of(st.lists(username_values, max_size=4), json_values),
        }
    )
)
def test_fuzz_create_channel(world: World, body: bytes) -> None:
    world.request("POST", "/api/channels", body)


def channel_ids(world: World) -> st.SearchStrategy[str]:
    return path_segments([str(v) for v in world.channels.values()] + ["999999"])


@FUZZ_SETTINGS
@given(data=st.data(), body=bodies({"username": username_values}))
def test_fuzz_add_member(world: World, data: st.DataObject, body: bytes) -> None:
    channel = data.draw(channel_ids(world), label="channel")
    world.request("POST", f"/api/channels/{channel}/members", body)


@FUZZ_SETTINGS
@given(data=st.data(), body=st.one_of(st.none(), bodies({})))
def test_fuzz_remove_member(world: World, data: st.DataObject, body: bytes | None) -> None:
    channel = data.draw(channel_ids(world), label="channel")
    # alice's own name is left out of the known ones: her leaving would
    # shrink what the other tests reach.
    username = data.draw(path_segments(["bob", "BOB", "carol", "otter", "nobody"]), label="user")
    answer = world.request("DELETE", f"/api/channels/{channel}/members/{username}", body)
    if answer.status == 204:  # put them back, so later examples find the same cast
        general = world.channels["general"]
        world.request("POST", f"/api/channels/{general}/members", encode_json({"username": "bob"}))


@FUZZ_SETTINGS
@given(body=bodies({"username": username_values}))
def test_fuzz_direct(world: World, body: bytes) -> None:
    world.request("POST", "/api/direct", body)


@FUZZ_SETTINGS
@given(
    data=st.data(),
    body=bodies({"text": st.one_of(text_values, st.text(min_size=3995, max_size=4005))}),
)
def test_fuzz_send_message(world: World, data: st.DataObject, body: bytes) -> None:
    channel = data.draw(channel_ids(world), label="channel")
    world.request("POST", f"/api/channels/{channel}/messages", body)


@FUZZ_SETTINGS
@given(data=st.data(), body=bodies({"seq": st.one_of(json_ints, json_values)}))
def test_fuzz_mark_read(world: World, data: st.DataObject, body: bytes) -> None:
    channel = data.draw(channel_ids(world), label="channel")
    world.request("POST", f"/api/channels/{channel}/read", body)


@FUZZ_SETTINGS
@given(data=st.data(), query=queries)
def test_fuzz_list_messages(world: World, data: st.DataObject, query: str) -> None:
    channel = data.draw(channel_ids(world), label="channel")
    world.request("GET", f"/api/channels/{channel}/messages?{query}")


@FUZZ_SETTINGS
@given(data=st.data())
def test_fuzz_get_channel(world: World, data: st.DataObject) -> None:
    channel = data.draw(channel_ids(world), label="channel")
    world.request("GET", f"/api/channels/{channel}")


@FUZZ_SETTINGS
@given(
    query=queries,
    cursor=st.one_of(
        st.none(),
        st.just("current"),
        structured_cursors,
        st.text(max_size=30),
        st.text(any_chars, max_size=10),
        st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/", max_size=40),
    ),
    timeout=st.one_of(st.none(), query_values.map(_fits)),
)
@pytest.mark.parametrize("path", ["/api/events", "/api/events/stream"])
def test_fuzz_events(
    world: World, path: str, query: str, cursor: str | None, timeout: str | None
) -> None:
    pairs = []
    if cursor is not None:
        pairs.append(("cursor", world.cursor if cursor == "current" else cursor))
    if timeout is not None:
        pairs.append(("timeout", timeout))
    first = query_string(pairs)
    answer = world.request("GET", f"{path}?{first}&{query}" if first else f"{path}?{query}")
    if path.endswith("/stream") and answer.status == 200:
        # Whole lines, each an answer a long-poll could give.
        lines = answer.raw.decode().split("\n")
        assert lines[-1] == "" and len(lines) >= 2, answer.describe()
        for line in lines[:-1]:
            assert set(json.loads(line)) == {"cursor", "events"}, answer.describe()


@FUZZ_SETTINGS
@given(query=queries, q=st.one_of(query_values, json_text, valid_usernames))
def test_fuzz_search_users(world: World, query: str, q: str) -> None:
    world.request("GET", f"/api/users?q={_quote(q)}&{query}")


@FUZZ_SETTINGS
@given(
    path=st.sampled_from(["/api/me", "/api/channels", "/api/users", "/healthz"]),
    query=queries,
)
def test_fuzz_plain_gets(world: World, path: str, query: str) -> None:
    world.request("GET", f"{path}?{query}")


METHOD_PATHS = [
    "/api/register",
    "/api/login",
    "/api/me",
    "/api/me/password",
    "/api/users",
    "/api/channels",
    "/api/direct",
    "/api/events",
    "/api/channels/{general}",
    "/api/channels/{general}/members",
    "/api/channels/{general}/members/nobody",
    "/api/channels/{general}/messages",
    "/api/channels/{general}/read",
    "/api/nothing",
    "/api/channels/{general}/nothing",
    "/api/",
]


@FUZZ_SETTINGS
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    path=st.sampled_from(METHOD_PATHS),
    as_user=st.sampled_from(["alice", None]),
)
def test_fuzz_methods(world: World, method: str, path: str, as_user: str | None) -> None:
    """Every method at every address: 404/405 in the error shape, never a 5xx.
    (Logout is left out: it would end alice's session.)"""
    body = b"{}" if method in ("POST", "PUT", "PATCH") else None
    world.request(method, path.format(general=world.channels["general"]), body, as_user=as_user)


POST_PATHS = [
    "/api/me/password",
    "/api/register",
    "/api/login",
    "/api/channels",
    "/api/direct",
    "/api/channels/{general}/members",
    "/api/channels/{general}/messages",
    "/api/channels/{general}/read",
]


@FUZZ_SETTINGS
@given(path=st.sampled_from(POST_PATHS), body=raw_bodies)
def test_fuzz_raw_bodies(world: World, path: str, body: Raw) -> None:
    """Bytes that are not JSON, or JSON that Python's parser chokes on."""
    world.request("POST", path.format(general=world.channels["general"]), body.data)
