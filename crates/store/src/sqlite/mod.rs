//! The embedded SQLite backend: one database file, shared by the server and the
//! command line that may write to it while the server runs.
//!
//! How the gap-free `seq` is kept: every mutation opens its transaction with
//! `BEGIN IMMEDIATE`, which takes SQLite's single write lock before anything is read.
//! Inside it, the last `seq` is read from `meta`, each change gets the next number,
//! and `meta` is advanced in the same commit. As only one writer holds the lock at a
//! time, seqs are committed in the order they were handed out and a reader tailing
//! `changelog` by `seq` can never see a later row before an earlier one. Writers of
//! this process additionally queue on a tokio mutex so they do not spin in SQLite's
//! busy handler against each other; writers of other processes wait in it (up to
//! [`BUSY_TIMEOUT`]). A mutation that fails rolls back, so a seq is never lost.
//!
//! Durability: WAL journal with `synchronous=NORMAL`, so a commit survives the
//! process being killed (not necessarily a power cut of the machine).

mod changelog;
mod commits;
mod errors;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use permsync_core::{
    Binding, Change, ChangeKind, Grant, Permission, RoleName, Scope, SessionEnd, Timestamp, UserId,
};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use self::changelog::id_to_sql;
use crate::{
    Added, NewBinding, NewGrant, NewSession, RefreshOutcome, Result, Rotation, SigningKey, State,
    Store, StoreError, UserPage,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A user's revision, for a query over `users u`: its own, or the latest edit of a
/// role it is bound to if that is later. A role edit raises every member's revision
/// by writing the role's row alone; removing a binding (or the role) raises the
/// user's own past it, so the revision never goes back.
const USER_REVISION: &str = "max(u.revision, coalesce((SELECT max(r.revision) FROM bindings b \
     JOIN roles r ON r.name = b.role WHERE b.user = u.name), 0))";

/// How long a writer waits for another process's write transaction before giving up
/// with `Unavailable`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections of a file database: WAL lets readers run beside the one writer.
const MAX_CONNECTIONS: u32 = 8;

/// Who removes expired grants and bindings.
const SYSTEM_ACTOR: &str = "system";

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    pool: SqlitePool,
    /// Serializes this process's write transactions (see the module docs).
    write_lock: Mutex<()>,
    /// Sees other connections' commits to a database file.
    commits: Option<commits::CommitWatch>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates a database.
    ///
    /// `url` is `sqlite://relative/path.db`, `sqlite:///absolute/path.db`, a plain file
    /// path, or `sqlite::memory:` for a private in-memory database (tests).
    ///
    /// A new database file is created readable and writable by its owner only
    /// (0600): it holds the private signing keys. SQLite gives the `-wal` and `-shm`
    /// files it makes beside it the database file's mode.
    pub async fn open(url: &str) -> Result<SqliteStore> {
        let (options, in_memory) = connect_options(url)?;
        if !in_memory {
            // `create_if_missing` makes the file, not its folder (`data/permsync.db`).
            if let Some(dir) = options
                .get_filename()
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|_| {
                    StoreError::Unavailable("cannot create the database folder".into())
                })?;
            }
            create_private_file(options.get_filename())?;
        }
        let file = options.get_filename().to_path_buf();
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool_options = if in_memory {
            // An in-memory database lives as long as a connection to it: keep exactly
            // one, forever.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            // A connection to a local file does not go stale; pinging it before every
            // use would only add a round trip to each call.
            SqlitePoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                .test_before_acquire(false)
        };
        let pool = pool_options
            .acquire_timeout(BUSY_TIMEOUT * 2)
            .connect_with(options)
            .await?;
        migrate(&pool).await?;
        let commits = if in_memory {
            None
        } else {
            commits::CommitWatch::start(&file)
        };
        Ok(SqliteStore {
            pool,
            write_lock: Mutex::new(()),
            commits,
        })
    }

    /// Closes every connection; later calls fail with `Unavailable`.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a write transaction holding SQLite's write lock (see the module docs).
    async fn write(&self) -> Result<Write<'_>> {
        let serial = self.write_lock.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM meta WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let seq = to_u64(seq)?;
        Ok(Write {
            tx,
            seq,
            first_seq: seq,
            _serial: serial,
        })
    }
}

/// The database files of `url`: the database and the `-wal` and `-shm` files
/// SQLite keeps beside it in WAL mode (whether or not they exist yet); none for an
/// in-memory database.
pub fn database_files(url: &str) -> Result<Vec<PathBuf>> {
    let (options, in_memory) = connect_options(url)?;
    if in_memory {
        return Ok(Vec::new());
    }
    let db = options.get_filename().to_path_buf();
    let beside = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    Ok(vec![beside(""), beside("-wal"), beside("-shm")])
}

/// Parses a database URL or plain path; `true` for an in-memory database.
fn connect_options(url: &str) -> Result<(SqliteConnectOptions, bool)> {
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let options = if url.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Internal(format!("invalid database url: {e}")))?
    } else {
        SqliteConnectOptions::new().filename(url)
    };
    Ok((options, in_memory))
}

/// Creates an empty database file with mode 0600 unless one exists, before SQLite
/// would create it with 0644 (under the usual umask). SQLite treats an empty file
/// as a new database.
fn create_private_file(path: &Path) -> Result<()> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    match open.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(_) => Err(StoreError::Unavailable(
            "cannot create the database file".into(),
        )),
    }
}

