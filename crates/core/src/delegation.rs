//! Who may change whose grants and bindings.
//!
//! An admin (`permsync:admin`, global) may do anything. Anyone else acts by
//! delegation: holding `permsync:delegate` at the target scope (or an ancestor),
//! only for permissions they hold there themselves, never a `permsync:*` permission,
//! and never on their own holdings. So delegation can hand out, never escalate.
//! What a delegate may read follows the same scopes ([`read_access`]).

use crate::{builtin, Index, Permission, RoleName, Scope, Timestamp};

/// A change to another user's holdings that needs authorizing.
#[derive(Debug, Clone, Copy)]
pub enum AdminAction<'a> {
    /// Add or remove a direct grant.
    Grant {
        permission: &'a Permission,
        scope: Option<&'a Scope>,
    },
    /// Add or remove a role binding.
    Bind {
        role: &'a RoleName,
        scope: Option<&'a Scope>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

fn is_permsync_permission(p: &Permission) -> bool {
    p.as_str() == "*" || p.as_str().starts_with("permsync:")
}

/// How much of a user's holdings an actor may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAccess {
    /// Every holding: an admin, an auditor (`permsync:audit`), or the user themself.
    All,
    /// The holdings at scopes where the actor holds `permsync:delegate`: what it
    /// could hand out or take back there, and nothing it holds no delegation for
    /// (another tenant's holdings, global ones).
    Delegated,
    /// Nothing.
    Denied,
}

impl ReadAccess {
    /// Whether a holding at `scope` is shown to `actor` under this access.
    pub fn shows(self, index: &Index, actor: &str, scope: Option<&Scope>, now: Timestamp) -> bool {
        match self {
            ReadAccess::All => true,
            ReadAccess::Delegated => {
                index.can(actor, builtin::DELEGATE, scope.map(Scope::as_str), now)
            }
            ReadAccess::Denied => false,
        }
    }
}

/// Whether `actor` may list users and roles: an admin, an auditor, or a delegate at
/// any scope. A delegate needs the ids of the users it hands holdings to and the
/// roles it may bind; names and revisions tell nothing of anyone's permissions.
pub fn may_list(index: &Index, actor: &str, now: Timestamp) -> bool {
    index.can(actor, builtin::ADMIN, None, now)
        || index.can(actor, builtin::AUDIT, None, now)
        || index.can_anywhere(actor, builtin::DELEGATE, now)
}

/// How much of `target`'s holdings `actor` may read.
pub fn read_access(index: &Index, actor: &str, target: &str, now: Timestamp) -> ReadAccess {
    if actor == target
        || index.can(actor, builtin::ADMIN, None, now)
        || index.can(actor, builtin::AUDIT, None, now)
    {
        ReadAccess::All
    } else if index.can_anywhere(actor, builtin::DELEGATE, now) {
        ReadAccess::Delegated
    } else {
        ReadAccess::Denied
    }
}

/// Whether `actor` may perform `action` on `target`'s holdings.
pub fn authorize_change(
    index: &Index,
    actor: &str,
    target: &str,
    action: AdminAction<'_>,
    now: Timestamp,
) -> Result<(), Denied> {
    if index.can(actor, builtin::ADMIN, None, now) {
        return Ok(());
    }
    if actor == target {
        return Err(Denied(
            "only an admin may change their own grants and bindings".into(),
        ));
    }
    let scope = match action {
        AdminAction::Grant { scope, .. } | AdminAction::Bind { scope, .. } => {
            scope.map(Scope::as_str)
        }
    };
    if !index.can(actor, builtin::DELEGATE, scope, now) {
        return Err(Denied(format!(
            "needs permsync:delegate at {}",
            scope.unwrap_or("the global scope")
        )));
    }
    let permissions: Vec<&Permission> = match action {
        AdminAction::Grant { permission, .. } => vec![permission],
        AdminAction::Bind { role, .. } => match index.role_permissions(role.as_str()) {
            Some(ps) => ps.iter().collect(),
            None => return Err(Denied(format!("role {role} does not exist"))),
        },
    };
    for p in permissions {
        if is_permsync_permission(p) {
            return Err(Denied(format!("{p} can only be handed out by an admin")));
        }
        if !index.can(actor, p.as_str(), scope, now) {
            return Err(Denied(format!(
                "you do not hold {p} at {}",
                scope.unwrap_or("the global scope")
            )));
        }
    }
    Ok(())
}
