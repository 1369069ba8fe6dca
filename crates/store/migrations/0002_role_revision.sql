-- The seq of a role's last edit. A bound user's revision is the higher of its own
-- (`users.revision`) and those of the roles it is bound to, so editing a role writes
-- one row however many users hold it.
ALTER TABLE roles ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;

-- Until now a role edit raised every bound user's own revision, so 0 keeps every
-- user's revision as it was.
