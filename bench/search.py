"""Search benchmark: p50/p99 latency of search in a database of 1,000,000 messages.

Creates its own database (on --admin-url, default the machine's PostgreSQL),
applies the migrations, and fills it with SQL (generate_series): 1,000
users, 500 group channels, 1,000,000 messages over a year, each 5 to 20
words drawn from a Zipf-like vocabulary (rank r with probability ~ 1/r; the
top words are common English words, some are accented, the tail is made-up
words), then a user who is a member of 50 of the channels.

Then it runs each kind of query (a common word, a rare word, a prefix, a
phrase, from:, in:, before:/after:, a query with no hit) many times as that
user through the store function (chatterwerks.store.search.search: parsing
excluded, the SQL and the highlights included, on an asyncpg pool as the
server uses it) and prints p50/p99 in ms, one JSON document on stdout,
progress and the plans on stderr.

    /work/venv/bin/python bench/search.py                # ~3 min, most of it filling
    /work/venv/bin/python bench/search.py --keep-database --reuse   # again, no refill
    /work/venv/bin/python bench/search.py --explain      # print the plans too
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import asyncpg
from benchlib import calibrate, drop_database, fresh_database, summary_ms, with_database

from chatterwerks import db
from chatterwerks.search_query import parse
from chatterwerks.store import search

DEFAULT_DATABASE = "chatterwerks_bench_search"
USERS = 1_000
CHANNELS = 500
MESSAGES = 1_000_000
MEMBER_OF = 50
VOCABULARY = 20_000
# The head of the vocabulary: real words, in a plausible order of frequency,
# some accented (the rest of the 20,000 are made up from syllables).
HEAD = (
    "the to and a of i in is it you that for on we this be with have are not "
    "can do at so but just if was will what all my get like our me about know "
    "think one up out there now your they no should from how would when need "
    "release deploy meeting café review naïve résumé über façade Zürich señor "
    "coöperate jalapeño Ünïcode crème brûlée smörgåsbord Øresund Straße"
).split()
SYLLABLES = "ka lo mi ne ru sa te vi zo pa be do fu gi ha ja ku li mo nu po ri su ta we yo".split()

log_file = sys.stderr


def log(message: str) -> None:
    print(message, file=log_file, flush=True)


FILL = [
    # The vocabulary: rank 1..V; made-up words from three syllables of the rank.
    """CREATE TEMP TABLE vocab AS
       SELECT r AS rank,
              COALESCE(($1::text[])[r],
                       ($2::text[])[1 + r % 26] || ($2::text[])[1 + (r / 26) % 26]
                       || ($2::text[])[1 + (r / 676) % 26] || r::text) AS word
       FROM generate_series(1, $3::int) AS r""",
    """INSERT INTO users (username, password_hash)
       SELECT 'user' || i, NULL FROM generate_series(1, $1::int) AS i""",
    """INSERT INTO channels (kind, name)
       SELECT 'group', 'channel-' || i FROM generate_series(1, $1::int) AS i""",
]


async def fill(conn: asyncpg.Connection) -> None:
    started = time.monotonic()
    await conn.execute("SET maintenance_work_mem = '256MB'")
    await conn.execute(FILL[0], HEAD, SYLLABLES, VOCABULARY)
    await conn.execute(FILL[1], USERS)
    await conn.execute(FILL[2], CHANNELS)
    # Indexes are built once after the fill (much faster than row by row);
    # the same definitions as the migrations made.
    indexes = await conn.fetch(
        """SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS def
           FROM pg_index WHERE indrelid = 'messages'::regclass
             AND NOT indisprimary AND NOT indisunique"""
    )
    for index in indexes:
        await conn.execute(f"DROP INDEX {index['name']}")
    # Message g: channel 1 + g % C (every channel's seq runs 1, 2, ...), an
    # author at random, a time spread evenly over the past year in g's order
    # (so message ids are in time order, as in life), words by Zipf: rank
    # floor(V^u) for uniform u has P(rank <= r) = log r / log V.
    await conn.execute(
        """INSERT INTO messages (channel_id, seq, number, author_id, text, created_at)
           SELECT c.first + g % $2, g / $2 + 1, g / $2 + 1, u.first + (random() * ($3 - 1))::int,
                  array_to_string(ARRAY(
                      SELECT w.words[floor(power($4::float8, random()))::int]
                      FROM generate_series(1, 5 + (random() * 15)::int + 0 * g)
                  ), ' '),
                  now() - interval '365 days' * (1 - g::float8 / $1)
           FROM generate_series(0, $1 - 1) AS g,
                (SELECT min(id) AS first FROM channels WHERE kind = 'group') AS c,
                (SELECT min(id) AS first FROM users WHERE username LIKE 'user%') AS u,
                (SELECT array_agg(word ORDER BY rank) AS words FROM vocab) AS w""",
        MESSAGES,
        CHANNELS,
        USERS,
        float(VOCABULARY),
    )
    log(f"  inserted {MESSAGES:,} messages in {time.monotonic() - started:.0f} s")
    for index in indexes:
        await conn.execute(index["def"])
    await conn.execute(
        """UPDATE channels c SET last_seq = n, message_count = n
           FROM (SELECT channel_id, max(seq) AS n FROM messages GROUP BY channel_id) m
           WHERE m.channel_id = c.id"""
    )
    # The searching user: a member of every tenth channel, 50 in all.
    await conn.execute(
        """INSERT INTO users (username, password_hash) VALUES ('searcher', NULL);
           INSERT INTO subscriptions (channel_id, user_id)
           SELECT c.id, u.id FROM channels c, users u
           WHERE u.username = 'searcher' AND c.kind = 'group' AND c.id % 10 = 0;
           INSERT INTO subscriptions (channel_id, user_id)
           SELECT c.id, u.id FROM channels c JOIN users u ON u.id % 500 = c.id % 500
           WHERE c.kind = 'group' AND u.username LIKE 'user%'"""
    )
    await conn.execute("VACUUM ANALYZE")
    log(f"  filled and indexed in {time.monotonic() - started:.0f} s")


async def pick_words(conn: asyncpg.Connection) -> dict[str, str]:
    """Real words of the data for each kind of query (found, not assumed)."""
    stats = await conn.fetch(
        """SELECT word, ndoc FROM ts_stat('SELECT search FROM messages')
           ORDER BY ndoc DESC"""
    )
    by_count = [(row["word"], row["ndoc"]) for row in stats]
    common = next(w for w, n in by_count if n < 0.35 * MESSAGES)
    rare = next(w for w, n in by_count if n <= 60)
    medium = next(w for w, n in by_count if n <= 0.01 * MESSAGES)
    counts = dict(by_count)
    log(f"  words: common {common!r} ({counts[common]:,} messages), "
        f"medium {medium!r} ({counts[medium]:,}), rare {rare!r} ({counts[rare]:,})")  # fmt: skip
    author = await conn.fetchval("SELECT username FROM users WHERE username = 'user7'")
    channel = await conn.fetchval(
        """SELECT c.name FROM channels c JOIN subscriptions s ON s.channel_id = c.id
           JOIN users u ON u.id = s.user_id WHERE u.username = 'searcher' ORDER BY c.id LIMIT 1"""
    )
    month_ago = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 31 * 86400))
    two_months_ago = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 62 * 86400))
    return {
        "common word": common,
        "medium word (1%)": medium,
        "rare word": rare,
        "prefix (as typed)": medium[:3],
        "accented word, typed without accents": "creme brulee ",
        "phrase": f'"{common} {medium}"',
        "two common words": f"the {common} ",
        "phrase of two common words": f'"the {common}"',
        "from:": f"from:{author}",
        "from: and a common word": f"from:{author} {common} ",
        "in:": f"in:{channel}",
        "in: and a common word": f"in:{channel} {common} ",
        "before: (a month ago) and a common word": f"before:{month_ago} {common} ",
        "after:/before: (one month) and a medium word": (
            f"after:{two_months_ago} before:{month_ago} {medium} "
        ),
        "no hit": "zzzqqq ",
    }


async def measure(url: str, runs: int, explain: bool) -> dict[str, Any]:
    pool = await db.create_pool(url, 2, 4)
    try:
        async with pool.acquire() as conn:
            user_id = await conn.fetchval("SELECT id FROM users WHERE username = 'searcher'")
            queries = await pick_words(conn)
        results = {}
        for label, q in queries.items():
            query = parse(q)
            if explain:
                await show_plan(pool, user_id, query, label, q)
            times = []
            hits = 0
            for _ in range(runs):
                started = time.perf_counter()
                page, _next = await search.search(pool, user_id, query, None, 20)
                times.append(time.perf_counter() - started)
                hits = len(page)
            summary = summary_ms(times)
            results[label] = {"q": q, "results": hits, **summary}
            log(f"  {label:48} {q[:40]!r:44} p50 {summary['p50_ms']:7.2f} ms  "
                f"p99 {summary['p99_ms']:7.2f} ms  ({hits} results)")  # fmt: skip
        return results
    finally:
        await pool.close()


async def show_plan(pool: asyncpg.Pool, user_id: int, query: Any, label: str, q: str) -> None:
    from chatterwerks.db import QUERIES

    async with pool.acquire() as conn, conn.transaction():
        scope = await conn.fetchrow(
            QUERIES.search_scope,
            user_id,
            list(query.channels) or None,
            list(query.authors) or None,
            " ".join(query.all_words()) or None,
        )
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        small = scope["scope_messages"] <= search.SMALL_SCOPE
        if small or ((query.phrases or len(query.prefix) > 1) and not scope["common_words"]):
            await conn.execute("SET LOCAL enable_indexscan = off")  # as store/search.py
        args = (
            scope["channels"],
            None,
            None,
            20,
            query.tsquery(),
            scope["authors"],
            query.before_time(),
            query.after_time(),
            scope["common_words"],
            small,
        )
        # EXPLAIN EXECUTE takes its arguments as SQL literals: quoted by the
        # server (quote_nullable), from the bench's own values.
        types = ("bigint[]", "timestamptz", "bigint", "int", "text", "bigint[]", "timestamptz",
                 "timestamptz", "boolean", "boolean")  # fmt: skip
        literals = [
            await conn.fetchval(f"SELECT quote_nullable($1::{t}) || '::{t}'", a)
            for a, t in zip(args, types, strict=True)
        ]
        await conn.execute("PREPARE bench_search AS " + QUERIES.search_messages.rstrip(";"))
        try:
            plan = await conn.fetch(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE bench_search("
                + ", ".join(literals)
                + ")"
            )
        finally:
            await conn.execute("DEALLOCATE bench_search")
    log(f"--- {label}: {q}")
    for row in plan:
        log("    " + row[0])


# What sql/006_search.sql adds to every write of a message; dropped to get
# the schema as it was before it, for the send-cost comparison.
WITHOUT_SEARCH = """
    DROP INDEX messages_created_idx;
    DROP INDEX messages_search_idx;
    ALTER TABLE messages DROP COLUMN search;
