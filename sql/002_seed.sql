-- 002: the rows every installation starts with: the Home channel and the bot
-- Otter (no password hash, so it cannot log in), a member of Home.
INSERT INTO channels (kind, name, description)
VALUES ('home', 'Home', 'Everyone is here. Say "Hey Otter, help" to meet the bot.');

INSERT INTO users (username, password_hash, is_bot) VALUES ('otter', NULL, true);

INSERT INTO subscriptions (channel_id, user_id, role)
SELECT c.id, u.id, 'member'
FROM channels c, users u
WHERE c.kind = 'home' AND u.username = 'otter';
