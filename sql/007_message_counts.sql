-- 007: unread counts messages, not stream positions. Since 006 an edit or a
-- reaction takes a position too, so last_seq - last_read_seq would count
-- them (and one after the newest message could never be read away). Each
-- message now has its ordinal in its channel (number: 1, 2, 3 ...), the
-- channel how many it has had (message_count), and a membership how many of
-- them it has read (read_count): unread = message_count - read_count, still
-- without counting rows.
ALTER TABLE channels ADD COLUMN message_count bigint NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN number bigint;
ALTER TABLE subscriptions ADD COLUMN read_count bigint NOT NULL DEFAULT 0;

UPDATE messages m SET number = n.number
FROM (SELECT id, row_number() OVER (PARTITION BY channel_id ORDER BY seq) AS number
      FROM messages) n
WHERE m.id = n.id;
ALTER TABLE messages ALTER COLUMN number SET NOT NULL,
    ADD CONSTRAINT messages_number_key UNIQUE (channel_id, number);

UPDATE channels c
SET message_count = (SELECT count(*) FROM messages m WHERE m.channel_id = c.id);
UPDATE subscriptions s
SET read_count = (SELECT count(*) FROM messages m
                  WHERE m.channel_id = s.channel_id AND m.seq <= s.last_read_seq);

-- A message's JSON gains its number.
CREATE OR REPLACE FUNCTION message_json(m messages) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN (jsonb_build_object(
        'id', m.id,
        'channel_id', m.channel_id,
        'seq', m.seq,
        'number', m.number,
        'author', (SELECT jsonb_build_object('id', u.id, 'username', u.username, 'is_bot', u.is_bot)
                   FROM users u WHERE u.id = m.author_id),
        'text', m.text,
        'created_at', to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
        'edited_at', to_char(m.edited_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
        'deleted', m.deleted_at IS NOT NULL,
        'reply_to', m.reply_to,
        'reply_count', m.reply_count,
        'last_reply_at', to_char(m.last_reply_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
        'reactions', COALESCE(
            (SELECT jsonb_agg(jsonb_build_object(
                        'emoji', r.emoji, 'count', cardinality(r.users), 'users', to_jsonb(r.users))
                    ORDER BY r.created_at, r.emoji)
             FROM reactions r
             WHERE r.channel_id = m.channel_id AND r.message_seq = m.seq
               AND cardinality(r.users) > 0),
            '[]'::jsonb),
        'mentions', to_jsonb(m.mentions)
    ) || CASE WHEN m.reply_to IS NULL THEN '{}'::jsonb ELSE jsonb_build_object(
        'thread', jsonb_build_object(
            'reply_count', m.reply_number,
            'last_reply_at', to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')))
    END)::text;
END
$$;

-- A mention of @bob. or @bob- at the end of a sentence is of bob: the
-- punctuation is allowed in a username, so the name as written is tried
-- first and then without the trailing dots and dashes.
CREATE OR REPLACE FUNCTION mentioned_members(p_channel bigint, p_text text)
RETURNS TABLE (user_id bigint, username text)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT DISTINCT u.id, u.username
    FROM regexp_matches(p_text, '(?<![A-Za-z0-9_.-])@([A-Za-z0-9_.-]{3,32})', 'g') AS x
    JOIN users u ON lower(u.username) COLLATE "C" IN (lower(x[1]), lower(rtrim(x[1], '.-')))
    JOIN subscriptions s ON s.channel_id = p_channel AND s.user_id = u.id
    WHERE strpos(p_text, '@') > 0
$$;

CREATE OR REPLACE VIEW channel_views AS
SELECT s.user_id AS viewer_id,
       c.id, c.kind, c.name, c.description, c.last_seq,
       s.last_read_seq, s.role, s.id AS subscription_id, s.joined_seq,
       p.id AS peer_id, p.username AS peer_username, p.is_bot AS peer_is_bot,
       (SELECT count(*) FROM mentions mn
        WHERE mn.user_id = s.user_id AND mn.channel_id = c.id AND mn.seq > s.last_read_seq
       ) AS mentions,
       c.message_count, s.read_count
FROM subscriptions s
JOIN channels c ON c.id = s.channel_id
LEFT JOIN users p
       ON c.kind = 'direct'
      AND p.id = CASE WHEN c.direct_low = s.user_id THEN c.direct_high ELSE c.direct_low END;
