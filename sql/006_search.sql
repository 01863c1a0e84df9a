-- 006: full-text search over message text (GET /api/search, docs/architecture.md "Search").
--
-- A text search configuration of our own: a copy of `simple` (no stemming and
-- no stop words, so every language is searched as written) whose words pass
-- through `unaccent` first, so "Ünïcode", "unicode" and "UNICODE" are one
-- lexeme. unaccent is a trusted contrib extension (PostgreSQL 13+): a
-- database owner may create it.
CREATE EXTENSION IF NOT EXISTS unaccent;

CREATE TEXT SEARCH CONFIGURATION chatterwerks_search (COPY = simple);
ALTER TEXT SEARCH CONFIGURATION chatterwerks_search
    ALTER MAPPING FOR word, numword, hword, hword_part, hword_numpart, numhword
    WITH unaccent, simple;

-- The index of a message's text, computed by PostgreSQL in the statement that
-- writes the text (a send, an edit, a deletion), so it is always the text's:
-- no trigger, no second write, no job to keep it current. A deleted message
-- has text '' and so an empty vector: it leaves the index by itself.
--
-- ASCII punctuation becomes spaces first: the default parser reads
-- "bob@example.com", "example.com/path", "3.14" or "<b>" as one token (or
-- drops it), which no search for "example" or "bob" would find; after this
-- every run of letters and digits is a word, as the query parser
-- (chatterwerks/search_query.py) splits the query. translate() and
-- to_tsvector(regconfig, text) are immutable, as a generated column needs;
-- the configuration is resolved to its oid here, whatever the search_path.
ALTER TABLE messages ADD COLUMN search tsvector GENERATED ALWAYS AS (
    to_tsvector(
        'chatterwerks_search'::regconfig,
        translate(text, '!"#$%&''()*+,-./:;<=>?@[\]^_`{|}~', '                                ')
    )
) STORED;

-- One GIN index answers the words and the author at once: btree_gin (a
-- trusted contrib extension, like unaccent) lets a GIN index hold author_id
-- beside the vector, so "these words from: this user" is one index scan
-- that intersects posting lists. Rare and middling words, and from:, take
-- this path; common words take the index below instead (docs/benchmarks.md
-- "Search, 1M messages"). The channel is not in it: for a user in 50
-- channels, reading 50 channels' posting lists cost more than it saved.
-- fastupdate off: with the pending list, one unlucky send in many would pay
-- for merging megabytes of it into the index (a latency spike on the send
-- path); without, each send adds its few entries directly, a steady cost.
CREATE EXTENSION IF NOT EXISTS btree_gin;
CREATE INDEX messages_search_idx ON messages USING gin (author_id, search)
    WITH (fastupdate = off);

-- Newest first: results are ordered by (created_at, id), and for a common
-- word the fastest plan walks this index from the newest message (or from
-- before: a date) and keeps the rows of the user's channels whose vector
-- matches: a page takes a few hundred rows, not a sort of 300,000 hits.
CREATE INDEX messages_created_idx ON messages (created_at, id);
