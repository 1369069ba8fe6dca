-- permsync's first schema. Times are INTEGER milliseconds since the Unix epoch (UTC);
-- ids and revisions are the INTEGER `seq` of the change that made them.

-- One row: the seq of the last committed change. Every mutation reads and advances it
-- while holding SQLite's write lock, so seqs are handed out and committed in order.
CREATE TABLE meta (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO meta (id, seq) VALUES (1, 0);

-- Every user whose revision is tracked. A deleted user, or one only known because an
-- app invalidated it, keeps its row with present = 0 so its revision never goes back.
CREATE TABLE users (
    name          TEXT PRIMARY KEY NOT NULL,
    revision      INTEGER NOT NULL,
    present       INTEGER NOT NULL CHECK (present IN (0, 1)),
    password_hash TEXT
);
CREATE INDEX users_present ON users (present, name);

-- permissions: a JSON array of permission strings, in the order they were set.
CREATE TABLE roles (
    name        TEXT PRIMARY KEY NOT NULL,
    permissions TEXT NOT NULL,
    description TEXT NOT NULL
);

CREATE TABLE grants (
    id         INTEGER PRIMARY KEY,
    user       TEXT NOT NULL REFERENCES users (name),
    permission TEXT NOT NULL,
    scope      TEXT,
    expires_at INTEGER,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
);
-- Serves both "the user's grants" and the idempotent-add lookup.
CREATE INDEX grants_user ON grants (user, permission, scope);
CREATE INDEX grants_expires_at ON grants (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE bindings (
    id         INTEGER PRIMARY KEY,
    user       TEXT NOT NULL REFERENCES users (name),
    role       TEXT NOT NULL REFERENCES roles (name),
    scope      TEXT,
    expires_at INTEGER,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
);
CREATE INDEX bindings_user ON bindings (user, role, scope);
CREATE INDEX bindings_role ON bindings (role);
CREATE INDEX bindings_expires_at ON bindings (expires_at) WHERE expires_at IS NOT NULL;

-- The truth: one row per committed change. The typed columns hold what most changes
-- carry; `detail` (JSON) holds the rest (role permissions, invalidated users, sessions).
CREATE TABLE changelog (
    seq        INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    user       TEXT,
    role       TEXT,
    permission TEXT,
    scope      TEXT,
    ref_id     INTEGER,
    expires_at INTEGER,
    detail     TEXT
);

-- Login sessions of the built-in identity. Ended sessions stay, so access tokens
-- issued for them can be refused until they expire.
CREATE TABLE sessions (
    id           TEXT PRIMARY KEY NOT NULL,
    user         TEXT NOT NULL REFERENCES users (name),
    created_at   INTEGER NOT NULL,
    ended_at     INTEGER,
    ended_reason TEXT
);
CREATE INDEX sessions_open_by_user ON sessions (user) WHERE ended_at IS NULL;
CREATE INDEX sessions_ended_at ON sessions (ended_at) WHERE ended_at IS NOT NULL;

-- Refresh tokens, only as hashes. A rotated token stays until it expires so that
-- presenting it again is recognised as reuse.
CREATE TABLE refresh_tokens (
    hash       TEXT PRIMARY KEY NOT NULL,
    session    TEXT NOT NULL REFERENCES sessions (id),
    expires_at INTEGER NOT NULL,
    rotated_at INTEGER
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY NOT NULL,
    algorithm   TEXT NOT NULL,
    private_der BLOB NOT NULL,
    public      BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
);
