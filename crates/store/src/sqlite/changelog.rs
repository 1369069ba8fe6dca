//! The changelog's row format: how a [`Change`] is spread over the typed columns of
//! the `changelog` table and its JSON `detail`, and how a row is read back into the
//! exact same `Change`.
//!
//! Reading is strict: a row that does not decode (unknown action, missing column,
//! invalid name) is reported as [`StoreError::Internal`], never skipped, because a
//! tailer that skipped a row would silently diverge from the truth.

use permsync_core::{
    Binding, Change, ChangeKind, Grant, Permission, RoleName, Scope, SessionEnd, Timestamp, UserId,
};
use serde::{Deserialize, Serialize};

use crate::{Result, StoreError};

/// The columns of one changelog row, apart from `seq`, `at` and `actor`.
#[derive(Debug, Default)]
pub(super) struct Columns<'a> {
    pub action: &'static str,
    pub user: Option<&'a str>,
    pub role: Option<&'a str>,
    pub permission: Option<&'a str>,
    pub scope: Option<&'a str>,
    pub ref_id: Option<i64>,
    pub expires_at: Option<i64>,
    pub detail: Option<String>,
}

/// One changelog row as read from the table.
pub(super) type StoredRow = (
    i64,            // seq
    i64,            // at
    String,         // actor
    String,         // action
    Option<String>, // user
    Option<String>, // role
    Option<String>, // permission
    Option<String>, // scope
    Option<i64>,    // ref_id
    Option<i64>,    // expires_at
    Option<String>, // detail
);

pub(super) const SELECT_COLUMNS: &str =
    "seq, at, actor, action, user, role, permission, scope, ref_id, expires_at, detail";

#[derive(Serialize, Deserialize)]
struct RoleSetDetail {
    permissions: Vec<String>,
    description: String,
}

#[derive(Serialize, Deserialize)]
struct InvalidatedDetail {
    users: Vec<String>,
    reason: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct SessionsEndedDetail {
    sessions: Vec<String>,
    reason: String,
}

fn json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Internal(format!("encoding change detail: {e}")))
}

/// Spreads a change over the changelog columns.
pub(super) fn encode(kind: &ChangeKind) -> Result<Columns<'_>> {
    let action = kind.action();
    let columns = match kind {
        ChangeKind::UserCreated { user } | ChangeKind::UserDeleted { user } => Columns {
            action,
            user: Some(user.as_str()),
            ..Columns::default()
        },
        ChangeKind::GrantAdded(g) => Columns {
            action,
            user: Some(g.user.as_str()),
            permission: Some(g.permission.as_str()),
            scope: g.scope.as_ref().map(Scope::as_str),
            ref_id: Some(id_to_sql(g.id)?),
            expires_at: g.expires_at.map(Timestamp::millis),
            ..Columns::default()
        },
        ChangeKind::GrantRemoved {
            user,
            id,
            permission,
            scope,
            expired: _,
        } => Columns {
            action,
            user: Some(user.as_str()),
            permission: Some(permission.as_str()),
            scope: scope.as_ref().map(Scope::as_str),
            ref_id: Some(id_to_sql(*id)?),
            ..Columns::default()
        },
        ChangeKind::BindingAdded(b) => Columns {
            action,
            user: Some(b.user.as_str()),
            role: Some(b.role.as_str()),
            scope: b.scope.as_ref().map(Scope::as_str),
            ref_id: Some(id_to_sql(b.id)?),
            expires_at: b.expires_at.map(Timestamp::millis),
            ..Columns::default()
        },
        ChangeKind::BindingRemoved {
            user,
            id,
            role,
            scope,
            expired: _,
        } => Columns {
            action,
            user: Some(user.as_str()),
            role: Some(role.as_str()),
            scope: scope.as_ref().map(Scope::as_str),
            ref_id: Some(id_to_sql(*id)?),
            ..Columns::default()
        },
        ChangeKind::RoleSet {
            role,
            permissions,
            description,
        } => Columns {
            action,
            role: Some(role.as_str()),
            detail: Some(json(&RoleSetDetail {
                permissions: permissions.iter().map(|p| p.as_str().to_owned()).collect(),
                description: description.clone(),
            })?),
            ..Columns::default()
        },
        ChangeKind::RoleDeleted { role } => Columns {
            action,
            role: Some(role.as_str()),
            ..Columns::default()
        },
        ChangeKind::Invalidated { users, reason } => Columns {
            action,
            detail: Some(json(&InvalidatedDetail {
                users: users.iter().map(|u| u.as_str().to_owned()).collect(),
                reason: reason.clone(),
            })?),
            ..Columns::default()
        },
        ChangeKind::SessionsEnded {
            user,
            sessions,
            reason,
        } => Columns {
            action,
            user: Some(user.as_str()),
            detail: Some(json(&SessionsEndedDetail {
                sessions: sessions.clone(),
                reason: reason.as_str().to_owned(),
            })?),
            ..Columns::default()
        },
    };
    Ok(columns)
}

