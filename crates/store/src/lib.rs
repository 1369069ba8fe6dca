//! permsync's durable store.
//!
//! [`Store`] speaks domain verbs, not SQL: every mutation is one transaction that
//! writes its rows and appends its [`Change`]s to the changelog under the next
//! gap-free `seq`, and returns what it committed. The server never applies a change
//! it did not read back from the changelog, so the changelog is the one truth for
//! this node, the command line and (later) other nodes.
//!
//! Backends: [`SqliteStore`] (embedded, the default). A PostgreSQL backend can be
//! added as another struct implementing [`Store`]; callers hold `Arc<dyn Store>` and
//! the conformance suite in [`conformance`] runs against every backend.

use async_trait::async_trait;
use permsync_core::{
    Binding, Change, Grant, Permission, RoleName, Scope, SessionEnd, Timestamp, UserId,
};

pub mod conformance;
mod sqlite;

pub use sqlite::{database_files, SqliteStore};

/// Store failures, classified into neutral kinds the API maps to HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The database is unreachable or busy beyond its timeout.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or a corrupt database. Logged, never shown to clients.
    #[error("store error: {0}")]
    Internal(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything needed to build the in-memory index, as of `seq`.
#[derive(Debug, Default)]
pub struct State {
    pub seq: u64,
    /// Every user whose revision is tracked: (user, revision, exists).
    pub users: Vec<(UserId, u64, bool)>,
    pub roles: Vec<(RoleName, Vec<Permission>, String)>,
    pub grants: Vec<Grant>,
    pub bindings: Vec<Binding>,
}

impl State {
    /// Builds the in-memory index of this state.
    pub fn into_index(self) -> permsync_core::Index {
        let mut index = permsync_core::Index::new();
        for (user, revision, exists) in self.users {
            index.load_user(user, revision, exists);
        }
        for (role, permissions, description) in self.roles {
            index.load_role(role, permissions, description);
        }
        for g in self.grants {
            index.load_grant(g);
        }
        for b in self.bindings {
            index.load_binding(b);
        }
        index.set_applied_seq(self.seq);
        index
    }
}

#[derive(Debug, Clone)]
pub struct NewGrant {
    pub user: UserId,
    pub permission: Permission,
    pub scope: Option<Scope>,
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct NewBinding {
    pub user: UserId,
    pub role: RoleName,
    pub scope: Option<Scope>,
    pub expires_at: Option<Timestamp>,
}

/// The outcome of an idempotent add.
#[derive(Debug, Clone)]
pub enum Added<T> {
    /// Newly created, by this committed change.
    Created(T, Change),
    /// The same active holding already existed; nothing was written.
    Existing(T),
}

/// One page of users.
#[derive(Debug, Clone)]
pub struct UserPage {
    pub users: Vec<(UserId, u64)>,
    /// Pass as `cursor` for the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// A login session's refresh token, stored only as a hash.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub user: UserId,
    pub refresh_hash: String,
    /// Also the session's end, unless a rotation extends it.
    pub refresh_expires_at: Timestamp,
}

/// One use of a refresh token: what replaces it, if it is current.
#[derive(Debug, Clone)]
pub struct Rotation<'a> {
    /// Hash of the presented token.
    pub old_hash: &'a str,
    /// Hash of the token that replaces it.
    pub new_hash: &'a str,
    pub new_expires_at: Timestamp,
    /// The new token, sealed with a key only the presented token's holder can
    /// derive; handed back, as is, to a presentation within the grace window.
    pub successor_sealed: &'a [u8],
    /// How long after its rotation a token presented again is a race of tabs
    /// refreshing together rather than a theft.
    pub reuse_grace: std::time::Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The token was current; it is now replaced by the new one.
    Rotated { session: String, user: UserId },
    /// The token was rotated within the grace window and its successor is still
    /// the session's current token: nothing changed, and the successor, sealed as
    /// it was given at the rotation, is handed back for the caller to open.
    Raced {
        session: String,
        user: UserId,
        successor_sealed: Vec<u8>,
    },
    /// The token had already been rotated: the whole session is now revoked, by `change`.
    Reused {
        session: String,
        user: UserId,
        change: Option<Change>,
    },
    /// Unknown, expired, or its session already ended.
    Invalid,
}

/// A signing key of permsync's own, kept in the store so it survives restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: String,
    pub algorithm: String,
    /// PKCS#8 DER of the private key.
    pub private_der: Vec<u8>,
    /// The raw public key.
    pub public: Vec<u8>,
    pub created_at: Timestamp,
    /// When it stopped signing; it keeps verifying until its tokens expire.
    pub retired_at: Option<Timestamp>,
}

