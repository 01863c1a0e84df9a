-- name: send_message
-- Sends one message in one statement (one round trip, one implicit transaction):
--   1. lock the author's subscription row (FOR KEY SHARE), so a concurrent
--      removal either commits first (and this finds no row) or waits for us;
--   2. take the next seq under the channel row's lock, so seqs are gapless
--      and commit order equals seq order;
--   3. insert the message, move the author's own read marker to it (what
--      you wrote is not unread to you), and NOTIFY, which is delivered at
--      commit. The payload carries the author and the message itself
--      ('M:<channel>:<seq>:<author>:<json>') when it fits in NOTIFY's 8000
--      bytes, else only its place ('m:<channel>:<seq>:<author>').
-- $4 is the Idempotency-Key or NULL. No row back means: no such channel, the
-- author is not a member, or a message with this key is there already
-- (sent_with_key tells which). Two sends with one key at the same moment:
-- the second fails on the unique index and its seq bump rolls back with it.
WITH member AS (
    SELECT 1 FROM subscriptions
    WHERE channel_id = $1 AND user_id = $2
    FOR KEY SHARE
), bumped AS (
    UPDATE channels SET last_seq = last_seq + 1
    WHERE id = $1 AND EXISTS (SELECT 1 FROM member)
      AND NOT EXISTS (
          SELECT 1 FROM messages
          WHERE channel_id = $1 AND author_id = $2 AND idempotency_key = $4::text
      )
    RETURNING id, last_seq, kind, direct_low, direct_high
), inserted AS (
    INSERT INTO messages (channel_id, seq, author_id, text, idempotency_key)
    SELECT id, last_seq, $2, $3, $4::text FROM bumped
    RETURNING id, channel_id, seq, author_id, text, created_at
), marked_read AS (
    UPDATE subscriptions SET last_read_seq = b.last_seq
    FROM bumped b
    WHERE subscriptions.channel_id = $1 AND subscriptions.user_id = $2
), shaped AS (
    SELECT i.channel_id, i.seq, i.author_id,
           message_json(i.id, i.channel_id, i.seq, u.id, u.username, u.is_bot, i.text, i.created_at)
               AS json
    FROM inserted i
    JOIN users u ON u.id = i.author_id
)
SELECT s.channel_id, s.seq, s.json, b.kind, b.direct_low, b.direct_high,
       pg_notify(
           'chatterwerks',
           CASE WHEN octet_length(s.json) < 7900
                THEN 'M:' || s.channel_id || ':' || s.seq || ':' || s.author_id || ':' || s.json
                ELSE 'm:' || s.channel_id || ':' || s.seq || ':' || s.author_id
           END
       ) AS notified
FROM shaped s, bumped b;

-- name: sent_with_key
-- The message that $2 already sent to channel $1 with Idempotency-Key $3, as
-- JSON, while $2 is still a member (else no row).
SELECT message_json(m.id, m.channel_id, m.seq, u.id, u.username, u.is_bot, m.text, m.created_at)
           AS json
FROM messages m
JOIN users u ON u.id = m.author_id
WHERE m.channel_id = $1 AND m.author_id = $2 AND m.idempotency_key = $3
  AND EXISTS (SELECT 1 FROM subscriptions WHERE channel_id = $1 AND user_id = $2);

-- name: history
-- One page of a channel, newest first (the caller reverses it), before seq $3,
-- $4 rows plus one to tell has_more. Always one row at least: is_member says
-- whether $2 may read channel $1; json is NULL when it has no messages.
SELECT s.user_id IS NOT NULL AS is_member, m.seq,
       message_json(m.id, m.channel_id, m.seq, u.id, u.username, u.is_bot, m.text, m.created_at)
           AS json
FROM (SELECT 1) AS one
LEFT JOIN subscriptions s ON s.channel_id = $1 AND s.user_id = $2
LEFT JOIN LATERAL (
    SELECT * FROM messages
    WHERE channel_id = $1 AND seq < $3 AND s.user_id IS NOT NULL
    ORDER BY seq DESC
    LIMIT $4 + 1
) m ON true
LEFT JOIN users u ON u.id = m.author_id
ORDER BY m.seq DESC;

-- name: messages_range
-- Messages of channel $1 with $2 < seq <= $3, oldest first, as user $4 may
-- read them: the same shape as history, so a reader removed from the channel
-- gets is_member false and no message, whatever any cache believed.
SELECT s.user_id IS NOT NULL AS is_member, m.seq,
       message_json(m.id, m.channel_id, m.seq, u.id, u.username, u.is_bot, m.text, m.created_at)
           AS json
FROM (SELECT 1) AS one
LEFT JOIN subscriptions s ON s.channel_id = $1 AND s.user_id = $4
LEFT JOIN LATERAL (
    SELECT * FROM messages
    WHERE channel_id = $1 AND seq > $2 AND seq <= $3 AND s.user_id IS NOT NULL
    ORDER BY seq
) m ON true
LEFT JOIN users u ON u.id = m.author_id
ORDER BY m.seq;

-- name: sync_state
-- What an events poll compares its cursor with: each membership of the user,
-- with its channel's newest seq and the user's read marker.
SELECT s.channel_id, s.id AS subscription_id, s.joined_seq, s.last_read_seq, c.last_seq
FROM subscriptions s
JOIN channels c ON c.id = s.channel_id
WHERE s.user_id = $1;
