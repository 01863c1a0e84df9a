"""Search in the browser: the search box (/ and Ctrl+K), results as you type
with highlights, and a hit opening in its channel at the message (loaded
with ?around=SEQ, older than the first history page), which then pages
older and newer and goes live; the mentions view opens at the message too;
and the dialog at 360 px."""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import expect
from test_browser import (  # noqa: F401 (fixtures)
    MOBILE,
    base_url,
    browser,
    messages,
    open_chat,
    send,
    sidebar_item,
)

FOUND = re.compile(r"(^|\s)msg-found(\s|$)")


async def seqs_shown(page: Any) -> list[int]:
    return await messages(page).evaluate_all("els => els.map(e => Number(e.dataset.seq))")


async def test_search_as_you_type_and_jump_to_an_old_message(
    browser: Any,  # noqa: F811
    base_url: str,  # noqa: F811
    make_user: Any,
) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    created = await alice.post("/api/channels", {"name": "log", "members": ["bob"]}, expect=201)
    channel_id = created["channel"]["id"]
    for i in range(1, 151):
        text = "the Ünïcode migration plan, <b>not bold</b>" if i == 20 else f"line {i}"
        await (alice if i % 3 else bob).send(channel_id, text)
    page, problems = await open_chat(browser, base_url, alice)
    await sidebar_item(page, "log").click()
    await expect(page.locator("#message-list li[data-seq='150']")).to_be_in_viewport()

    # "/" in the composer is text, not the shortcut.
    await page.locator("#composer-input").press("/")
    await expect(page.locator("#search-dialog")).to_be_hidden()
    await page.locator("#composer-input").fill("")
    await page.locator("#messages").click()
    await page.keyboard.press("/")
    box = page.locator("#search-input")
    await expect(box).to_be_focused()

    # Results as you type: "unico" (no accents, a prefix) finds "Ünïcode".
    await box.press_sequentially("unico", delay=30)
    hit = page.locator("#search-results .search-hit")
    await expect(hit).to_have_count(1)
    await expect(hit.locator("mark")).to_have_text("Ünïcode")
    await expect(hit.locator(".mention-item-where")).to_have_text("#log")
    await expect(hit.locator(".author")).to_have_text("alice")
    # The text is text: the markup shows as typed, no element is made of it.
    await expect(hit.locator(".mention-item-text")).to_contain_text("<b>not bold</b>")
    assert await hit.locator(".mention-item-text b").count() == 0

    # A new query replaces the old results; a bad one says why.
    await box.fill('"unclosed')
    await expect(page.locator("#search-status")).to_contain_text("never closed")
    await expect(hit).to_have_count(0)
    await box.fill("migration plan ")
    await expect(hit).to_have_count(1)

    # The hit opens in its channel at the message (seq 20: not in the newest
    # page of 50), scrolled to and highlighted.
    await hit.click()
    await expect(page.locator("#search-dialog")).to_be_hidden()
    target = page.locator("#message-list li[data-seq='20']")
    await expect(target).to_be_in_viewport()
    await expect(target).to_have_class(FOUND)
    shown = await seqs_shown(page)
    assert 20 in shown and max(shown) < 150, shown

    # Older and newer pages load on scrolling, and the run joins the live end.
    scroller = page.locator("#messages")
    await scroller.evaluate("el => { el.scrollTop = 0; }")
    await expect(page.locator("#message-list li[data-seq='1']")).to_be_attached()
    for _ in range(10):
        await scroller.evaluate("el => { el.scrollTop = el.scrollHeight; }")
        if 150 in await seqs_shown(page):
            break
        await page.wait_for_timeout(300)
    await expect(page.locator("#message-list li[data-seq='150']")).to_be_attached()
    assert await seqs_shown(page) == list(range(1, 151))
    await scroller.evaluate("el => { el.scrollTop = el.scrollHeight; }")
    await bob.send(channel_id, "live again")
    await expect(page.locator("#message-list li[data-seq='151']")).to_be_in_viewport()

    # Ctrl+K opens it again, with the last query.
    await page.locator("#messages").click()
    await page.keyboard.press("Control+k")
    await expect(box).to_be_focused()
    problems.check()


async def test_a_mention_opens_at_the_message(
    browser: Any,  # noqa: F811
    base_url: str,  # noqa: F811
    make_user: Any,
) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    created = await alice.post("/api/channels", {"name": "ops", "members": ["bob"]}, expect=201)
    channel_id = created["channel"]["id"]
    await bob.send(channel_id, "@alice can you check the backup?")
    for i in range(80):
        await bob.send(channel_id, f"noise {i}")
    page, problems = await open_chat(browser, base_url, alice)
    await page.locator("#open-mentions").click()
    await page.locator("#mentions-list .mention-item").click()
    target = page.locator("#message-list li[data-seq='1']")
    await expect(target).to_be_in_viewport()
    await expect(target).to_have_class(FOUND)
    problems.check()


async def test_search_at_360_px(
    browser: Any,  # noqa: F811
    base_url: str,  # noqa: F811
    make_user: Any,
) -> None:
    alice = await make_user("alice")
    created = await alice.post("/api/channels", {"name": "team"}, expect=201)
    await alice.send(created["channel"]["id"], "a fairly long message about the quarterly review")
    page, problems = await open_chat(browser, base_url, alice, viewport=MOBILE)
    await page.locator("#open-search").click()
    await page.locator("#search-input").fill("quarterly ")
    hit = page.locator("#search-results .search-hit")
    await expect(hit).to_have_count(1)
    box = await page.locator("#search-dialog").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= MOBILE["width"]
    assert await page.evaluate("document.documentElement.scrollWidth") <= MOBILE["width"]
    await hit.click()
    await expect(page.locator("#channel-title")).to_have_text("#team")
    await expect(messages(page).filter(has_text="quarterly review")).to_be_in_viewport()
    problems.check()
