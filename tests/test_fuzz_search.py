"""Property-based tests of search (GET /api/search) and of the page around a
message (?around=SEQ), with the harness of tests/test_fuzz.py: for every
request no 5xx and no hang, an error has the one shape, and nothing changes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from test_fuzz import (
    EDGE_INTS,
    FUZZ_SETTINGS,
    NASTY_TEXT,
    World,
    _quote,
    any_chars,
    channel_ids,
    queries,
    world,  # noqa: F401 (the module-scoped fixture: one app and database here)
)

QUERY_PIECES = [
    '"', "from:", "in:", "before:", "after:", "FROM:", "In:", "from:alice", "in:general",
    "before:2026-01-01", "after:0000-01-01", "after:9999-12-31", "before:2026-02-30",
    "hello", "héllo", "HELLO", "hel", "x", " ", "  ", ":", "&", "|", "!", "(", ")", "'",
    "\\", "<->", "<2>", ":*", "@", "#", "-", "日本", "🎉", "\x00", "\ud800", "%", "+",
]  # fmt: skip
search_text = st.one_of(
    st.lists(st.sampled_from(QUERY_PIECES), max_size=15).map("".join),
    st.text(max_size=60),
    st.text(any_chars, max_size=20),
    st.sampled_from([*NASTY_TEXT, "x" * 501, " ".join(["w"] * 17), '"' + "a " * 30 + '"']),
)
cursors = st.one_of(
    st.none(),
    st.sampled_from(["0.0", "1.1", "-1.5", "1765000000000000.99", "9" * 19 + ".1", "x", ""]),
    st.tuples(st.integers(-(10**20), 10**20), st.integers(-5, 2**64)).map(
        lambda t: f"{t[0]}.{t[1]}"
    ),
    st.text(max_size=12),
)


@FUZZ_SETTINGS
@given(q=search_text, before=cursors, limit=st.one_of(st.none(), st.integers(-3, 300)))
def test_fuzz_search(world: World, q: str, before: str | None, limit: int | None) -> None:  # noqa: F811
    parts = [f"q={_quote(q)}"]
    if before is not None:
        parts.append(f"before={_quote(before)}")
    if limit is not None:
        parts.append(f"limit={limit}")
    for user in ("alice", "carol"):
        world.request("GET", "/api/search?" + "&".join(parts), as_user=user)


@FUZZ_SETTINGS
@given(query=queries)
def test_fuzz_search_query_strings(world: World, query: str) -> None:  # noqa: F811
    world.request("GET", f"/api/search?{query}")


@FUZZ_SETTINGS
@given(
    data=st.data(),
    around=st.one_of(
        st.sampled_from(["1", "2", "3", "0", "-1", "", "x", "٣", "1.5"]),
        st.sampled_from([str(v) for v in EDGE_INTS if v < 10**30]),
    ),
    extra=st.sampled_from(["", "&limit=1", "&limit=0", "&limit=500", "&before=2", "&after=1"]),
)
def test_fuzz_around(world: World, data: st.DataObject, around: str, extra: str) -> None:  # noqa: F811
    channel = data.draw(channel_ids(world), label="channel")
    world.request("GET", f"/api/channels/{channel}/messages?around={_quote(around)}{extra}")
