-- 007: per-subscription notification settings (issue 11, notifications).
--
-- subscriptions.notify is what the user chose for that channel: 'all' (every
-- message from someone else), 'mentions' (messages that mention them, and in
-- a direct channel every message) or 'none' (muted). NULL means "not chosen":
-- the default, resolved in channel_views from the channel's kind ('all' for
-- direct channels, 'mentions' for groups and Home). Stored as NULL rather
-- than resolved so the default stays a property of the kind: a user who
-- never chose follows it if it changes, and no row is written at join.
ALTER TABLE subscriptions
    ADD COLUMN notify text CHECK (notify IN ('all', 'mentions', 'none'));

-- channel_views as in 005, with every column kept in its place, and the
-- viewer's resolved setting added at the end.
CREATE OR REPLACE VIEW channel_views AS
SELECT s.user_id AS viewer_id,
       c.id, c.kind, c.name, c.description, c.last_seq,
       s.last_read_seq, s.role, s.id AS subscription_id, s.joined_seq,
       p.id AS peer_id, p.username AS peer_username, p.is_bot AS peer_is_bot,
       (SELECT count(*) FROM mentions mn
        WHERE mn.user_id = s.user_id AND mn.channel_id = c.id AND mn.seq > s.last_read_seq
       ) AS mentions,
       c.message_count, s.read_count,
       COALESCE(s.notify, CASE WHEN c.kind = 'direct' THEN 'all' ELSE 'mentions' END) AS notify
FROM subscriptions s
JOIN channels c ON c.id = s.channel_id
LEFT JOIN users p
       ON c.kind = 'direct'
      AND p.id = CASE WHEN c.direct_low = s.user_id THEN c.direct_high ELSE c.direct_low END;
