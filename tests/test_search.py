"""Search (GET /api/search) and the page around a message (?around=SEQ):
membership, every operator, prefixes, phrases, folding, highlights, edits
and deletions, paging, limits, errors; and the query parser on its own
(Hypothesis: it never crashes, its tsquery text is only words and syntax)."""

from __future__ import annotations

import datetime
import re

import pytest
from helpers import assert_error
from hypothesis import given, settings
from hypothesis import strategies as st

from chatterwerks import keys
from chatterwerks.db import QUERIES
from chatterwerks.ratelimit import Limit, SharedLimiter
from chatterwerks.search_query import (
    MAX_QUERY_LENGTH,
    MAX_WORDS,
    Query,
    QueryError,
    fold,
    parse,
)
from chatterwerks.store import search as search_store


async def group(owner, *members, name="team"):
    body = await owner.post("/api/channels", {"name": name, "members": list(members)}, expect=201)
    return body["channel"]["id"]


async def search(user, q, expect=200, **params):
    return await user.get("/api/search", expect=expect, params={"q": q, **params})


def texts(body) -> list[str]:
    return [r["message"]["text"] for r in body["results"]]


def marked(result) -> list[str]:
    """The highlighted pieces of a result's text."""
    text = result["message"]["text"]
    return [text[start:end] for start, end in result["highlights"]]


# ---------------------------------------------------------------------------
# Who finds what


async def test_members_find_outsiders_and_removed_members_do_not(make_user):
    alice, bob, carol = await make_user("alice"), await make_user("bob"), await make_user("carol")
    team = await group(alice, "bob", name="team")
    other = await group(carol, name="other")
    await alice.send(team, "the zebra plan is ready")
    await carol.send(other, "a zebra of carol's, in a channel alice is not in")
    body = await search(alice, "zebra")
    assert texts(body) == ["the zebra plan is ready"]
    assert [r["channel_id"] for r in body["results"]] == [team] and body["next"] is None
    assert texts(await search(bob, "zebra")) == ["the zebra plan is ready"]
    # Carol, an outsider of team, finds only her own channel's message.
    assert texts(await search(carol, "zebra")) == [
        "a zebra of carol's, in a channel alice is not in"
    ]
    # Bob is removed: he finds nothing of team any more, old or new.
    await alice.call("DELETE", f"/api/channels/{team}/members/bob", expect=204)
    await alice.send(team, "a second zebra, after bob left")
    assert (await search(bob, "zebra"))["results"] == []
    # Back as a member, he reads the channel again, so he finds it all again.
    await alice.post(f"/api/channels/{team}/members", {"username": "bob"}, expect=200)
    assert len((await search(bob, "zebra"))["results"]) == 2


async def test_direct_channels_are_searched_by_their_two_people_only(make_user):
    alice, bob, carol = await make_user("alice"), await make_user("bob"), await make_user("carol")
    direct = (await alice.post("/api/direct", {"username": "bob"}, expect=201))["channel"]["id"]
    await bob.send(direct, "psst, the password hint is walrus")
    assert texts(await search(alice, "walrus")) == ["psst, the password hint is walrus"]
    assert (await search(carol, "walrus"))["results"] == []


# ---------------------------------------------------------------------------
# The query language


async def test_all_words_must_match_in_any_order_and_case(make_user):
    alice = await make_user("alice")
    cid = await group(alice)
    await alice.send(cid, "Deploy the release on Friday")
    await alice.send(cid, "release notes only")
    assert texts(await search(alice, "friday RELEASE ")) == ["Deploy the release on Friday"]
    assert len((await search(alice, "release "))["results"]) == 2
    assert (await search(alice, "release monday "))["results"] == []


async def test_accents_and_case_are_folded_both_ways(make_user):
    alice = await make_user("alice")
    cid = await group(alice)
    await alice.send(cid, "Ünïcode is hard, said the naïve café owner in Zürich")
    await alice.send(cid, "plain unicode and cafe")
    body = await search(alice, "unicode ")
    assert len(body["results"]) == 2
    accented = next(r for r in body["results"] if r["message"]["text"].startswith("Ü"))
    assert marked(accented) == ["Ünïcode"]
    assert len((await search(alice, "CAFÉ "))["results"]) == 2
    assert texts(await search(alice, "zurich naive ")) == [
        "Ünïcode is hard, said the naïve café owner in Zürich"
    ]


