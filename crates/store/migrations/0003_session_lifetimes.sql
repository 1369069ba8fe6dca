-- When the last refresh token of a session expires: past it (plus an access token's
-- lifetime) no token of the session can be alive, so the row may go.
ALTER TABLE sessions ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
UPDATE sessions SET expires_at = coalesce(
    (SELECT max(t.expires_at) FROM refresh_tokens t WHERE t.session = sessions.id),
    created_at);
CREATE INDEX sessions_expires_at ON sessions (expires_at) WHERE ended_at IS NULL;

-- The token a refresh token was rotated to: its hash, and the token itself sealed
-- with a key derived from the rotated token, which only that token's holder can
-- open. Kept for the rotated token whose successor is current, so tabs refreshing
-- with it at the same moment all get the same successor (the reuse grace window).
ALTER TABLE refresh_tokens ADD COLUMN successor_hash TEXT;
ALTER TABLE refresh_tokens ADD COLUMN successor_sealed BLOB;
