//! Changes: the one record type that every mutation produces. The store appends
//! them to the changelog with a gap-free `seq`; the index applies them in order.

use crate::{Permission, RoleName, Scope, Timestamp, UserId};

/// A user's direct holding of a permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The `seq` of the change that created it: unique, and the same on every node.
    pub id: u64,
    pub user: UserId,
    pub permission: Permission,
    pub scope: Option<Scope>,
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub created_by: String,
}

/// A user's holding of every permission of a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The `seq` of the change that created it.
    pub id: u64,
    pub user: UserId,
    pub role: RoleName,
    pub scope: Option<Scope>,
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub created_by: String,
}

/// Why sessions ended; streams of those sessions are told and closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    LoggedOut,
    Revoked,
}

impl SessionEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionEnd::LoggedOut => "logged_out",
            SessionEnd::Revoked => "revoked",
        }
    }
}

/// One committed change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: u64,
    pub at: Timestamp,
    /// Who made it: a user id, `cli` for the command line, `system` for expiry.
    pub actor: String,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    UserCreated {
        user: UserId,
    },
    UserDeleted {
        user: UserId,
    },
    GrantAdded(Grant),
    GrantRemoved {
        user: UserId,
        id: u64,
        permission: Permission,
        scope: Option<Scope>,
        expired: bool,
    },
    BindingAdded(Binding),
    BindingRemoved {
        user: UserId,
        id: u64,
        role: RoleName,
        scope: Option<Scope>,
        expired: bool,
    },
    RoleSet {
        role: RoleName,
        permissions: Vec<Permission>,
        description: String,
    },
    RoleDeleted {
        role: RoleName,
    },
    /// Raises the listed users' revisions without touching permsync's own data.
    Invalidated {
        users: Vec<UserId>,
        reason: Option<String>,
    },
    /// Sessions of a user ended: their refresh tokens stop working, their access
    /// tokens are refused, and their open event streams are told and closed.
    SessionsEnded {
        user: UserId,
        sessions: Vec<String>,
        reason: SessionEnd,
    },
}

impl ChangeKind {
    /// The `action` name used in the audit log.
    pub fn action(&self) -> &'static str {
        match self {
            ChangeKind::UserCreated { .. } => "user_created",
            ChangeKind::UserDeleted { .. } => "user_deleted",
            ChangeKind::GrantAdded(_) => "grant_added",
            ChangeKind::GrantRemoved { expired: false, .. } => "grant_removed",
            ChangeKind::GrantRemoved { expired: true, .. } => "grant_expired",
            ChangeKind::BindingAdded(_) => "binding_added",
            ChangeKind::BindingRemoved { expired: false, .. } => "binding_removed",
            ChangeKind::BindingRemoved { expired: true, .. } => "binding_expired",
            ChangeKind::RoleSet { .. } => "role_set",
            ChangeKind::RoleDeleted { .. } => "role_deleted",
            ChangeKind::Invalidated { .. } => "invalidated",
            ChangeKind::SessionsEnded { .. } => "sessions_ended",
        }
    }
}