async def test_the_last_word_is_also_a_prefix_while_typing(make_user):
    alice = await make_user("alice")
    cid = await group(alice)
    await alice.send(cid, "the deployment went fine")
    await alice.send(cid, "we deploy daily")
    body = await search(alice, "deplo")
    assert len(body["results"]) == 2
    assert sorted(m for r in body["results"] for m in marked(r)) == ["deploy", "deployment"]
    # A space after it: the word is finished, so it must match whole.
    assert (await search(alice, "deplo "))["results"] == []
    assert texts(await search(alice, "deploy ")) == ["we deploy daily"]
    # Only the last word is a prefix.
    assert (await search(alice, "deplo daily"))["results"] == []


async def test_phrases_match_words_side_by_side_in_order(make_user):
    alice = await make_user("alice")
    cid = await group(alice)
    await alice.send(cid, "the release notes are out")
    await alice.send(cid, "notes on the release")
    await alice.send(cid, "release, Notes!")  # punctuation between is still side by side
    body = await search(alice, '"release notes"')
    assert sorted(texts(body)) == ["release, Notes!", "the release notes are out"]
    for result in body["results"]:
        assert [piece.lower() for piece in marked(result)] in (
            ["release notes"],
            ["release, notes"],
        )


async def test_punctuated_chunks_are_phrases_of_their_words(make_user):
    alice = await make_user("alice")
    cid = await group(alice)
    await alice.send(cid, "write to bob@example.com or see https://example.com/docs at 10:30")
    await alice.send(cid, "com example")
    found = "write to bob@example.com or see https://example.com/docs at 10:30"
    assert texts(await search(alice, "bob@example.com ")) == [found]
    assert texts(await search(alice, "10:30 ")) == [found]
    assert len((await search(alice, "example "))["results"]) == 2
    assert texts(await search(alice, "example.com/docs ")) == [found]


