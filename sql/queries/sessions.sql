-- name: insert_session
INSERT INTO sessions (token_hash, user_id, expires_at)
VALUES ($1, $2, now() + make_interval(days => $3));

-- name: session_user
-- The user behind a token hash, if the session has neither expired nor sat
-- unused for $2 days. Marks it used, at most once a minute (a write per
-- request would cost more than the idle timeout is worth).
WITH live AS (
    SELECT token_hash, user_id, last_seen_at
    FROM sessions
    WHERE token_hash = $1
      AND expires_at > now()
      AND last_seen_at > now() - make_interval(days => $2)
), touched AS (
    UPDATE sessions s SET last_seen_at = now()
    FROM live
    WHERE s.token_hash = live.token_hash AND live.last_seen_at < now() - interval '1 minute'
)
SELECT u.id, u.username, u.is_bot, s.expires_at
FROM live
JOIN sessions s ON s.token_hash = live.token_hash
JOIN users u ON u.id = live.user_id;

-- name: delete_session
-- Ends one session, and tells every process to drop it from its cache.
WITH deleted AS (
    DELETE FROM sessions WHERE token_hash = $1 RETURNING user_id
)
SELECT pg_notify('chatterwerks', 's:' || user_id) FROM deleted;

-- name: password_hash_of
SELECT password_hash FROM users WHERE id = $1;

-- name: change_password
-- Sets a new hash and ends every other session of the user (the one making
-- the change, $3, stays signed in).
WITH changed AS (
    UPDATE users SET password_hash = $2 WHERE id = $1 RETURNING id
), ended AS (
    DELETE FROM sessions
    WHERE user_id = (SELECT id FROM changed) AND token_hash <> $3
)
SELECT pg_notify('chatterwerks', 's:' || id) FROM changed;
