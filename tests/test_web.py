"""The page and its static files: whether the page says it is signed in, and
the client's modules under their versioned path."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatterwerks import web as pages

SCRIPT = re.compile(r'<script type="module" src="/static/([0-9a-f]{12})/app\.js">')
SIGNED_IN = re.compile(r'<body data-signed-in="(true|false)">')
IMPORT = re.compile(r'from "\./([\w.-]+\.js)";')


async def signed_in_says(client: Any, token: str | None) -> str:
    client.session.cookie_jar.clear()  # registering through `client` stored a cookie
    headers = {"Cookie": f"chatterwerks_session={token}"} if token else {}
    response = await client.get("/", headers=headers)
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-cache"
    [answer] = SIGNED_IN.findall(await response.text())
    return answer


async def test_the_page_says_whether_its_cookie_is_a_live_session(
    client: Any, make_user: Any
) -> None:
    alice = await make_user("alice")
    assert await signed_in_says(client, None) == "false"
    assert await signed_in_says(client, "not-a-session") == "false"
    assert await signed_in_says(client, alice.token) == "true"
    await alice.post("/api/logout", expect=204)
    assert await signed_in_says(client, alice.token) == "false"


async def test_every_module_is_served_under_the_version_for_good(client: Any) -> None:
    """From the page's script, following its imports, every module is there
    under the same versioned path, cacheable for good; and every .js file in
    static/ is used by the page."""
    page = await (await client.get("/")).text()
    [version] = SCRIPT.findall(page)
    assert version == pages.static_version()
    assert f'href="/static/{version}/app.css"' in page
    assert f'href="/static/{version}/favicon.svg"' in page

    found: set[str] = set()
    waiting = ["app.js"]
    while waiting:
        name = waiting.pop()
        if name in found:
            continue
        found.add(name)
        response = await client.get(f"/static/{version}/{name}")
        assert response.status == 200, name
        assert "javascript" in response.content_type, (name, response.content_type)
        assert response.headers["Cache-Control"] == pages.IMMUTABLE
        waiting.extend(IMPORT.findall(await response.text()))
    assert found == {path.name for path in pages.STATIC_DIR.glob("*.js")}
    assert len(found) > 5  # app.js imports the rest

    # A page from before a deploy names another version: today's file, not kept.
    stale = await client.get("/static/0123456789ab/app.js")
    assert stale.status == 200 and stale.headers["Cache-Control"] == "no-cache"
    assert (await client.get(f"/static/{version}/nothing.js")).status == 404
    assert (await client.get(f"/static/{version}/..%2Fsetup.cfg")).status == 404
    assert (await client.get("/static/app.js")).status == 200  # the old path still works


@pytest.fixture
def static_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """static/ copied to tmp_path and served from there (caches cleared around)."""
    copy = tmp_path / "static"
    shutil.copytree(pages.STATIC_DIR, copy)
    monkeypatch.setattr(pages, "STATIC_DIR", copy)
    pages.static_files.cache_clear()
    pages.static_version.cache_clear()
    yield copy
    pages.static_files.cache_clear()
    pages.static_version.cache_clear()


def test_the_version_follows_the_contents_not_the_mtimes(static_copy: Path) -> None:
    def version() -> str:
        pages.static_files.cache_clear()
        pages.static_version.cache_clear()
        return pages.static_version()

    first = version()
    module = static_copy / "app.js"
    os.utime(module, (0, 0))
    assert version() == first  # the same files on another host: the same tag
    module.write_text(module.read_text() + "\n")
    assert version() != first
