-- name: search_messages
-- Search (GET /api/search): the live messages of the channels user $1 is a
-- member of NOW that match, newest first (by message id), before id $2, $3
-- rows plus one to tell whether more exist. Membership is checked here, in
-- the statement: a channel the user left or was removed from is not
-- searched at all, whatever it once held.
-- $4: text for to_tsquery (built by chatterwerks/search_query.py from words
-- that are letters and digits only; never user syntax), or NULL for none.
-- $5: usernames (from:), $6: channel names (in:), case-blind; NULL for any.
-- $7/$8: sent before / from this time; NULL for no bound.
-- Run with custom plans (store/search.py): the planner sees the tsquery and
-- picks, from the index statistics, between walking messages newest-first
-- (a common word: a few hundred rows give a page) and the GIN index (a rare
-- word); docs/benchmarks.md "Search, 1M messages".
SELECT m.id, m.channel_id, m.text, message_json(m) AS json
FROM messages m
WHERE m.channel_id IN (SELECT s.channel_id FROM subscriptions s WHERE s.user_id = $1)
  AND m.id < $2
  AND m.deleted_at IS NULL
  AND ($4::text IS NULL OR m.search @@ to_tsquery('chatterwerks_search', $4::text))
  AND ($5::text[] IS NULL OR m.author_id IN (
      SELECT u.id FROM users u
      WHERE lower(u.username) COLLATE "C" IN (SELECT lower(x) FROM unnest($5::text[]) AS x)))
  AND ($6::text[] IS NULL OR m.channel_id IN (
      SELECT c.id FROM channels c
      WHERE c.kind <> 'direct' AND lower(c.name) IN (SELECT lower(x) FROM unnest($6::text[]) AS x)))
  AND ($7::timestamptz IS NULL OR m.created_at < $7)
  AND ($8::timestamptz IS NULL OR m.created_at >= $8)
ORDER BY m.id DESC
LIMIT $3 + 1;

-- name: messages_around
-- The page of channel $1 around message $3 for user $2 (GET
-- /api/channels/{id}/messages?around=SEQ): up to $4 messages before it and
-- the message with up to $5 - 1 after it, each side plus one to tell whether
-- more exist; oldest first. The same is_member row as history (always one
-- row; membership checked here). found is false when no message has seq $3.
SELECT s.user_id IS NOT NULL AS is_member,
       EXISTS (SELECT 1 FROM messages WHERE channel_id = $1 AND seq = $3) AS found,
       m.seq, m.json
FROM (SELECT 1) AS one
LEFT JOIN subscriptions s ON s.channel_id = $1 AND s.user_id = $2
LEFT JOIN LATERAL (
    (SELECT b.seq, message_json(b) AS json FROM messages b
     WHERE b.channel_id = $1 AND b.seq < $3 AND s.user_id IS NOT NULL
     ORDER BY b.seq DESC
     LIMIT $4 + 1)
    UNION ALL
    (SELECT a.seq, message_json(a) AS json FROM messages a
     WHERE a.channel_id = $1 AND a.seq >= $3 AND s.user_id IS NOT NULL
     ORDER BY a.seq
     LIMIT $5 + 1)
) m ON true
ORDER BY m.seq;
