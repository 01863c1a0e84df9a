"""Notifications in a real browser (issue 11): desktop notifications while
the tab is hidden, the per-channel setting, muted channels, the title and
favicon counts, and "mark all as read".

Only the permission is granted by Playwright (grant_permissions); the page
constructs real Notification objects, which an init script also records.

The page is made hidden by the least stub that works: headless Chromium
reports every page as "visible" whatever is in front (tried: another page
of the context brought to front, a tab made with Target.createTarget
newWindow=false and activated, window.open, a minimized window through
Browser.setWindowBounds, focus emulation turned off, and all of these with
headed Chromium on the headless Ozone platform; Chromium 156). So an init
script overrides document.visibilityState / document.hidden with a flag the
test sets, and fires a real `visibilitychange` event, as a tab switch does.
Everything else (the events, the Notification constructor and permission,
the page's reading logic) is the real thing.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import Browser, Page, expect
from test_browser import (  # noqa: F401 (fixtures)
    DESKTOP,
    base_url,
    browser,
    messages,
    sidebar_item,
)

RECORD_AND_HIDE = """
(() => {
  const Real = window.Notification;
  window.__notifications = [];
  window.__permissionRequests = 0;
  class Recorded extends Real {
    constructor(title, options = {}) {
      super(title, options);
      window.__notifications.push({ title, body: options.body || "", tag: options.tag || "" });
      window.__raised = window.__raised || {};
      window.__raised[options.tag || ""] = this;
    }
    static requestPermission(...args) {
      window.__permissionRequests += 1;
      return Real.requestPermission(...args);
    }
  }
  window.Notification = Recorded;
  let hidden = false;
  Object.defineProperty(Document.prototype, "visibilityState", {
    configurable: true,
    get: () => (hidden ? "hidden" : "visible"),
  });
  Object.defineProperty(Document.prototype, "hidden", { configurable: true, get: () => hidden });
  window.__setHidden = (value) => {
    hidden = value;
    document.dispatchEvent(new Event("visibilitychange"));
  };
})();
"""


def origin(base_url: str) -> str:  # noqa: F811
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


async def notify_page(
    browser: Browser,  # noqa: F811
    base_url: str,  # noqa: F811
    user: Any,
    grant: bool = True,
) -> Page:
    context = await browser.new_context(viewport=DESKTOP)
    if grant:
        await context.grant_permissions(["notifications"], origin=origin(base_url))
    await context.add_init_script(RECORD_AND_HIDE)
    await context.add_cookies(
        [{"name": "chatterwerks_session", "value": user.token, "url": base_url}]
    )
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    await page.goto(base_url)
    await expect(page.locator("#me-name")).to_have_text(user.username)
    return page


async def notifications(page: Page) -> list[dict]:
    return await page.evaluate("window.__notifications")


async def test_permission_is_asked_only_on_a_click(
    browser: Browser,  # noqa: F811
    base_url: str,  # noqa: F811
    make_user: Any,
) -> None:
    alice = await make_user("alice")
    page = await notify_page(browser, base_url, alice, grant=False)
    button = page.locator("#notify-permission")
    await expect(button).to_be_visible()
    await expect(button).to_have_text("Enable desktop notifications")
    await expect(button).to_have_attribute("data-permission", "default")
    assert await page.evaluate("window.__permissionRequests") == 0  # never on load
    await button.click()
    assert await page.evaluate("window.__permissionRequests") == 1
    # Headless Chromium answers the prompt by itself; the control shows the answer.
    state = await page.evaluate("Notification.permission")
    await expect(button).to_have_attribute("data-permission", state)
    # Granted: the control says so and asks no more.
    granted = await notify_page(browser, base_url, alice)
    await expect(granted.locator("#notify-permission")).to_have_text("Desktop notifications on")
    await expect(granted.locator("#notify-permission")).to_be_disabled()
    assert page.errors == [] and granted.errors == []  # type: ignore[attr-defined]


async def test_notifications_title_favicon_and_read_all(
    browser: Browser,  # noqa: F811
    base_url: str,  # noqa: F811
    make_user: Any,
) -> None:
    bob = await make_user("bob")
    alice = await make_user("alice")
    team = (await bob.post("/api/channels", {"name": "team", "members": ["alice"]}, expect=201))[
        "channel"
    ]["id"]
    noisy = (await bob.post("/api/channels", {"name": "noisy", "members": ["alice"]}, expect=201))[
        "channel"
    ]["id"]
    dm = (await bob.post("/api/direct", {"username": "alice"}, expect=201))["channel"]["id"]
    await alice.call("PUT", f"/api/channels/{noisy}/settings", {"notify": "none"}, expect=200)
    await bob.send(team, "from before the page loaded @alice")

    page = await notify_page(browser, base_url, alice)
    await expect(page.locator("#channel-title")).to_have_text("Home")
    await expect(page.locator("#notify-permission")).to_have_text("Desktop notifications on")
    # What was there at load never notifies, even once the tab is hidden.
    await page.locator("#mark-all-read").click()
    await expect(page).to_have_title("Chatterwerks")
    await page.evaluate("window.__setHidden(true)")
    assert await page.evaluate("document.visibilityState") == "hidden"

    await bob.send(team, "a plain message in a group")
    await bob.send(noisy, "@alice in a muted channel")
    await alice.send(dm, "my own message")
    mention = await bob.send(team, "hey @alice, look at this")
    direct = await bob.send(dm, "psst, alice")
    await expect(page).to_have_title("(@2 · 3) Chatterwerks", timeout=10_000)
    raised = await notifications(page)
    assert raised == [
        {
            "title": "bob in #team",
            "body": "hey @alice, look at this",
            "tag": f"{team}:{mention['seq']}",
        },
        {"title": "bob", "body": "psst, alice", "tag": f"{dm}:{direct['seq']}"},
    ]
    # The muted channel: no unread badge, only its mention.
    item = sidebar_item(page, "noisy")
    await expect(item.locator(".badge")).to_be_hidden()
    await expect(item.locator(".mention-badge")).to_have_text("@1")
    await expect(sidebar_item(page, "team").locator(".badge")).to_have_text("2")
    # The favicon: a drawn badge with the counts.
    icon = page.locator("link[rel=icon]")
    await expect(icon).to_have_attribute("data-mentions", "2")
    await expect(icon).to_have_attribute("data-unread", "3")
    assert (await icon.get_attribute("href")).startswith("data:image/png;base64,")

    # Clicking the notification opens the channel at the message.
    await page.evaluate("window.__setHidden(false)")
    await page.evaluate(f"window.__raised['{team}:{mention['seq']}'].onclick()")
    await expect(page.locator("#channel-title")).to_have_text("#team")
    target = page.locator(f"#message-list li.msg[data-seq='{mention['seq']}']")
    await expect(target).to_be_in_viewport()
    await expect(target).to_have_class(re.compile(r"\bmsg-flash\b"))
    # Reading #team there: its unread and its mention go.
    await expect(page).to_have_title("(@1 · 1) Chatterwerks")

    # Mark all as read clears the rest, and the favicon goes back to the logo.
    await page.locator("#mark-all-read").click()
    await expect(page).to_have_title("Chatterwerks")
    await expect(item.locator(".mention-badge")).to_be_hidden()
    await expect(icon).to_have_attribute("data-mentions", "0")
    assert not (await icon.get_attribute("href")).startswith("data:")
    me = {c["id"]: c for c in (await alice.get("/api/me"))["channels"]}
    assert all(c["unread"] == 0 and c["mentions"] == 0 for c in me.values())
    assert len(await notifications(page)) == 2
    assert page.errors == []  # type: ignore[attr-defined]


async def test_channel_setting_in_the_header(
    browser: Browser,  # noqa: F811
    base_url: str,  # noqa: F811
    make_user: Any,
) -> None:
    bob = await make_user("bob")
    alice = await make_user("alice")
    team = (await bob.post("/api/channels", {"name": "team", "members": ["alice"]}, expect=201))[
        "channel"
    ]["id"]
    page = await notify_page(browser, base_url, alice)
    await sidebar_item(page, "team").click()
    select = page.locator("#notify-select")
    await expect(select).to_have_value("mentions")  # a group's default
    await select.select_option("all")

    async def setting() -> str:
        return (await alice.get(f"/api/channels/{team}"))["channel"]["notify"]

    await expect(select).to_have_value("all")
    for _ in range(50):
        if await setting() == "all":
            break
        await page.wait_for_timeout(100)
    assert await setting() == "all"
    # Muted: while hidden, a mention does not notify, a plain message adds no badge.
    await select.select_option("none")
    for _ in range(50):
        if await setting() == "none":
            break
        await page.wait_for_timeout(100)
    assert await setting() == "none"
    await sidebar_item(page, "Home").click()
    await page.evaluate("window.__setHidden(true)")
    await bob.send(team, "plain")
    await bob.send(team, "@alice are you there")
    item = sidebar_item(page, "team")
    await expect(item.locator(".mention-badge")).to_have_text("@1")
    await expect(item.locator(".badge")).to_be_hidden()
    await expect(page).to_have_title("(@1) Chatterwerks")
    assert await notifications(page) == []
    # The setting follows the user: another browser shows it.
    other = await notify_page(browser, base_url, alice)
    await sidebar_item(other, "team").click()
    await expect(other.locator("#notify-select")).to_have_value("none")
    assert page.errors == [] and other.errors == []  # type: ignore[attr-defined]


async def test_click_opens_a_message_older_than_the_newest_page(
    browser: Browser,  # noqa: F811
    base_url: str,  # noqa: F811
    make_user: Any,
) -> None:
    bob = await make_user("bob")
    alice = await make_user("alice")
    team = (await bob.post("/api/channels", {"name": "team", "members": ["alice"]}, expect=201))[
        "channel"
    ]["id"]
    page = await notify_page(browser, base_url, alice)
    await page.evaluate("window.__setHidden(true)")
    mention = await bob.send(team, "@alice the one to find")
    for i in range(60):  # more than a history page (50) after it
        await bob.send(team, f"chatter {i}")
    await expect(page).to_have_title("(@1 · 61) Chatterwerks")
    assert [n["tag"] for n in await notifications(page)] == [f"{team}:{mention['seq']}"]
    await page.evaluate("window.__setHidden(false)")
    await page.evaluate(f"window.__raised['{team}:{mention['seq']}'].onclick()")
    await expect(page.locator("#channel-title")).to_have_text("#team")
    target = page.locator(f"#message-list li.msg[data-seq='{mention['seq']}']")
    await expect(target).to_be_in_viewport()
    await expect(target.locator(".msg-text")).to_have_text("@alice the one to find")

    # A burst does not flood the desktop: at most 4 notifications per 5 s
    # (8 direct messages sent at once: the cap, not the clock, stops them).
    await page.evaluate("window.__setHidden(true)")
    dm = (await bob.post("/api/direct", {"username": "alice"}, expect=201))["channel"]["id"]
    for i in range(8):
        await bob.send(dm, f"burst {i}")
    await expect(sidebar_item(page, "bob").locator(".badge")).to_have_text("8")
    burst = [n for n in await notifications(page) if n["title"] == "bob"]
    assert 1 <= len(burst) < 8, burst
    assert page.errors == []  # type: ignore[attr-defined]
