-- name: send_message
-- Sends one message in one statement (one round trip, one implicit transaction):
--   1. lock the author's subscription row (FOR KEY SHARE), so a concurrent
--      removal either commits first (and this finds no row) or waits for us;
--   2. take the next seq under the channel row's lock, so seqs are gapless
--      and commit order equals seq order;
--   3. insert the message with the next number (its ordinal among the
--      channel's messages), move the author's own read marker and read
--      count to it (what you wrote is not unread to you), and NOTIFY, which
--      is delivered at commit. The payload carries the author, the number
--      and the message itself ('M:<channel>:<seq>:<author>:<number>:<json>')
--      when it fits in NOTIFY's 8000 bytes, else only its place
--      ('m:<channel>:<seq>:<author>:<number>').
-- This is the common case, a message that answers nothing and mentions
-- nobody (no '@' in it), kept lean: send_message_in_full below does the
-- same and more, at about a third more database time a send (measured).
-- $4 is the Idempotency-Key or NULL. No row back means: no such channel, the
-- author is not a member, or a message with this key is there already
-- (sent_with_key tells which). Two sends with one key at the same moment:
-- the second fails on the unique index and its seq bump rolls back with it.
WITH member AS (
    SELECT 1 FROM subscriptions
    WHERE channel_id = $1 AND user_id = $2
    FOR KEY SHARE
), bumped AS (
    UPDATE channels SET last_seq = last_seq + 1, message_count = message_count + 1
    WHERE id = $1 AND EXISTS (SELECT 1 FROM member)
      AND NOT EXISTS (
          SELECT 1 FROM messages
          WHERE channel_id = $1 AND author_id = $2 AND idempotency_key = $4::text
      )
    RETURNING id, last_seq, message_count, kind, direct_low, direct_high
), inserted AS (
    INSERT INTO messages (channel_id, seq, number, author_id, text, idempotency_key)
    SELECT b.id, b.last_seq, b.message_count, $2, $3, $4::text
    FROM bumped b
    RETURNING *
), marked_read AS (
    UPDATE subscriptions SET last_read_seq = b.last_seq, read_count = b.message_count
    FROM bumped b
    WHERE subscriptions.channel_id = $1 AND subscriptions.user_id = $2
), shaped AS (
    SELECT i.channel_id, i.seq, i.number, i.author_id, message_json(i::messages) AS json
    FROM inserted i
)
SELECT s.channel_id, s.seq, s.json, b.kind, b.direct_low, b.direct_high,
       pg_notify(
           'chatterwerks',
           CASE WHEN octet_length(s.json) < 7900
                THEN 'M:' || s.channel_id || ':' || s.seq || ':' || s.author_id || ':' || s.number
                     || ':' || s.json
                ELSE 'm:' || s.channel_id || ':' || s.seq || ':' || s.author_id || ':' || s.number
           END
       ) AS notified
FROM shaped s, bumped b;

-- name: send_messages
-- send_message for several lean messages to one channel at once, in one
-- statement and one commit: what a process sends when sends to a channel
-- queue up behind one in flight (store/send_queue.py). One commit, one
-- channel row update, one wake of each listener for the whole batch, where
-- each message alone costs all three.
-- $1: the channel; $2, $3, $4: the authors, texts and Idempotency-Keys (NULL
-- elements for none), one element per message, in the order sent. Each
-- message is checked as send_message checks one (membership under FOR KEY
-- SHARE, the key not used before); those that pass take consecutive seqs in
-- that order, and each has its own NOTIFY, in seq order. A row comes back
-- for each message sent, with `ord` (its 1-based place in the arrays); a
-- message with no row was not sent, and the caller sends it alone to learn
-- why. A key repeated within the batch is the caller's to keep out.
WITH wanted AS (
    SELECT w.author_id, w.text, w.idempotency_key, w.ord
    FROM unnest($2::bigint[], $3::text[], $4::text[])
         WITH ORDINALITY AS w(author_id, text, idempotency_key, ord)
), member AS (
    SELECT user_id FROM subscriptions
    WHERE channel_id = $1 AND user_id = ANY($2::bigint[])
    FOR KEY SHARE
), accepted AS (
    SELECT w.*, row_number() OVER (ORDER BY w.ord) AS k
    FROM wanted w
    WHERE w.author_id IN (SELECT user_id FROM member)
      AND NOT EXISTS (
          SELECT 1 FROM messages m
          WHERE m.channel_id = $1 AND m.author_id = w.author_id
            AND m.idempotency_key = w.idempotency_key
      )
), bumped AS (
    -- Takes the accepted count of seqs at once, under the channel row's lock.
    UPDATE channels
    SET last_seq = last_seq + (SELECT count(*) FROM accepted),
        message_count = message_count + (SELECT count(*) FROM accepted)
    WHERE id = $1 AND EXISTS (SELECT 1 FROM accepted)
    RETURNING id, last_seq - (SELECT count(*) FROM accepted) AS seq_before,
              message_count - (SELECT count(*) FROM accepted) AS number_before
), inserted AS (
    INSERT INTO messages (channel_id, seq, number, author_id, text, idempotency_key)
    SELECT b.id, b.seq_before + a.k, b.number_before + a.k, a.author_id, a.text,
           a.idempotency_key
    FROM bumped b, accepted a
    RETURNING *
), marked_read AS (
    -- Each author's read marker moves to their last message of the batch.
    UPDATE subscriptions s SET last_read_seq = last.seq, read_count = last.number
    FROM (
        SELECT DISTINCT ON (author_id) author_id, seq, number
        FROM inserted ORDER BY author_id, seq DESC
    ) last
    WHERE s.channel_id = $1 AND s.user_id = last.author_id
), shaped AS (
    -- OFFSET 0 keeps the order: the NOTIFYs below go out in seq order.
    SELECT i.channel_id, i.seq, i.number, i.author_id, a.ord,
           message_json(i::messages) AS json
    FROM inserted i JOIN accepted a ON a.k = i.seq - (SELECT seq_before FROM bumped)
    ORDER BY i.seq
    OFFSET 0
)
SELECT s.ord, s.channel_id, s.seq, s.json,
       pg_notify(
           'chatterwerks',
           CASE WHEN octet_length(s.json) < 7900
                THEN 'M:' || s.channel_id || ':' || s.seq || ':' || s.author_id || ':' || s.number
                     || ':' || s.json
                ELSE 'm:' || s.channel_id || ':' || s.seq || ':' || s.author_id || ':' || s.number
           END
       ) AS notified
FROM shaped s;

-- name: send_message_in_full
-- send_message, for a message that answers another ($5: a thread reply, the
-- root's reply count and time moving in the same statement) or may mention
-- members (its @mentions kept for the message and per user). $5 may be
-- NULL. No row back also means: no live message $5.
-- $6 (bigint[] or NULL): the files to attach, in order (sql/009_files.sql):
-- each must be a ready upload of the author's to this channel, attached to
-- no message. No row back also means: one is not. Two sends racing for one
-- file: the second fails on message_files' unique file_id, and rolls back.
WITH member AS (
    SELECT 1 FROM subscriptions
    WHERE channel_id = $1 AND user_id = $2
    FOR KEY SHARE
), root AS (
    -- $5: the message this one answers; a reply to a reply answers its root.
    SELECT COALESCE(reply_to, seq) AS seq FROM messages
    WHERE channel_id = $1 AND seq = $5 AND deleted_at IS NULL
), attachable AS (
    SELECT f.id FROM files f
    WHERE f.id = ANY($6::bigint[]) AND f.uploader_id = $2 AND f.channel_id = $1
      AND f.state = 'ready'
      AND NOT EXISTS (SELECT 1 FROM message_files mf WHERE mf.file_id = f.id)
), bumped AS (
    UPDATE channels SET last_seq = last_seq + 1, message_count = message_count + 1
    WHERE id = $1 AND EXISTS (SELECT 1 FROM member)
      AND ($5::bigint IS NULL OR EXISTS (SELECT 1 FROM root))
      AND (SELECT count(*) FROM attachable) = COALESCE(cardinality($6::bigint[]), 0)
      AND NOT EXISTS (
          SELECT 1 FROM messages
          WHERE channel_id = $1 AND author_id = $2 AND idempotency_key = $4::text
      )
    RETURNING id, last_seq, message_count, kind, direct_low, direct_high
), thread AS (
    -- The root's summary: an UPDATE sees the newest row, so the count is
    -- exact under concurrent replies, and a root deleted while this waited
    -- for the channel's lock is seen deleted: then no row, and the insert
    -- below fails its reply check, which rolls the whole send back.
    UPDATE messages r SET reply_count = r.reply_count + 1, last_reply_at = now()
    FROM root, bumped
    WHERE r.channel_id = $1 AND r.seq = root.seq AND r.deleted_at IS NULL
    RETURNING r.seq, r.reply_count
), mentioned AS (
    SELECT mm.user_id, mm.username
    FROM bumped, mentioned_members($1, $3) mm
    WHERE strpos($3, '@') > 0  -- most messages mention nobody: no lookup then
), inserted AS (
    INSERT INTO messages (
        channel_id, seq, number, author_id, text, idempotency_key, reply_to, reply_number, mentions,
        file_count
    )
    SELECT b.id, b.last_seq, b.message_count, $2, $3, $4::text, root.seq, t.reply_count,
           COALESCE((SELECT array_agg(username ORDER BY lower(username)) FROM mentioned), '{}'),
           COALESCE(cardinality($6::bigint[]), 0)
    FROM bumped b LEFT JOIN root ON true LEFT JOIN thread t ON true
    RETURNING *
), mentions_kept AS (
    INSERT INTO mentions (user_id, channel_id, seq, message_id)
    SELECT m.user_id, i.channel_id, i.seq, i.id FROM inserted i, mentioned m
), attached AS (
    INSERT INTO message_files (message_id, position, file_id)
    SELECT i.id, u.ord - 1, u.id FROM inserted i, unnest($6::bigint[]) WITH ORDINALITY AS u(id, ord)
), marked_read AS (
    UPDATE subscriptions SET last_read_seq = b.last_seq, read_count = b.message_count
    FROM bumped b
    WHERE subscriptions.channel_id = $1 AND subscriptions.user_id = $2
), shaped AS (
    SELECT i.channel_id, i.seq, i.number, i.author_id,
           message_json_with_files(i::messages, files_json($6::bigint[])) AS json
    FROM inserted i
)
SELECT s.channel_id, s.seq, s.json, b.kind, b.direct_low, b.direct_high,
       pg_notify(
           'chatterwerks',
           CASE WHEN octet_length(s.json) < 7900
                THEN 'M:' || s.channel_id || ':' || s.seq || ':' || s.author_id || ':' || s.number
                     || ':' || s.json
                ELSE 'm:' || s.channel_id || ':' || s.seq || ':' || s.author_id || ':' || s.number
           END
       ) AS notified
FROM shaped s, bumped b;

-- name: sent_with_key
-- The message that $2 already sent to channel $1 with Idempotency-Key $3, as
-- JSON, while $2 is still a member (else no row).
SELECT message_json(m) AS json
FROM messages m
WHERE m.channel_id = $1 AND m.author_id = $2 AND m.idempotency_key = $3
  AND EXISTS (SELECT 1 FROM subscriptions WHERE channel_id = $1 AND user_id = $2);

-- name: history
-- One page of a channel, newest first (the caller reverses it), before seq $3,
-- $4 rows plus one to tell has_more. Always one row at least: is_member says
-- whether $2 may read channel $1; json is NULL when it has no messages.
SELECT s.user_id IS NOT NULL AS is_member, m.seq, message_json(m) AS json
FROM (SELECT 1) AS one
LEFT JOIN subscriptions s ON s.channel_id = $1 AND s.user_id = $2
LEFT JOIN LATERAL (
    SELECT * FROM messages
    WHERE channel_id = $1 AND seq < $3 AND s.user_id IS NOT NULL
    ORDER BY seq DESC
    LIMIT $4 + 1
) m ON true
ORDER BY m.seq DESC;

-- name: replies
-- One page of the thread of root $3 in channel $1, oldest first, after seq
-- $4, $5 rows plus one to tell has_more; the same is_member row as history.
-- root_found is false when $3 is no message of the channel.
SELECT s.user_id IS NOT NULL AS is_member,
       EXISTS (SELECT 1 FROM messages WHERE channel_id = $1 AND seq = $3) AS root_found,
       m.seq, message_json(m) AS json
FROM (SELECT 1) AS one
LEFT JOIN subscriptions s ON s.channel_id = $1 AND s.user_id = $2
LEFT JOIN LATERAL (
    SELECT * FROM messages
    WHERE channel_id = $1 AND reply_to = $3 AND seq > $4 AND s.user_id IS NOT NULL
    ORDER BY seq
    LIMIT $5 + 1
) m ON true
ORDER BY m.seq;

-- name: stream_range
-- Positions $2 < seq <= $3 of channel $1's stream, oldest first, as user $4
-- may read them: new messages (kind 'message', json the Message) and other
-- changes (kind 'change', json the whole event). A change whose event no
-- longer exists (an edit or a reaction of a message deleted since) has json
-- NULL: its place is passed over. Shaped like history: a reader removed from
-- the channel gets is_member false and nothing, whatever any cache believed.
SELECT s.user_id IS NOT NULL AS is_member, e.seq, e.kind, e.json
FROM (SELECT 1) AS one
LEFT JOIN subscriptions s ON s.channel_id = $1 AND s.user_id = $4
LEFT JOIN LATERAL (
    SELECT m.seq, 'message' AS kind, message_json(m) AS json
    FROM messages m
    WHERE m.channel_id = $1 AND m.seq > $2 AND m.seq <= $3
    UNION ALL
    SELECT c.seq, 'change',
           CASE
               WHEN c.kind = 'deleted' THEN jsonb_build_object(
                   'type', 'message_deleted', 'channel_id', c.channel_id, 'seq', c.message_seq)
               WHEN m.deleted_at IS NOT NULL THEN NULL
               WHEN c.kind = 'edited' THEN jsonb_build_object(
                   'type', 'message_edited', 'channel_id', c.channel_id, 'seq', c.message_seq,
                   'text', m.text,
                   'edited_at', to_char(m.edited_at AT TIME ZONE 'UTC',
                                        'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
                   'mentions', to_jsonb(m.mentions))
               WHEN c.user_id IS NULL THEN NULL
               ELSE jsonb_build_object(
                   'type', 'reaction', 'channel_id', c.channel_id, 'seq', c.message_seq,
                   'emoji', c.emoji,
                   'user', jsonb_build_object('id', u.id, 'username', u.username, 'is_bot', u.is_bot),
                   'added', c.added,
                   'count', COALESCE(cardinality(r.users), 0),
                   'users', COALESCE(to_jsonb(r.users), '[]'::jsonb))
           END::text
    FROM channel_changes c
    JOIN messages m ON m.channel_id = c.channel_id AND m.seq = c.message_seq
    LEFT JOIN users u ON u.id = c.user_id
    LEFT JOIN reactions r
           ON r.channel_id = c.channel_id AND r.message_seq = c.message_seq AND r.emoji = c.emoji
    WHERE c.channel_id = $1 AND c.seq > $2 AND c.seq <= $3
) e ON s.user_id IS NOT NULL
ORDER BY e.seq;

-- name: edit_message
-- See edit_message() in sql/005_messages_that_live.sql: (status, body).
SELECT status, body FROM edit_message($1, $2, $3, $4);

-- name: delete_message
SELECT delete_message($1, $2, $3) AS status;

-- name: set_reaction
SELECT set_reaction($1, $2, $3, $4, $5) AS status;

-- name: mentions_of
-- The messages that mention user $1 in channels they are a member of, newest
-- first, before message id $2, $3 rows plus one to tell whether more exist.
SELECT mn.channel_id, mn.message_id, message_json(m) AS json
FROM mentions mn
JOIN subscriptions s ON s.user_id = mn.user_id AND s.channel_id = mn.channel_id
JOIN messages m ON m.channel_id = mn.channel_id AND m.seq = mn.seq
WHERE mn.user_id = $1 AND mn.message_id < $2
ORDER BY mn.message_id DESC
LIMIT $3 + 1;

-- name: sync_state
-- What an events poll compares its cursor with: each membership of the user,
-- with its channel's newest seq and the user's read marker.
SELECT s.channel_id, s.id AS subscription_id, s.joined_seq, s.last_read_seq, s.read_count,
       c.last_seq
FROM subscriptions s
JOIN channels c ON c.id = s.channel_id
WHERE s.user_id = $1;

-- name: attachable_count
-- How many of files $3 are ready uploads of user $2 to channel $1 that no
-- message has: a send whose files are not all so gets 400 invalid_file.
SELECT count(*) FROM files f
WHERE f.id = ANY($3::bigint[]) AND f.uploader_id = $2 AND f.channel_id = $1
  AND f.state = 'ready'
  AND NOT EXISTS (SELECT 1 FROM message_files mf WHERE mf.file_id = f.id);
