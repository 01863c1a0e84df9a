"""The OpenAPI description (chatterwerks/openapi.json) against the server as built.

Schemathesis generates requests from the description, sends them to a live
test server and checks every answer against it: status codes, error codes,
headers, content types and body schemas (which forbid undocumented fields).
Its HTTP client is synchronous, so it runs in a thread while the server
keeps the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from chatterwerks import api_accounts, api_channels, api_docs, validation
from chatterwerks.app import create_app
from chatterwerks.config import Settings

SPEC = json.loads(api_docs.spec_text())
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# Per operation and generation mode; small, so the run stays well under a minute.
EXAMPLES = 6
PASSWORD = "correct horse"
# Checks that would fail on requests the description cannot rule out, not on
# the server: a random cursor matches the documented alphabet but is not a
# cursor (400 invalid_cursor); a random reply_to names no message of the
# channel (400 invalid_reply_to); a random string is rarely one emoji (400
# invalid_emoji); `before` is ignored when `after` is given and `wait`
# without `after`, so a "negative" value there is rightly accepted.
EXCLUDED_CHECKS = {
    "poll_events": [positive_data_acceptance],
    "poll_events_by_body": [positive_data_acceptance],
    "stream_events": [positive_data_acceptance],
    "send_message": [positive_data_acceptance],
    "add_reaction": [positive_data_acceptance],
    "remove_reaction": [positive_data_acceptance],
    # around= with before= or after= is a 400 the schema cannot express.
    "list_messages": [negative_data_rejection, positive_data_acceptance],
    # A string can be a query that does not parse (an unclosed quote): 400.
    "search_messages": [positive_data_acceptance],
    # A random Range may lie past the end of the file: 416 is the right answer.
    "download_file": [positive_data_acceptance],
    # Schemathesis (4.x) reports the PNG it makes for a binary multipart part
    # as "schema-violating" although it is a positive case (ST201); any
    # bytes are a file, so nothing in the body can be rejected.
    "upload_file": [negative_data_rejection],
}


def test_description_is_valid_openapi_3_1() -> None:
    validate(SPEC)
    assert SPEC["openapi"].startswith("3.1.")


async def test_description_is_served_without_signing_in(client: Any) -> None:
    response = await client.get("/api/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == SPEC


def _routes(app: web.Application) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or info["prefix"]
        if path.split("/")[1] == "static" or route.method == "HEAD":
            continue  # the client's files, not the API; aiohttp adds HEAD to every GET
        routes.add((route.method.lower(), path))
    return routes


async def test_every_route_is_described_and_nothing_else() -> None:
    app = await create_app(Settings(database_url="postgresql://unused/"))  # no database needed
    described = {
        (method, path)
        for path, item in SPEC["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert _routes(app) == described


def _body(path: str, method: str = "post") -> dict[str, Any]:
    content = SPEC["paths"][path][method]["requestBody"]["content"]
    return content["application/json"]["schema"]["properties"]


def test_limits_are_the_servers() -> None:
    """The description's limits are the constants the server checks with."""
    register, channel = _body("/api/register"), _body("/api/channels")
    assert register["username"]["pattern"] == f"^{validation.USERNAME_RE.pattern}$"
    assert register["password"]["minLength"] == validation.PASSWORD_MIN_CHARS
    assert register["password"]["maxLength"] == validation.PASSWORD_MAX_CHARS
    assert _body("/api/me/password")["new_password"]["maxLength"] == validation.PASSWORD_MAX_CHARS
    text = _body("/api/channels/{id}/messages")["text"]
    assert text["maxLength"] == validation.MESSAGE_MAX_CHARS
    edit = _body("/api/channels/{id}/messages/{seq}", "patch")["text"]
    assert edit["maxLength"] == validation.MESSAGE_MAX_CHARS
    assert channel["name"]["maxLength"] == validation.CHANNEL_NAME_MAX_CHARS
    assert channel["description"]["maxLength"] == validation.DESCRIPTION_MAX_CHARS
    assert channel["members"]["maxItems"] == api_channels.MAX_INITIAL_MEMBERS
    users = SPEC["paths"]["/api/users"]["get"]["responses"]["200"]["content"]
    assert users["application/json"]["schema"]["properties"]["users"]["maxItems"] == (
        api_accounts.USER_SEARCH_LIMIT
    )
    (key,) = SPEC["paths"]["/api/channels/{id}/messages"]["post"]["parameters"]
    assert key["schema"]["maxLength"] == validation.IDEMPOTENCY_KEY_MAX


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Every long-poll the generator asks for ends within a tenth of a second.
    return settings.replace(poll_default_timeout=0.1, poll_max_timeout=0.1)


def _strategy(operation: Any, mode: GenerationMode, fixed: list[dict[str, Any]]) -> Any:
    """Generated cases; in positive mode also some aimed at real channels
    (random ids would only ever meet 404)."""
    generated = operation.as_strategy(generation_mode=mode)
    if mode is not GenerationMode.POSITIVE or not fixed:
        return generated
    aimed = [operation.as_strategy(generation_mode=mode, **kwargs) for kwargs in fixed]
    return st.one_of(generated, *aimed)


@dataclass
class Seeded:
    """What the live check aims at: real channels, and real messages in the
    first (Home): a thread root of ours with a reply mentioning us, one of
    ours to delete, and one of the peer's (not ours to edit or delete)."""

    channel_ids: list[int]
    peer: str
    root: int
    to_delete: int
    peers: int
    file_ids: tuple[int, ...] = ()  # files in Home: an image, a text


