-- Shared rate limits (sql/010_shared_limits.sql, chatterwerks/ratelimit.py).
-- $1 rule, $2 key; the bucket holds at most $3 tokens and gains one every
-- $4 seconds.

-- name: take_tokens
-- Takes up to $5 tokens (as many whole ones as there are, if fewer; none if
-- there is not one) from the bucket. One statement: the row lock serialises
-- every taker on every host, so the tokens handed out never exceed what the
-- bucket had. Returns granted (0: none) and the tokens left, from which the
-- caller computes the wait.
INSERT INTO rate_buckets AS b (rule, key, tokens, updated_at, granted, full_at)
VALUES (
    $1, $2, $3::float8 - rate_granted($3::float8, $5::int), now(),
    rate_granted($3::float8, $5::int),
    now() + make_interval(secs => rate_granted($3::float8, $5::int) * $4::float8)
)
ON CONFLICT (rule, key) DO UPDATE SET
    granted = rate_granted(rate_refilled(b.tokens, b.updated_at, $3, $4), $5),
    tokens = rate_refilled(b.tokens, b.updated_at, $3, $4)
        - rate_granted(rate_refilled(b.tokens, b.updated_at, $3, $4), $5),
    updated_at = greatest(b.updated_at, now()),
    full_at = now() + make_interval(secs => (
        $3 - rate_refilled(b.tokens, b.updated_at, $3, $4)
        + rate_granted(rate_refilled(b.tokens, b.updated_at, $3, $4), $5)) * $4)
RETURNING b.granted, b.tokens;

-- name: peek_tokens
-- The tokens in the bucket now (NULL: no row, a full bucket). Reads only:
-- asking whether one may try takes nothing.
SELECT rate_refilled(tokens, updated_at, $3::float8, $4::float8)
FROM rate_buckets
WHERE rule = $1 AND key = $2;

-- name: forget_full_buckets
-- Deletes the buckets that have refilled: a missing row is a full bucket, so
-- nothing is lost, and the table holds only the keys used within a window.
DELETE FROM rate_buckets WHERE full_at < now();
