//! permsync's pure core: the model of users, permissions, scopes and roles, their
//! parsing, permission matching, the in-memory effective-permission [`Index`], the
//! revision rules (which change touches which user) and the delegation rules.
//!
//! Invariant: nothing here does I/O or reads a clock. Time comes in as a
//! [`Timestamp`] value, so everything is deterministic and testable with plain data.
//! Wire formats live in the server; this crate has no serde.

mod change;
mod delegation;
mod index;
mod name;
mod permission;
mod scope;
mod time;

pub use change::{Binding, Change, ChangeKind, Grant, SessionEnd};
pub use delegation::{authorize_change, may_list, read_access, AdminAction, Denied, ReadAccess};
pub use index::{EffectivePermission, Index, RoleHolding, RoleInfo, Snapshot, Via};
pub use name::{RoleName, UserId};
pub use permission::{Permission, PermissionSet};
pub use scope::Scope;
pub use time::Timestamp;

/// Why a name, permission or scope was refused. The message names the rule broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is invalid: {reason}")]
pub struct ParseError {
    pub what: &'static str,
    pub value: String,
    pub reason: &'static str,
}

impl ParseError {
    fn new(what: &'static str, value: &str, reason: &'static str) -> Self {
        // Keep hostile input from bloating error messages.
        let value: String = value.chars().take(140).collect();
        ParseError {
            what,
            value,
            reason,
        }
    }
}

/// Permissions that govern permsync itself.
pub mod builtin {
    pub const ADMIN: &str = "permsync:admin";
    pub const CHECK: &str = "permsync:check";
    pub const DELEGATE: &str = "permsync:delegate";
    pub const INVALIDATE: &str = "permsync:invalidate";
    pub const AUDIT: &str = "permsync:audit";
    pub const REPLICATE: &str = "permsync:replicate";
}