/// Applies pending migrations. Another process opening the same new file at the same
/// moment may have applied one between our check and our apply; the retry then finds
/// it applied.
async fn migrate(pool: &SqlitePool) -> Result<()> {
    let mut attempt = 0;
    loop {
        match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(
                e @ (sqlx::migrate::MigrateError::Execute(_)
                | sqlx::migrate::MigrateError::ExecuteMigration(..)),
            ) if attempt < 3 => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "retrying database migration");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One write transaction. Dropping it without [`Write::commit`] rolls back, which
/// also returns every seq it handed out.
struct Write<'a> {
    // Field order matters: the transaction is dropped (rolled back) before the
    // process-wide write lock is released.
    tx: Transaction<'static, Sqlite>,
    /// The last seq handed out (or committed before this transaction).
    seq: u64,
    first_seq: u64,
    _serial: MutexGuard<'a, ()>,
}

impl Write<'_> {
    fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }

    /// Hands out the next seq and appends the change built for it to the changelog.
    async fn push(
        &mut self,
        at: Timestamp,
        actor: &str,
        kind: impl FnOnce(u64) -> ChangeKind,
    ) -> Result<Change> {
        self.seq += 1;
        let change = Change {
            seq: self.seq,
            at,
            actor: actor.to_owned(),
            kind: kind(self.seq),
        };
        let c = changelog::encode(&change.kind)?;
        sqlx::query(
            "INSERT INTO changelog (seq, at, actor, action, user, role, permission, scope, ref_id, expires_at, detail) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id_to_sql(change.seq)?)
        .bind(change.at.millis())
        .bind(&change.actor)
        .bind(c.action)
        .bind(c.user)
        .bind(c.role)
        .bind(c.permission)
        .bind(c.scope)
        .bind(c.ref_id)
        .bind(c.expires_at)
        .bind(c.detail)
        .execute(&mut *self.tx)
        .await?;
        Ok(change)
    }

    /// Sets a user's revision to the seq of the change that just touched them.
    async fn touch_user(&mut self, user: &str, seq: u64) -> Result<()> {
        sqlx::query("UPDATE users SET revision = ? WHERE name = ?")
            .bind(id_to_sql(seq)?)
            .bind(user)
            .execute(self.conn())
            .await?;
        Ok(())
    }

    /// Whether the user exists (not deleted, not only known by revision).
    async fn user_present(&mut self, user: &str) -> Result<bool> {
        let present: Option<i64> = sqlx::query_scalar("SELECT present FROM users WHERE name = ?")
            .bind(user)
            .fetch_optional(self.conn())
            .await?;
        Ok(present == Some(1))
    }

    async fn role_exists(&mut self, role: &str) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM roles WHERE name = ?")
            .bind(role)
            .fetch_optional(self.conn())
            .await?;
        Ok(found.is_some())
    }

    /// Ends one open session: its refresh tokens go, and a `SessionsEnded` change tells
    /// the streams of that session to close.
    async fn end_session(
        &mut self,
        session: String,
        user: UserId,
        reason: SessionEnd,
        actor: &str,
        at: Timestamp,
    ) -> Result<Change> {
        sqlx::query("UPDATE sessions SET ended_at = ?, ended_reason = ? WHERE id = ?")
            .bind(at.millis())
            .bind(reason.as_str())
            .bind(&session)
            .execute(self.conn())
            .await?;
        sqlx::query("DELETE FROM refresh_tokens WHERE session = ?")
            .bind(&session)
            .execute(self.conn())
            .await?;
        self.push(at, actor, |_| ChangeKind::SessionsEnded {
            user,
            sessions: vec![session],
            reason,
        })
        .await
    }

    /// Ends every open session of a user with one change; `None` if none was open.
    async fn end_open_sessions(
        &mut self,
        user: &UserId,
        reason: SessionEnd,
        actor: &str,
        at: Timestamp,
    ) -> Result<Option<Change>> {
        let sessions: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM sessions WHERE user = ? AND ended_at IS NULL ORDER BY id",
        )
        .bind(user.as_str())
        .fetch_all(self.conn())
        .await?;
        if sessions.is_empty() {
            return Ok(None);
        }
        sqlx::query(
            "DELETE FROM refresh_tokens WHERE session IN (SELECT id FROM sessions WHERE user = ?)",
        )
        .bind(user.as_str())
        .execute(self.conn())
        .await?;
        sqlx::query("UPDATE sessions SET ended_at = ?, ended_reason = ? WHERE user = ? AND ended_at IS NULL")
            .bind(at.millis())
            .bind(reason.as_str())
            .bind(user.as_str())
            .execute(self.conn())
            .await?;
        let change = self
            .push(at, actor, |_| ChangeKind::SessionsEnded {
                user: user.clone(),
                sessions,
                reason,
            })
            .await?;
        Ok(Some(change))
    }

    async fn commit(mut self) -> Result<()> {
        if self.seq != self.first_seq {
            let seq = id_to_sql(self.seq)?;
            sqlx::query("UPDATE meta SET seq = ? WHERE id = 1")
                .bind(seq)
                .execute(self.conn())
                .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}

// ---- decoding rows ----

fn to_u64(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::Internal(format!("negative id {v} in database")))
}

fn user_from_db(s: &str) -> Result<UserId> {
    UserId::parse(s).map_err(|_| StoreError::Internal("invalid user name in database".into()))
}

fn role_from_db(s: &str) -> Result<RoleName> {
    RoleName::parse(s).map_err(|_| StoreError::Internal("invalid role name in database".into()))
}

