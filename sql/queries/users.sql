-- name: insert_user
-- Registers a user; returns nothing when the name is taken in any case.
INSERT INTO users (username, password_hash)
VALUES ($1, $2)
ON CONFLICT DO NOTHING
RETURNING id, username, is_bot;

-- name: user_for_login
-- The row login verifies against. The bot has no hash and never matches.
SELECT id, username, is_bot, password_hash
FROM users
WHERE lower(username) COLLATE "C" = lower($1);

-- name: user_by_name
SELECT id, username, is_bot
FROM users
WHERE lower(username) COLLATE "C" = lower($1);

-- name: users_by_names
-- Resolves a list of usernames (lower-cased by the caller) in one round trip.
SELECT id, username, is_bot
FROM users
WHERE lower(username) COLLATE "C" = ANY($1::text[]);

-- name: search_users
-- Prefix search, an index range scan: $1 is the lower-cased prefix, which holds
-- only username characters, all of which sort below '~' in "C" order.
SELECT id, username, is_bot
FROM users
WHERE lower(username) COLLATE "C" >= $1
  AND lower(username) COLLATE "C" < $1 || '~'
ORDER BY lower(username) COLLATE "C"
LIMIT $2;

-- name: otter_id
SELECT id FROM users WHERE username = 'otter' AND is_bot;
