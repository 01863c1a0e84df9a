-- Ephemeral events: typing and presence (sql/008_presence.sql). Payloads:
--   't:<channel_id>:<user_id>:<User JSON>'   a member is typing there
--   'p:<user_id>:<online|away|offline>:<User JSON>'   a user's global
--                                           presence changed
-- Neither is stored nor takes a position in any stream.

-- name: send_typing
-- One statement: the NOTIFY goes only if $2 is a member of channel $1 (else
-- no row, and nothing is sent).
SELECT pg_notify('chatterwerks', 't:' || s.channel_id || ':' || u.id || ':'
    || json_build_object('id', u.id, 'username', u.username, 'is_bot', u.is_bot)::text)
FROM subscriptions s
JOIN users u ON u.id = s.user_id
WHERE s.channel_id = $1 AND s.user_id = $2;

-- name: listener_start
-- When the LISTEN connection with backend pid $1 began (with its pid, this
-- names a process's presence rows); no row once it is gone.
SELECT backend_start FROM pg_stat_activity WHERE pid = $1 AND application_name = $2;

-- name: presence_update
-- Sets this process's ($1, $2) states of users $3 to $4 (0 offline, 1 away,
-- 2 online) and announces each change of a user's global state.
SELECT presence_update($1, $2, $3::bigint[], $4::smallint[]);

-- name: presence_sweep
-- Deletes the rows of processes whose listener ($1: its application name)
-- is gone, announcing who went offline with them.
SELECT presence_sweep($1);

-- name: presence_all
-- Every user's global state (absent: offline), read when a listener connects.
SELECT user_id, max(state)::int AS state FROM presence GROUP BY user_id;
