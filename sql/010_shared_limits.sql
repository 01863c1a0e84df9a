-- 010: rate limits shared by every process and host (chatterwerks/ratelimit.py,
-- sql/queries/limits.sql).
--
-- One token bucket per (rule, key): `tokens` left as of `updated_at`,
-- refilling one every `interval` seconds up to the burst; a rule's burst and
-- interval come with each statement (they are settings, not data).
-- `granted` is what the last statement handed out, so one
-- INSERT ... ON CONFLICT both takes and answers.
--
-- UNLOGGED: no WAL, so a take costs no WAL flush and nothing for the
-- standbys. The price: after a crash of PostgreSQL, or on a promoted
-- standby, the table is empty, so every bucket is full again. That lets a
-- client through one extra burst after a rare event; counters are not data,
-- and no message, session or account depends on them.
CREATE UNLOGGED TABLE rate_buckets (
    rule       text NOT NULL,
    key        text NOT NULL,
    tokens     double precision NOT NULL,
    updated_at timestamptz NOT NULL,
    granted    integer NOT NULL,
    -- When the bucket is full again and the row says nothing: it can go.
    full_at    timestamptz NOT NULL,
    PRIMARY KEY (rule, key)
);

-- The tokens a bucket holds now: what it had, plus the refill since, capped
-- at the burst. Time is the database's: one clock for every host. now() is
-- when the transaction started, which for a taker that waited on the row
-- lock can be before the last update: that counts as no time, never as less.
CREATE FUNCTION rate_refilled(tokens float8, since timestamptz, burst float8, every float8)
RETURNS float8 LANGUAGE sql STABLE
RETURN least(burst, tokens + greatest(0, extract(epoch FROM now() - since))::float8 / every);

-- How many of `want` tokens a bucket holding `held` hands out: as many as it
-- has whole, none if not one.
CREATE FUNCTION rate_granted(held float8, want integer)
RETURNS integer LANGUAGE sql IMMUTABLE
RETURN CASE WHEN held >= 1 THEN least(want, floor(held))::integer ELSE 0 END;