"""


async def send_cost(
    admin_url: str, rounds: int, per_round: int, durable: bool = True
) -> dict[str, Any]:
    """The send path with and without the search column and indexes: two
    fresh databases (the second with 006's additions dropped), one sender
    each, store.messages.send() of 12-word messages, in alternating rounds
    so that the machine's noise falls on both alike."""
    from chatterwerks.store import messages

    variants: dict[str, Any] = {}
    pools = {}
    try:
        for name in ("with_search", "without_search"):
            database = f"{DEFAULT_DATABASE}_{name}"
            url = await fresh_database(admin_url, database)
            conn = await asyncpg.connect(url)
            try:
                if name == "without_search":
                    await conn.execute(WITHOUT_SEARCH)
                if not durable:
                    # Without the wait for the disk, what is left is the work
                    # a send does: the cost of the vector and the index shows.
                    await conn.execute(f'ALTER DATABASE "{database}" SET synchronous_commit = off')
                user = await conn.fetchval(
                    "INSERT INTO users (username) VALUES ('sender') RETURNING id"
                )
                channel = await conn.fetchval(
                    "INSERT INTO channels (kind, name) VALUES ('group', 'c') RETURNING id"
                )
                await conn.execute(
                    "INSERT INTO subscriptions (channel_id, user_id) VALUES ($1, $2)", channel, user
                )
                otter = await conn.fetchval("SELECT id FROM users WHERE username = 'otter'")
            finally:
                await conn.close()
            pools[name] = (await db.create_pool(url, 1, 1), database, user, channel, otter)
            variants[name] = []
        words = (HEAD * 3)[:60]
        for r in range(rounds):
            for name, (pool, _, user, channel, otter) in pools.items():
                for i in range(per_round):
                    text = " ".join(words[(r * per_round + i + k * 7) % 60] for k in range(12))
                    started = time.perf_counter()
                    await messages.send(pool, channel, user, text, None, otter)
                    variants[name].append(time.perf_counter() - started)
        return {name: summary_ms(times) for name, times in variants.items()}
    finally:
        for pool, database, *_ in pools.values():
            await pool.close()
            await drop_database(admin_url, database)


async def main(args: argparse.Namespace) -> None:
    if args.send_cost:
        calibration = await calibrate(with_database(args.admin_url, "postgres"))
        log(f"machine: {calibration}")
        result = {
            commit: await send_cost(args.admin_url, args.rounds, 200, commit == "durable")
            for commit in ("durable", "synchronous_commit_off")
        }
        for name, summary in [(f"{c}, {n}", v) for c, r in result.items() for n, v in r.items()]:
            log(f"  send, {name:38} p50 {summary['p50_ms']:6.3f} ms  "
                f"p99 {summary['p99_ms']:6.3f} ms  mean {summary['mean_ms']:6.3f} ms  "
                f"({summary['count']} sends)")  # fmt: skip
        print(json.dumps({"what": "store.messages.send(), one sender", "calibration": calibration,
                          "send": result}, indent=2))  # fmt: skip
        return
    url = with_database(args.admin_url, args.database)
    if not args.reuse:
        log(f"filling {args.database} ...")
        url = await fresh_database(args.admin_url, args.database)
        conn = await asyncpg.connect(url)
        try:
            await fill(conn)
        finally:
            await conn.close()
    try:
        calibration = await calibrate(url)
        log(f"machine: {calibration}")
        results = await measure(url, args.runs, args.explain)
        print(
            json.dumps(
                {
                    "what": "store.search.search(), 20 results a page, user in 50 of 500 channels",
                    "messages": MESSAGES,
                    "runs_per_query": args.runs,
                    "calibration": calibration,
                    "results": results,
                },
                indent=2,
            )
        )
    finally:
        if not args.keep_database:
            await drop_database(args.admin_url, args.database)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL server where the bench may create its database",
    )  # fmt: skip
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--runs", type=int, default=200, help="runs of each query")
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="use the kept database as it is")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of each")
    parser.add_argument(
        "--send-cost", action="store_true",
        help="instead: the cost of a send with and without the search column and indexes",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=10, help="--send-cost: rounds of 200 sends")
    asyncio.run(main(parser.parse_args()))