async def test_from_and_in_filter_by_author_and_channel(make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    team = await group(alice, "bob", name="Team Room")
    ops = await group(alice, "bob", name="ops")
    await alice.send(team, "alice on lunch in team")
    await bob.send(team, "bob on lunch in team")
    await bob.send(ops, "bob on lunch in ops")
    assert sorted(texts(await search(alice, "lunch from:BOB"))) == [
        "bob on lunch in ops",
        "bob on lunch in team",
    ]
    assert texts(await search(alice, "lunch from:@bob in:ops")) == ["bob on lunch in ops"]
    assert sorted(texts(await search(alice, 'in:"team room" lunch'))) == [
        "alice on lunch in team",
        "bob on lunch in team",
    ]
    # Several from: are any of them; filters alone list everything they pick.
    assert len((await search(alice, "from:alice from:bob lunch"))["results"]) == 3
    assert texts(await search(alice, "from:alice")) == ["alice on lunch in team"]
    assert (await search(alice, "lunch from:nobody"))["results"] == []
    assert (await search(alice, "lunch in:nowhere"))["results"] == []


async def test_before_and_after_take_whole_days_in_utc(app, make_user):
    alice = await make_user("alice")
    cid = await group(alice)
    for day in (1, 2, 3):
        await alice.send(cid, f"standup {day}")
    async with app[keys.POOL].acquire() as conn:
        for day in (1, 2, 3):
            await conn.execute(
                "UPDATE messages SET created_at = $1 WHERE text = $2",
                datetime.datetime(2026, 3, day, 12, tzinfo=datetime.UTC),
                f"standup {day}",
            )
    assert texts(await search(alice, "standup before:2026-03-02")) == ["standup 1"]
    assert texts(await search(alice, "standup after:2026-03-02")) == ["standup 3"]
    assert texts(await search(alice, "after:2026-03-01 before:2026-03-03")) == ["standup 2"]
    assert (await search(alice, "standup after:2026-03-03"))["results"] == []


async def test_results_are_newest_first_and_carry_the_message(make_user):
    alice = await make_user("alice")
    cid = await group(alice)
    sent = [await alice.send(cid, f"ping number {i}") for i in range(3)]
    body = await search(alice, "ping ")
    assert [r["message"] for r in body["results"]] == sent[::-1]
    assert all(r["channel_id"] == cid for r in body["results"])


# ---------------------------------------------------------------------------
# Highlights


async def test_highlights_are_code_point_offsets_in_non_ascii_text(make_user):
    alice = await make_user("alice")
    cid = await group(alice)
    text = "🎉👨‍👩‍👧 Größe: the ÉLAN of 日本語 and élan again, Größer"
    await alice.send(cid, text)
    body = await search(alice, "elan grosse 日本語 ")
    [result] = body["results"]
    spans = result["highlights"]
    assert marked(result) == ["Größe", "ÉLAN", "日本語", "élan"]
    # Code points, not UTF-16 units or bytes: the emoji before count 1 each.
    assert spans[0] == [text.index("Größe"), text.index("Größe") + 5]
    assert spans == sorted(spans) and all(a < b for a, b in spans)
    body = await search(alice, "größ")  # a prefix marks the whole word
    assert marked(body["results"][0]) == ["Größe", "Größer"]


async def test_no_html_is_made_of_the_text(make_user):
    alice = await make_user("alice")
    cid = await group(alice)
    await alice.send(cid, "<b>bold</b> & <script>alert(1)</script>")
    [result] = (await search(alice, "bold "))["results"]
    assert result["message"]["text"] == "<b>bold</b> & <script>alert(1)</script>"
    assert marked(result) == ["bold"]
    assert [r["message"]["text"] for r in (await search(alice, "script "))["results"]]


# ---------------------------------------------------------------------------
# Edits and deletions


async def test_edits_and_deletions_are_searched_as_they_are_now(app, make_user):
    alice = await make_user("alice")
    cid = await group(alice)
    sent = await alice.send(cid, "the old wording")
    path = f"/api/channels/{cid}/messages/{sent['seq']}"
    await alice.call("PATCH", path, {"text": "the new phrasing"}, expect=200)
    assert (await search(alice, "wording "))["results"] == []
    [hit] = (await search(alice, "phrasing "))["results"]
    assert hit["message"]["text"] == "the new phrasing" and hit["message"]["edited_at"]
    await alice.call("DELETE", path, expect=204)
    assert (await search(alice, "phrasing "))["results"] == []
    assert (await search(alice, "from:alice"))["results"] == []
    # The tombstone has left the index: its vector is empty.
    async with app[keys.POOL].acquire() as conn:
        vector = await conn.fetchval(
            "SELECT search::text FROM messages WHERE channel_id = $1 AND seq = $2",
            cid,
            sent["seq"],
        )
    assert vector == ""


@pytest.mark.parametrize("small_scope", [search_store.SMALL_SCOPE, 0])
async def test_common_words_take_the_walk_and_find_the_same(
    app, make_user, monkeypatch, small_scope
):
    """With statistics that call every word common, the statement tests the
    vector row by row instead of through the index: same answers; and the
    same again when the scope counts as large (the plans of a big database:
    the channel as a filter, the walk newest-first)."""
    monkeypatch.setattr(search_store, "SMALL_SCOPE", small_scope)
    alice = await make_user("alice")
    cid = await group(alice)
    for i in range(3):
        await alice.send(cid, f"common ground number {i}")
    await alice.send(cid, "ground common, reversed")
    async with app[keys.POOL].acquire() as conn:
        author = await conn.fetchval("SELECT id FROM users WHERE username = 'alice'")
        # Enough rows that ANALYZE keeps "common" and "ground" as most common elements.
        await conn.execute(
            """INSERT INTO messages (channel_id, seq, number, author_id, text)
               SELECT $1, 100 + g, 100 + g, $2, 'filler common ground ' || g
               FROM generate_series(1, 300) AS g""",
            cid,
            author,
        )
        await conn.execute("ANALYZE messages")
        scope = await conn.fetchrow(
            "SELECT common_words FROM (" + QUERIES.search_scope.rstrip(";") + ") s",
            author,
            None,
            None,
            "common ground",
        )
        assert scope["common_words"] is True
        rare = await conn.fetchrow(
            "SELECT common_words FROM (" + QUERIES.search_scope.rstrip(";") + ") s",
            author,
            None,
            None,
            "common reversed",
        )
        assert rare["common_words"] is False
    body = await search(alice, '"common ground" number', limit="50")
    assert texts(body) == [f"common ground number {i}" for i in (2, 1, 0)]
    assert marked(body["results"][0]) == ["common ground", "number"]
    assert texts(await search(alice, "ground reversed ")) == ["ground common, reversed"]
    assert len((await search(alice, "common ground ", limit="50"))["results"]) == 50


# ---------------------------------------------------------------------------
# Paging and limits


async def test_paging_with_the_cursor_has_no_gaps_and_no_duplicates(make_user):
    alice = await make_user("alice")
    cid = await group(alice)
    for i in range(23):
        await alice.send(cid, f"item {i}")
    await alice.send(cid, "something else")
    seen, before, pages = [], None, 0
    while True:
        params = {"limit": "5"} | ({"before": before} if before else {})
        body = await search(alice, "item ", **params)
        pages += 1
        seen += texts(body)
        before = body["next"]
        if before is None:
            break
        assert isinstance(before, str)
    assert pages == 5
    assert seen == [f"item {i}" for i in range(22, -1, -1)]


async def test_limits_and_defaults(make_user):
    alice = await make_user("alice")
    cid = await group(alice)
    for i in range(55):
        await alice.send(cid, f"bulk {i}")
    assert len((await search(alice, "bulk "))["results"]) == 20
    assert len((await search(alice, "bulk ", limit="1000"))["results"]) == 50
    assert_error(await search(alice, "bulk", expect=400, limit="0"), "invalid_limit")
    assert_error(await search(alice, "bulk", expect=400, before="x"), "invalid_before")


@pytest.mark.parametrize(
    ("q", "position"),
    [
        ('hello "world', 6),
        ("from:", 5),
        ("before:2026-02-30", 7),
        ("after:yesterday", 6),
        ("before:2026-01-01 x before:2026-01-02", 20),
        ("from:a", 5),
        ("", 0),
        ("   ", 0),
        ("!!! ...", 0),
        ("x" * (MAX_QUERY_LENGTH + 1), MAX_QUERY_LENGTH),
        (" ".join(f"w{i}" for i in range(MAX_WORDS + 1)), 54),
        ("a\x00b", 1),
    ],
)
async def test_bad_queries_get_400_with_the_position(make_user, q, position):
    alice = await make_user("alice")
    body = await search(alice, q, expect=400)
    assert_error(body, "invalid_query")
    assert f"at position {position})" in body["error"]["message"]


async def test_search_needs_a_session(client):
    response = await client.get("/api/search", params={"q": "x"})
    assert response.status == 401


# ---------------------------------------------------------------------------
# The parser alone


def test_parse_gives_terms_filters_and_a_safe_tsquery():
    query = parse('Deploy "release notes" from:@Alice in:#ops after:2026-01-31 exampl')
    assert query.words == ("Deploy",)
    assert query.phrases == (("release", "notes"),)
    assert query.prefix == ("exampl",)
    assert query.authors == ("Alice",) and query.channels == ("ops",)
    assert query.after == datetime.date(2026, 1, 31) and query.before is None
    assert query.after_time() == datetime.datetime(2026, 2, 1, tzinfo=datetime.UTC)
    assert query.tsquery() == "Deploy & (release <-> notes) & (exampl:*)"
    # Unknown operators are words; tsquery syntax in the input is punctuation.
    assert parse("re: lunch ").words == ("re", "lunch")
    assert parse("a&b | !c <-> d:* 'e' ").tsquery() == "c & d & e & (a <-> b)"
    assert fold("Ünïcode") == "unicode" and fold("Straße") == "strasse"
    assert fold("Øresund") == "oresund"


def test_highlights_of_overlapping_terms_are_merged():
    query = parse('"big day" day ')
    assert query.highlights("a big day, big days") == [[2, 9]]


QUERY_PIECES = [
    '"', "from:", "in:", "before:", "after:", "FROM:", "2026-01-01", "x", "é", "ab", " ",
    ":", "&", "!", "(", "'", "\\", "<->", ":*", "@", "#", "日本",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(max_size=80),
        st.text(st.characters(exclude_categories=()), max_size=40),
        st.lists(st.sampled_from(QUERY_PIECES), max_size=12).map("".join),
    )
)
def test_the_parser_never_crashes_and_builds_only_safe_tsqueries(q):
    try:
        query = parse(q)
    except QueryError as exc:
        assert 0 <= exc.position <= len(q)
        return
    assert isinstance(query, Query)
    text = query.tsquery()
    if text is not None:
        # Only letters/digits (as words), & between terms, <-> in phrases,
        # parentheses, one :* at the end of the prefix.
        words = re.sub(r"\s&\s|\s<->\s|[()]|:\*", " ", text).split()
        assert words and not set("|!'\\&<>:*()-\"@").intersection("".join(words)), text
        assert text.count(":*") <= 1
    highlights = query.highlights(q)
    assert all(0 <= a < b <= len(q) for a, b in highlights)


