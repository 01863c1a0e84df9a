"""The browser client in a real browser: Playwright (async API) driving Debian's Chromium.

Each test gets a fresh database and server (the `client` fixture) and its own
headless Chromium. Users are mostly made through the API and handed to the
browser as a session cookie; the sign-in test goes through the page itself.

CHATTERWERKS_SCREENSHOTS=1 also runs `test_screenshots`, which writes docs/*.png.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Chromium is not installed at /usr/bin/chromium", allow_module_level=True)

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
MOBILE = {"width": 360, "height": 740}
DOCS = Path(__file__).resolve().parent.parent / "docs"
expect.set_options(timeout=10_000)


@pytest.fixture
async def browser(client: Any) -> AsyncIterator[Browser]:
    # Depends on `client` so the browser closes before the server stops.
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def base_url(client: Any) -> str:
    return str(client.make_url("/"))


class PageProblems:
    """Collects what must never happen on a page: uncaught errors, CSP
    violations, and dialogs (an alert() would mean injected script ran)."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self._tasks: set[asyncio.Future] = set()
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", self._console)
        page.on("dialog", self._dialog)

    def _console(self, message: Any) -> None:
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(message.text)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        task = asyncio.ensure_future(dialog.dismiss())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def check(self) -> None:
        assert self.errors == []
        assert self.dialogs == []


async def new_page(
    browser: Browser, base_url: str, token: str | None = None, viewport: dict | None = None
) -> tuple[BrowserContext, Page, PageProblems]:
    """A fresh browser profile, signed in with `token` as the session cookie."""
    context = await browser.new_context(viewport=viewport or DESKTOP)
    if token:
        await context.add_cookies(
            [{"name": "chatterwerks_session", "value": token, "url": base_url}]
        )
    page = await context.new_page()
    problems = PageProblems(page)
    await page.goto(base_url)
    return context, page, problems


async def open_chat(
    browser: Browser, base_url: str, user: Any, viewport: dict | None = None
) -> tuple[Page, PageProblems]:
    _, page, problems = await new_page(browser, base_url, user.token, viewport)
    await expect(page.locator("#chat")).to_be_visible()
    await expect(page.locator("#me-name")).to_have_text(user.username)
    return page, problems


def messages(page: Page) -> Any:
    return page.locator("#message-list li.msg")


def sidebar_item(page: Page, label: str) -> Any:
    return page.locator("#sidebar button.chan", has=page.locator(".chan-name", has_text=label))


