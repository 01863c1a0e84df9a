-- 009: files and images (issue 12; docs/architecture.md "Files").
--
-- A file is uploaded to a channel first (state 'uploading', then 'ready'),
-- then attached to at most one message of that channel by its sender.
-- Its bytes live in a storage backend (files.storage): 'postgres' keeps
-- them here in file_chunks (fixed-size bytea rows: streamed in and out a
-- chunk at a time, and a database backup holds them), 's3' in an object
-- store under files.storage_key. Thumbnails are small and always here.

CREATE TABLE files (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uploader_id  bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    -- The channel it was uploaded to: it can be sent there only.
    channel_id   bigint NOT NULL REFERENCES channels ON DELETE CASCADE,
    state        text NOT NULL DEFAULT 'uploading' CHECK (state IN ('uploading', 'ready')),
    name         text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 255),
    size         bigint CHECK (size >= 0),
    -- Sniffed from the bytes, never the client's word.
    content_type text NOT NULL DEFAULT 'application/octet-stream',
    width        integer,
    height       integer,
    sha256       text,
    storage      text NOT NULL CHECK (storage IN ('postgres', 's3')),
    storage_key  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (state = 'uploading' OR (size IS NOT NULL AND sha256 IS NOT NULL))
);
-- The quota sums a user's ready files; the sweep finds old ones.
CREATE INDEX files_uploader_idx ON files (uploader_id) INCLUDE (size) WHERE state = 'ready';
CREATE INDEX files_created_idx ON files (created_at);

-- The PostgreSQL backend's bytes: chunk n holds bytes [n*C, (n+1)*C) for
-- the chunk size C of chatterwerks/storage/postgres.py. Rows of a bounded
-- size rather than large objects: they go with their file (ON DELETE
-- CASCADE, no lo_unlink to forget), need no special privileges, stream
-- with ordinary statements through the pool, and are dumped by pg_dump.
CREATE TABLE file_chunks (
    file_id bigint NOT NULL REFERENCES files ON DELETE CASCADE,
    n       integer NOT NULL CHECK (n >= 0),
    data    bytea NOT NULL,
    PRIMARY KEY (file_id, n)
);
ALTER TABLE file_chunks ALTER COLUMN data SET STORAGE EXTERNAL;  -- already compressed, mostly

CREATE TABLE thumbnails (
    file_id      bigint PRIMARY KEY REFERENCES files ON DELETE CASCADE,
    content_type text NOT NULL,
    width        integer NOT NULL,
    height       integer NOT NULL,
    sha256       text NOT NULL,
    data         bytea NOT NULL
);

-- A message's attachments, in order; a file is attached once (file_id unique).
CREATE TABLE message_files (
    message_id bigint NOT NULL REFERENCES messages ON DELETE CASCADE,
    position   smallint NOT NULL CHECK (position BETWEEN 0 AND 9),
    file_id    bigint NOT NULL UNIQUE REFERENCES files ON DELETE CASCADE,
    PRIMARY KEY (message_id, position)
);

-- Objects of an external store whose file rows are gone: deleted from the
-- store after the commit that removed them, and retried by the sweep if the
-- process died in between (chatterwerks/api_files.py).
CREATE TABLE file_deletions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    storage     text NOT NULL,
    storage_key text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION queue_file_deletion() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF OLD.storage <> 'postgres' THEN
        INSERT INTO file_deletions (storage, storage_key) VALUES (OLD.storage, OLD.storage_key);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER files_queue_deletion AFTER DELETE ON files
    FOR EACH ROW EXECUTE FUNCTION queue_file_deletion();

-- How many files a message has: message_json() looks for them only then,
-- so a message without files (nearly all) costs no extra lookup.
ALTER TABLE messages
    ADD COLUMN file_count smallint NOT NULL DEFAULT 0,
    -- A message with files may have no text.
    DROP CONSTRAINT messages_text_check,
    ADD CONSTRAINT messages_text_check CHECK (
        CASE WHEN deleted_at IS NULL
             THEN char_length(text) BETWEEN 1 AND 4000 OR (text = '' AND file_count > 0)
             ELSE text = '' AND mentions = '{}' END
    );