# ---------------------------------------------------------------------------
# The page around a message


async def test_around_puts_the_message_in_the_middle(make_user):
    alice, carol = await make_user("alice"), await make_user("carol")
    cid = await group(alice)
    sent = [await alice.send(cid, f"m{i}") for i in range(30)]
    target = sent[15]["seq"]
    path = f"/api/channels/{cid}/messages"
    body = await alice.get(path, params={"around": str(target), "limit": "10"})
    seqs = [m["seq"] for m in body["messages"]]
    assert seqs == [m["seq"] for m in sent[10:20]]
    assert seqs[5] == target
    assert body["has_more_before"] and body["has_more_after"]
    # At the edges: fewer on the short side, and nothing more there.
    first = await alice.get(path, params={"around": str(sent[0]["seq"]), "limit": "10"})
    assert [m["text"] for m in first["messages"]] == [f"m{i}" for i in range(5)]
    assert not first["has_more_before"] and first["has_more_after"]
    last = await alice.get(path, params={"around": str(sent[-1]["seq"]), "limit": "10"})
    assert [m["text"] for m in last["messages"]] == [f"m{i}" for i in range(24, 30)]
    assert last["has_more_before"] and not last["has_more_after"]
    # Exactly filling: no more on either side.
    body = await alice.get(path, params={"around": str(sent[2]["seq"]), "limit": "100"})
    assert len(body["messages"]) == 30
    assert not body["has_more_before"] and not body["has_more_after"]
    # Outsiders get the channel's 404, whatever the seq.
    assert_error(
        await carol.get(path, expect=404, params={"around": str(target)}), "channel_not_found"
    )