def _fixed_inputs(operation: Any, seeded: Seeded, cursor: str) -> list[dict]:
    path, method = operation.path, operation.method.lower()
    home = seeded.channel_ids[0]
    if path == "/api/channels/{id}/members/{username}":
        return [{"path_parameters": {"id": seeded.channel_ids[-1], "username": seeded.peer}}]
    if "{emoji}" in path:
        return [
            {"path_parameters": {"id": home, "seq": seq, "emoji": emoji}}
            for seq in (seeded.root, seeded.peers)
            for emoji in (
                "\N{THUMBS UP SIGN}",
                "\N{THUMBS UP SIGN}\N{EMOJI MODIFIER FITZPATRICK TYPE-4}",
            )
        ]
    if "{file_id}" in path:
        return [{"path_parameters": {"file_id": file_id}} for file_id in seeded.file_ids]
    if "{seq}" in path:
        ours = seeded.to_delete if method == "delete" else seeded.root
        return [{"path_parameters": {"id": home, "seq": seq}} for seq in (ours, seeded.peers)]
    if "{id}" in path:
        return [{"path_parameters": {"id": channel_id}} for channel_id in seeded.channel_ids]
    if path in ("/api/events", "/api/events/stream") and method == "get":
        return [{"query": {"cursor": cursor}}]
    if path == "/api/events":
        return [{"body": {"cursor": cursor, "timeout": 0}}]
    if path == "/api/mentions":
        return [{"query": {"limit": 1}}]  # a page with a `next`
    if path == "/api/search":
        return [{"query": {"q": "hello", "limit": 1}}]  # hits, and a `next`
    return []


def _integers_as_integers(case: Any) -> None:
    """JSON Schema counts 42.0 as an integer; the server does not (400, as
    docs/api.md says), so positive cases send integers without a fraction."""

    def fixed(value: Any) -> Any:
        return int(value) if isinstance(value, float) and value.is_integer() else value

    if isinstance(case.body, dict):
        case.body = {name: fixed(value) for name, value in case.body.items()}
    if case.query:
        case.query = {name: fixed(value) for name, value in case.query.items()}


def _call(case: Any, *, base_url: str, session: Any, headers_for: Any, excluded: list) -> None:
    case.call_and_validate(
        base_url=base_url,
        session=session,
        headers=headers_for(case.operation),
        excluded_checks=excluded,
        timeout=30,
    )


def _run_examples(strategy: Any, mode: GenerationMode, call: Any) -> None:
    @given(case=strategy)
    @hypothesis_settings(
        max_examples=EXAMPLES,
        derandomize=True,  # the same requests on every run
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: it multiplies requests
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        if mode is GenerationMode.POSITIVE:
            _integers_as_integers(case)
        call(case)

    check()


def _check_against_server(base_url: str, token: str, leaver: str, seeded: Seeded) -> list[str]:
    """Runs every operation's examples; answers the failures, as text."""
    schema = schemathesis.openapi.from_url(f"{base_url}/api/openapi.json")
    session = requests.Session()
    auth = {"Authorization": f"Bearer {token}"}
    cursor = session.get(f"{base_url}/api/me", headers=auth, timeout=30).json()["cursor"]

    def headers_for(operation: Any) -> dict[str, str]:
        if operation.definition.raw.get("security") == []:
            return {}
        if operation.path == "/api/logout":  # a fresh session each time, not ours
            answer = session.post(
                f"{base_url}/api/login",
                json={"username": leaver, "password": PASSWORD},
                timeout=30,
            )
            return {"Authorization": f"Bearer {answer.json()['token']}"}
        return auth

    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        excluded = EXCLUDED_CHECKS.get(operation.definition.raw.get("operationId"), [])
        fixed = _fixed_inputs(operation, seeded, cursor)
        call = functools.partial(
            _call,
            base_url=base_url,
            session=session,
            headers_for=headers_for,
            excluded=excluded,
        )
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _run_examples(_strategy(operation, mode, fixed), mode, call)
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label  # nothing to make invalid
            except (Exception, BaseExceptionGroup) as exc:  # one failure must not hide others
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures


def _tiny_png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (30, 20), (0, 90, 200)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.filterwarnings("ignore")  # Schemathesis and Hypothesis advice is not a failure
async def test_server_answers_as_described(client: Any, make_user: Any, home_id: int) -> None:
    main = await make_user("st_main", PASSWORD)
    peer = await make_user("st_peer", PASSWORD)
    leaver = await make_user("st_leaver", PASSWORD)
    group = await main.post("/api/channels", {"name": "st-group", "members": ["st_peer"]})
    root = await main.send(home_id, "hello")
    await peer.post(
        f"/api/channels/{home_id}/messages",
        {"text": "hello @st_main", "reply_to": root["seq"]},
        expect=201,
    )
    to_delete = await main.send(home_id, "delete me")
    peers = await peer.send(home_id, "not yours")
    await main.send(group["channel"]["id"], "hello group")
    await peer.send(group["channel"]["id"], "look, @st_main")  # a second mention: a `next`
    file_ids = []
    for name, data in [("p.png", _tiny_png()), ("t.txt", b"some text")]:
        form = aiohttp.FormData()
        form.add_field("file", io.BytesIO(data), filename=name)
        answer = await main.client.post(
            f"/api/channels/{home_id}/files", data=form, headers=main.headers
        )
        file_ids.append((await answer.json())["file"]["id"])
    await main.post(
        f"/api/channels/{home_id}/messages", {"text": "", "files": file_ids}, expect=201
    )
    seeded = Seeded(
        [home_id, group["channel"]["id"]],
        peer.username,
        root["seq"],
        to_delete["seq"],
        peers["seq"],
        tuple(file_ids),
    )
    base_url = str(client.make_url("")).rstrip("/")
    failures = await asyncio.to_thread(
        _check_against_server, base_url, main.token, leaver.username, seeded
    )
    assert not failures, "\n\n".join(failures)
