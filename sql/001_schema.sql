-- 001: the schema. Limits from docs/api.md are held here too, so no code path can
-- store a row the contract forbids.

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Kept as typed ("Alice"); uniqueness and look-ups are case-insensitive.
    username      text NOT NULL CHECK (username ~ '^[A-Za-z0-9_.-]{3,32}$'),
    -- NULL means the account cannot log in (the bot Otter).
    password_hash text,
    is_bot        boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- In "C" order, so a prefix search is an index range scan whatever the
-- database's collation: every allowed character sorts below '~'.
CREATE UNIQUE INDEX users_username_lower_key ON users ((lower(username) COLLATE "C"));

CREATE TABLE sessions (
    -- sha256 of the bearer token: a stolen database does not yield live tokens.
    token_hash   bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    user_id      bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);

CREATE TABLE channels (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('home', 'group', 'direct')),
    name        text CHECK (char_length(name) BETWEEN 1 AND 64),
    description text NOT NULL DEFAULT '' CHECK (char_length(description) <= 500),
    -- The seq of the newest message; bumped under this row's lock by each send,
    -- which makes seq gapless and equal to commit order (docs/architecture.md).
    last_seq    bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    -- A direct channel's two users, lower id first: the unique key below is
    -- what makes "one direct channel per pair" hold under concurrent opens.
    direct_low  bigint REFERENCES users ON DELETE CASCADE,
    direct_high bigint REFERENCES users ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'direct') = (name IS NULL)),
    CHECK ((kind = 'direct') = (direct_low IS NOT NULL AND direct_high IS NOT NULL)),
    CHECK (direct_low < direct_high),
    UNIQUE (direct_low, direct_high)
);
CREATE UNIQUE INDEX channels_group_name_key ON channels (lower(name)) WHERE kind = 'group';
CREATE UNIQUE INDEX channels_one_home_key ON channels (kind) WHERE kind = 'home';

CREATE TABLE subscriptions (
    -- A fresh id per membership: an events cursor that saw an older membership
    -- of the same channel notices the removal and the re-join.
    id            bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    channel_id    bigint NOT NULL REFERENCES channels ON DELETE CASCADE,
    user_id       bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    role          text NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'moderator')),
    -- channels.last_seq when this membership began: events deliver what follows.
    joined_seq    bigint NOT NULL DEFAULT 0 CHECK (joined_seq >= 0),
    last_read_seq bigint NOT NULL DEFAULT 0 CHECK (last_read_seq >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, channel_id)
);
CREATE INDEX subscriptions_channel_id_idx ON subscriptions (channel_id);

CREATE TABLE messages (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel_id bigint NOT NULL REFERENCES channels ON DELETE CASCADE,
    seq        bigint NOT NULL CHECK (seq > 0),
    author_id  bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    text       text NOT NULL CHECK (char_length(text) BETWEEN 1 AND 4000),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Also the index that serves history pages and "after seq" reads.
    UNIQUE (channel_id, seq)
);

-- A channel as one subscriber sees it (docs/api.md's Channel object): their role and
-- read marker, and for a direct channel the other person. Every channel read
-- goes through this view, filtered by viewer_id, so a non-member sees nothing.
CREATE VIEW channel_views AS
SELECT s.user_id AS viewer_id,
       c.id, c.kind, c.name, c.description, c.last_seq,
       s.last_read_seq, s.role, s.id AS subscription_id, s.joined_seq,
       p.id AS peer_id, p.username AS peer_username, p.is_bot AS peer_is_bot
FROM subscriptions s
JOIN channels c ON c.id = s.channel_id
LEFT JOIN users p
       ON c.kind = 'direct'
      AND p.id = CASE WHEN c.direct_low = s.user_id THEN c.direct_high ELSE c.direct_low END;
