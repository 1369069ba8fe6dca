//! Wire types. Every request and response body of the v1 API is defined here and
//! converted by hand from core types, so core stays free of wire concerns.

use permsync_core as core;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::time::rfc3339;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: String,
}

#[derive(Serialize, ToSchema)]
pub struct EffectivePermission {
    pub permission: String,
    pub scope: Option<String>,
    pub expires_at: Option<String>,
    /// `direct` or `role:NAME`.
    pub via: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RoleHolding {
    pub role: String,
    pub scope: Option<String>,
    pub expires_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MyPermissions {
    pub user: String,
    pub revision: u64,
    pub permissions: Vec<EffectivePermission>,
    pub roles: Vec<RoleHolding>,
    pub next_change_at: Option<String>,
}

impl From<&core::Snapshot> for MyPermissions {
    fn from(s: &core::Snapshot) -> Self {
        MyPermissions {
            user: s.user.to_string(),
            revision: s.revision,
            permissions: s.permissions.iter().map(effective).collect(),
            roles: s
                .roles
                .iter()
                .map(|r| RoleHolding {
                    role: r.role.to_string(),
                    scope: r.scope.as_ref().map(|s| s.to_string()),
                    expires_at: r.expires_at.map(rfc3339),
                })
                .collect(),
            next_change_at: s.next_change_at.map(rfc3339),
        }
    }
}

fn effective(e: &core::EffectivePermission) -> EffectivePermission {
    EffectivePermission {
        permission: e.permission.to_string(),
        scope: e.scope.as_ref().map(|s| s.to_string()),
        expires_at: e.expires_at.map(rfc3339),
        via: e
            .via
            .iter()
            .map(|v| match v {
                core::Via::Direct => "direct".to_string(),
                core::Via::Role(r) => format!("role:{r}"),
            })
            .collect(),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub user: String,
    pub permission: String,
    #[serde(default)]
    pub scope: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CheckResult {
    pub allowed: bool,
    pub revision: u64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchCheckRequest {
    pub checks: Vec<CheckRequest>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchCheckResult {
    pub results: Vec<CheckResult>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub user: String,
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserSummary {
    pub user: String,
    pub revision: u64,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedUser {
    pub user: String,
    pub revision: u64,
    pub seq: u64,
}

#[derive(Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserSummary>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Grant {
    pub id: u64,
    pub permission: String,
    pub scope: Option<String>,
    pub expires_at: Option<String>,
    pub created_at: String,
    pub created_by: String,
}

impl From<&core::Grant> for Grant {
    fn from(g: &core::Grant) -> Self {
        Grant {
            id: g.id,
            permission: g.permission.to_string(),
            scope: g.scope.as_ref().map(|s| s.to_string()),
            expires_at: g.expires_at.map(rfc3339),
            created_at: rfc3339(g.created_at),
            created_by: g.created_by.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Binding {
    pub id: u64,
    pub role: String,
    pub scope: Option<String>,
    pub expires_at: Option<String>,
    pub created_at: String,
    pub created_by: String,
}

impl From<&core::Binding> for Binding {
    fn from(b: &core::Binding) -> Self {
        Binding {
            id: b.id,
            role: b.role.to_string(),
            scope: b.scope.as_ref().map(|s| s.to_string()),
            expires_at: b.expires_at.map(rfc3339),
            created_at: rfc3339(b.created_at),
            created_by: b.created_by.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct UserDetail {
    pub user: String,
    pub revision: u64,
    pub grants: Vec<Grant>,
    pub bindings: Vec<Binding>,
    pub permissions: Vec<EffectivePermission>,
}

impl UserDetail {
    pub fn new(
        snapshot: &core::Snapshot,
        grants: &[core::Grant],
        bindings: &[core::Binding],
    ) -> Self {
        UserDetail {
            user: snapshot.user.to_string(),
            revision: snapshot.revision,
            grants: grants.iter().map(Grant::from).collect(),
            bindings: bindings.iter().map(Binding::from).collect(),
            permissions: snapshot.permissions.iter().map(effective).collect(),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGrant {
    pub permission: String,
    #[serde(default)]
    pub scope: Option<String>,
    /// RFC 3339; must be in the future.
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct GrantCreated {
    pub grant: Grant,
    pub seq: u64,
    pub revision: u64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBinding {
    pub role: String,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct BindingCreated {
    pub binding: Binding,
    pub seq: u64,
    pub revision: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Removed {
    pub seq: u64,
    pub revision: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Seq {
    pub seq: u64,
}

#[derive(Serialize, ToSchema)]
pub struct SessionsRevoked {
    /// The change that ended the sessions; absent when none was open.
    pub seq: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct Role {
    pub role: String,
    pub description: String,
    pub permissions: Vec<String>,
    /// How many users are bound to the role.
    pub members: usize,
}

#[derive(Serialize, ToSchema)]
pub struct RoleList {
    pub roles: Vec<Role>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRole {
    pub permissions: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RoleSaved {
    pub role: String,
    pub seq: u64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvalidateRequest {
    pub users: Vec<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Invalidated {
    pub seq: u64,
    pub revisions: std::collections::BTreeMap<String, u64>,
}

#[derive(Serialize, ToSchema)]
pub struct ChangeRecord {
    pub seq: u64,
    pub at: String,
    pub actor: String,
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub detail: Option<serde_json::Value>,
}

impl From<&core::Change> for ChangeRecord {
    fn from(c: &core::Change) -> Self {
        use core::ChangeKind as K;
        use serde_json::json;
        let mut r = ChangeRecord {
            seq: c.seq,
            at: rfc3339(c.at),
            actor: c.actor.clone(),
            action: c.kind.action(),
            user: None,
            role: None,
            permission: None,
            scope: None,
            detail: None,
        };
        let scope = |s: &Option<core::Scope>| s.as_ref().map(|s| s.to_string());
        match &c.kind {
            K::UserCreated { user } | K::UserDeleted { user } => r.user = Some(user.to_string()),
            K::GrantAdded(g) => {
                r.user = Some(g.user.to_string());
                r.permission = Some(g.permission.to_string());
                r.scope = scope(&g.scope);
                r.detail = Some(json!({"id": g.id, "expires_at": g.expires_at.map(rfc3339)}));
            }
            K::GrantRemoved {
                user,
                id,
                permission,
                scope: s,
                ..
            } => {
                r.user = Some(user.to_string());
                r.permission = Some(permission.to_string());
                r.scope = scope(s);
                r.detail = Some(json!({"id": id}));
            }
            K::BindingAdded(b) => {
                r.user = Some(b.user.to_string());
                r.role = Some(b.role.to_string());
                r.scope = scope(&b.scope);
                r.detail = Some(json!({"id": b.id, "expires_at": b.expires_at.map(rfc3339)}));
            }
            K::BindingRemoved {
                user,
                id,
                role,
                scope: s,
                ..
            } => {
                r.user = Some(user.to_string());
                r.role = Some(role.to_string());
                r.scope = scope(s);
                r.detail = Some(json!({"id": id}));
            }
            K::RoleSet {
                role,
                permissions,
                description,
            } => {
                r.role = Some(role.to_string());
                let ps: Vec<&str> = permissions.iter().map(|p| p.as_str()).collect();
                r.detail = Some(json!({"permissions": ps, "description": description}));
            }
            K::RoleDeleted { role } => r.role = Some(role.to_string()),
            K::Invalidated { users, reason } => {
                let us: Vec<&str> = users.iter().map(|u| u.as_str()).collect();
                r.detail = Some(json!({"users": us, "reason": reason}));
            }
            K::SessionsEnded {
                user,
                sessions,
                reason,
            } => {
                r.user = Some(user.to_string());
                r.detail = Some(json!({"sessions": sessions.len(), "reason": reason.as_str()}));
            }
        }
        r
    }
}

#[derive(Serialize, ToSchema)]
pub struct ChangeList {
    pub changes: Vec<ChangeRecord>,
    /// Pass as `after` to read on; the last `seq` returned, or the `after` given.
    pub next_after: u64,
}

// --- Delivery acknowledgements (a permsync extension; see docs/protocol-notes.md) ---

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// The revision the tab has applied (its snapshot's revision).
    pub revision: u64,
    /// The client's id for the tab: `[A-Za-z0-9_-]{1,64}`.
    pub tab: String,
    /// Whether the tab holds the browser's connection to permsync.
    #[serde(default)]
    pub leader: Option<bool>,
    /// What the tab shows, for people (an app name, a path): at most 128 characters.
    #[serde(default)]
    pub label: Option<String>,
    /// The tab is closing: forget it.
    #[serde(default)]
    pub closed: bool,
}

#[derive(Serialize, ToSchema)]
pub struct AppliedRevision {
    pub revision: u64,
    /// When this node received the acknowledgement.
    pub applied_at: String,
    /// When the change that produced the revision was committed, if known.
    pub committed_at: Option<String>,
    /// `applied_at - committed_at` in milliseconds: the change's way to this tab.
    pub after_ms: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct TabInfo {
    pub tab: String,
    pub label: Option<String>,
    pub leader: bool,
    /// The highest revision the tab has applied.
    pub revision: u64,
    pub opened_at: String,
    /// The last acknowledgement.
    pub seen_at: String,
    /// The last revisions the tab applied, oldest first (at most 16).
    pub applied: Vec<AppliedRevision>,
}

#[derive(Serialize, ToSchema)]
pub struct UserTabs {
    pub user: String,
    /// The user's current revision.
    pub revision: u64,
    /// Tabs that acknowledged within the last `ttl_seconds`, newest first.
    pub tabs: Vec<TabInfo>,
    pub ttl_seconds: u64,
}

impl TabInfo {
    pub fn new(t: &crate::tabs::Tab) -> Self {
        TabInfo {
            tab: t.id.clone(),
            label: t.label.clone(),
            leader: t.leader,
            revision: t.revision,
            opened_at: rfc3339(t.opened_at),
            seen_at: rfc3339(t.seen_at),
            applied: t
                .history
                .iter()
                .map(|a| AppliedRevision {
                    revision: a.revision,
                    applied_at: rfc3339(a.at),
                    committed_at: a.committed_at.map(rfc3339),
                    // A change committed before the tab first reported did not
                    // travel to it: it was in the tab's first snapshot.
                    after_ms: a
                        .committed_at
                        .filter(|c| *c >= t.opened_at)
                        .map(|c| (a.at.0 - c.0).max(0)),
                })
                .collect(),
        }
    }
}
