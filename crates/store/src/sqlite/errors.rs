//! Classification of sqlx/SQLite failures into the store's neutral error kinds.
//!
//! Messages of the kinds a client may see (Conflict, Unavailable) are fixed words,
//! never SQLite's own text, which can quote SQL. Internal errors keep a short cause
//! for the server's log.

use crate::StoreError;

// Primary SQLite result codes (the low byte of an extended code).
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_READONLY: i64 = 8;
const SQLITE_IOERR: i64 = 10;
const SQLITE_FULL: i64 = 13;
const SQLITE_CANTOPEN: i64 = 14;

/// Longest cause kept in an Internal message.
const MAX_CAUSE: usize = 200;

pub(super) fn classify(error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::Database(db) => {
            if db.is_unique_violation() {
                return StoreError::Conflict("already exists".into());
            }
            let code = db.code().and_then(|c| c.parse::<i64>().ok()).unwrap_or(0) & 0xff;
            match code {
                SQLITE_BUSY | SQLITE_LOCKED => StoreError::Unavailable("database busy".into()),
                SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN | SQLITE_READONLY => {
                    StoreError::Unavailable("database not writable".into())
                }
                _ => internal(db.message()),
            }
        }
        sqlx::Error::Io(_) => StoreError::Unavailable("database i/o failed".into()),
        sqlx::Error::PoolTimedOut => StoreError::Unavailable("database busy".into()),
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            StoreError::Unavailable("database closed".into())
        }
        other => internal(&other.to_string()),
    }
}

pub(super) fn internal(cause: &str) -> StoreError {
    let mut cause = cause.to_owned();
    if cause.len() > MAX_CAUSE {
        let mut end = MAX_CAUSE;
        while !cause.is_char_boundary(end) {
            end -= 1;
        }
        cause.truncate(end);
    }
    StoreError::Internal(cause)
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        classify(error)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        match error {
            sqlx::migrate::MigrateError::Execute(e)
            | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => classify(e),
            other => internal(&format!("migration: {other}")),
        }
    }
}
