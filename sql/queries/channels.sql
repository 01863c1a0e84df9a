-- Notifications go to one channel, 'chatterwerks', with a tiny payload:
--   'M:<channel_id>:<seq>:<author_id>:<number>:<message JSON>'  a message was
--                           committed (messages.sql)
--   'm:<channel_id>:<seq>:<author_id>:<number>'  the same, for a message too
--                           long to carry
--   'E:<channel_id>:<seq>:<kind>:<event JSON>', 'e:<channel_id>:<seq>:<kind>'
--                           an edit, a deletion or a reaction (record_change)
--   'u:<user_id>'           that user's channel list or read markers changed
--   's:<user_id>'           some of that user's sessions ended (sessions.sql)
-- NOTIFY is delivered at commit, so a woken reader always finds the row.

-- name: list_channels
-- The viewer's channels: Home first, then groups by name, then direct ones.
SELECT * FROM channel_views
WHERE viewer_id = $1
ORDER BY kind <> 'home', kind DESC, lower(name), peer_username, id;

-- name: get_channel
SELECT * FROM channel_views WHERE viewer_id = $1 AND id = $2;

-- name: channels_by_ids
SELECT * FROM channel_views WHERE viewer_id = $1 AND id = ANY($2::bigint[]);

-- name: channel_members
-- Members of a channel, only if the viewer $2 is one of them (else no rows).
SELECT u.id, u.username, u.is_bot, s.role
FROM subscriptions s
JOIN users u ON u.id = s.user_id
WHERE s.channel_id = $1
  AND EXISTS (SELECT 1 FROM subscriptions v WHERE v.channel_id = $1 AND v.user_id = $2)
ORDER BY lower(u.username) COLLATE "C";

-- name: insert_group
-- Returns nothing when a group of that name exists in any case.
INSERT INTO channels (kind, name, description)
VALUES ('group', $1, $2)
ON CONFLICT (lower(name)) WHERE kind = 'group' DO NOTHING
RETURNING id;

-- name: subscribe
-- Adds user $2 to channel $1 with role $3; joined_seq marks where their
-- events begin, and what came before counts as read (a newcomer is not
-- greeted by the whole history as unread). Nothing if already a member.
WITH added AS (
    INSERT INTO subscriptions (channel_id, user_id, role, joined_seq, last_read_seq, read_count)
    SELECT c.id, $2, $3, c.last_seq, c.last_seq, c.message_count FROM channels c WHERE c.id = $1
    ON CONFLICT (user_id, channel_id) DO NOTHING
    RETURNING user_id
)
SELECT pg_notify('chatterwerks', 'u:' || user_id) FROM added;

-- name: subscribe_home
-- Registration: the new user joins Home, its history counted as read.
INSERT INTO subscriptions (channel_id, user_id, role, joined_seq, last_read_seq, read_count)
SELECT c.id, $1, 'member', c.last_seq, c.last_seq, c.message_count
FROM channels c WHERE c.kind = 'home'
RETURNING channel_id;

-- name: membership_for_update
-- The actor's membership and the channel kind, locked against a concurrent
-- removal while a moderator acts.
SELECT s.role, c.kind
FROM subscriptions s
JOIN channels c ON c.id = s.channel_id
WHERE s.channel_id = $1 AND s.user_id = $2
FOR UPDATE OF s;

-- name: unsubscribe
-- Removes user $2 from channel $1; the removed user's clients learn it at once.
WITH removed AS (
    DELETE FROM subscriptions WHERE channel_id = $1 AND user_id = $2
    RETURNING user_id
)
SELECT pg_notify('chatterwerks', 'u:' || user_id) FROM removed;

-- name: lock_membership_changes
-- Serialises the removals from channel $1 (for the transaction): two members
-- leaving at once could otherwise each hand the moderator role to the other,
-- and leave the group without one. Sends do not take it.
SELECT pg_advisory_xact_lock(hashtextextended('chatterwerks:members:' || $1::bigint, 0));

