-- 005: messages that live: edits, deletions, reactions, threads, @mentions.
--
-- A channel's stream is one gapless sequence (channels.last_seq). A new
-- message takes the next position as its seq (messages, as before); every
-- other change (an edit, a deletion, a reaction added or removed) takes the
-- next position as a row of channel_changes. So a new message still costs
-- one insert, and a change one more row; a reader of positions (after, upto]
-- reads both tables and finds every position once (docs/architecture.md).
--
-- So unread cannot be last_seq - last_read_seq any more (a reaction would be
-- unread, and one after the newest message could never be read away): each
-- message has its ordinal in its channel (number: 1, 2, 3 ...), the channel
-- how many it has had (message_count), and a membership how many of them it
-- has read (read_count). unread = message_count - read_count, still without
-- counting rows.

ALTER TABLE messages
    ADD COLUMN edited_at     timestamptz,
    -- A deleted message keeps its place: text '' and nothing else of it.
    ADD COLUMN deleted_at    timestamptz,
    -- The root this message answers (a seq of the same channel), and on a
    -- reply the root's reply count just after it (the thread's summary at
    -- this point of the stream, so replaying it converges).
    ADD COLUMN reply_to      bigint,
    ADD COLUMN reply_number  integer,
    -- On a root: its thread.
    ADD COLUMN reply_count   integer NOT NULL DEFAULT 0,
    ADD COLUMN last_reply_at timestamptz,
    -- Usernames of the channel members it mentions (as they are spelled).
    ADD COLUMN mentions      text[] NOT NULL DEFAULT '{}',
    ADD COLUMN number        bigint,
    DROP CONSTRAINT messages_text_check,
    ADD CONSTRAINT messages_text_check CHECK (
        CASE WHEN deleted_at IS NULL THEN char_length(text) BETWEEN 1 AND 4000
             ELSE text = '' AND mentions = '{}' END
    ),
    ADD CONSTRAINT messages_reply_check CHECK ((reply_to IS NULL) = (reply_number IS NULL)),
    ADD CONSTRAINT messages_reply_to_fkey
        FOREIGN KEY (channel_id, reply_to) REFERENCES messages (channel_id, seq);

ALTER TABLE channels ADD COLUMN message_count bigint NOT NULL DEFAULT 0;
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

-- A thread's replies, in order.
CREATE INDEX messages_thread_idx ON messages (channel_id, reply_to, seq)
    WHERE reply_to IS NOT NULL;

-- One row per emoji on a message, with the users who reacted with it: a
-- toggle is one upsert of one row, so counts stay exact under concurrency.
CREATE TABLE reactions (
    channel_id  bigint NOT NULL,
    message_seq bigint NOT NULL,
    emoji       text NOT NULL CHECK (octet_length(emoji) BETWEEN 1 AND 64),
    users       bigint[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, message_seq, emoji),
    FOREIGN KEY (channel_id, message_seq) REFERENCES messages (channel_id, seq) ON DELETE CASCADE
);

-- Who is mentioned where: counted per channel against the read marker, and
-- listed newest first in the mentions view.
CREATE TABLE mentions (
    user_id    bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    channel_id bigint NOT NULL,
    seq        bigint NOT NULL,
    message_id bigint NOT NULL,
    PRIMARY KEY (user_id, channel_id, seq),
    FOREIGN KEY (channel_id, seq) REFERENCES messages (channel_id, seq) ON DELETE CASCADE
);
CREATE INDEX mentions_newest_idx ON mentions (user_id, message_id DESC);
CREATE INDEX mentions_message_idx ON mentions (channel_id, seq);

-- The positions of a channel's stream that are not new messages.
CREATE TABLE channel_changes (
    channel_id  bigint NOT NULL REFERENCES channels ON DELETE CASCADE,
    seq         bigint NOT NULL CHECK (seq > 0),
    kind        text NOT NULL CHECK (kind IN ('edited', 'deleted', 'reaction')),
    message_seq bigint NOT NULL,
    -- A reaction's user, emoji and direction; cleared when its message is
    -- deleted (its reactions are gone from the database, its place kept).
    user_id     bigint REFERENCES users ON DELETE SET NULL,
    emoji       text,
    added       boolean,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_id, seq),
    FOREIGN KEY (channel_id, message_seq) REFERENCES messages (channel_id, seq) ON DELETE CASCADE
);
CREATE INDEX channel_changes_message_idx ON channel_changes (channel_id, message_seq);

-- A message as its JSON object (docs/api.md): the one serialisation of a
-- message, for history, sends, polls and NOTIFY payloads. Reactions list
-- user ids, not "me": the text is shared by every reader. PL/pgSQL rather
-- than SQL: a SQL function with sub-selects is not inlined, and is planned
-- again at every call (it more than doubled the cost of a send); PL/pgSQL
-- keeps its plans for the session.
CREATE FUNCTION message_json(m messages) RETURNS text
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

-- The old one (explicit columns, sql/003_message_json.sql) has no caller left.
DROP FUNCTION message_json(bigint, bigint, bigint, bigint, text, boolean, text, timestamptz);

