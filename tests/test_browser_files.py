"""Files in the browser (issue 12): attaching by paste, drop and the
paperclip, upload progress and cancel, the too-large error, thumbnails seen
live, the full-size viewer, file cards that download, and all of it at 360 px.

Playwright against the real server (upload, storage, thumbnails); the
fixtures and helpers are test_browser's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
from typing import Any

import aiohttp
import pytest
import test_browser
from PIL import Image
from playwright.async_api import Browser, Page, expect
from test_browser import MOBILE, PageProblems, in_team, messages, team

# test_browser's fixtures, under their names here.
browser = test_browser.browser
base_url = test_browser.base_url

LIMIT = 1024 * 1024  # a small per-file limit, so "too large" needs no big file


@pytest.fixture
def settings(settings: Any) -> Any:
    return dataclasses.replace(settings, max_upload_bytes=LIMIT)


def png(width: int, height: int, color: tuple[int, int, int] = (200, 60, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


async def upload(user: Any, channel_id: int, name: str, data: bytes, type_: str) -> dict:
    """Uploads through the API as `user` (what curl -F does): the File."""
    form = aiohttp.FormData(quote_fields=False)  # the name as a browser sends it
    form.add_field("file", data, filename=name, content_type=type_)
    response = await user.client.post(
        f"/api/channels/{channel_id}/files", data=form, headers=user.headers
    )
    body = await response.json()
    assert response.status == 201, body
    return body["file"]


async def send_files(
    user: Any, channel_id: int, text: str, files: list[dict], reply_to: int | None = None
) -> dict:
    body: dict[str, Any] = {"text": text, "files": [f["id"] for f in files]}
    if reply_to is not None:
        body["reply_to"] = reply_to
    sent = await user.post(f"/api/channels/{channel_id}/messages", body, expect=201)
    return sent["message"]


# A PNG drawn in the page, put on the clipboard's DataTransfer, pasted into
# the composer: what a screenshot paste is.
PASTE_PNG = """async ([selector, width, height]) => {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#3a7";
  ctx.fillRect(0, 0, width, height);
  ctx.fillStyle = "#fff";
  ctx.fillRect(width / 4, height / 4, width / 2, height / 2);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  const data = new DataTransfer();
  data.items.add(new File([blob], "screenshot.png", { type: "image/png" }));
  const event = new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true });
  document.querySelector(selector).dispatchEvent(event);
  return event.defaultPrevented;
}"""

# Files dropped onto the conversation: `files` as [name, type, size] (zero bytes).
DROP_FILES = """([selector, files]) => {
  const data = new DataTransfer();
  for (const [name, type, size] of files) {
    data.items.add(new File([new Uint8Array(size)], name, { type }));
  }
  const target = document.querySelector(selector);
  for (const type of ["dragenter", "dragover", "drop"]) {
    target.dispatchEvent(new DragEvent(type, { dataTransfer: data, bubbles: true, cancelable: true }));
  }
}"""


def chips(page: Page, where: str = "#composer") -> Any:
    return page.locator(f"{where} .file-tray .file-chip")


async def slow_uploads(page: Page) -> Any:
    """Throttles the page's uploads (Chromium's network emulation), so an
    upload is seen in flight; returns the CDP session to lift it."""
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Network.enable")
    await cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": 64 * 1024,
        },
    )
    return cdp


async def fast_uploads(cdp: Any) -> None:
    await cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )


async def test_paste_an_image_the_other_sees_it_live_and_opens_it(
    browser: Browser, base_url: str, make_user: Any
) -> None:
    alice, bob, channel_id = await team(make_user)
    alice_page, alice_problems = await in_team(browser, base_url, alice)
    bob_page, bob_problems = await in_team(browser, base_url, bob)

    box = alice_page.locator("#composer-input")
    await box.focus()
    pasted = await alice_page.evaluate(PASTE_PNG, ["#composer-input", 800, 600])
    assert pasted is True  # the page took the paste as a file
    chip = chips(alice_page)
    await expect(chip).to_have_count(1)
    await expect(chip.locator(".file-chip-name")).to_have_text("screenshot.png")
    await expect(chip).to_have_class("file-chip done")
    await expect(chip.locator(".file-chip-bar")).to_be_hidden()
    # Uploaded, the chip shows the server's thumbnail of it.
    preview = chip.locator("img.file-chip-thumb")
    await expect(preview).to_have_js_property("complete", True)
    assert await preview.evaluate("img => img.naturalWidth") > 0
    # Text is optional with a file: Enter sends the image alone.
    await expect(alice_page.locator("#send")).to_be_enabled()
    await box.press("Enter")
    await expect(chip).to_have_count(0)
    await expect(alice_page.locator("#composer .file-tray")).to_be_hidden()

    sent = await bob.get(f"/api/channels/{channel_id}/messages")
    last = sent["messages"][-1]
    assert last["text"] == ""
    [file] = last["files"]
    assert (file["name"], file["content_type"], file["width"], file["height"]) == (
        "screenshot.png",
        "image/png",
        800,
        600,
    )

    # Bob's page shows it live, as a thumbnail with its box reserved.
    thumb = messages(bob_page).last.locator(".file-thumb img")
    await expect(thumb).to_have_attribute("src", file["thumbnail_url"])
    await expect(thumb).to_have_attribute("width", "360")
    await expect(thumb).to_have_attribute("height", "270")
    await expect(thumb).to_have_attribute("loading", "lazy")
    await expect(thumb).to_have_js_property("complete", True)
    assert await thumb.evaluate("img => img.naturalWidth") > 0

    # A click opens the full image; Esc closes it and focus goes back.
    await messages(bob_page).last.locator(".file-thumb").click()
    viewer = bob_page.locator("#file-viewer")
    await expect(viewer).to_be_visible()
    await expect(viewer.locator(".viewer-name")).to_have_text("screenshot.png")
    full = viewer.locator(".viewer-img")
    await expect(full).to_have_attribute("src", file["url"])
    await expect(full).to_have_js_property("complete", True)
    assert await full.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [800, 600]
    await expect(viewer.get_by_role("button", name="Close the image")).to_be_focused()
    await bob_page.keyboard.press("Escape")
    await expect(viewer).to_be_hidden()
    await expect(messages(bob_page).last.locator(".file-thumb")).to_be_focused()
    # Enter on the focused thumbnail opens it again; a click on the image closes.
    await bob_page.keyboard.press("Enter")
    await expect(viewer).to_be_visible()
    await full.click()
    await expect(viewer).to_be_hidden()
    # The composer still works after the viewer (Escape did not end anything else).
    await expect(bob_page.locator("#channel-title")).to_have_text("#team")

    # Deleting the message takes its files off both pages.
    await alice.call("DELETE", f"/api/channels/{channel_id}/messages/{last['seq']}", expect=204)
    for page in (alice_page, bob_page):
        await expect(messages(page).last.locator(".msg-deleted")).to_be_visible()
        await expect(messages(page).last.locator(".msg-files")).to_have_count(0)
    alice_problems.check()
    bob_problems.check()


async def test_a_file_from_the_paperclip_is_a_card_that_downloads(
    browser: Browser, base_url: str, make_user: Any
) -> None:
    alice, bob, _ = await team(make_user)
    alice_page, alice_problems = await in_team(browser, base_url, alice)
    bob_page, bob_problems = await in_team(browser, base_url, bob)
    log = b"".join(b"line %d: all good\n" % n for n in range(200))

    async with alice_page.expect_file_chooser() as chooser:
        await alice_page.get_by_role("button", name="Attach files to the message").click()
    await (await chooser.value).set_files(
        [{"name": "build.log", "mimeType": "text/plain", "buffer": log}]
    )
    chip = chips(alice_page)
    await expect(chip).to_have_class("file-chip done")
    await expect(chip.locator(".file-chip-status")).to_have_text("3.6 KB")
    await alice_page.locator("#composer-input").fill("the build log")
    await alice_page.locator("#composer-input").press("Enter")
    await expect(chip).to_have_count(0)

    for page in (alice_page, bob_page):
        last = messages(page).last
        await expect(last.locator(".msg-text")).to_have_text("the build log")
        card = last.locator("a.file-card")
        await expect(card.locator(".file-card-name")).to_have_text("build.log")
        await expect(card.locator(".file-card-meta")).to_have_text("3.6 KB · Text")
        await expect(last.locator(".file-thumb")).to_have_count(0)
    async with bob_page.expect_download() as download_info:
        await messages(bob_page).last.locator("a.file-card").click()
    download = await download_info.value
    assert download.suggested_filename == "build.log"
    with open(await download.path(), "rb") as fh:
        assert fh.read() == log
    alice_problems.check()
    bob_problems.check()


async def test_too_large_refused_cancel_removes_and_drop_attaches(
    browser: Browser, base_url: str, make_user: Any
) -> None:
    alice, bob, channel_id = await team(make_user)
    page, problems = await in_team(browser, base_url, alice)
    limit = "document.querySelector('meta[name=\"chatterwerks-max-upload\"]')"
    # The page carries the server's per-file limit.
    assert await page.evaluate(f"{limit}.content") == str(LIMIT)

    # Too large for the limit in the page: an error on the chip, no upload.
    await page.evaluate(DROP_FILES, ["#messages", [["huge.bin", "", LIMIT + 1]]])
    chip = chips(page)
    await expect(chip).to_have_class("file-chip error")
    await expect(chip.locator(".file-chip-status")).to_contain_text("Too large")
    await expect(chip.locator(".file-chip-status")).to_contain_text("1 MB")
    await expect(page.locator("#send")).to_be_disabled()  # nothing to send
    # The server says so too, should the page not know the limit (an old page).
    await page.evaluate(f"{limit}.remove()")
    await page.evaluate(DROP_FILES, ["#messages", [["huge2.bin", "", LIMIT + 1]]])
    await expect(chips(page).nth(1)).to_have_class("file-chip error")
    await expect(chips(page).nth(1).locator(".file-chip-status")).to_have_text(
        "A file has at most 1 MiB."
    )
    # A failed chip is dismissed with its button.
    await page.get_by_role("button", name="Dismiss huge.bin").click()
    await page.get_by_role("button", name="Dismiss huge2.bin").click()
    await expect(chips(page)).to_have_count(0)

    # A slow upload shows its progress, holds the send, and cancels.
    cdp = await slow_uploads(page)
    await page.evaluate(DROP_FILES, ["#messages", [["slow.bin", "", 600_000]]])
    chip = chips(page)
    await expect(chip).to_have_class("file-chip uploading")
    bar = chip.locator(".file-chip-bar")
    await expect(bar).to_be_visible()
    # Polled from here: wait_for_function evals its predicate in the page,
    # which the page's CSP (no 'unsafe-eval') refuses in Playwright 1.38.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not await page.evaluate(
        "() => { const b = document.querySelector('#composer .file-chip-bar');"
        " return !!b && b.value > 0 && b.value < b.max; }"
    ):
        assert loop.time() < deadline, "the upload never showed partial progress"
        await asyncio.sleep(0.02)
    await page.locator("#composer-input").fill("with a file on its way")
    await expect(page.locator("#send")).to_be_disabled()
    await page.get_by_role("button", name="Cancel the upload of slow.bin").click()
    await expect(chips(page)).to_have_count(0)
    await expect(page.locator("#send")).to_be_enabled()
    await fast_uploads(cdp)
    await page.locator("#composer-input").press("Enter")
    await expect(messages(page).last.locator(".msg-text")).to_have_text("with a file on its way")
    await expect(messages(page).last.locator(".msg-files")).to_have_count(0)

    # Dropped files attach, at most 10 to a message.
    many = [[f"f{n}.txt", "text/plain", 10] for n in range(11)]
    await page.evaluate(DROP_FILES, ["#messages", many])
    await expect(chips(page)).to_have_count(10)
    await expect(page.locator("#composer-error")).to_have_text("A message takes at most 10 files.")
    await expect(page.locator("#composer .file-chip.done")).to_have_count(10)
    await page.locator("#composer-input").press("Enter")
    await expect(messages(page).last.locator("a.file-card")).to_have_count(10)
    history = await bob.get(f"/api/channels/{channel_id}/messages")
    sent = [m for m in history["messages"] if m["files"]]
    assert len(sent) == 1
    assert [f["name"] for f in sent[0]["files"]] == [f"f{n}.txt" for n in range(10)]
    problems.check()


async def test_files_at_360_px_and_in_a_thread(
    browser: Browser, base_url: str, make_user: Any
) -> None:
    alice, bob, channel_id = await team(make_user)
    wide = await upload(bob, channel_id, "panorama.png", png(2400, 800), "image/png")
    doc = await upload(
        bob, channel_id, "a rather long report name, final v2.pdf", b"%PDF-1.4\n", "application/pdf"
    )
    root = await send_files(bob, channel_id, "from the trip", [wide, doc])
    tall = await upload(bob, channel_id, "tall.png", png(300, 1200), "image/png")
    await send_files(bob, channel_id, "", [tall], reply_to=root["seq"])

    context = await browser.new_context(viewport=MOBILE, has_touch=True, is_mobile=True)
    await context.add_cookies(
        [{"name": "chatterwerks_session", "value": alice.token, "url": base_url}]
    )
    page = await context.new_page()
    problems = PageProblems(page)
    await page.goto(base_url + f"#channel-{channel_id}")
    await expect(page.locator("#channel-title")).to_have_text("#team")
    target = messages(page).filter(has_text="from the trip")
    thumb = target.locator(".file-thumb img")
    await expect(thumb).to_have_js_property("complete", True)
    card = target.locator("a.file-card")
    await expect(card.locator(".file-card-meta")).to_have_text("9 B · PDF")
    # Nothing sticks out sideways: the thumbnail and the card fit the message.
    for item in (thumb, card):
        box = await item.bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= MOBILE["width"]
    thumb_box = await thumb.bounding_box()
    assert thumb_box is not None
    assert abs(thumb_box["width"] / thumb_box["height"] - 3) < 0.05  # its ratio kept
    assert await page.evaluate("document.documentElement.scrollWidth") <= MOBILE["width"]

    # The viewer fits the screen.
    await target.locator(".file-thumb").tap()
    viewer = page.locator("#file-viewer")
    await expect(viewer).to_be_visible()
    full = viewer.locator(".viewer-img")
    await expect(full).to_have_js_property("complete", True)
    box = await full.bounding_box()
    assert box is not None
    assert box["x"] >= 0 and box["x"] + box["width"] <= MOBILE["width"] + 0.5
    assert box["y"] >= 0 and box["y"] + box["height"] <= MOBILE["height"] + 0.5
    await viewer.get_by_role("button", name="Close the image").tap()
    await expect(viewer).to_be_hidden()

    # In the thread, the reply's image shows and opens the same way.
    await target.locator(".thread-link").tap()
    reply = page.locator("#thread-list li.msg").last
    await expect(reply.locator(".file-thumb img")).to_have_js_property("complete", True)
    # Its box fits 360 x 270 (the natural ratio may round the height a little).
    await expect(reply.locator(".file-thumb img")).to_have_attribute("height", "270")
    reply_box = await reply.locator(".file-thumb img").bounding_box()
    assert reply_box is not None and reply_box["height"] < 275
    await reply.locator(".file-thumb").tap()
    await expect(viewer.locator(".viewer-name")).to_have_text("tall.png")
    await page.keyboard.press("Escape")
    await expect(viewer).to_be_hidden()
    await expect(page.locator("#thread")).to_be_visible()  # Esc closed only the viewer

    # A reply with a file from the thread's own paperclip.
    async with page.expect_file_chooser() as chooser:
        await page.get_by_role("button", name="Attach files to the reply").tap()
    await (await chooser.value).set_files(
        [{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}]
    )
    await expect(chips(page, "#thread-composer")).to_have_class("file-chip done")
    await page.locator("#thread-send").tap()
    await expect(page.locator("#thread-list li.msg").last.locator(".file-card-name")).to_have_text(
        "notes.txt"
    )
    assert await page.evaluate("document.documentElement.scrollWidth") <= MOBILE["width"]
    problems.check()
