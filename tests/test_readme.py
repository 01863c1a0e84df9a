"""The README's curl tour runs as written: its ```sh blocks under "## The API",
pasted in order into one shell, against a live server on a fresh database.

Every request must succeed (2xx) unless its line ends in `|| true  # STATUS
code`, which the README uses for an error shown on purpose; such a line must
then get exactly that status and error code. The answers are checked too:
the messages the tour sends arrive in its long-polls, Otter answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import start_server, stop_server

README = Path(__file__).resolve().parent.parent / "README.md"
DOCUMENTED_API = "API=http://127.0.0.1:8080/api"
BLOCK_MARK = "@@@ next tour block"
ON_PURPOSE = re.compile(
    r"^(?P<command>curl .*\S)\s+\|\|\s+true\s+#\s+(?P<status>\d{3})\s+(?P<code>[a-z_]+)\s*$"
)

# Runs before the tour: stop at the first failure; curl fails on any 4xx/5xx
# (printing the body, as the README's plain curl would), ignores ~/.curlrc
# (-q) and keeps the status line of its last answer for expect_error.
PREAMBLE = r"""
set -euo pipefail
shopt -s expand_aliases  # as in the interactive shell the README has in mind
trap 'echo "tour failed at: $BASH_COMMAND" >&2' ERR
curl() {
  command curl -q --fail-with-body --show-error --max-time 30 \
    --dump-header "$TOUR_TMP/headers" "$@"
}
expect_error() {  # STATUS CODE COMMAND...: a line the README marks "|| true  # STATUS code"
  local status=$1 code=$2 got
  shift 2
  : > "$TOUR_TMP/headers"
  if "$@" > "$TOUR_TMP/body"; then
    echo "expected $status $code, but it succeeded: $*" >&2
    return 1
  fi
  cat "$TOUR_TMP/body"
  read -r _ got _ < "$TOUR_TMP/headers" || true
  if [ "$got" != "$status" ]; then
    echo "expected HTTP $status, got ${got:-no answer}: $*" >&2
    return 1
  fi
  python3 -c 'import json, sys; sys.exit(json.load(sys.stdin)["error"]["code"] != sys.argv[1])' \
    "$code" < "$TOUR_TMP/body" || { echo "expected error code $code: $*" >&2; return 1; }
}
"""


def tour_blocks() -> list[tuple[str, str]]:
    """(subsection title, code) of each ```sh block under "## The API", in order."""
    text = README.read_text()
    start = text.index("\n## The API\n")
    end = text.index("\n## ", start + 1)
    blocks, title = [], "The API"
    pattern = re.compile(r"^### (?P<title>[^\n]+)$|^```sh\n(?P<code>.*?)^```$", re.M | re.S)
    for match in pattern.finditer(text, start, end):
        if match["title"]:
            title = match["title"]
        else:
            blocks.append((title, match["code"]))
    return blocks


def as_script(code: str) -> str:
    """A block with each error-on-purpose line run through expect_error."""
    lines = []
    for line in code.replace("\\\n", " ").splitlines():
        if "|| true" in line:
            marked = ON_PURPOSE.match(line)
            assert marked, f"say which error this line shows (|| true  # STATUS code): {line}"
            line = f"expect_error {marked['status']} {marked['code']} {marked['command']}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def json_values(output: str) -> list[Any]:
    """The JSON documents (and bare numbers, such as curl's -w status codes)
    that the tour printed back to back."""
    decoder, space = json.JSONDecoder(), re.compile(r"\s*")
    values, at = [], space.match(output).end()
    while at < len(output):
        value, at = decoder.raw_decode(output, at)
        values.append(value)
        at = space.match(output, at).end()
    return values


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[str]:
    """`chatterwerks serve` on a free port, default rate limits, cheap argon2."""
    process, base = await start_server(database_url)
    try:
        yield base
    finally:
        stop_server(process)


def test_the_tour_is_found_and_marks_its_errors():
    blocks = tour_blocks()
    titles = [title for title, _ in blocks]
    assert titles[0] == "The API" and "Real-time: long-polling" in titles, titles
    assert blocks[0][1].startswith(DOCUMENTED_API + "\n")
    unmarked = [
        line
        for _, code in blocks
        for line in code.replace("\\\n", " ").splitlines()
        if "|| true" in line and not ON_PURPOSE.match(line)
    ]
    assert unmarked == [], "say which error each of these shows: || true  # STATUS code"


@pytest.mark.skipif(shutil.which("curl") is None, reason="the tour needs curl")
async def test_the_tour_runs_as_written(server: str, tmp_path: Path):
    blocks = tour_blocks()
    script = PREAMBLE + "".join(
        f"printf '\\n%s\\n' '{BLOCK_MARK}'\n" + as_script(code) for _, code in blocks
    )
    script = script.replace(DOCUMENTED_API, f"API={server}/api", 1)
    (tmp_path / "tour.sh").write_text(script)
    shell = await asyncio.create_subprocess_exec(
        "bash",
        str(tmp_path / "tour.sh"),
        cwd=tmp_path,
        env={**os.environ, "TOUR_TMP": str(tmp_path), "no_proxy": "*", "NO_PROXY": "*"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(shell.communicate(), timeout=120)
    stdout, stderr = out.decode(), err.decode()
    assert shell.returncode == 0, f"{stdout}\n--- stderr ---\n{stderr}"

    # What each subsection's blocks printed, as JSON values in order.
    printed: dict[str, list[Any]] = {}
    for (title, _), output in zip(blocks, stdout.split(BLOCK_MARK)[1:], strict=True):
        printed.setdefault(title, []).extend(json_values(output))

    # Alice registered and signed in; carol registered; Home is Alice's first channel.
    registered, carol, me = printed["The API"]
    assert registered["user"]["username"] == "alice" and carol["user"]["username"] == "carol"
    assert me["user"]["username"] == "alice" and me["channels"][0]["kind"] == "home"

    # The same Idempotency-Key twice: 201, then 200 with the same message.
    sent = printed["Messages and read markers"]
    first, first_status, repeat, repeat_status = sent[1:5]
    assert (first_status, repeat_status) == (201, 200)
    assert first["message"] == repeat["message"]

    # The tail answers at once with the newest message, then with bob's, which
    # arrived while it waited; the events poll wakes for bob's second message.
    newest, waited, events_now, events_next, streamed = printed["Real-time: long-polling"]
    assert len(newest["messages"]) == 1, newest
    assert [(m["author"]["username"], m["text"]) for m in waited["messages"]] == [
        ("bob", "hi alice")
    ], waited
    assert waited["messages"][0]["seq"] == newest["messages"][0]["seq"] + 1
    assert events_now["events"] == [], events_now
    assert [(e["type"], e["message"]["text"]) for e in events_next["events"]] == [
        ("message", "mockups are up")
    ], events_next
    assert streamed == events_next  # the stream's first line: the poll's answer

    *_, history = printed["Otter"]
    assert [(m["author"]["username"], m["text"]) for m in history["messages"]] == [
        ("otter", "(3 + 4) * 2.5 = 17.5")
    ], history

    # Both shown errors came with the documented code (expect_error checked them).
    codes = [value["error"]["code"] for value in printed["Password and logging out"]]
    assert codes == ["wrong_password", "invalid_token"]

    check_messages_that_live(printed["Edits, deletions, reactions, threads and mentions"])
    check_files(printed["Files"])


def check_files(printed: list[Any]) -> None:
    """Two uploads (multipart, then raw), a send with both, a refused resend."""
    dot, sent, refused, same, unsigned = printed
    assert dot["file"]["content_type"] == "image/png", dot
    assert (dot["file"]["width"], dot["file"]["height"]) == (1, 1)
    files = sent["message"]["files"]
    assert [f["name"] for f in files] == ["dot.png", "build.log"], sent
    assert files[1]["content_type"] == "text/plain; charset=utf-8"
    assert files[0]["thumbnail_url"] == f"/api/files/{files[0]['id']}/thumbnail"
    assert sent["message"]["text"] == ""
    assert refused["error"]["code"] == "invalid_file"
    assert same == "same bytes"
    assert unsigned["error"]["code"] == "invalid_token"


def apply_events(view: dict[int, dict], events: list[dict]) -> None:
    """A client's view of one channel (seq -> Message), kept as docs/api.md
    says: every event sets what it carries, nothing is counted."""
    for event in events:
        kind = event["type"]
        if kind == "message":
            message = event["message"]
            view[message["seq"]] = dict(message)
            root = view.get(message["reply_to"]) if message["reply_to"] else None
            if root is not None:
                root.update(message["thread"])
        elif kind == "message_edited":
            view[event["seq"]].update(
                {name: event[name] for name in ("text", "edited_at", "mentions")}
            )
        elif kind == "message_deleted":
            view[event["seq"]].update(
                deleted=True, text="", edited_at=None, reactions=[], mentions=[]
            )
        elif kind == "reaction":
            # Replace that emoji's entry in place (append it if new); none at count 0.
            message = view[event["seq"]]
            entry = {name: event[name] for name in ("emoji", "count", "users")}
            emoji = [r["emoji"] for r in message["reactions"]]
            at = emoji.index(entry["emoji"]) if entry["emoji"] in emoji else len(emoji)
            message["reactions"][at : at + 1] = [entry] if entry["count"] else []


def check_messages_that_live(printed: list[Any]) -> None:
    """The tour's edit, reactions, thread reply, mention and deletion did what
    it says, and its events polls told a client enough to end with the
    database's view."""
    edited, reply, replies, (root,), found, channel, first_poll = (
        printed[0]["message"],
        printed[3]["message"],
        printed[4]["messages"],
        printed[5]["messages"],
        printed[6]["mentions"],
        printed[7]["channel"],
        printed[8],
    )
    (tombstone,) = printed[10]["messages"]
    second_poll = printed[12]
    codes = [value["error"]["code"] for value in printed if "error" in value]
    assert codes == ["not_author", "invalid_emoji", "not_allowed", "message_not_found"]

    assert edited["text"] == "lunch at one" and edited["edited_at"] is not None, edited
    assert (reply["reply_to"], reply["mentions"]) == (edited["seq"], ["alice"]), reply
    assert reply["thread"] == {"reply_count": 1, "last_reply_at": reply["created_at"]}, reply
    assert replies == [reply]
    bob = reply["author"]["id"]
    assert root["reactions"] == [{"emoji": "👍", "count": 1, "users": [bob]}], root
    assert (root["reply_count"], root["last_reply_at"]) == (1, reply["created_at"]), root
    assert root["text"] == "lunch at one" and root["edited_at"] == edited["edited_at"]
    assert [(m["channel_id"], m["message"]) for m in found] == [(channel["id"], reply)], found
    assert channel["mentions"] == 1, channel

    kinds = {event["type"] for event in first_poll["events"]}
    assert {"message", "message_edited", "reaction"} <= kinds, first_poll
    view: dict[int, dict] = {}
    apply_events(view, [e for e in first_poll["events"] if e["type"] != "read"])
    assert view == {root["seq"]: root, reply["seq"]: reply}, view

    assert tombstone["deleted"] and tombstone["text"] == "" and tombstone["reactions"] == []
    assert tombstone["reply_count"] == 1, tombstone  # its thread stays
    assert second_poll["events"] == [
        {"type": "message_deleted", "channel_id": channel["id"], "seq": root["seq"]}
    ], second_poll
    apply_events(view, second_poll["events"])
    assert view[root["seq"]] == tombstone
