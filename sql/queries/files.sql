-- Files and images (sql/009_files.sql, docs/architecture.md "Files").

-- name: begin_upload
-- Starts an upload by user $1 to channel $2, if $1 is a member of it now
-- (else no row): the file row, state 'uploading', that the bytes hang on
-- ($3 name, $4 storage backend, $5 storage key, NULL: the id's text). A
-- failed upload deletes it again; one that died with its process is swept.
INSERT INTO files (uploader_id, channel_id, name, storage, storage_key)
SELECT $1, $2, $3, $4, COALESCE($5, 'file')
WHERE EXISTS (SELECT 1 FROM subscriptions WHERE channel_id = $2 AND user_id = $1)
RETURNING id, storage_key;

-- name: quota_used
-- The bytes of user $1's ready files (the quota counts these).
SELECT COALESCE(sum(size), 0)::bigint FROM files WHERE uploader_id = $1 AND state = 'ready';

-- name: finish_upload
-- See finish_upload() in sql/009_files.sql: (status, body).
SELECT status, body FROM finish_upload($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13);

-- name: abort_upload
-- An upload that failed: its row goes (its chunks with it).
DELETE FROM files WHERE id = $1 AND state = 'uploading';

-- name: put_chunk
-- One chunk of a file's bytes in the PostgreSQL backend.
INSERT INTO file_chunks (file_id, n, data) VALUES ($1, $2, $3);

-- name: get_chunk
-- Bytes [$3, $3 + $4) of chunk $2 of file $1 (1-based substring offsets).
SELECT substring(data FROM $3::int + 1 FOR $4::int) FROM file_chunks WHERE file_id = $1 AND n = $2;

-- name: readable_file
-- File $1 if user $2 may read it: a member of a channel where it was
-- posted, or its uploader while it is posted nowhere. No row otherwise (the
-- caller answers 404 either way). Checked here, at every read.
SELECT f.id, f.name, f.size, f.content_type, f.width, f.height, f.sha256, f.storage,
       f.storage_key, t.file_id IS NOT NULL AS has_thumbnail
FROM files f
LEFT JOIN thumbnails t ON t.file_id = f.id
WHERE f.id = $1 AND f.state = 'ready'
  AND CASE WHEN EXISTS (SELECT 1 FROM message_files WHERE file_id = f.id)
           THEN EXISTS (SELECT 1 FROM message_files mf
                        JOIN messages m ON m.id = mf.message_id
                        JOIN subscriptions s ON s.channel_id = m.channel_id AND s.user_id = $2
                        WHERE mf.file_id = f.id)
           ELSE f.uploader_id = $2 END;

-- name: readable_thumbnail
-- The thumbnail of file $1, on the same terms as readable_file.
SELECT t.content_type, t.width, t.height, t.sha256, t.data
FROM thumbnails t
JOIN files f ON f.id = t.file_id
WHERE t.file_id = $1 AND f.state = 'ready'
  AND CASE WHEN EXISTS (SELECT 1 FROM message_files WHERE file_id = f.id)
           THEN EXISTS (SELECT 1 FROM message_files mf
                        JOIN messages m ON m.id = mf.message_id
                        JOIN subscriptions s ON s.channel_id = m.channel_id AND s.user_id = $2
                        WHERE mf.file_id = f.id)
           ELSE f.uploader_id = $2 END;

-- name: sweep_files
-- Deletes uploads that died with their process (still 'uploading' after
-- $1 seconds) and files no message has that are older than $2 seconds
-- (never sent, or left by a hard deletion). Their bytes go by cascade or
-- by the deletion queue. How many went.
WITH gone AS (
    DELETE FROM files f
    WHERE (f.state = 'uploading' AND f.created_at < now() - make_interval(secs => $1))
       OR (f.state = 'ready' AND f.created_at < now() - make_interval(secs => $2)
           AND NOT EXISTS (SELECT 1 FROM message_files mf WHERE mf.file_id = f.id))
    RETURNING 1
)
SELECT count(*) FROM gone;

-- name: claim_deletions
-- Up to $1 queued external objects to delete, locked for this transaction
-- (another process skips them). The caller deletes the objects, then the
-- rows (delete_claimed), and commits; a failure rolls back, to retry.
SELECT id, storage, storage_key FROM file_deletions
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED;

-- name: delete_claimed
DELETE FROM file_deletions WHERE id = ANY($1::bigint[]);