async def eventually(condition: Any, timeout: float = 10.0) -> None:
    """Waits for a condition on Python-side state (expect() covers the page's)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out waiting for a condition"
        await asyncio.sleep(0.05)


async def send(page: Page, text: str) -> None:
    box = page.locator("#composer-input")
    await box.fill(text)
    await box.press("Enter")
    await expect(box).to_have_value("")


async def send_fail_then_retry(page: Page, text: str, error: str) -> None:
    """Sends `text` while the next send is made to fail: the error shows, the
    text stays; Enter again sends it and clears the composer."""
    box = page.locator("#composer-input")
    await box.fill(text)
    await box.press("Enter")
    await expect(page.locator("#composer-error")).to_contain_text(error)
    await expect(box).to_have_value(text)
    await box.press("Enter")
    await expect(box).to_have_value("")
    await expect(page.locator("#composer-error")).to_be_empty()


async def test_register_sign_out_and_sign_in(browser: Browser, base_url: str) -> None:
    _, page, problems = await new_page(browser, base_url)
    await expect(page.locator("#auth")).to_be_visible()
    await expect(page.locator("#auth-title")).to_have_text("Sign in")

    await page.get_by_role("button", name="Create an account").click()
    await expect(page.locator("#auth-title")).to_have_text("Create your account")
    await page.locator("#auth-submit").click()
    await expect(page.locator("#auth-username-error")).to_have_text("Enter your username.")
    await page.get_by_label("Username", exact=True).fill("alice")
    await page.get_by_label("Password", exact=True).fill("short")
    await page.locator("#auth-submit").click()
    await expect(page.locator("#auth-password-error")).to_contain_text("at least 8")
    await expect(page.locator("#auth-password")).to_have_attribute("aria-invalid", "true")

    await page.get_by_label("Password", exact=True).fill("correct horse")
    await page.locator("#auth-submit").click()
    await expect(page.locator("#chat")).to_be_visible()
    await expect(page.locator("#me-name")).to_have_text("alice")
    await expect(page.locator("#channel-title")).to_have_text("Home")
    # Otter welcomes every newcomer in Home, visibly as a bot.
    welcome = page.locator("#message-list li.msg.bot").first
    await expect(welcome.locator(".author")).to_have_text("otter")
    await expect(welcome.locator(".tag-bot")).to_have_text("bot")
    # The session is the HttpOnly cookie: nothing a script could read.
    stored = await page.evaluate("[localStorage.length, sessionStorage.length, document.cookie]")
    assert stored == [0, 0, ""]
    assert await page.locator("#auth-password").input_value() == ""

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.locator("#auth")).to_be_visible()
    await page.get_by_label("Username", exact=True).fill("alice")
    await page.get_by_label("Password", exact=True).fill("wrong password")
    await page.locator("#auth-submit").click()
    await expect(page.locator("#auth-password-error")).to_have_text("Wrong username or password.")
    await page.get_by_label("Password", exact=True).fill("correct horse")
    await page.locator("#auth-submit").click()
    await expect(page.locator("#chat")).to_be_visible()
    await expect(page.locator("#me-name")).to_have_text("alice")

    # The username is taken (case-insensitively): said next to the field.
    await page.get_by_role("button", name="Sign out").click()
    await page.get_by_role("button", name="Create an account").click()
    await page.get_by_label("Username", exact=True).fill("Alice")
    await page.get_by_label("Password", exact=True).fill("another password")
    await page.locator("#auth-submit").click()
    await expect(page.locator("#auth-username-error")).to_contain_text("taken")
    problems.check()


async def test_signed_out_load_sign_in_and_reload_log_no_errors(
    browser: Browser, base_url: str, make_user: Any
) -> None:
    """Every console error counts here, a failed request's too: the server
    tells the page whether its cookie is a live session, so a signed-out page
    (here with a stale cookie) never asks GET /api/me only to get a 401."""
    await make_user("alice")
    context = await browser.new_context(viewport=DESKTOP)
    await context.add_cookies(
        [{"name": "chatterwerks_session", "value": "ended-long-ago", "url": base_url}]
    )
    page = await context.new_page()
    # Console errors (a failed request logs one too), uncaught exceptions, and
    # error answers: none may happen on this page.
    problems: list[str] = []

    def console(message: Any) -> None:
        if message.type == "error":
            problems.append(message.text)

    def response(answer: Any) -> None:
        if answer.status >= 400:
            problems.append(f"{answer.status} {answer.url}")

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("response", response)
    state_loads: list[str] = []
    page.on("request", lambda r: state_loads.append(r.url) if r.url.endswith("/api/me") else None)

    await page.goto(base_url)
    await expect(page.locator("body")).to_have_attribute("data-signed-in", "false")
    await expect(page.locator("#auth")).to_be_visible()
    await page.wait_for_timeout(300)  # a stray request or error would show by now
    assert (state_loads, problems) == ([], [])

    await page.get_by_label("Username", exact=True).fill("alice")
    await page.get_by_label("Password", exact=True).fill("correct horse")
    await page.locator("#auth-submit").click()
    await expect(page.locator("#me-name")).to_have_text("alice")
    await page.reload()
    await expect(page.locator("body")).to_have_attribute("data-signed-in", "true")
    await expect(page.locator("#me-name")).to_have_text("alice")
    await expect(page.locator("#message-list li.msg")).not_to_have_count(0)
    assert (len(state_loads), problems) == (2, [])  # the sign-in's and the reload's

    # Signed out, a reload shows the form again, still without asking.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.locator("#auth")).to_be_visible()
    await page.reload()
    await expect(page.locator("body")).to_have_attribute("data-signed-in", "false")
    await expect(page.locator("#auth")).to_be_visible()
    await page.wait_for_timeout(300)
    assert (len(state_loads), problems) == (2, [])
    await context.close()


async def test_two_users_chat_then_talk_directly(
    browser: Browser, base_url: str, make_user: Any
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    alice_page, alice_problems = await open_chat(browser, base_url, alice)
    bob_page, bob_problems = await open_chat(browser, base_url, bob)

    # The send button waits for text; Enter sends, Shift+Enter makes a new line.
    await expect(alice_page.locator("#send")).to_be_disabled()
    box = alice_page.locator("#composer-input")
    await box.fill("Hello bob")
    await expect(alice_page.locator("#send")).to_be_enabled()
    await box.press("Shift+Enter")
    await box.press_sequentially("second line")
    await box.press("Enter")
    await expect(box).to_have_value("")
    await expect(alice_page.locator("#send")).to_be_disabled()
    mine = messages(alice_page).last
    await expect(mine).to_have_class("msg mine")
    await expect(mine.locator(".msg-text")).to_have_text("Hello bob\nsecond line")

    # Bob sees it arrive without reloading, and answers.
    await expect(messages(bob_page).last.locator(".msg-text")).to_have_text(
        "Hello bob\nsecond line"
    )
    await expect(messages(bob_page).last.locator(".author")).to_have_text("alice")
    await send(bob_page, "Hi alice!")
    await expect(messages(alice_page).last.locator(".msg-text")).to_have_text("Hi alice!")

    # A second tab of bob's, to see read markers move across tabs.
    bob_tab2 = await bob_page.context.new_page()
    await bob_tab2.goto(base_url)
    await expect(bob_tab2.locator("#chat")).to_be_visible()

    # Alice clicks bob's name in the member list: a direct channel opens.
    await alice_page.locator("#member-list button[data-username=bob]").click()
    await expect(alice_page.locator("#channel-title")).to_have_text("bob")
    await expect(sidebar_item(alice_page, "bob")).to_have_attribute("aria-current", "page")
    await send(alice_page, "psst, a secret")

    # Bob's sidebar grows the channel, with its unread badge, in both tabs.
    for page in (bob_page, bob_tab2):
        item = sidebar_item(page, "alice")
        await expect(item.locator(".badge")).to_have_text("1")
        await expect(page).to_have_title("(1) Chatterwerks")
    await sidebar_item(bob_page, "alice").click()
    await expect(bob_page.locator("#channel-title")).to_have_text("alice")
    await expect(messages(bob_page).last.locator(".msg-text")).to_have_text("psst, a secret")
    # Read here: the badge falls here and, through a read event, in the other tab.
    for page in (bob_page, bob_tab2):
        await expect(sidebar_item(page, "alice").locator(".badge")).to_be_hidden()
        await expect(page).to_have_title("Chatterwerks")

    await send(bob_page, "what secret?")
    await expect(messages(alice_page).last.locator(".msg-text")).to_have_text("what secret?")
    # Opening it again from the other side finds the same channel.
    await bob_page.locator("#member-list button[data-username=alice]").click()
    await expect(bob_page.locator("#direct-list li")).to_have_count(1)
    alice_problems.check()
    bob_problems.check()


async def test_otter_answers_on_the_page(browser: Browser, base_url: str, make_user: Any) -> None:
    alice = await make_user("alice")
    page, problems = await open_chat(browser, base_url, alice)

    # A send that fails keeps the text, says why, and can be retried.
    await page.route(
        "**/api/channels/*/messages",
        lambda route: route.fulfill(
            status=503, json={"error": {"code": "database_unavailable", "message": "Try later."}}
        ),
        times=1,
    )
    await send_fail_then_retry(page, "Hey Otter, 6 times 7", "Try later.")
    reply = page.locator("#message-list li.msg.bot").last
    await expect(reply.locator(".msg-text")).to_contain_text("42")
    await expect(reply.locator(".tag-bot")).to_be_visible()
    problems.check()


async def test_a_send_whose_answer_was_lost_posts_once_on_retry(
    browser: Browser, base_url: str, make_user: Any, home_id: int
) -> None:
    """The send reaches the server and commits, but the page gets a 503 (a
    proxy timed out, say). Pressing Enter again resends with the same
    Idempotency-Key, so the message is there once, not twice."""
    alice = await make_user("alice")
    page, problems = await open_chat(browser, base_url, alice)
    keys_sent: list[str | None] = []
    page.on(
        "request",
        lambda r: (
            keys_sent.append(r.headers.get("idempotency-key"))
            if r.method == "POST" and r.url.endswith(f"/api/channels/{home_id}/messages")
            else None
        ),
    )

    async def commit_then_lose_the_answer(route: Any) -> None:
        await route.fetch()  # the server commits the message
        await route.fulfill(status=503, json={"error": {"code": "x", "message": "Lost."}})

    await page.route("**/api/channels/*/messages", commit_then_lose_the_answer, times=1)
    await send_fail_then_retry(page, "exactly once, please", "Lost.")
    assert len(keys_sent) >= 2 and keys_sent[0] and len(set(keys_sent)) == 1, keys_sent
    stored = (await alice.get(f"/api/channels/{home_id}/messages"))["messages"]
    assert [m["text"] for m in stored].count("exactly once, please") == 1
    await expect(page.locator(".msg-text", has_text="exactly once, please")).to_have_count(1)
    # A new text is a new message, under a new key.
    await send(page, "and this one too")
    assert len(set(keys_sent)) == 2, keys_sent
    problems.errors = [e for e in problems.errors if "503" not in e]
    problems.check()


async def test_markup_in_a_message_is_only_text(
    browser: Browser, base_url: str, make_user: Any
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    alice_page, alice_problems = await open_chat(browser, base_url, alice)
    bob_page, bob_problems = await open_chat(browser, base_url, bob)
    payload = "<img src=x onerror=alert(1)> <script>alert(2)</script> <b>bold?</b>"
    await send(alice_page, payload)
    for page, problems in ((alice_page, alice_problems), (bob_page, bob_problems)):
        text = messages(page).last.locator(".msg-text")
        await expect(text).to_have_text(payload)
        assert await page.locator("#message-list img, #message-list script").count() == 0
        assert await page.locator("#message-list b").count() == 0
        assert await page.evaluate("document.images.length") == 0
        await page.wait_for_timeout(200)  # an onerror would have fired by now
        problems.check()


async def test_switching_channels_keeps_one_poll(
    browser: Browser, base_url: str, make_user: Any, home_id: int
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    await alice.post("/api/channels", {"name": "alpha", "members": ["bob"]}, expect=201)
    await alice.post("/api/channels", {"name": "beta"}, expect=201)
    await bob.send(home_id, "something unread")

    context = await browser.new_context(viewport=DESKTOP)
    await context.add_cookies(
        [{"name": "chatterwerks_session", "value": alice.token, "url": base_url}]
    )
    page = await context.new_page()
    in_flight: set[Any] = set()
    counts = {"started": 0, "max": 0}

    def started(request: Any) -> None:
        if "/api/events" in request.url:
            in_flight.add(request)
            counts["started"] += 1
            counts["max"] = max(counts["max"], len(in_flight))

    def ended(request: Any) -> None:
        in_flight.discard(request)

    page.on("request", started)
    page.on("requestfinished", ended)
    page.on("requestfailed", ended)
    await page.goto(base_url)
    await expect(page.locator("#chat")).to_be_visible()
    await expect(sidebar_item(page, "beta")).to_be_visible()

    for name in ["alpha", "beta", "Home", "alpha", "Home", "beta", "alpha", "beta", "Home"]:
        await sidebar_item(page, name).click()
        await expect(page.locator("#channel-title")).to_contain_text(name)
    await page.locator("#member-list button[data-username=bob]").click()  # the 10th: a DM
    await expect(page.locator("#channel-title")).to_have_text("bob")

    # Reads answered some polls on the way; let the last answer settle.
    for _ in range(50):
        await page.wait_for_timeout(100)
        if len(in_flight) == 1:
            break
    await page.wait_for_timeout(300)
    assert len(in_flight) == 1
    assert counts["max"] == 1
    await context.close()


async def test_history_pages_and_the_new_messages_marker(
    browser: Browser, base_url: str, make_user: Any
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    created = await alice.post("/api/channels", {"name": "log", "members": ["bob"]}, expect=201)
    channel_id = created["channel"]["id"]
    for i in range(1, 121):
        await (alice if i % 3 else bob).send(channel_id, f"line {i}")
    page, problems = await open_chat(browser, base_url, alice)
    await sidebar_item(page, "log").click()

    # Opens at the newest page, scrolled to the bottom.
    await expect(page.locator("#message-list li[data-seq='120']")).to_be_in_viewport()
    await expect(messages(page)).to_have_count(50)

    # Scrolling to the top loads the page before, and the reader's place holds.
    where = """el => document.querySelector("#message-list li[data-seq='71']")
        .getBoundingClientRect().top - el.getBoundingClientRect().top"""
    scroller = page.locator("#messages")
    before = await scroller.evaluate(f"el => {{ el.scrollTop = 0; return ({where})(el); }}")
    await expect(messages(page)).to_have_count(100)
    after = await scroller.evaluate(where)
    assert abs(after - before) < 50, (before, after)
    await page.locator("#messages").evaluate("el => { el.scrollTop = 0; }")
    await expect(messages(page)).to_have_count(120)
    await expect(page.locator("#history-status")).to_contain_text("very beginning")
    seqs = await messages(page).evaluate_all("els => els.map(e => Number(e.dataset.seq))")
    assert seqs == list(range(1, 121))

    # Scrolled up, a new message does not pull the reader down: a marker shows.
    await bob.send(channel_id, "are you there?")
    marker = page.locator("#new-marker")
    await expect(marker).to_be_visible()
    await expect(page.locator("#message-list li[data-seq='121']")).not_to_be_in_viewport()
    await expect(sidebar_item(page, "log").locator(".badge")).to_have_text("1")
    await marker.click()
    await expect(page.locator("#message-list li[data-seq='121']")).to_be_in_viewport()
    await expect(marker).to_be_hidden()
    await expect(sidebar_item(page, "log").locator(".badge")).to_be_hidden()
    # At the bottom, the next one scrolls into view by itself.
    await bob.send(channel_id, "ok, good")
    await expect(page.locator("#message-list li[data-seq='122']")).to_be_in_viewport()
    await expect(marker).to_be_hidden()
    problems.check()


async def test_reconnects_and_returns_to_sign_in(
    browser: Browser, base_url: str, make_user: Any, home_id: int
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    page, problems = await open_chat(browser, base_url, alice)
    await expect(page.locator("#message-list li.msg")).not_to_have_count(0)

    state_loads: list[str] = []
    page.on("request", lambda r: state_loads.append(r.url) if r.url.endswith("/api/me") else None)

    # The network drops, then the server fails (the poll in flight answers, the
    # next ones fail): a visible "reconnecting" state, then recovery by itself.
    failures: list[str] = []

    async def fail(route: Any) -> None:
        failures.append(route.request.url)
        if len(failures) == 1:
            await route.abort("internetdisconnected")
        else:
            await route.fulfill(status=503, json={"error": {"code": "x", "message": "down"}})

    await page.route("**/api/events*", fail)
    await bob.send(home_id, "while you were away")
    await expect(page.locator("#conn-banner")).to_be_visible()
    await expect(page.locator("#conn-banner")).to_contain_text("Reconnecting")
    await eventually(lambda: len(failures) > 1)
    await page.unroute("**/api/events*")
    await expect(page.locator("#conn-banner")).to_be_hidden()
    await bob.send(home_id, "welcome back")
    await expect(messages(page).last.locator(".msg-text")).to_have_text("welcome back")

    # A cursor the server refuses: the page reloads its state and carries on.
    await page.route(
        "**/api/events*",
        lambda route: route.fulfill(
            status=400, json={"error": {"code": "invalid_cursor", "message": "bad"}}
        ),
        times=1,
    )
    await bob.send(home_id, "poke")
    await eventually(lambda: len(state_loads) == 1)
    await bob.send(home_id, "after the reload")
    await expect(messages(page).last.locator(".msg-text")).to_have_text("after the reload")

    # The session ends elsewhere: the next poll gets 401 and the page signs out.
    await alice.post("/api/logout", expect=204)
    await bob.send(home_id, "wake the poll")
    await expect(page.locator("#auth")).to_be_visible()
    await expect(page.locator("#auth-notice")).to_contain_text("session has ended")
    problems.errors = [e for e in problems.errors if "ERR_INTERNET_DISCONNECTED" not in e]
    assert len(state_loads) == 1
    problems.check()


async def test_small_screen_layout(browser: Browser, base_url: str, make_user: Any) -> None:
    alice = await make_user("alice")
    await make_user("bob")
    await alice.post("/api/channels", {"name": "mobile", "members": ["bob"]}, expect=201)
    page, problems = await open_chat(browser, base_url, alice, viewport=MOBILE)
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= MOBILE["width"]

    sidebar = page.locator("#sidebar")
    toggle = page.get_by_role("button", name="Show channels")
    await expect(sidebar).to_be_hidden()
    await expect(page.locator("#composer-input")).to_be_visible()
    await toggle.click()
    await expect(sidebar).to_be_visible()
    await expect(toggle).to_have_attribute("aria-expanded", "true")
    await sidebar_item(page, "mobile").click()
    await expect(sidebar).to_be_hidden()
    await expect(page.locator("#channel-title")).to_have_text("#mobile")
    await send(page, "typed on a phone")
    await expect(messages(page).last.locator(".msg-text")).to_have_text("typed on a phone")

    # The member list sits behind its own button.
    await expect(page.locator("#members")).to_be_hidden()
    await page.locator("#members-toggle").click()
    await expect(page.locator("#member-list button[data-username=bob]")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(page.locator("#members")).to_be_hidden()
    problems.check()


async def test_group_channel_moderation_and_people_search(
    browser: Browser, base_url: str, make_user: Any
) -> None:
    alice = await make_user("alice")
    await make_user("bob")
    await make_user("carol")
    page, problems = await open_chat(browser, base_url, alice)

    await page.get_by_role("button", name="Create a channel").click()
    dialog = page.locator("#channel-dialog")
    await dialog.get_by_label("Name", exact=True).fill("design")
    await dialog.get_by_label("Members").fill("bob")
    await dialog.get_by_role("button", name="Create channel").click()
    await expect(dialog).to_be_hidden()
    await expect(page.locator("#channel-title")).to_have_text("#design")
    members = page.locator("#member-list button.member")
    await expect(members).to_have_count(2)

    # As moderator: add carol, remove bob.
    await page.get_by_label("Add a member").fill("carol")
    await page.get_by_role("button", name="Add", exact=True).click()
    await expect(members).to_have_count(3)
    await page.get_by_role("button", name="Remove bob from the channel").click()
    await expect(page.locator("#member-list button[data-username=bob]")).to_have_count(0)

    # A name that exists already is refused next to the field.
    await page.get_by_role("button", name="Create a channel").click()
    await dialog.get_by_label("Name", exact=True).fill("Design")
    await dialog.get_by_role("button", name="Create channel").click()
    await expect(page.locator("#channel-name-error")).to_contain_text("already exists")
    await dialog.get_by_role("button", name="Cancel").click()

    # Find anyone by name and start a direct channel.
    await page.get_by_role("button", name="Find a person to message").click()
    await page.get_by_label("Search by username").fill("car")
    await page.locator("#direct-results button[data-username=carol]").click()
    await expect(page.locator("#channel-title")).to_have_text("carol")
    await expect(sidebar_item(page, "carol")).to_have_attribute("aria-current", "page")
    problems.check()


# ---------- Messages that live: edit, delete, react, threads, mentions (issue 10) ----------


async def team(make_user: Any) -> tuple[Any, Any, int]:
    """alice (the moderator) and bob in the group channel #team."""
    alice = await make_user("alice")
    bob = await make_user("bob")
    created = await alice.post("/api/channels", {"name": "team", "members": ["bob"]}, expect=201)
    return alice, bob, created["channel"]["id"]