async def test_around_a_deleted_message_shows_its_tombstone(make_user):
    alice = await make_user("alice")
    cid = await group(alice)
    sent = [await alice.send(cid, f"m{i}") for i in range(5)]
    await alice.call("DELETE", f"/api/channels/{cid}/messages/{sent[2]['seq']}", expect=204)
    path = f"/api/channels/{cid}/messages"
    body = await alice.get(path, params={"around": str(sent[2]["seq"]), "limit": "3"})
    assert [m["text"] for m in body["messages"]] == ["m1", "", "m3"]
    assert body["messages"][1]["deleted"] is True


async def test_around_errors(make_user):
    alice, bob = await make_user("alice"), await make_user("bob")
    cid = await group(alice, "bob")
    sent = await alice.send(cid, "x")
    path = f"/api/channels/{cid}/messages"
    for params in ({"around": "1", "before": "5"}, {"around": "1", "after": "0"}):
        assert_error(await alice.get(path, expect=400, params=params), "invalid_around")
    for bad in ("0", "-1", "x"):
        assert (await alice.get(path, expect=400, params={"around": bad}))["error"]["code"] in (
            "invalid_around",
        )
    assert_error(await alice.get(path, expect=404, params={"around": "999"}), "message_not_found")
    await alice.call("DELETE", f"/api/channels/{cid}/members/bob", expect=204)
    assert_error(
        await bob.get(path, expect=404, params={"around": str(sent["seq"])}), "channel_not_found"
    )


async def test_searches_are_rate_limited_per_user(app, make_user):
    """The search limit is a shared bucket like every other (ratelimit.py);
    the conftest turns it off, so it is put back here."""
    limiter = SharedLimiter("search_user", Limit(3, 60.0))
    limiter.bind(app[keys.POOL])
    app[keys.LIMITERS].search_user = limiter
    alice, bob = await make_user("alice"), await make_user("bob")
    for _ in range(3):
        await search(alice, "hello")
    response = await alice.client.get("/api/search", params={"q": "hello"}, headers=alice.headers)
    assert response.status == 429
    assert_error(await response.json(), "rate_limited")
    assert int(response.headers["Retry-After"]) >= 1
    # A bad query is answered 400 before the limit is looked at; bob has his own bucket.
    await search(alice, '"unclosed', expect=400)
    await search(bob, "hello")
