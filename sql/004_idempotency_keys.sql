-- 004: a send may carry an Idempotency-Key header, so that a client retrying
-- after a lost answer (a timeout, a 503 after the commit) cannot post twice.
-- A key belongs to its author and channel; most messages have none.
ALTER TABLE messages ADD COLUMN idempotency_key text
    CHECK (char_length(idempotency_key) BETWEEN 1 AND 64);

CREATE UNIQUE INDEX messages_idempotency_key
    ON messages (channel_id, author_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