fn permission_from_db(s: &str) -> Result<Permission> {
    Permission::parse(s).map_err(|_| StoreError::Internal("invalid permission in database".into()))
}

fn scope_from_db(s: Option<&str>) -> Result<Option<Scope>> {
    s.map(Scope::parse)
        .transpose()
        .map_err(|_| StoreError::Internal("invalid scope in database".into()))
}

fn permissions_from_json(json: &str) -> Result<Vec<Permission>> {
    let raw: Vec<String> = serde_json::from_str(json)
        .map_err(|_| StoreError::Internal("invalid role permissions in database".into()))?;
    raw.iter().map(|p| permission_from_db(p)).collect()
}

fn permissions_to_json(permissions: &[Permission]) -> Result<String> {
    let raw: Vec<&str> = permissions.iter().map(Permission::as_str).collect();
    serde_json::to_string(&raw)
        .map_err(|e| StoreError::Internal(format!("encoding permissions: {e}")))
}

/// A `grants` row: id, user, permission, scope, expires_at, created_at, created_by.
type GrantRow = (
    i64,
    String,
    String,
    Option<String>,
    Option<i64>,
    i64,
    String,
);
const GRANT_COLUMNS: &str = "id, user, permission, scope, expires_at, created_at, created_by";

fn grant_from_row(
    (id, user, permission, scope, expires_at, created_at, created_by): GrantRow,
) -> Result<Grant> {
    Ok(Grant {
        id: to_u64(id)?,
        user: user_from_db(&user)?,
        permission: permission_from_db(&permission)?,
        scope: scope_from_db(scope.as_deref())?,
        expires_at: expires_at.map(Timestamp),
        created_at: Timestamp(created_at),
        created_by,
    })
}

/// A `bindings` row: id, user, role, scope, expires_at, created_at, created_by.
type BindingRow = (
    i64,
    String,
    String,
    Option<String>,
    Option<i64>,
    i64,
    String,
);
const BINDING_COLUMNS: &str = "id, user, role, scope, expires_at, created_at, created_by";

fn binding_from_row(
    (id, user, role, scope, expires_at, created_at, created_by): BindingRow,
) -> Result<Binding> {
    Ok(Binding {
        id: to_u64(id)?,
        user: user_from_db(&user)?,
        role: role_from_db(&role)?,
        scope: scope_from_db(scope.as_deref())?,
        expires_at: expires_at.map(Timestamp),
        created_at: Timestamp(created_at),
        created_by,
    })
}

/// A `refresh_tokens` row joined with its session: session, expires_at, rotated_at,
/// successor_hash, successor_sealed, user, ended_at.
type RefreshRow = (
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<Vec<u8>>,
    String,
    Option<i64>,
);

/// Something due to expire, read by [`Store::expire_due`].
enum Due {
    Grant {
        id: i64,
        user: String,
        permission: String,
        scope: Option<String>,
    },
    Binding {
        id: i64,
        user: String,
        role: String,
        scope: Option<String>,
    },
}