-- A deleted message's files go with it (once no message refers to them):
-- the rows here, the bytes in file_chunks by cascade, an external object by
-- the deletion queue. Hard deletions (a channel's) cascade to message_files;
-- the files left unattached are removed by the sweep.
CREATE FUNCTION delete_message_files() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    detached bigint[];
BEGIN
    IF OLD.file_count > 0 THEN
        WITH gone AS (DELETE FROM message_files WHERE message_id = OLD.id RETURNING file_id)
        SELECT array_agg(file_id) INTO detached FROM gone;
        -- A statement of its own: it sees the rows just deleted as gone.
        DELETE FROM files f
        WHERE f.id = ANY(detached)
          AND NOT EXISTS (SELECT 1 FROM message_files mf WHERE mf.file_id = f.id);
        NEW.file_count := 0;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER messages_delete_files BEFORE UPDATE OF deleted_at ON messages
    FOR EACH ROW WHEN (NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL)
    EXECUTE FUNCTION delete_message_files();

-- A file as its JSON object (docs/api.md "File").
CREATE FUNCTION file_json(f files, has_thumbnail boolean) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT jsonb_build_object(
        'id', f.id,
        'name', f.name,
        'size', f.size,
        'content_type', f.content_type,
        'width', f.width,
        'height', f.height,
        'url', '/api/files/' || f.id,
        'thumbnail_url', CASE WHEN has_thumbnail THEN '/api/files/' || f.id || '/thumbnail' END)
$$;

-- message_json() gains "files": whatever the earlier migrations made of it
-- (kept under another name and called), plus the message's files in order.
-- Text surgery rather than a jsonb merge: the object is never parsed again.
ALTER FUNCTION message_json(messages) RENAME TO message_json_without_files;

-- The message's JSON with `attached` (a JSON array's text, NULL for none)
-- as its files. The sending statement passes the files it attaches: its own
-- message_files rows are not visible to the functions it calls.
CREATE FUNCTION message_json_with_files(m messages, attached text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT left(message_json_without_files(m), -1) || ', "files": ' || COALESCE(attached, '[]') || '}'
$$;

-- The JSON array of files $1 (ids, in order), or NULL for none.
CREATE FUNCTION files_json(ids bigint[]) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT jsonb_agg(file_json(f, t.file_id IS NOT NULL) ORDER BY u.ord)::text
    FROM unnest(ids) WITH ORDINALITY AS u(id, ord)
    JOIN files f ON f.id = u.id
    LEFT JOIN thumbnails t ON t.file_id = f.id
$$;

CREATE FUNCTION message_json(m messages) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
BEGIN
    IF m.file_count = 0 THEN
        RETURN left(message_json_without_files(m), -1) || ', "files": []}';
    END IF;
    RETURN message_json_with_files(m, files_json(ARRAY(
        SELECT file_id FROM message_files WHERE message_id = m.id ORDER BY position)));
END
$$;

-- Finishes an upload: the file becomes 'ready' with its facts (and its
-- thumbnail, if any), unless that would take its uploader past p_quota
-- bytes. Exact under concurrent uploads: the uploader's row is locked
-- first, and the sum is read by a later statement (a fresh snapshot in READ
-- COMMITTED), after every earlier finisher committed. Status: 'ok' (body:
-- the File JSON), 'quota_exceeded' (the file is deleted), 'gone' (the
-- upload row vanished: swept).
CREATE FUNCTION finish_upload(
    p_file bigint, p_user bigint, p_quota bigint, p_size bigint, p_sha256 text,
    p_content_type text, p_width integer, p_height integer,
    p_thumb_type text, p_thumb_width integer, p_thumb_height integer, p_thumb_sha256 text,
    p_thumb bytea,
    OUT status text, OUT body text)
LANGUAGE plpgsql
AS $$
DECLARE
    used bigint;
    done files;
BEGIN
    PERFORM 1 FROM users WHERE id = p_user FOR NO KEY UPDATE;
    SELECT COALESCE(sum(size), 0) INTO used FROM files WHERE uploader_id = p_user AND state = 'ready';
    IF used + p_size > p_quota THEN
        DELETE FROM files WHERE id = p_file;
        status := 'quota_exceeded';
        RETURN;
    END IF;
    UPDATE files
    SET state = 'ready', size = p_size, sha256 = p_sha256, content_type = p_content_type,
        width = p_width, height = p_height
    WHERE id = p_file AND state = 'uploading'
    RETURNING * INTO done;
    IF done.id IS NULL THEN
        status := 'gone';
        RETURN;
    END IF;
    IF p_thumb IS NOT NULL THEN
        INSERT INTO thumbnails (file_id, content_type, width, height, sha256, data)
        VALUES (p_file, p_thumb_type, p_thumb_width, p_thumb_height, p_thumb_sha256, p_thumb);
    END IF;
    status := 'ok';
    body := file_json(done, p_thumb IS NOT NULL)::text;
END
$$;
