//! The in-memory effective-permission index: a projection of the store, kept
//! current by applying changes in `seq` order. It answers `can()` in a few hash
//! lookups and tells which users a change touched (the revision rules).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::permission::PermissionSet;
use crate::scope::qualifies;
use crate::{Binding, Change, ChangeKind, Grant, Permission, RoleName, Scope, Timestamp, UserId};

#[derive(Debug, Default)]
struct UserState {
    /// False for a user that was deleted, or is only known by revision (invalidated
    /// by an app that keeps its own permissions): the revision must outlive it.
    exists: bool,
    revision: u64,
    grants: Vec<Grant>,
    bindings: Vec<Binding>,
}

#[derive(Debug)]
struct RoleState {
    description: String,
    permissions: Vec<Permission>,
    set: PermissionSet,
    /// Bound users, with how many bindings each holds to this role.
    members: HashMap<UserId, u32>,
}

/// How a user holds an effective permission.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Via {
    Direct,
    Role(RoleName),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectivePermission {
    pub permission: Permission,
    pub scope: Option<Scope>,
    /// The latest expiry among its sources; `None` if any source never expires.
    pub expires_at: Option<Timestamp>,
    pub via: Vec<Via>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleHolding {
    pub role: RoleName,
    pub scope: Option<Scope>,
    pub expires_at: Option<Timestamp>,
}

/// A user's effective permissions at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub user: UserId,
    pub revision: u64,
    pub permissions: Vec<EffectivePermission>,
    pub roles: Vec<RoleHolding>,
    pub next_change_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleInfo {
    pub role: RoleName,
    pub description: String,
    pub permissions: Vec<Permission>,
    pub members: usize,
}

#[derive(Debug, Default)]
pub struct Index {
    users: HashMap<UserId, UserState>,
    roles: HashMap<RoleName, RoleState>,
    /// Pending expiries: (when, grant or binding id).
    expiries: BTreeSet<(Timestamp, u64)>,
    applied_seq: u64,
}

fn live(expires_at: Option<Timestamp>, now: Timestamp) -> bool {
    expires_at.is_none_or(|e| e > now)
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    // ---- loading (from a store's full state) ----

    pub fn load_user(&mut self, user: UserId, revision: u64, exists: bool) {
        let u = self.users.entry(user).or_default();
        u.revision = revision;
        u.exists = exists;
    }

    pub fn load_role(&mut self, role: RoleName, permissions: Vec<Permission>, description: String) {
        let set = PermissionSet::new(&permissions);
        let members = self
            .roles
            .remove(&role)
            .map(|r| r.members)
            .unwrap_or_default();
        self.roles.insert(
            role,
            RoleState {
                description,
                permissions,
                set,
                members,
            },
        );
    }

    pub fn load_grant(&mut self, grant: Grant) {
        if let Some(e) = grant.expires_at {
            self.expiries.insert((e, grant.id));
        }
        self.users
            .entry(grant.user.clone())
            .or_default()
            .grants
            .push(grant);
    }

    /// Loads a binding; its role must have been loaded first.
    pub fn load_binding(&mut self, binding: Binding) {
        if let Some(e) = binding.expires_at {
            self.expiries.insert((e, binding.id));
        }
        if let Some(role) = self.roles.get_mut(&binding.role) {
            *role.members.entry(binding.user.clone()).or_default() += 1;
        }
        self.users
            .entry(binding.user.clone())
            .or_default()
            .bindings
            .push(binding);
    }

    pub fn set_applied_seq(&mut self, seq: u64) {
        self.applied_seq = seq;
    }

    // ---- queries ----

    /// The `seq` of the last change applied.
    pub fn applied_seq(&self) -> u64 {
        self.applied_seq
    }

    /// The user's revision; 0 for a user never seen.
    pub fn revision(&self, user: &str) -> u64 {
        self.users.get(user).map_or(0, |u| u.revision)
    }

    pub fn user_exists(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.exists)
    }

    pub fn role_exists(&self, role: &str) -> bool {
        self.roles.contains_key(role)
    }

    pub fn role_permissions(&self, role: &str) -> Option<&[Permission]> {
        self.roles.get(role).map(|r| r.permissions.as_slice())
    }

    /// Whether `user` may do `permission` at `scope` (None: global holdings only).
    pub fn can(&self, user: &str, permission: &str, scope: Option<&str>, now: Timestamp) -> bool {
        let Some(u) = self.users.get(user) else {
            return false;
        };
        u.grants.iter().any(|g| {
            live(g.expires_at, now)
                && qualifies(g.scope.as_ref(), scope)
                && g.permission.matches(permission)
        }) || u.bindings.iter().any(|b| {
            live(b.expires_at, now)
                && qualifies(b.scope.as_ref(), scope)
                && self
                    .roles
                    .get(&b.role)
                    .is_some_and(|r| r.set.matches(permission))
        })
    }

    /// Whether `user` holds `permission` at any scope.
    pub fn can_anywhere(&self, user: &str, permission: &str, now: Timestamp) -> bool {
        let Some(u) = self.users.get(user) else {
            return false;
        };
        u.grants
            .iter()
            .any(|g| live(g.expires_at, now) && g.permission.matches(permission))
            || u.bindings.iter().any(|b| {
                live(b.expires_at, now)
                    && self
                        .roles
                        .get(&b.role)
                        .is_some_and(|r| r.set.matches(permission))
            })
    }

    pub fn grants(&self, user: &str) -> &[Grant] {
        self.users.get(user).map_or(&[], |u| &u.grants)
    }

    pub fn bindings(&self, user: &str) -> &[Binding] {
        self.users.get(user).map_or(&[], |u| &u.bindings)
    }

    /// The active grant of exactly this permission and scope, if any.
    pub fn find_grant(
        &self,
        user: &str,
        permission: &str,
        scope: Option<&str>,
        now: Timestamp,
    ) -> Option<&Grant> {
        self.grants(user).iter().find(|g| {
            live(g.expires_at, now)
                && g.permission.as_str() == permission
                && g.scope.as_ref().map(|s| s.as_str()) == scope
        })
    }

    pub fn roles(&self) -> Vec<RoleInfo> {
        let mut out: Vec<RoleInfo> = self
            .roles
            .iter()
            .map(|(name, r)| RoleInfo {
                role: name.clone(),
                description: r.description.clone(),
                permissions: r.permissions.clone(),
                members: r.members.len(),
            })
            .collect();
        out.sort_by(|a, b| a.role.cmp(&b.role));
        out
    }

    /// The earliest pending expiry of any grant or binding.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.expiries.first().map(|(t, _)| *t)
    }

    /// The user's effective permissions, as of `now`.
    pub fn snapshot(&self, user: &UserId, now: Timestamp) -> Snapshot {
        let mut merged: BTreeMap<(Permission, Option<Scope>), EffectivePermission> =
            BTreeMap::new();
        let mut roles = Vec::new();
        let mut next_change_at: Option<Timestamp> = None;
        let mut add = |permission: &Permission,
                       scope: &Option<Scope>,
                       expires_at: Option<Timestamp>,
                       via: Via| {
            let entry = merged
                .entry((permission.clone(), scope.clone()))
                .or_insert_with(|| EffectivePermission {
                    permission: permission.clone(),
                    scope: scope.clone(),
                    expires_at,
                    via: Vec::new(),
                });
            entry.expires_at = match (entry.expires_at, expires_at) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
            if !entry.via.contains(&via) {
                entry.via.push(via);
                entry.via.sort();
            }
        };
        let revision = self.revision(user.as_str());
        if let Some(u) = self.users.get(user.as_str()) {
            for g in u.grants.iter().filter(|g| live(g.expires_at, now)) {
                add(&g.permission, &g.scope, g.expires_at, Via::Direct);
                next_change_at = earliest(next_change_at, g.expires_at);
            }
            for b in u.bindings.iter().filter(|b| live(b.expires_at, now)) {
                if let Some(role) = self.roles.get(&b.role) {
                    for p in &role.permissions {
                        add(p, &b.scope, b.expires_at, Via::Role(b.role.clone()));
                    }
                }
                roles.push(RoleHolding {
                    role: b.role.clone(),
                    scope: b.scope.clone(),
                    expires_at: b.expires_at,
                });
                next_change_at = earliest(next_change_at, b.expires_at);
            }
        }
        roles.sort_by(|a, b| (&a.role, &a.scope).cmp(&(&b.role, &b.scope)));
        Snapshot {
            user: user.clone(),
            revision,
            permissions: merged.into_values().collect(),
            roles,
            next_change_at,
        }
    }

    // ---- applying changes ----

    /// Applies one committed change and returns the users whose revision it raised
    /// (each now at `change.seq`). Changes must come in `seq` order; an already
    /// applied one is ignored.
    pub fn apply(&mut self, change: &Change) -> Vec<UserId> {
        if change.seq <= self.applied_seq {
            return Vec::new();
        }
        self.applied_seq = change.seq;
        let affected = match &change.kind {
            ChangeKind::UserCreated { user } => {
                self.users.entry(user.clone()).or_default().exists = true;
                vec![user.clone()]
            }
            ChangeKind::UserDeleted { user } => {
                if let Some(u) = self.users.get_mut(user.as_str()) {
                    u.exists = false;
                    let grants = std::mem::take(&mut u.grants);
                    let bindings = std::mem::take(&mut u.bindings);
                    for g in grants {
                        self.forget_expiry(g.expires_at, g.id);
                    }
                    for b in bindings {
                        self.forget_binding(&b);
                    }
                }
                vec![user.clone()]
            }
            ChangeKind::GrantAdded(g) => {
                self.load_grant(g.clone());
                vec![g.user.clone()]
            }
            ChangeKind::GrantRemoved { user, id, .. } => {
                if let Some(u) = self.users.get_mut(user.as_str()) {
                    if let Some(pos) = u.grants.iter().position(|g| g.id == *id) {
                        let g = u.grants.swap_remove(pos);
                        self.forget_expiry(g.expires_at, g.id);
                    }
                }
                vec![user.clone()]
            }
            ChangeKind::BindingAdded(b) => {
                self.load_binding(b.clone());
                vec![b.user.clone()]
            }
            ChangeKind::BindingRemoved { user, id, .. } => {
                if let Some(u) = self.users.get_mut(user.as_str()) {
                    if let Some(pos) = u.bindings.iter().position(|b| b.id == *id) {
                        let b = u.bindings.swap_remove(pos);
                        self.forget_binding(&b);
                    }
                }
                vec![user.clone()]
            }
            ChangeKind::RoleSet {
                role,
                permissions,
                description,
            } => {
                self.load_role(role.clone(), permissions.clone(), description.clone());
                self.roles[role].members.keys().cloned().collect()
            }
            ChangeKind::RoleDeleted { role } => match self.roles.remove(role) {
                Some(state) => {
                    let members: Vec<UserId> = state.members.into_keys().collect();
                    for m in &members {
                        if let Some(u) = self.users.get_mut(m.as_str()) {
                            let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut u.bindings)
                                .into_iter()
                                .partition(|b| &b.role == role);
                            u.bindings = kept;
                            for b in gone {
                                self.forget_expiry(b.expires_at, b.id);
                            }
                        }
                    }
                    members
                }
                None => Vec::new(),
            },
            ChangeKind::Invalidated { users, .. } => users.clone(),
            ChangeKind::SessionsEnded { .. } => Vec::new(),
        };
        for user in &affected {
            self.users.entry(user.clone()).or_default().revision = change.seq;
        }
        affected
    }

    fn forget_expiry(&mut self, expires_at: Option<Timestamp>, id: u64) {
        if let Some(e) = expires_at {
            self.expiries.remove(&(e, id));
        }
    }

    fn forget_binding(&mut self, b: &Binding) {
        self.forget_expiry(b.expires_at, b.id);
        if let Some(role) = self.roles.get_mut(&b.role) {
            if let Some(n) = role.members.get_mut(&b.user) {
                *n -= 1;
                if *n == 0 {
                    role.members.remove(&b.user);
                }
            }
        }
    }
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
