"""Issue 11 in the browser: "alice is typing…" seen by the other user, and
presence dots that change live (online, away after the page's idle time,
offline once the page is gone)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Browser, expect
from test_browser import base_url, browser, open_chat, send, sidebar_item  # noqa: F401


@pytest.fixture
def settings(settings):
    # Idle after 2 s without input; offline 1 s after the last poll.
    return settings.replace(away_after=2.0, presence_grace=1.0, limit_typing_user=None)


async def test_typing_indicator_seen_by_the_other_user(
    browser: Browser,  # noqa: F811
    base_url: str,  # noqa: F811
    make_user: Any,
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    alice_page, alice_problems = await open_chat(browser, base_url, alice)
    bob_page, bob_problems = await open_chat(browser, base_url, bob)
    indicator = bob_page.locator("#typing-indicator")
    await expect(indicator).to_be_hidden()
    box = alice_page.locator("#composer-input")
    # A notice reaches polls parked at that moment; the page sends one every
    # 3 s while its user types, so keep typing until it shows.
    for _ in range(20):
        await box.press_sequentially("hel")
        try:
            await expect(indicator).to_have_text("alice is typing…", timeout=1000)
            break
        except AssertionError:
            continue
    await expect(indicator).to_have_text("alice is typing…")
    await expect(alice_page.locator("#typing-indicator")).to_be_hidden()  # not to herself
    # Her message ends it at once.
    await box.fill("hello bob")
    await box.press("Enter")
    await expect(bob_page.locator("#message-list li.msg").last).to_contain_text("hello bob")
    await expect(indicator).to_be_hidden()
    alice_problems.check()
    bob_problems.check()


async def test_a_presence_dot_changes_live(
    browser: Browser,  # noqa: F811
    base_url: str,  # noqa: F811
    make_user: Any,
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    await alice.post("/api/direct", {"username": "bob"}, expect=201)
    bob_page, bob_problems = await open_chat(browser, base_url, bob)
    dot = sidebar_item(bob_page, "alice").locator(".presence-dot")
    await expect(dot).to_have_attribute("data-presence", "offline")
    # alice opens the chat: online, in bob's sidebar without a reload.
    alice_page, alice_problems = await open_chat(browser, base_url, alice)
    await expect(dot).to_have_attribute("data-presence", "online")
    # No input on her page for 2 s: away. She moves the mouse: online again.
    await expect(dot).to_have_attribute("data-presence", "away", timeout=15000)
    await alice_page.mouse.move(50, 50)
    await alice_page.mouse.move(80, 90)
    await expect(dot).to_have_attribute("data-presence", "online")
    # Her page goes without a goodbye: offline after the grace.
    await alice_page.context.close()
    await expect(dot).to_have_attribute("data-presence", "offline", timeout=15000)
    bob_problems.check()
    del alice_problems
