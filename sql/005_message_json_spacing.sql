-- 005: message_json() is the one serialisation of a message: history, sends,
-- polls and NOTIFY payloads all carry its text. jsonb's text form writes
-- `"id": 4` (as Python's json module and every other answer do), where
-- json_build_object wrote `"id" : 4`.
CREATE OR REPLACE FUNCTION message_json(
    id bigint, channel_id bigint, seq bigint,
    author_id bigint, author_username text, author_is_bot boolean,
    text text, created_at timestamptz
) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT jsonb_build_object(
        'id', id,
        'channel_id', channel_id,
        'seq', seq,
        'author', jsonb_build_object('id', author_id, 'username', author_username, 'is_bot', author_is_bot),
        'text', text,
        'created_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')
    )::text
$$;