async def in_team(browser: Browser, base_url: str, user: Any, **kwargs: Any) -> tuple[Page, Any]:
    page, problems = await open_chat(browser, base_url, user, **kwargs)
    await sidebar_item(page, "team").click()
    await expect(page.locator("#channel-title")).to_have_text("#team")
    return page, problems


def message(page: Page, text: str) -> Any:
    return messages(page).filter(has_text=text)


async def action(page: Page, text: str, name: str) -> None:
    """Hovers the message showing `text` and presses one of its actions."""
    target = message(page, text)
    await target.hover()
    toolbar = target.get_by_role("toolbar", name="Message actions")
    await toolbar.get_by_role("button", name=name, exact=True).click()


async def test_edit_and_delete_seen_live(browser: Browser, base_url: str, make_user: Any) -> None:
    alice, bob, channel_id = await team(make_user)
    alice_page, alice_problems = await in_team(browser, base_url, alice)
    bob_page, bob_problems = await in_team(browser, base_url, bob)

    await send(alice_page, "helo bob")
    await expect(message(bob_page, "helo bob").locator(".msg-text")).to_have_text("helo bob")

    # Edit in place: Enter saves; "(edited)" shows on both pages.
    await action(alice_page, "helo bob", "Edit")
    editor = alice_page.locator("#message-list .msg-edit-input")
    await expect(editor).to_be_focused()
    await expect(editor).to_have_value("helo bob")
    await editor.fill("hello bob")
    await editor.press("Enter")
    for page in (alice_page, bob_page):
        edited = messages(page).last
        await expect(edited.locator(".msg-text")).to_have_text("hello bob")
        await expect(edited.locator(".msg-edited")).to_have_text("(edited)")
    await expect(editor).to_have_count(0)

    # Up-arrow in the empty composer edits the last message; Escape cancels.
    box = alice_page.locator("#composer-input")
    await box.focus()
    await box.press("ArrowUp")
    await expect(editor).to_be_focused()
    await editor.fill("not saved")
    await editor.press("Escape")
    await expect(editor).to_have_count(0)
    await expect(box).to_be_focused()
    await expect(messages(alice_page).last.locator(".msg-text")).to_have_text("hello bob")
    # Bob may not edit or delete alice's message (he is no moderator).
    target = message(bob_page, "hello bob")
    await target.hover()
    await expect(target.get_by_role("button", name="Add a reaction").first).to_be_visible()
    await expect(target.get_by_role("button", name="Edit", exact=True)).to_have_count(0)
    await expect(target.get_by_role("button", name="Delete", exact=True)).to_have_count(0)

    # Delete asks first; Cancel keeps the message.
    await action(alice_page, "hello bob", "Delete")
    dialog = alice_page.locator("#delete-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog.locator("#delete-preview")).to_have_text("hello bob")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_be_hidden()
    await expect(message(alice_page, "hello bob")).to_have_count(1)
    await action(alice_page, "hello bob", "Delete")
    await dialog.get_by_role("button", name="Delete", exact=True).click()
    await expect(dialog).to_be_hidden()
    for page in (alice_page, bob_page):
        gone = messages(page).last
        await expect(gone.locator(".msg-deleted")).to_have_text("message deleted")
        await expect(gone).to_have_class(
            "msg mine deleted" if page is alice_page else "msg deleted"
        )
        await expect(page.locator("#message-list")).not_to_contain_text("hello bob")
    history = await alice.get(f"/api/channels/{channel_id}/messages")
    assert [m["text"] for m in history["messages"] if m["deleted"]] == [""]

    # The moderator deletes someone else's message, and bob sees it go.
    await send(bob_page, "off-topic rant")
    await expect(message(alice_page, "off-topic rant")).to_have_count(1)
    await action(alice_page, "off-topic rant", "Delete")
    await expect(dialog.locator("#delete-note")).to_contain_text("moderator")
    await dialog.get_by_role("button", name="Delete", exact=True).click()
    await expect(bob_page.locator("#message-list")).not_to_contain_text("off-topic rant")
    await expect(messages(bob_page).last.locator(".msg-deleted")).to_be_visible()
    alice_problems.check()
    bob_problems.check()


async def test_reactions_seen_live(browser: Browser, base_url: str, make_user: Any) -> None:
    alice, bob, channel_id = await team(make_user)
    await bob.send(channel_id, "ship it?")
    alice_page, alice_problems = await in_team(browser, base_url, alice)
    bob_page, bob_problems = await in_team(browser, base_url, bob)

    # The picker puts what you use most first (remembered in localStorage).
    picker = alice_page.locator("#emoji-picker")
    await action(alice_page, "ship it?", "Add a reaction")
    await expect(picker).to_be_visible()
    await expect(picker.locator("button.emoji").first).to_have_text("👍")
    await picker.get_by_role("button", name="React with 🎉").click()
    await expect(picker).to_be_hidden()
    await action(alice_page, "ship it?", "Add a reaction")
    await expect(picker.locator("button.emoji").first).to_have_text("🎉")
    await picker.get_by_role("button", name="React with 👍").click()

    def chip(page: Page, emoji: str) -> Any:
        return message(page, "ship it?").locator(f"button.reaction[data-emoji='{emoji}']")

    for page, pressed in ((alice_page, "true"), (bob_page, "false")):
        await expect(chip(page, "👍")).to_have_text("👍1")
        await expect(chip(page, "👍")).to_have_attribute("aria-pressed", pressed)
        await expect(chip(page, "🎉")).to_have_text("🎉1")

    # Bob clicks alice's chip: he joins in, and alice sees the count rise.
    await chip(bob_page, "👍").click()
    for page in (alice_page, bob_page):
        await expect(chip(page, "👍")).to_have_text("👍2")
        await expect(chip(page, "👍")).to_have_attribute("aria-pressed", "true")
    # Alice takes hers back: her chip is no longer highlighted, bob's still is.
    await chip(alice_page, "👍").click()
    await expect(chip(alice_page, "👍")).to_have_attribute("aria-pressed", "false")
    for page in (alice_page, bob_page):
        await expect(chip(page, "👍")).to_have_text("👍1")
    await expect(chip(bob_page, "👍")).to_have_attribute("aria-pressed", "true")
    # Alice takes 🎉 back too: the chip goes from both pages.
    await chip(alice_page, "🎉").click()
    for page in (alice_page, bob_page):
        await expect(chip(page, "🎉")).to_have_count(0)

    stored = (await bob.get(f"/api/channels/{channel_id}/messages"))["messages"][-1]
    assert stored["reactions"] == [{"emoji": "👍", "count": 1, "users": [bob.id]}]
    # Reactions are no messages: nobody has #team unread, not even after a reload.
    await sidebar_item(bob_page, "Home").click()
    await bob_page.reload()
    await expect(sidebar_item(bob_page, "team")).to_be_visible()
    await expect(bob_page.locator("#channel-title")).to_have_text("Home")
    await expect(sidebar_item(bob_page, "team").locator(".badge")).to_be_hidden()
    assert (await bob.get(f"/api/channels/{channel_id}"))["channel"]["unread"] == 0
    alice_problems.check()
    bob_problems.check()


async def test_reply_in_a_thread_seen_live(browser: Browser, base_url: str, make_user: Any) -> None:
    alice, bob, channel_id = await team(make_user)
    alice_page, alice_problems = await in_team(browser, base_url, alice)
    bob_page, bob_problems = await in_team(browser, base_url, bob)
    await send(alice_page, "release on friday?")
    await expect(message(bob_page, "release on friday?")).to_have_count(1)

    # Bob answers in a thread beside the channel.
    await action(bob_page, "release on friday?", "Reply in thread")
    thread = bob_page.locator("#thread")
    await expect(thread).to_be_visible()
    await expect(thread.locator("#thread-root .msg-text")).to_have_text("release on friday?")
    await expect(bob_page.locator("#thread-input")).to_be_focused()
    await send_reply(bob_page, "friday works for me")
    await expect(thread.locator("#thread-list li.msg")).to_have_count(1)
    await expect(thread.locator("#thread-list .msg-text")).to_have_text("friday works for me")
    # The reply stays out of the channel's list; its root counts it, live for alice.
    await expect(bob_page.locator("#message-list")).not_to_contain_text("friday works")
    link = message(alice_page, "release on friday?").locator(".thread-link")
    await expect(link.locator(".thread-count")).to_have_text("1 reply")
    await expect(alice_page.locator("#message-list")).not_to_contain_text("friday works")

    await link.click()
    alice_thread = alice_page.locator("#thread")
    await expect(alice_thread.locator("#thread-list .msg-text")).to_have_text("friday works for me")
    await send_reply(alice_page, "great, friday it is")
    await expect(thread.locator("#thread-list li.msg")).to_have_count(2)
    await expect(thread.locator("#thread-list li.msg").last).to_contain_text("friday it is")
    await expect(thread.locator("#thread-count")).to_have_text("2 replies")
    await expect(message(bob_page, "release on friday?").locator(".thread-count")).to_have_text(
        "2 replies"
    )

    stored = await bob.get(f"/api/channels/{channel_id}/messages")
    root = next(m for m in stored["messages"] if m["text"] == "release on friday?")
    assert root["reply_count"] == 2
    replies = await bob.get(f"/api/channels/{channel_id}/messages/{root['seq']}/replies")
    assert [m["text"] for m in replies["messages"]] == [
        "friday works for me",
        "great, friday it is",
    ]
    # Escape closes the thread.
    await alice_page.keyboard.press("Escape")
    await expect(alice_thread).to_be_hidden()
    alice_problems.check()
    bob_problems.check()


async def send_reply(page: Page, text: str) -> None:
    box = page.locator("#thread-input")
    await box.fill(text)
    await box.press("Enter")
    await expect(box).to_have_value("")


async def test_mention_with_the_picker_seen_live(
    browser: Browser, base_url: str, make_user: Any
) -> None:
    alice, bob, channel_id = await team(make_user)
    await make_user("bobby")  # not in #team: never offered
    earlier = await alice.send(channel_id, "before any mention")
    alice_page, alice_problems = await in_team(browser, base_url, alice)
    bob_page, bob_problems = await open_chat(browser, base_url, bob)
    await expect(bob_page.locator("#channel-title")).to_have_text("Home")

    box = alice_page.locator("#composer-input")
    await box.press_sequentially("look @b")
    options = alice_page.locator("#composer .mention-list [role=option]")
    await expect(options).to_have_count(1)
    await expect(options).to_have_attribute("data-username", "bob")
    await box.press("Enter")  # picks, does not send
    await expect(box).to_have_value("look @bob ")
    await expect(options).to_have_count(0)
    await box.press_sequentially("at this")
    await box.press("Enter")
    await expect(box).to_have_value("")
    mention = messages(alice_page).last.locator(".mention")
    await expect(mention).to_have_text("@bob")

    # Bob reads Home, in two tabs: #team gets a mention badge apart from the
    # unread count, in both.
    bob_tab2 = await bob_page.context.new_page()
    tab2_problems = PageProblems(bob_tab2)
    await bob_tab2.goto(base_url)
    await expect(sidebar_item(bob_tab2, "team")).to_be_visible()
    for page in (bob_page, bob_tab2):
        item = sidebar_item(page, "team")
        await expect(item.locator(".mention-badge")).to_have_text("@1")
        await expect(item.locator(".badge")).to_have_text("2")  # two messages, one mention
    assert (await bob.get(f"/api/channels/{channel_id}"))["channel"]["mentions"] == 1

    # An edit that adds a mention counts too, though neither tab holds the message.
    await alice.call(
        "PATCH",
        f"/api/channels/{channel_id}/messages/{earlier['seq']}",
        {"text": "before, and now @bob too"},
        expect=200,
    )
    for page in (bob_page, bob_tab2):
        await expect(sidebar_item(page, "team").locator(".mention-badge")).to_have_text("@2")

    await sidebar_item(bob_page, "team").click()
    mentioned = bob_page.locator("#message-list li.msg.mentions-me")
    await expect(mentioned).to_have_count(2)
    await expect(mentioned.locator(".mention-me")).to_have_text(["@bob", "@bob"])
    await expect(mentioned.first.locator(".msg-edited")).to_be_visible()
    # Reading clears both badges, in the other tab too, and the server agrees.
    for page in (bob_page, bob_tab2):
        item = sidebar_item(page, "team")
        await expect(item.locator(".mention-badge")).to_be_hidden()
        await expect(item.locator(".badge")).to_be_hidden()
    channel = (await bob.get(f"/api/channels/{channel_id}"))["channel"]
    assert (channel["mentions"], channel["unread"]) == (0, 0)

    # The mentions view lists them across channels, newest first, and opens one's channel.
    await bob_tab2.get_by_role("button", name="Mentions", exact=True).click()
    listed = bob_tab2.locator("#mentions-list .mention-item")
    await expect(listed.locator(".mention-item-text")).to_have_text(
        ["look @bob at this", "before, and now @bob too"]
    )
    await expect(listed.first.locator(".mention-item-where")).to_have_text("#team")
    await listed.first.click()
    await expect(bob_tab2.locator("#mentions-dialog")).to_be_hidden()
    await expect(bob_tab2.locator("#channel-title")).to_have_text("#team")
    alice_problems.check()
    bob_problems.check()
    tab2_problems.check()


async def test_thread_at_360_px(browser: Browser, base_url: str, make_user: Any) -> None:
    alice, bob, channel_id = await team(make_user)
    root = await bob.send(channel_id, "a question from the road")
    # A touch screen: no hover, so a tap on a message shows its actions.
    context = await browser.new_context(viewport=MOBILE, has_touch=True, is_mobile=True)
    await context.add_cookies(
        [{"name": "chatterwerks_session", "value": alice.token, "url": base_url}]
    )
    page = await context.new_page()
    problems = PageProblems(page)
    await page.goto(base_url + f"#channel-{channel_id}")
    await expect(page.locator("#channel-title")).to_have_text("#team")
    target = message(page, "a question from the road")
    reply = target.get_by_role("button", name="Reply in thread")
    await target.locator(".msg-text").tap()
    await expect(target).to_have_class("msg show-actions")
    await page.locator("#channel-title").tap()  # a tap elsewhere hides them
    await expect(target).to_have_class("msg")
    await target.locator(".msg-text").tap()
    await expect(target).to_have_class("msg show-actions")
    await reply.tap()
    thread = page.locator("#thread")
    await expect(thread).to_be_visible()
    # The thread covers the channel, edge to edge, without a sideways scroll.
    box = await thread.bounding_box()
    assert box is not None
    assert (box["x"], box["width"]) == (0, MOBILE["width"])
    assert await page.evaluate("document.documentElement.scrollWidth") <= MOBILE["width"]
    await expect(page.locator("#thread-input")).to_be_in_viewport()
    await send_reply(page, "answered from a phone")
    await expect(thread.locator("#thread-list .msg-text")).to_have_text("answered from a phone")
    replies = await bob.get(f"/api/channels/{channel_id}/messages/{root['seq']}/replies")
    assert [m["text"] for m in replies["messages"]] == ["answered from a phone"]

    await thread.get_by_role("button", name="Close the thread").click()
    await expect(thread).to_be_hidden()
    await expect(page.locator("#composer-input")).to_be_visible()
    await expect(target.locator(".thread-count")).to_have_text("1 reply")
    problems.check()


@pytest.mark.skipif(
    os.environ.get("CHATTERWERKS_SCREENSHOTS") != "1",
    reason="set CHATTERWERKS_SCREENSHOTS=1 to write docs/*.png",
)
async def test_screenshots(browser: Browser, base_url: str, make_user: Any, home_id: int) -> None:
    """Writes the screenshots of docs/ (desktop 1440x900, mobile 360x740)."""
    DOCS.mkdir(exist_ok=True)
    desktop = {"width": 1440, "height": 900}
    _, page, _ = await new_page(browser, base_url, viewport=desktop)
    await expect(page.locator("#auth")).to_be_visible()
    await page.screenshot(path=DOCS / "sign-in.png")
    _, page, _ = await new_page(browser, base_url, viewport=MOBILE)
    await page.get_by_role("button", name="Create an account").click()
    await page.get_by_label("Username", exact=True).fill("new")
    await page.locator("#auth-submit").click()
    await page.screenshot(path=DOCS / "sign-in-mobile.png")

    alice = await make_user("alice")
    bob = await make_user("bob")
    carol = await make_user("carol")
    await make_user("dmitri")
    design = await alice.post(
        "/api/channels",
        {"name": "design", "description": "Mockups and reviews", "members": ["bob", "carol"]},
        expect=201,
    )
    await alice.post("/api/channels", {"name": "releases", "members": ["bob"]}, expect=201)
    await bob.send(home_id, "Morning all! The staging deploy is green again.")
    await carol.send(home_id, "Nice. I'll look at the flaky upload test after lunch.")
    await alice.send(home_id, "Thanks both!\nRelease notes are in the doc.")
    await alice.send(home_id, "Hey Otter, 6 times 7")
    for text in ("New header mockups are up.", "Could you look before Thursday?"):
        await carol.send(design["channel"]["id"], text)
    direct = await bob.post("/api/direct", {"username": "alice"}, expect=201)
    await bob.send(direct["channel"]["id"], "Got five minutes for the release checklist?")

    page, _ = await open_chat(browser, base_url, alice, viewport=desktop)
    await expect(page.locator("#message-list li.msg.bot").last).to_contain_text("42")
    await page.wait_for_timeout(300)
    await page.screenshot(path=DOCS / "chat-desktop.png")
    await sidebar_item(page, "bob").click()
    await send(page, "Sure, calling you now.")
    await page.wait_for_timeout(200)
    await page.screenshot(path=DOCS / "direct-desktop.png")

    page, _ = await open_chat(browser, base_url, alice, viewport=MOBILE)
    await expect(page.locator("#message-list li.msg.bot").last).to_contain_text("42")
    await page.wait_for_timeout(300)
    await page.screenshot(path=DOCS / "chat-mobile.png")
    await page.get_by_role("button", name="Show channels").first.click()
    await page.wait_for_timeout(400)
    await page.screenshot(path=DOCS / "chat-mobile-sidebar.png")