-- A channel as one subscriber sees it, now with their unread mentions there.
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

-- The usernames (as spelled) of the members of channel p_channel that text
-- mentions as @username; a mention of anyone else is plain text. The
-- punctuation allowed in a username may also end a sentence ("thanks
-- @bob."), so the name as written is tried, and then without the dots and
-- dashes it ends with.
CREATE FUNCTION mentioned_members(p_channel bigint, p_text text)
RETURNS TABLE (user_id bigint, username text)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT DISTINCT u.id, u.username
    FROM regexp_matches(p_text, '(?<![A-Za-z0-9_.-])@([A-Za-z0-9_.-]{3,32})', 'g') AS x
    JOIN users u ON lower(u.username) COLLATE "C" IN (lower(x[1]), lower(rtrim(x[1], '.-')))
    JOIN subscriptions s ON s.channel_id = p_channel AND s.user_id = u.id
    WHERE strpos(p_text, '@') > 0
$$;

-- Takes the channel's next position for a change that is not a new message,
-- records it, and tells every process at commit:
--   'E:<channel>:<seq>:<kind>:<event JSON>', or 'e:<channel>:<seq>:<kind>'
-- when the JSON does not fit in NOTIFY's 8000 bytes. The caller holds the
-- channel row's lock already (change functions below take it first).
CREATE FUNCTION record_change(
    p_channel bigint, p_kind text, p_message_seq bigint,
    p_user bigint, p_emoji text, p_added boolean, p_event jsonb
) RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    new_seq bigint;
    event_text text;
BEGIN
    UPDATE channels SET last_seq = last_seq + 1 WHERE id = p_channel RETURNING last_seq INTO new_seq;
    INSERT INTO channel_changes (channel_id, seq, kind, message_seq, user_id, emoji, added)
    VALUES (p_channel, new_seq, p_kind, p_message_seq, p_user, p_emoji, p_added);
    event_text := (p_event || jsonb_build_object('channel_id', p_channel, 'seq', p_message_seq))::text;
    PERFORM pg_notify('chatterwerks', CASE
        WHEN octet_length(event_text) < 7900
        THEN 'E:' || p_channel || ':' || new_seq || ':' || p_kind || ':' || event_text
        ELSE 'e:' || p_channel || ':' || new_seq || ':' || p_kind
    END);
    RETURN new_seq;
END
$$;

-- The first steps of every change by p_user to message p_seq of p_channel:
-- lock the membership (a removal commits first or waits), then the channel
-- row (changes and sends of the channel take turns, and every statement
-- after this one sees all that committed before). Returns the message row
-- as it is now, or NULL; is_member false for a non-member.
CREATE FUNCTION lock_for_change(p_channel bigint, p_seq bigint, p_user bigint,
                                OUT is_member boolean, OUT message messages)
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM 1 FROM subscriptions WHERE channel_id = p_channel AND user_id = p_user FOR KEY SHARE;
    is_member := FOUND;
    IF NOT is_member THEN
        RETURN;
    END IF;
    PERFORM 1 FROM channels WHERE id = p_channel FOR NO KEY UPDATE;
    SELECT * INTO message FROM messages WHERE channel_id = p_channel AND seq = p_seq FOR UPDATE;
END
$$;

-- An edit by the author: the new text and its mentions. Status:
-- 'ok' (body: the message), 'unchanged' (the same text: body the message,
-- nothing recorded), 'channel_not_found', 'message_not_found', 'not_author'.
CREATE FUNCTION edit_message(p_channel bigint, p_seq bigint, p_user bigint, p_text text,
                             OUT status text, OUT body text)
LANGUAGE plpgsql
AS $$
DECLARE
    locked record;
    edited messages;
BEGIN
    SELECT * INTO locked FROM lock_for_change(p_channel, p_seq, p_user);
    IF NOT locked.is_member THEN
        status := 'channel_not_found'; RETURN;
    ELSIF (locked.message).id IS NULL OR (locked.message).deleted_at IS NOT NULL THEN
        status := 'message_not_found'; RETURN;
    ELSIF (locked.message).author_id <> p_user THEN
        status := 'not_author'; RETURN;
    ELSIF (locked.message).text = p_text THEN
        status := 'unchanged'; body := message_json(locked.message); RETURN;
    END IF;
    DELETE FROM mentions WHERE channel_id = p_channel AND seq = p_seq;
    UPDATE messages
    SET text = p_text,
        edited_at = now(),
        mentions = COALESCE(
            (SELECT array_agg(mm.username ORDER BY lower(mm.username))
             FROM mentioned_members(p_channel, p_text) mm), '{}')
    WHERE channel_id = p_channel AND seq = p_seq
    RETURNING * INTO edited;
    INSERT INTO mentions (user_id, channel_id, seq, message_id)
    SELECT mm.user_id, p_channel, p_seq, edited.id FROM mentioned_members(p_channel, p_text) mm;
    PERFORM record_change(p_channel, 'edited', p_seq, NULL, NULL, NULL, jsonb_build_object(
        'type', 'message_edited',
        'text', edited.text,
        'edited_at', to_char(edited.edited_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
        'mentions', to_jsonb(edited.mentions)));
    status := 'ok';
    body := message_json(edited);
END
$$;

-- A deletion by the author, or by the moderator of a group channel. The text,
-- mentions and reactions leave the database; the place stays (a tombstone).
-- Status: 'ok' (also when deleted before: nothing recorded then),
-- 'channel_not_found', 'message_not_found', 'not_allowed'.
CREATE FUNCTION delete_message(p_channel bigint, p_seq bigint, p_user bigint,
                               OUT status text)
LANGUAGE plpgsql
AS $$
DECLARE
    locked record;
BEGIN
    SELECT * INTO locked FROM lock_for_change(p_channel, p_seq, p_user);
    IF NOT locked.is_member THEN
        status := 'channel_not_found'; RETURN;
    ELSIF (locked.message).id IS NULL THEN
        status := 'message_not_found'; RETURN;
    ELSIF (locked.message).deleted_at IS NOT NULL THEN
        status := 'ok'; RETURN;
    ELSIF (locked.message).author_id <> p_user AND NOT EXISTS (
        SELECT 1 FROM subscriptions s JOIN channels c ON c.id = s.channel_id
        WHERE s.channel_id = p_channel AND s.user_id = p_user
          AND c.kind = 'group' AND s.role = 'moderator'
    ) THEN
        status := 'not_allowed'; RETURN;
    END IF;
    -- edited_at goes too: the edit's event is passed over once the message
    -- is deleted, so a client that saw the message before would not learn it.
    UPDATE messages SET text = '', mentions = '{}', edited_at = NULL, deleted_at = now()
    WHERE channel_id = p_channel AND seq = p_seq;
    DELETE FROM reactions WHERE channel_id = p_channel AND message_seq = p_seq;
    DELETE FROM mentions WHERE channel_id = p_channel AND seq = p_seq;
    UPDATE channel_changes SET user_id = NULL, emoji = NULL, added = NULL
    WHERE channel_id = p_channel AND message_seq = p_seq AND kind = 'reaction';
    PERFORM record_change(p_channel, 'deleted', p_seq, NULL, NULL, NULL,
                          jsonb_build_object('type', 'message_deleted'));
    status := 'ok';
END
$$;

-- Adds (p_add) or removes p_user's reaction p_emoji on a live message. At
-- most 20 distinct emoji per message. Status: 'ok' (also when it was so
-- already: nothing recorded then), 'channel_not_found', 'message_not_found',
-- 'too_many_reactions'.
CREATE FUNCTION set_reaction(p_channel bigint, p_seq bigint, p_user bigint, p_emoji text,
                             p_add boolean, OUT status text)
LANGUAGE plpgsql
AS $$
DECLARE
    locked record;
    now_users bigint[];
BEGIN
    SELECT * INTO locked FROM lock_for_change(p_channel, p_seq, p_user);
    IF NOT locked.is_member THEN
        status := 'channel_not_found'; RETURN;
    ELSIF (locked.message).id IS NULL THEN
        status := 'message_not_found'; RETURN;
    ELSIF (locked.message).deleted_at IS NOT NULL THEN
        -- Its reactions are gone: removing one is done, adding one is not.
        status := CASE WHEN p_add THEN 'message_not_found' ELSE 'ok' END; RETURN;
    END IF;
    status := 'ok';
    IF p_add THEN
        IF EXISTS (SELECT 1 FROM reactions WHERE channel_id = p_channel AND message_seq = p_seq
                   AND emoji = p_emoji AND p_user = ANY (users)) THEN
            RETURN;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM reactions WHERE channel_id = p_channel
                       AND message_seq = p_seq AND emoji = p_emoji)
           AND (SELECT count(*) FROM reactions
                WHERE channel_id = p_channel AND message_seq = p_seq) >= 20 THEN
            status := 'too_many_reactions'; RETURN;
        END IF;
        INSERT INTO reactions (channel_id, message_seq, emoji, users)
        VALUES (p_channel, p_seq, p_emoji, ARRAY[p_user])
        ON CONFLICT (channel_id, message_seq, emoji)
        DO UPDATE SET users = reactions.users || p_user
        RETURNING users INTO now_users;
    ELSE
        UPDATE reactions SET users = array_remove(users, p_user)
        WHERE channel_id = p_channel AND message_seq = p_seq AND emoji = p_emoji
          AND p_user = ANY (users)
        RETURNING users INTO now_users;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        DELETE FROM reactions WHERE channel_id = p_channel AND message_seq = p_seq
          AND emoji = p_emoji AND users = '{}';
    END IF;
    PERFORM record_change(p_channel, 'reaction', p_seq, p_user, p_emoji, p_add, jsonb_build_object(
        'type', 'reaction',
        'emoji', p_emoji,
        'user', (SELECT jsonb_build_object('id', id, 'username', username, 'is_bot', is_bot)
                 FROM users WHERE id = p_user),
        'added', p_add,
        'count', cardinality(now_users),
        'users', to_jsonb(now_users)));
END
$$;
