-- 003: a message as docs/api.md's JSON object, built in one place in SQL, so the
-- sending statement can put it in its NOTIFY payload: every server process
-- then has the new message without reading it back (hub.py).
-- created_at always has microseconds and +00:00, as Python's
-- isoformat(timespec="microseconds") writes it for the rows read elsewhere.
CREATE FUNCTION message_json(
    id bigint, channel_id bigint, seq bigint,
    author_id bigint, author_username text, author_is_bot boolean,
    text text, created_at timestamptz
) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT json_build_object(
        'id', id,
        'channel_id', channel_id,
        'seq', seq,
        'author', json_build_object('id', author_id, 'username', author_username, 'is_bot', author_is_bot),
        'text', text,
        'created_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')
    )::text
$$;