#[async_trait]
impl Store for SqliteStore {
    async fn load(&self) -> Result<State> {
        // One read transaction: WAL gives it a snapshot as of its first read, so the
        // rows and `seq` agree even while another process writes.
        let mut tx = self.pool.begin().await?;
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM meta WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let users: Vec<(String, i64, i64)> = sqlx::query_as(&format!(
            "SELECT name, {USER_REVISION}, present FROM users u ORDER BY name"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let roles: Vec<(String, String, String)> =
            sqlx::query_as("SELECT name, permissions, description FROM roles ORDER BY name")
                .fetch_all(&mut *tx)
                .await?;
        let grants: Vec<GrantRow> =
            sqlx::query_as(&format!("SELECT {GRANT_COLUMNS} FROM grants ORDER BY id"))
                .fetch_all(&mut *tx)
                .await?;
        let bindings: Vec<BindingRow> = sqlx::query_as(&format!(
            "SELECT {BINDING_COLUMNS} FROM bindings ORDER BY id"
        ))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;

        Ok(State {
            seq: to_u64(seq)?,
            users: users
                .into_iter()
                .map(|(name, revision, present)| {
                    Ok((user_from_db(&name)?, to_u64(revision)?, present == 1))
                })
                .collect::<Result<_>>()?,
            roles: roles
                .into_iter()
                .map(|(name, permissions, description)| {
                    Ok((
                        role_from_db(&name)?,
                        permissions_from_json(&permissions)?,
                        description,
                    ))
                })
                .collect::<Result<_>>()?,
            grants: grants
                .into_iter()
                .map(grant_from_row)
                .collect::<Result<_>>()?,
            bindings: bindings
                .into_iter()
                .map(binding_from_row)
                .collect::<Result<_>>()?,
        })
    }

    async fn changes_after(&self, after: u64, limit: u32) -> Result<Vec<Change>> {
        let Ok(after_sql) = i64::try_from(after) else {
            return Ok(Vec::new());
        };
        let rows: Vec<changelog::StoredRow> = sqlx::query_as(&format!(
            "SELECT {} FROM changelog WHERE seq > ? ORDER BY seq LIMIT ?",
            changelog::SELECT_COLUMNS
        ))
        .bind(after_sql)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let changes = rows
            .into_iter()
            .map(changelog::decode)
            .collect::<Result<Vec<_>>>()?;
        // Cheap insurance for tailers: a hole inside one batch means a damaged log.
        if changes.windows(2).any(|w| w[1].seq != w[0].seq + 1) {
            return Err(StoreError::Internal("changelog has a gap".into()));
        }
        Ok(changes)
    }

    async fn last_seq(&self) -> Result<u64> {
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM meta WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        to_u64(seq)
    }

    async fn list_users(&self, prefix: &str, limit: u32, cursor: Option<&str>) -> Result<UserPage> {
        let limit = limit.max(1);
        // A range on the primary key finds the prefix without scanning; user names are
        // ASCII, so every name starting with `prefix` sorts below `prefix` + U+10FFFF.
        // The substr test keeps the answer exact for any other input.
        let upper = (!prefix.is_empty()).then(|| format!("{prefix}\u{10FFFF}"));
        let rows: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT name, {USER_REVISION} FROM users u \
             WHERE present = 1 AND name >= ?1 AND (?2 IS NULL OR name < ?2) AND (?3 IS NULL OR name > ?3) \
             AND substr(name, 1, length(?1)) = ?1 \
             ORDER BY name LIMIT ?4",
        ))
        .bind(prefix)
        .bind(upper)
        .bind(cursor)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() > limit as usize;
        let users = rows
            .into_iter()
            .take(limit as usize)
            .map(|(name, revision)| Ok((user_from_db(&name)?, to_u64(revision)?)))
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = if more {
            users.last().map(|(u, _)| u.as_str().to_owned())
        } else {
            None
        };
        Ok(UserPage { users, next_cursor })
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn commit_signal(&self) -> Option<tokio::sync::watch::Receiver<()>> {
        self.commits.as_ref().map(commits::CommitWatch::subscribe)
    }

    async fn create_user(
        &self,
        actor: &str,
        user: &UserId,
        password_hash: Option<&str>,
        at: Timestamp,
    ) -> Result<Change> {
        let mut w = self.write().await?;
        if w.user_present(user.as_str()).await? {
            return Err(StoreError::Conflict("user already exists".into()));
        }
        let change = w
            .push(at, actor, |_| ChangeKind::UserCreated {
                user: user.clone(),
            })
            .await?;
        // A user known only by revision (deleted, or invalidated by an app) keeps
        // its row, so its revision only moves forward.
        sqlx::query(
            "INSERT INTO users (name, revision, present, password_hash) VALUES (?, ?, 1, ?) \
             ON CONFLICT (name) DO UPDATE SET revision = excluded.revision, present = 1, \
             password_hash = excluded.password_hash",
        )
        .bind(user.as_str())
        .bind(id_to_sql(change.seq)?)
        .bind(password_hash)
        .execute(w.conn())
        .await?;
        w.commit().await?;
        Ok(change)
    }

    async fn delete_user(&self, actor: &str, user: &UserId, at: Timestamp) -> Result<Vec<Change>> {
        let mut w = self.write().await?;
        if !w.user_present(user.as_str()).await? {
            return Err(StoreError::NotFound(format!("user {}", user)));
        }
        let deleted = w
            .push(at, actor, |_| ChangeKind::UserDeleted {
                user: user.clone(),
            })
            .await?;
        sqlx::query("DELETE FROM grants WHERE user = ?")
            .bind(user.as_str())
            .execute(w.conn())
            .await?;
        sqlx::query("DELETE FROM bindings WHERE user = ?")
            .bind(user.as_str())
            .execute(w.conn())
            .await?;
        sqlx::query(
            "UPDATE users SET present = 0, revision = ?, password_hash = NULL WHERE name = ?",
        )
        .bind(id_to_sql(deleted.seq)?)
        .bind(user.as_str())
        .execute(w.conn())
        .await?;
        let ended = w
            .end_open_sessions(user, SessionEnd::Revoked, actor, at)
            .await?;
        w.commit().await?;
        Ok(std::iter::once(deleted).chain(ended).collect())
    }

    async fn set_password(&self, user: &UserId, password_hash: &str) -> Result<()> {
        let mut w = self.write().await?;
        let done = sqlx::query("UPDATE users SET password_hash = ? WHERE name = ? AND present = 1")
            .bind(password_hash)
            .bind(user.as_str())
            .execute(w.conn())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user {}", user)));
        }
        w.commit().await
    }

