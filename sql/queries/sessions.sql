-- name: insert_session
INSERT INTO sessions (token_hash, user_id, expires_at)
VALUES ($1, $2, now() + make_interval(days => $3));

-- name: session_user
-- The user behind a token hash, if the session has not expired.
SELECT u.id, u.username, u.is_bot
FROM sessions s
JOIN users u ON u.id = s.user_id
WHERE s.token_hash = $1 AND s.expires_at > now();

-- name: delete_session
DELETE FROM sessions WHERE token_hash = $1;
