-- name: search_scope
-- What user $1 may search now: the channels they are a member of, narrowed
-- to those named by in: ($2, case-blind; NULL for all); the ids of the
-- users named by from: ($3; NULL for anyone, then authors is NULL); and
-- whether the query's words are all common (see below). Run in
-- one repeatable-read transaction with search_messages, so the search sees
-- exactly the memberships read here: a removed member searches nothing of
-- that channel, an outsider never reaches it.
SELECT ARRAY(
           SELECT s.channel_id FROM subscriptions s JOIN channels c ON c.id = s.channel_id
           WHERE s.user_id = $1
             AND ($2::text[] IS NULL OR (
                 c.kind <> 'direct' AND lower(c.name) IN (SELECT lower(x) FROM unnest($2::text[]) AS x)))
       ) AS channels,
       -- How many messages those channels hold (channels.message_count):
       -- a small scope is read whole through the channel index.
       (SELECT COALESCE(sum(c.message_count), 0) FROM subscriptions s
        JOIN channels c ON c.id = s.channel_id
        WHERE s.user_id = $1
          AND ($2::text[] IS NULL OR (
              c.kind <> 'direct' AND lower(c.name) IN (SELECT lower(x) FROM unnest($2::text[]) AS x)))
       ) AS scope_messages,
       CASE WHEN $3::text[] IS NOT NULL THEN ARRAY(
           SELECT u.id FROM users u
           WHERE lower(u.username) COLLATE "C" IN (SELECT lower(x) FROM unnest($3::text[]) AS x))
       END AS authors,
       -- Whether every word of the query ($4: the words, space-separated)
       -- is in at least 2% of messages, by the column's statistics (its most
       -- common elements, from ANALYZE): then the GIN index would return
       -- tens of thousands of rows, and walking newest-first is the plan.
       (SELECT bool_and(EXISTS (
                   SELECT 1
                   FROM pg_stats st,
                        unnest(st.most_common_elems::text::text[]) WITH ORDINALITY AS e(lexeme, i)
                   WHERE st.schemaname = current_schema() AND st.tablename = 'messages'
                     AND st.attname = 'search' AND e.lexeme = w
                     AND st.most_common_elem_freqs[e.i] >= 0.02))
        FROM unnest(tsvector_to_array(to_tsvector('chatterwerks_search', $4::text))) AS w
       ) IS TRUE AS common_words;

-- name: search_messages
-- The live messages of channels $1 (from search_scope, same snapshot) that
-- match, newest first by (created_at, id), before the cursor ($2, $3; NULL
-- for the newest), $4 rows plus one to tell whether more exist.
-- $5: text for to_tsquery (built by chatterwerks/search_query.py from words
-- that are letters and digits only, never user syntax), or NULL for none.
-- $6: author ids (from:), NULL for anyone. $7/$8: sent before / from this
-- time (before:, after:), NULL for no bound. $9: search_scope's common_words.
-- $10: the scope is small (store/search.py).
-- Run with custom plans (store/search.py): the planner sees the words and
-- the channel ids as constants, and picks from their statistics between
-- walking messages_created_idx newest-first (a common word) and the GIN
-- index (a rare word, a from:); docs/benchmarks.md "Search, 1M messages".
SELECT m.id, m.channel_id, m.created_at, m.text, message_json(m) AS json
FROM messages m
WHERE CASE
          -- Folded to one branch at planning (custom plans). $10, a small
          -- scope (search_scope's scope_messages, few enough to read them
          -- all): the channel index serves. Otherwise a filter on the rows
          -- the word index or the time walk found: as an index condition
          -- it made the planner AND in a 100,000-row bitmap of 50 channels
          -- (10 to 100 times slower, measured).
          WHEN $10::boolean THEN m.channel_id = ANY ($1::bigint[])
          ELSE m.channel_id + 0 = ANY ($1::bigint[])
      END
  AND ($2::timestamptz IS NULL OR (m.created_at, m.id) < ($2::timestamptz, $3::bigint))
  AND m.deleted_at IS NULL
  AND ($5::text IS NULL OR CASE
          -- $9: every word is common (search_scope). The function form of
          -- @@ is the same test but no index can serve it: the GIN index
          -- would hand over a bitmap of 300,000 rows (measured: 40-130 ms
          -- with in:, where the channel's own 2,000 rows take 3 ms).
          WHEN $9::boolean THEN ts_match_vq(m.search, to_tsquery('chatterwerks_search', $5::text))
          ELSE m.search @@ to_tsquery('chatterwerks_search', $5::text)
      END)
  AND ($6::bigint[] IS NULL OR m.author_id = ANY ($6::bigint[]))
  AND ($7::timestamptz IS NULL OR m.created_at < $7::timestamptz)
  AND ($8::timestamptz IS NULL OR m.created_at >= $8::timestamptz)
ORDER BY m.created_at DESC, m.id DESC
LIMIT $4 + 1;

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

-- name: search_plan_custom
-- For this transaction only: plans made for the query's values. The pool
-- plans generically (db.py); search is the exception, since which plan is
-- fast depends on how common the words are and on the channels.
SET LOCAL plan_cache_mode = force_custom_plan;

-- name: search_plan_bitmap_only
-- For this transaction only: no plain index scans, so no walk of the time
-- index; chosen by store/search.py where the walk was measured slow.
SET LOCAL enable_indexscan = off;