-- name: ensure_moderator
-- A group whose last moderator left hands the role to its longest member.
UPDATE subscriptions SET role = 'moderator'
WHERE id = (SELECT id FROM subscriptions WHERE channel_id = $1 ORDER BY id LIMIT 1)
  AND NOT EXISTS (SELECT 1 FROM subscriptions WHERE channel_id = $1 AND role = 'moderator');

-- name: insert_direct
-- The one direct channel of a pair ($1 < $2). The unique key settles a race
-- between two first opens: the loser gets no row and reads the winner's.
INSERT INTO channels (kind, direct_low, direct_high)
VALUES ('direct', $1, $2)
ON CONFLICT (direct_low, direct_high) DO NOTHING
RETURNING id;

-- name: direct_channel_id
SELECT id FROM channels WHERE kind = 'direct' AND direct_low = $1 AND direct_high = $2;

-- name: mark_read
-- Moves the read marker forward only, clamped to the channel's last_seq, and
-- with it read_count (the number of the newest message at or before it);
-- tells the user's other tabs when it moved. is_member is false for a
-- non-member.
WITH moved AS (
    UPDATE subscriptions s
    SET last_read_seq = LEAST($3, c.last_seq),
        read_count = GREATEST(s.read_count, COALESCE(
            (SELECT m.number FROM messages m
             WHERE m.channel_id = $1 AND m.seq <= LEAST($3, c.last_seq)
             ORDER BY m.seq DESC LIMIT 1), 0))
    FROM channels c
    WHERE s.channel_id = $1 AND s.user_id = $2 AND c.id = s.channel_id
      AND LEAST($3, c.last_seq) > s.last_read_seq
    RETURNING s.user_id
), notified AS (
    SELECT pg_notify('chatterwerks', 'u:' || user_id) FROM moved
)
SELECT EXISTS (SELECT 1 FROM subscriptions WHERE channel_id = $1 AND user_id = $2) AS is_member,
       (SELECT count(*) FROM notified) AS moved;

-- name: is_member
SELECT EXISTS (SELECT 1 FROM subscriptions WHERE channel_id = $1 AND user_id = $2);

-- name: set_notify
-- Sets user $2's notification setting of channel $1 to $3 ('all',
-- 'mentions', 'none'; the CHECK of sql/007 holds the set). Membership is
-- the WHERE: a non-member (or a missing channel) gets no row back.
UPDATE subscriptions SET notify = $3
WHERE channel_id = $1 AND user_id = $2
RETURNING channel_id;

-- name: read_all
-- Moves every read marker of user $1 to its channel's end, in one statement:
-- last_read_seq to the channel's last_seq and read_count to its
-- message_count, a consistent pair from one row version of the channel, so
-- a message committed before this statement's snapshot is read and one
-- committed after is unread, its marker and counts agreeing. The user's
-- memberships are locked first in channel order (two read-alls at once
-- cannot deadlock: MATERIALIZED keeps the locking in the CTE, and the
-- UPDATE touches only rows it has handed out, so every wait is in channel
-- order), with FOR NO KEY UPDATE, which a send's FOR KEY SHARE does not
-- wait for; no channel row is locked, so sends are not held up.
-- Markers only move forward: a send by the user that committed meanwhile
-- (and moved their own marker past this snapshot) is re-checked and kept.
-- One 'u:' NOTIFY if any marker moved: the user's other clients' polls wake
-- and answer a `read` event per channel moved (events.py compares markers).
-- Returns how many moved.
WITH locked AS MATERIALIZED (
    SELECT channel_id FROM subscriptions
    WHERE user_id = $1
    ORDER BY channel_id
    FOR NO KEY UPDATE
), moved AS (
    UPDATE subscriptions s
    SET last_read_seq = c.last_seq,
        read_count = GREATEST(s.read_count, c.message_count)
    FROM channels c
    WHERE s.user_id = $1 AND s.channel_id IN (SELECT channel_id FROM locked)
      AND c.id = s.channel_id AND c.last_seq > s.last_read_seq
    RETURNING s.channel_id
), notified AS (
    SELECT pg_notify('chatterwerks', 'u:' || $1::bigint)
    WHERE EXISTS (SELECT 1 FROM moved)
)
SELECT (SELECT count(*) FROM moved) AS moved, (SELECT count(*) FROM notified) AS notified;