/// Reads a changelog row back into the change that was written.
pub(super) fn decode(row: StoredRow) -> Result<Change> {
    let (seq, at, actor, action, user, role, permission, scope, ref_id, expires_at, detail) = row;
    let corrupt =
        |what: &str| StoreError::Internal(format!("changelog row {seq} is corrupt: {what}"));
    let seq = u64::try_from(seq).map_err(|_| corrupt("negative seq"))?;
    let at = Timestamp(at);

    let user = || -> Result<UserId> {
        let raw = user.as_deref().ok_or_else(|| corrupt("no user"))?;
        UserId::parse(raw).map_err(|_| corrupt("invalid user"))
    };
    let role = || -> Result<RoleName> {
        let raw = role.as_deref().ok_or_else(|| corrupt("no role"))?;
        RoleName::parse(raw).map_err(|_| corrupt("invalid role"))
    };
    let permission = || -> Result<Permission> {
        let raw = permission
            .as_deref()
            .ok_or_else(|| corrupt("no permission"))?;
        Permission::parse(raw).map_err(|_| corrupt("invalid permission"))
    };
    let scope = || -> Result<Option<Scope>> {
        scope
            .as_deref()
            .map(Scope::parse)
            .transpose()
            .map_err(|_| corrupt("invalid scope"))
    };
    let ref_id = || -> Result<u64> {
        let raw = ref_id.ok_or_else(|| corrupt("no ref_id"))?;
        u64::try_from(raw).map_err(|_| corrupt("negative ref_id"))
    };
    fn detail_of<T: for<'de> Deserialize<'de>>(detail: &Option<String>) -> Option<T> {
        serde_json::from_str(detail.as_deref()?).ok()
    }

    let kind = match action.as_str() {
        "user_created" => ChangeKind::UserCreated { user: user()? },
        "user_deleted" => ChangeKind::UserDeleted { user: user()? },
        "grant_added" => ChangeKind::GrantAdded(Grant {
            id: ref_id()?,
            user: user()?,
            permission: permission()?,
            scope: scope()?,
            expires_at: expires_at.map(Timestamp),
            created_at: at,
            created_by: actor.clone(),
        }),
        "grant_removed" | "grant_expired" => ChangeKind::GrantRemoved {
            user: user()?,
            id: ref_id()?,
            permission: permission()?,
            scope: scope()?,
            expired: action == "grant_expired",
        },
        "binding_added" => ChangeKind::BindingAdded(Binding {
            id: ref_id()?,
            user: user()?,
            role: role()?,
            scope: scope()?,
            expires_at: expires_at.map(Timestamp),
            created_at: at,
            created_by: actor.clone(),
        }),
        "binding_removed" | "binding_expired" => ChangeKind::BindingRemoved {
            user: user()?,
            id: ref_id()?,
            role: role()?,
            scope: scope()?,
            expired: action == "binding_expired",
        },
        "role_set" => {
            let d: RoleSetDetail = detail_of(&detail).ok_or_else(|| corrupt("bad detail"))?;
            let permissions = d
                .permissions
                .iter()
                .map(|p| Permission::parse(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| corrupt("invalid permission in detail"))?;
            ChangeKind::RoleSet {
                role: role()?,
                permissions,
                description: d.description,
            }
        }
        "role_deleted" => ChangeKind::RoleDeleted { role: role()? },
        "invalidated" => {
            let d: InvalidatedDetail = detail_of(&detail).ok_or_else(|| corrupt("bad detail"))?;
            let users = d
                .users
                .iter()
                .map(|u| UserId::parse(u))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| corrupt("invalid user in detail"))?;
            ChangeKind::Invalidated {
                users,
                reason: d.reason,
            }
        }
        "sessions_ended" => {
            let d: SessionsEndedDetail = detail_of(&detail).ok_or_else(|| corrupt("bad detail"))?;
            let reason =
                session_end_from_str(&d.reason).ok_or_else(|| corrupt("bad session end reason"))?;
            ChangeKind::SessionsEnded {
                user: user()?,
                sessions: d.sessions,
                reason,
            }
        }
        _ => return Err(corrupt("unknown action")),
    };
    Ok(Change {
        seq,
        at,
        actor,
        kind,
    })
}

pub(super) fn session_end_from_str(s: &str) -> Option<SessionEnd> {
    match s {
        "logged_out" => Some(SessionEnd::LoggedOut),
        "revoked" => Some(SessionEnd::Revoked),
        _ => None,
    }
}

/// Ids and seqs are u64 in the model and INTEGER (i64) in SQLite; a seq never gets
/// near 2^63, so a larger value is a bug.
pub(super) fn id_to_sql(id: u64) -> Result<i64> {
    i64::try_from(id).map_err(|_| StoreError::Internal(format!("id {id} out of range")))
}