/// The durable store. Every method that changes permissions or sessions commits one
/// transaction and returns the changes it appended to the changelog.
///
/// `actor` names who made a change: a user id, `cli`, or `system`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- reading the truth ----

    /// The whole permission state, consistent as of the returned `seq`.
    async fn load(&self) -> Result<State>;
    /// Committed changes with `seq > after`, in order, with no gaps, at most `limit`.
    async fn changes_after(&self, after: u64, limit: u32) -> Result<Vec<Change>>;
    /// The `seq` of the last committed change (0 when none).
    async fn last_seq(&self) -> Result<u64>;
    /// A page of existing users ordered by name, starting after `cursor`.
    async fn list_users(&self, prefix: &str, limit: u32, cursor: Option<&str>) -> Result<UserPage>;
    /// Cheap liveness check of the database.
    async fn ping(&self) -> Result<()>;
    /// Marked changed soon after anyone, in this process or another one, may have
    /// committed: a hint that lets a changelog tail read at once instead of at its
    /// next poll. It may fire with nothing new, and is no reason to stop polling.
    /// `None` when the backend has no such signal.
    fn commit_signal(&self) -> Option<tokio::sync::watch::Receiver<()>> {
        None
    }

    // ---- permissions ----

    /// Conflict if the user exists; a user known only by revision becomes a real one.
    async fn create_user(
        &self,
        actor: &str,
        user: &UserId,
        password_hash: Option<&str>,
        at: Timestamp,
    ) -> Result<Change>;
    /// Removes the user's grants, bindings, password and sessions. The returned
    /// changes are the deletion and, if any session was open, their end.
    async fn delete_user(&self, actor: &str, user: &UserId, at: Timestamp) -> Result<Vec<Change>>;
    async fn set_password(&self, user: &UserId, password_hash: &str) -> Result<()>;
    /// NotFound for an unknown user. The same active grant (permission and scope)
    /// again yields `Existing` and writes nothing.
    async fn add_grant(&self, actor: &str, grant: NewGrant, at: Timestamp) -> Result<Added<Grant>>;
    /// NotFound unless the grant `id` belongs to `user`.
    async fn remove_grant(
        &self,
        actor: &str,
        user: &UserId,
        id: u64,
        at: Timestamp,
    ) -> Result<Change>;
    /// NotFound for an unknown user or role.
    async fn add_binding(
        &self,
        actor: &str,
        binding: NewBinding,
        at: Timestamp,
    ) -> Result<Added<Binding>>;
    async fn remove_binding(
        &self,
        actor: &str,
        user: &UserId,
        id: u64,
        at: Timestamp,
    ) -> Result<Change>;
    /// Creates or replaces a role; `bool` is true when it was created.
    async fn set_role(
        &self,
        actor: &str,
        role: &RoleName,
        permissions: &[Permission],
        description: &str,
        at: Timestamp,
    ) -> Result<(Change, bool)>;
    /// Deletes a role and its bindings.
    async fn delete_role(&self, actor: &str, role: &RoleName, at: Timestamp) -> Result<Change>;
    /// Raises the revisions of `users` (tracking unknown ones by revision only).
    async fn invalidate(
        &self,
        actor: &str,
        users: &[UserId],
        reason: Option<&str>,
        at: Timestamp,
    ) -> Result<Change>;
    /// Removes every grant and binding with `expires_at <= now`, one change each.
    async fn expire_due(&self, now: Timestamp) -> Result<Vec<Change>>;

    // ---- identity ----

    async fn password_hash(&self, user: &UserId) -> Result<Option<String>>;
    async fn create_session(&self, session: NewSession, at: Timestamp) -> Result<()>;
    /// Rotates a refresh token (by hash). One transaction decides among racing
    /// presentations of the same token: the first rotates it; the others, within
    /// `reuse_grace` of that rotation and while its successor is current, get
    /// `Raced`; any other presentation of a rotated token ends the session.
    async fn rotate_refresh(&self, rotation: Rotation<'_>, at: Timestamp)
        -> Result<RefreshOutcome>;
    /// Ends the session holding this refresh token; `None` if there was none open.
    async fn end_session_by_refresh(
        &self,
        refresh_hash: &str,
        reason: SessionEnd,
        at: Timestamp,
    ) -> Result<Option<Change>>;
    /// Ends every open session of the user; `None` if there was none.
    async fn revoke_sessions(
        &self,
        actor: &str,
        user: &UserId,
        at: Timestamp,
    ) -> Result<Option<Change>>;
    /// Ids of sessions ended at or after `since` (their access tokens may still be alive).
    async fn ended_sessions(&self, since: Timestamp) -> Result<Vec<String>>;
    /// The user of session `id` while it is open; `None` when it ended or never
    /// existed (or was pruned).
    async fn open_session_user(&self, id: &str) -> Result<Option<UserId>>;
    /// Deletes the sessions, with their refresh tokens, that ended before `before`
    /// or whose refresh tokens all expired before it, and forgets the sealed
    /// successors of tokens rotated before `sealed_before` (past the grace window
    /// nobody may open them). Returns how many sessions went.
    async fn prune_sessions(&self, before: Timestamp, sealed_before: Timestamp) -> Result<u64>;

    // ---- keys ----

    async fn signing_keys(&self) -> Result<Vec<SigningKey>>;
    /// Adds a key; Conflict if its kid exists.
    async fn add_signing_key(&self, key: &SigningKey) -> Result<()>;
    async fn retire_signing_key(&self, kid: &str, at: Timestamp) -> Result<()>;
}