    async fn add_grant(&self, actor: &str, grant: NewGrant, at: Timestamp) -> Result<Added<Grant>> {
        let mut w = self.write().await?;
        if !w.user_present(grant.user.as_str()).await? {
            return Err(StoreError::NotFound(format!("user {}", grant.user)));
        }
        let existing: Option<GrantRow> = sqlx::query_as(&format!(
            "SELECT {GRANT_COLUMNS} FROM grants WHERE user = ? AND permission = ? AND scope IS ? \
             AND (expires_at IS NULL OR expires_at > ?) ORDER BY id LIMIT 1"
        ))
        .bind(grant.user.as_str())
        .bind(grant.permission.as_str())
        .bind(grant.scope.as_ref().map(Scope::as_str))
        .bind(at.millis())
        .fetch_optional(w.conn())
        .await?;
        if let Some(row) = existing {
            return Ok(Added::Existing(grant_from_row(row)?));
        }
        let change = w
            .push(at, actor, |seq| {
                ChangeKind::GrantAdded(Grant {
                    id: seq,
                    user: grant.user,
                    permission: grant.permission,
                    scope: grant.scope,
                    expires_at: grant.expires_at,
                    created_at: at,
                    created_by: actor.to_owned(),
                })
            })
            .await?;
        let ChangeKind::GrantAdded(created) = &change.kind else {
            unreachable!("built just above")
        };
        sqlx::query(&format!(
            "INSERT INTO grants ({GRANT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(id_to_sql(created.id)?)
        .bind(created.user.as_str())
        .bind(created.permission.as_str())
        .bind(created.scope.as_ref().map(Scope::as_str))
        .bind(created.expires_at.map(Timestamp::millis))
        .bind(created.created_at.millis())
        .bind(&created.created_by)
        .execute(w.conn())
        .await?;
        w.touch_user(created.user.as_str(), change.seq).await?;
        let created = created.clone();
        w.commit().await?;
        Ok(Added::Created(created, change))
    }

    async fn remove_grant(
        &self,
        actor: &str,
        user: &UserId,
        id: u64,
        at: Timestamp,
    ) -> Result<Change> {
        let not_found = || StoreError::NotFound(format!("grant {}", id));
        let id_sql = i64::try_from(id).map_err(|_| not_found())?;
        let mut w = self.write().await?;
        let removed: Option<(String, Option<String>)> = sqlx::query_as(
            "DELETE FROM grants WHERE id = ? AND user = ? RETURNING permission, scope",
        )
        .bind(id_sql)
        .bind(user.as_str())
        .fetch_optional(w.conn())
        .await?;
        let (permission, scope) = removed.ok_or_else(not_found)?;
        let (permission, scope) = (
            permission_from_db(&permission)?,
            scope_from_db(scope.as_deref())?,
        );
        let change = w
            .push(at, actor, |_| ChangeKind::GrantRemoved {
                user: user.clone(),
                id,
                permission,
                scope,
                expired: false,
            })
            .await?;
        w.touch_user(user.as_str(), change.seq).await?;
        w.commit().await?;
        Ok(change)
    }

    async fn add_binding(
        &self,
        actor: &str,
        binding: NewBinding,
        at: Timestamp,
    ) -> Result<Added<Binding>> {
        let mut w = self.write().await?;
        if !w.user_present(binding.user.as_str()).await? {
            return Err(StoreError::NotFound(format!("user {}", binding.user)));
        }
        if !w.role_exists(binding.role.as_str()).await? {
            return Err(StoreError::NotFound(format!("role {}", binding.role)));
        }
        let existing: Option<BindingRow> = sqlx::query_as(&format!(
            "SELECT {BINDING_COLUMNS} FROM bindings WHERE user = ? AND role = ? AND scope IS ? \
             AND (expires_at IS NULL OR expires_at > ?) ORDER BY id LIMIT 1"
        ))
        .bind(binding.user.as_str())
        .bind(binding.role.as_str())
        .bind(binding.scope.as_ref().map(Scope::as_str))
        .bind(at.millis())
        .fetch_optional(w.conn())
        .await?;
        if let Some(row) = existing {
            return Ok(Added::Existing(binding_from_row(row)?));
        }
        let change = w
            .push(at, actor, |seq| {
                ChangeKind::BindingAdded(Binding {
                    id: seq,
                    user: binding.user,
                    role: binding.role,
                    scope: binding.scope,
                    expires_at: binding.expires_at,
                    created_at: at,
                    created_by: actor.to_owned(),
                })
            })
            .await?;
        let ChangeKind::BindingAdded(created) = &change.kind else {
            unreachable!("built just above")
        };
        sqlx::query(&format!(
            "INSERT INTO bindings ({BINDING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(id_to_sql(created.id)?)
        .bind(created.user.as_str())
        .bind(created.role.as_str())
        .bind(created.scope.as_ref().map(Scope::as_str))
        .bind(created.expires_at.map(Timestamp::millis))
        .bind(created.created_at.millis())
        .bind(&created.created_by)
        .execute(w.conn())
        .await?;
        w.touch_user(created.user.as_str(), change.seq).await?;
        let created = created.clone();
        w.commit().await?;
        Ok(Added::Created(created, change))
    }

    async fn remove_binding(
        &self,
        actor: &str,
        user: &UserId,
        id: u64,
        at: Timestamp,
    ) -> Result<Change> {
        let not_found = || StoreError::NotFound(format!("binding {}", id));
        let id_sql = i64::try_from(id).map_err(|_| not_found())?;
        let mut w = self.write().await?;
        let removed: Option<(String, Option<String>)> =
            sqlx::query_as("DELETE FROM bindings WHERE id = ? AND user = ? RETURNING role, scope")
                .bind(id_sql)
                .bind(user.as_str())
                .fetch_optional(w.conn())
                .await?;
        let (role, scope) = removed.ok_or_else(not_found)?;
        let (role, scope) = (role_from_db(&role)?, scope_from_db(scope.as_deref())?);
        let change = w
            .push(at, actor, |_| ChangeKind::BindingRemoved {
                user: user.clone(),
                id,
                role,
                scope,
                expired: false,
            })
            .await?;
        w.touch_user(user.as_str(), change.seq).await?;
        w.commit().await?;
        Ok(change)
    }

    async fn set_role(
        &self,
        actor: &str,
        role: &RoleName,
        permissions: &[Permission],
        description: &str,
        at: Timestamp,
    ) -> Result<(Change, bool)> {
        let permissions_json = permissions_to_json(permissions)?;
        let mut w = self.write().await?;
        let created = !w.role_exists(role.as_str()).await?;
        let change = w
            .push(at, actor, |_| ChangeKind::RoleSet {
                role: role.clone(),
                permissions: permissions.to_vec(),
                description: description.to_owned(),
            })
            .await?;
        // Every bound user's effective permissions may have changed, expired but not
        // yet removed bindings included (the index counts those as members too): the
        // role's revision raises all of theirs (see USER_REVISION).
        sqlx::query(
            "INSERT INTO roles (name, permissions, description, revision) VALUES (?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET permissions = excluded.permissions, \
             description = excluded.description, revision = excluded.revision",
        )
        .bind(role.as_str())
        .bind(&permissions_json)
        .bind(description)
        .bind(id_to_sql(change.seq)?)
        .execute(w.conn())
        .await?;
        w.commit().await?;
        Ok((change, created))
    }

    async fn delete_role(&self, actor: &str, role: &RoleName, at: Timestamp) -> Result<Change> {
        let mut w = self.write().await?;
        if !w.role_exists(role.as_str()).await? {
            return Err(StoreError::NotFound(format!("role {}", role)));
        }
        let change = w
            .push(at, actor, |_| ChangeKind::RoleDeleted {
                role: role.clone(),
            })
            .await?;
        sqlx::query("UPDATE users SET revision = ? WHERE name IN (SELECT user FROM bindings WHERE role = ?)")
            .bind(id_to_sql(change.seq)?)
            .bind(role.as_str())
            .execute(w.conn())
            .await?;
        sqlx::query("DELETE FROM bindings WHERE role = ?")
            .bind(role.as_str())
            .execute(w.conn())
            .await?;
        sqlx::query("DELETE FROM roles WHERE name = ?")
            .bind(role.as_str())
            .execute(w.conn())
            .await?;
        w.commit().await?;
        Ok(change)
    }

    async fn invalidate(
        &self,
        actor: &str,
        users: &[UserId],
        reason: Option<&str>,
        at: Timestamp,
    ) -> Result<Change> {
        let names: Vec<&str> = users.iter().map(UserId::as_str).collect();
        let names_json = serde_json::to_string(&names)
            .map_err(|e| StoreError::Internal(format!("encoding users: {e}")))?;
        let mut w = self.write().await?;
        let change = w
            .push(at, actor, |_| ChangeKind::Invalidated {
                users: users.to_vec(),
                reason: reason.map(str::to_owned),
            })
            .await?;
        // One statement for up to 10k users; unknown users get a revision-only row.
        // (`WHERE true` resolves SQLite's parsing ambiguity of an upsert after SELECT.)
        sqlx::query(
            "INSERT INTO users (name, revision, present) SELECT value, ?, 0 FROM json_each(?) WHERE true \
             ON CONFLICT (name) DO UPDATE SET revision = excluded.revision",
        )
        .bind(id_to_sql(change.seq)?)
        .bind(&names_json)
        .execute(w.conn())
        .await?;
        w.commit().await?;
        Ok(change)
    }

    async fn expire_due(&self, now: Timestamp) -> Result<Vec<Change>> {
        // Look before taking the write lock: most calls find nothing due, and they
        // should not queue behind (or hold up) real writers.
        let any_due: i64 = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM grants WHERE expires_at <= ?1) \
             OR EXISTS (SELECT 1 FROM bindings WHERE expires_at <= ?1)",
        )
        .bind(now.millis())
        .fetch_one(&self.pool)
        .await?;
        if any_due == 0 {
            return Ok(Vec::new());
        }

        let mut w = self.write().await?;
        let grants: Vec<(i64, i64, String, String, Option<String>)> = sqlx::query_as(
            "SELECT expires_at, id, user, permission, scope FROM grants WHERE expires_at <= ? ORDER BY expires_at, id",
        )
        .bind(now.millis())
        .fetch_all(w.conn())
        .await?;
        let bindings: Vec<(i64, i64, String, String, Option<String>)> = sqlx::query_as(
            "SELECT expires_at, id, user, role, scope FROM bindings WHERE expires_at <= ? ORDER BY expires_at, id",
        )
        .bind(now.millis())
        .fetch_all(w.conn())
        .await?;
        // Expire in the order things fell due, so the log reads like a timeline.
        let mut due: Vec<(i64, i64, Due)> = grants
            .into_iter()
            .map(|(e, id, user, permission, scope)| {
                (
                    e,
                    id,
                    Due::Grant {
                        id,
                        user,
                        permission,
                        scope,
                    },
                )
            })
            .chain(bindings.into_iter().map(|(e, id, user, role, scope)| {
                (
                    e,
                    id,
                    Due::Binding {
                        id,
                        user,
                        role,
                        scope,
                    },
                )
            }))
            .collect();
        due.sort_by_key(|(e, id, _)| (*e, *id));

        let mut changes = Vec::with_capacity(due.len());
        for (_, _, item) in due {
            let change = match item {
                Due::Grant {
                    id,
                    user,
                    permission,
                    scope,
                } => {
                    sqlx::query("DELETE FROM grants WHERE id = ?")
                        .bind(id)
                        .execute(w.conn())
                        .await?;
                    let kind = ChangeKind::GrantRemoved {
                        user: user_from_db(&user)?,
                        id: to_u64(id)?,
                        permission: permission_from_db(&permission)?,
                        scope: scope_from_db(scope.as_deref())?,
                        expired: true,
                    };
                    w.push(now, SYSTEM_ACTOR, |_| kind).await?
                }
                Due::Binding {
                    id,
                    user,
                    role,
                    scope,
                } => {
                    sqlx::query("DELETE FROM bindings WHERE id = ?")
                        .bind(id)
                        .execute(w.conn())
                        .await?;
                    let kind = ChangeKind::BindingRemoved {
                        user: user_from_db(&user)?,
                        id: to_u64(id)?,
                        role: role_from_db(&role)?,
                        scope: scope_from_db(scope.as_deref())?,
                        expired: true,
                    };
                    w.push(now, SYSTEM_ACTOR, |_| kind).await?
                }
            };
            let user = match &change.kind {
                ChangeKind::GrantRemoved { user, .. } | ChangeKind::BindingRemoved { user, .. } => {
                    user.clone()
                }
                _ => unreachable!("built just above"),
            };
            w.touch_user(user.as_str(), change.seq).await?;
            changes.push(change);
        }
        w.commit().await?;
        Ok(changes)
    }

    async fn password_hash(&self, user: &UserId) -> Result<Option<String>> {
        let hash: Option<Option<String>> =
            sqlx::query_scalar("SELECT password_hash FROM users WHERE name = ? AND present = 1")
                .bind(user.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(hash.flatten())
    }

    async fn create_session(&self, session: NewSession, at: Timestamp) -> Result<()> {
        let mut w = self.write().await?;
        // A login racing with the user's deletion must not leave a live session.
        if !w.user_present(session.user.as_str()).await? {
            return Err(StoreError::NotFound(format!("user {}", session.user)));
        }
        // Housekeeping: an expired refresh token answers `Invalid` whether or not its
        // row is kept, so logins clear them out instead of a separate sweeper.
        sqlx::query("DELETE FROM refresh_tokens WHERE expires_at <= ?")
            .bind(at.millis())
            .execute(w.conn())
            .await?;
        sqlx::query("INSERT INTO sessions (id, user, created_at, expires_at) VALUES (?, ?, ?, ?)")
            .bind(&session.id)
            .bind(session.user.as_str())
            .bind(at.millis())
            .bind(session.refresh_expires_at.millis())
            .execute(w.conn())
            .await?;
        sqlx::query("INSERT INTO refresh_tokens (hash, session, expires_at) VALUES (?, ?, ?)")
            .bind(&session.refresh_hash)
            .bind(&session.id)
            .bind(session.refresh_expires_at.millis())
            .execute(w.conn())
            .await?;
        w.commit().await
    }

    async fn rotate_refresh(&self, r: Rotation<'_>, at: Timestamp) -> Result<RefreshOutcome> {
        // Racing presentations of one token queue here (and, from other processes,
        // on SQLite's write lock): each sees what the ones before it committed.
        let mut w = self.write().await?;
        let found: Option<RefreshRow> = sqlx::query_as(
            "SELECT t.session, t.expires_at, t.rotated_at, t.successor_hash, t.successor_sealed, \
             s.user, s.ended_at \
             FROM refresh_tokens t JOIN sessions s ON s.id = t.session WHERE t.hash = ?",
        )
        .bind(r.old_hash)
        .fetch_optional(w.conn())
        .await?;
        let Some((
            session,
            expires_at,
            rotated_at,
            successor_hash,
            successor_sealed,
            user,
            ended_at,
        )) = found
        else {
            return Ok(RefreshOutcome::Invalid);
        };
        if ended_at.is_some() || expires_at <= at.millis() {
            return Ok(RefreshOutcome::Invalid);
        }
        let user = user_from_db(&user)?;
        if let Some(rotated_at) = rotated_at {
            let grace = i64::try_from(r.reuse_grace.as_millis()).unwrap_or(i64::MAX);
            let within_grace = at.millis().saturating_sub(rotated_at) <= grace;
            if let (true, Some(successor), Some(sealed)) =
                (within_grace, successor_hash, successor_sealed)
            {
                // Only while the successor is still the current token: once it was
                // rotated in turn, this one is an older token, whoever holds it.
                let successor_current: Option<i64> = sqlx::query_scalar(
                    "SELECT 1 FROM refresh_tokens WHERE hash = ? AND session = ? \
                     AND rotated_at IS NULL AND expires_at > ?",
                )
                .bind(&successor)
                .bind(&session)
                .bind(at.millis())
                .fetch_optional(w.conn())
                .await?;
                if successor_current.is_some() {
                    return Ok(RefreshOutcome::Raced {
                        session,
                        user,
                        successor_sealed: sealed,
                    });
                }
            }
            // A rotated token presented again means two parties hold the session's
            // tokens; neither can be trusted, so the whole session ends.
            let change = w
                .end_session(
                    session.clone(),
                    user.clone(),
                    SessionEnd::Revoked,
                    SYSTEM_ACTOR,
                    at,
                )
                .await?;
            w.commit().await?;
            return Ok(RefreshOutcome::Reused {
                session,
                user,
                change: Some(change),
            });
        }
        // Only the token rotated last keeps a sealed successor: an older one can
        // never be answered with it.
        sqlx::query(
            "UPDATE refresh_tokens SET successor_hash = NULL, successor_sealed = NULL \
             WHERE session = ? AND successor_sealed IS NOT NULL",
        )
        .bind(&session)
        .execute(w.conn())
        .await?;
        sqlx::query(
            "UPDATE refresh_tokens SET rotated_at = ?, successor_hash = ?, successor_sealed = ? \
             WHERE hash = ?",
        )
        .bind(at.millis())
        .bind(r.new_hash)
        .bind(r.successor_sealed)
        .bind(r.old_hash)
        .execute(w.conn())
        .await?;
        sqlx::query("INSERT INTO refresh_tokens (hash, session, expires_at) VALUES (?, ?, ?)")
            .bind(r.new_hash)
            .bind(&session)
            .bind(r.new_expires_at.millis())
            .execute(w.conn())
            .await?;
        sqlx::query("UPDATE sessions SET expires_at = max(expires_at, ?) WHERE id = ?")
            .bind(r.new_expires_at.millis())
            .bind(&session)
            .execute(w.conn())
            .await?;
        w.commit().await?;
        Ok(RefreshOutcome::Rotated { session, user })
    }

    async fn end_session_by_refresh(
        &self,
        refresh_hash: &str,
        reason: SessionEnd,
        at: Timestamp,
    ) -> Result<Option<Change>> {
        let mut w = self.write().await?;
        // Any token of the session (current or already rotated) may end it: ending a
        // session is never a privilege escalation.
        let found: Option<(String, String)> = sqlx::query_as(
            "SELECT s.id, s.user FROM refresh_tokens t JOIN sessions s ON s.id = t.session \
             WHERE t.hash = ? AND s.ended_at IS NULL",
        )
        .bind(refresh_hash)
        .fetch_optional(w.conn())
        .await?;
        let Some((session, user)) = found else {
            return Ok(None);
        };
        let user = user_from_db(&user)?;
        let actor = user.as_str().to_owned();
        let change = w.end_session(session, user, reason, &actor, at).await?;
        w.commit().await?;
        Ok(Some(change))
    }

    async fn revoke_sessions(
        &self,
        actor: &str,
        user: &UserId,
        at: Timestamp,
    ) -> Result<Option<Change>> {
        let mut w = self.write().await?;
        let change = w
            .end_open_sessions(user, SessionEnd::Revoked, actor, at)
            .await?;
        if change.is_some() {
            w.commit().await?;
        }
        Ok(change)
    }

    async fn ended_sessions(&self, since: Timestamp) -> Result<Vec<String>> {
        let ids =
            sqlx::query_scalar("SELECT id FROM sessions WHERE ended_at >= ? ORDER BY ended_at, id")
                .bind(since.millis())
                .fetch_all(&self.pool)
                .await?;
        Ok(ids)
    }

    async fn open_session_user(&self, id: &str) -> Result<Option<UserId>> {
        let user: Option<String> =
            sqlx::query_scalar("SELECT user FROM sessions WHERE id = ? AND ended_at IS NULL")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        user.as_deref().map(user_from_db).transpose()
    }

    async fn prune_sessions(&self, before: Timestamp, sealed_before: Timestamp) -> Result<u64> {
        const GONE: &str = "(ended_at < ?1 OR (ended_at IS NULL AND expires_at < ?1))";
        // Look before taking the write lock, as `expire_due` does: most rounds find
        // nothing to do.
        let any: i64 = sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM sessions WHERE {GONE}) \
             OR EXISTS (SELECT 1 FROM refresh_tokens WHERE successor_sealed IS NOT NULL \
             AND rotated_at < ?2)"
        ))
        .bind(before.millis())
        .bind(sealed_before.millis())
        .fetch_one(&self.pool)
        .await?;
        if any == 0 {
            return Ok(0);
        }
        let mut w = self.write().await?;
        sqlx::query(
            "UPDATE refresh_tokens SET successor_hash = NULL, successor_sealed = NULL \
             WHERE successor_sealed IS NOT NULL AND rotated_at < ?",
        )
        .bind(sealed_before.millis())
        .execute(w.conn())
        .await?;
        sqlx::query(&format!(
            "DELETE FROM refresh_tokens WHERE session IN (SELECT id FROM sessions WHERE {GONE})"
        ))
        .bind(before.millis())
        .execute(w.conn())
        .await?;
        let gone = sqlx::query(&format!("DELETE FROM sessions WHERE {GONE}"))
            .bind(before.millis())
            .execute(w.conn())
            .await?
            .rows_affected();
        w.commit().await?;
        Ok(gone)
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKey>> {
        let rows: Vec<(String, String, Vec<u8>, Vec<u8>, i64, Option<i64>)> = sqlx::query_as(
            "SELECT kid, algorithm, private_der, public, created_at, retired_at FROM signing_keys \
             ORDER BY created_at, kid",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(kid, algorithm, private_der, public, created_at, retired_at)| SigningKey {
                    kid,
                    algorithm,
                    private_der,
                    public,
                    created_at: Timestamp(created_at),
                    retired_at: retired_at.map(Timestamp),
                },
            )
            .collect())
    }

    async fn add_signing_key(&self, key: &SigningKey) -> Result<()> {
        let mut w = self.write().await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_der, public, created_at, retired_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_der)
        .bind(&key.public)
        .bind(key.created_at.millis())
        .bind(key.retired_at.map(Timestamp::millis))
        .execute(w.conn())
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict("signing key already exists".into()),
            other => other,
        })?;
        w.commit().await
    }

    async fn retire_signing_key(&self, kid: &str, at: Timestamp) -> Result<()> {
        let mut w = self.write().await?;
        let exists: Option<Option<i64>> =
            sqlx::query_scalar("SELECT retired_at FROM signing_keys WHERE kid = ?")
                .bind(kid)
                .fetch_optional(w.conn())
                .await?;
        match exists {
            None => Err(StoreError::NotFound("signing key".into())),
            // Retiring twice keeps the first time: tokens signed before it still verify.
            Some(Some(_)) => Ok(()),
            Some(None) => {
                sqlx::query("UPDATE signing_keys SET retired_at = ? WHERE kid = ?")
                    .bind(at.millis())
                    .bind(kid)
                    .execute(w.conn())
                    .await?;
                w.commit().await
            }
        }
    }
}
