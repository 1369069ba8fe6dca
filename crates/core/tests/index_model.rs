//! A differential test of the index: random sequences of loads and changes, applied
//! to `Index` and to a straightforward reference implementation (the index as it
//! was before its compact layout: plain vectors of grants and bindings per user,
//! scanned linearly, with role permissions matched one by one), compared on every
//! query after every step.

use permsync_core::*;
use proptest::prelude::*;

#[allow(dead_code)]
mod reference {
    //! The reference: linear scans over each user's records, nothing interned.

    use std::collections::{BTreeMap, BTreeSet, HashMap};

    use permsync_core::{
        Binding, Change, ChangeKind, EffectivePermission, Grant, Permission, RoleHolding, RoleInfo,
        RoleName, Scope, Snapshot, Timestamp, UserId, Via,
    };

    /// The scope rule, written out: a global holding applies everywhere, a scoped one
    /// at its scope and below it (at a `/`), and a global check sees global ones only.
    fn qualifies(held: Option<&Scope>, checked: Option<&str>) -> bool {
        match (held, checked) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(h), Some(c)) => {
                let h = h.as_str();
                c == h || (c.starts_with(h) && c.as_bytes()[h.len()] == b'/')
            }
        }
    }

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
        /// Bound users, with how many bindings each holds to this role.
        members: HashMap<UserId, u32>,
    }

    #[derive(Debug, Default)]
    pub struct Reference {
        users: HashMap<UserId, UserState>,
        roles: HashMap<RoleName, RoleState>,
        /// Pending expiries: (when, grant or binding id).
        expiries: BTreeSet<(Timestamp, u64)>,
        applied_seq: u64,
    }

    fn live(expires_at: Option<Timestamp>, now: Timestamp) -> bool {
        expires_at.is_none_or(|e| e > now)
    }

    impl Reference {
        pub fn new() -> Self {
            Self::default()
        }

        // ---- loading (from a store's full state) ----

        pub fn load_user(&mut self, user: UserId, revision: u64, exists: bool) {
            let u = self.users.entry(user).or_default();
            u.revision = revision;
            u.exists = exists;
        }

        pub fn load_role(
            &mut self,
            role: RoleName,
            permissions: Vec<Permission>,
            description: String,
        ) {
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
        pub fn can(
            &self,
            user: &str,
            permission: &str,
            scope: Option<&str>,
            now: Timestamp,
        ) -> bool {
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
                        .is_some_and(|r| r.permissions.iter().any(|p| p.matches(permission)))
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
                            .is_some_and(|r| r.permissions.iter().any(|p| p.matches(permission)))
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
                                let (gone, kept): (Vec<_>, Vec<_>) =
                                    std::mem::take(&mut u.bindings)
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
}

use reference::Reference;

const T0: i64 = 1_000_000;

const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
const HELD: [&str; 12] = [
    "*",
    "doc:*",
    "doc:read",
    "doc:edit",
    "doc:line:*",
    "doc:line:edit",
    "inv:approve",
    "inv:*",
    "permsync:admin",
    "permsync:*",
    // Longer than the pattern table keeps in a slot.
    "organization:department:read",
    "organization:department:*",
];
const CHECKED_EXTRA: [&str; 9] = [
    "doc:line:x",
    "doc:readx",
    "doc",
    "doc:",
    "inv:approve:x",
    "x",
    "",
    "doc:line:edit:more",
    "organization:department:reads",
];
const SCOPES: [&str; 5] = ["o/1", "o/1/p/1", "o/1/p/2", "o/2", "o/10"];
const CHECKED_SCOPES: [&str; 7] = ["o/1/p/1/d/9", "o/1/", "o", "", "o/1x", "o/1/p", "o/10/p/1"];
const ROLES: [&str; 3] = ["r1", "r2", "r3"];
const EXPIRIES: [Option<i64>; 6] = [
    None,
    Some(T0 - 10),
    Some(T0),
    Some(T0 + 10),
    Some(i64::MAX),
    Some(i64::MIN),
];
const NOWS: [i64; 5] = [T0 - 20, T0, T0 + 10, i64::MAX, i64::MIN];

fn user(i: u8) -> UserId {
    UserId::parse(USERS[i as usize % USERS.len()]).unwrap()
}
fn perm(i: u8) -> Permission {
    Permission::parse(HELD[i as usize % HELD.len()]).unwrap()
}
fn scope(i: Option<u8>) -> Option<Scope> {
    i.map(|i| Scope::parse(SCOPES[i as usize % SCOPES.len()]).unwrap())
}
fn role(i: u8) -> RoleName {
    RoleName::parse(ROLES[i as usize % ROLES.len()]).unwrap()
}
fn expiry(i: u8) -> Option<Timestamp> {
    EXPIRIES[i as usize % EXPIRIES.len()].map(Timestamp)
}

/// One step: a load (before any change) or a change. Indexes pick from the
/// constants above; `pick` chooses among the user's current records.
#[derive(Debug, Clone)]
enum Op {
    LoadUser(u8, u8, bool),
    LoadRole(u8, Vec<u8>),
    Grant(u8, u8, Option<u8>, u8),
    Binding(u8, u8, Option<u8>, u8),
    UserCreated(u8),
    UserDeleted(u8),
    GrantRemoved(u8, u8),
    BindingRemoved(u8, u8),
    RoleSet(u8, Vec<u8>),
    RoleDeleted(u8),
    Invalidated(Vec<u8>),
    SessionsEnded(u8),
    /// A change with an old `seq`, which must be ignored.
    Stale(u8),
}

fn load_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<u8>(), 0u8..5, any::<bool>()).prop_map(|(u, r, e)| Op::LoadUser(u, r, e)),
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..5))
            .prop_map(|(r, ps)| Op::LoadRole(r, ps)),
        (
            any::<u8>(),
            any::<u8>(),
            proptest::option::of(any::<u8>()),
            any::<u8>()
        )
            .prop_map(|(u, p, s, e)| Op::Grant(u, p, s, e)),
        (
            any::<u8>(),
            any::<u8>(),
            proptest::option::of(any::<u8>()),
            any::<u8>()
        )
            .prop_map(|(u, r, s, e)| Op::Binding(u, r, s, e)),
    ]
}

fn change_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => any::<u8>().prop_map(Op::UserCreated),
        1 => any::<u8>().prop_map(Op::UserDeleted),
        3 => (any::<u8>(), any::<u8>(), proptest::option::of(any::<u8>()), any::<u8>())
            .prop_map(|(u, p, s, e)| Op::Grant(u, p, s, e)),
        3 => (any::<u8>(), any::<u8>(), proptest::option::of(any::<u8>()), any::<u8>())
            .prop_map(|(u, r, s, e)| Op::Binding(u, r, s, e)),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(u, k)| Op::GrantRemoved(u, k)),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(u, k)| Op::BindingRemoved(u, k)),
        2 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..5))
            .prop_map(|(r, ps)| Op::RoleSet(r, ps)),
        1 => any::<u8>().prop_map(Op::RoleDeleted),
        1 => proptest::collection::vec(any::<u8>(), 0..3).prop_map(Op::Invalidated),
        1 => any::<u8>().prop_map(Op::SessionsEnded),
        1 => any::<u8>().prop_map(Op::Stale),
    ]
}

struct Pair {
    index: Index,
    reference: Reference,
    seq: u64,
}

impl Pair {
    fn grant(&self, u: u8, p: u8, s: Option<u8>, e: u8, id: u64) -> Grant {
        Grant {
            id,
            user: user(u),
            permission: perm(p),
            scope: scope(s),
            expires_at: expiry(e),
            created_at: Timestamp(T0),
            created_by: "test".into(),
        }
    }

    fn binding(&self, u: u8, r: u8, s: Option<u8>, e: u8, id: u64) -> Binding {
        Binding {
            id,
            user: user(u),
            role: role(r),
            scope: scope(s),
            expires_at: expiry(e),
            created_at: Timestamp(T0),
            created_by: "test".into(),
        }
    }

    fn load(&mut self, op: &Op) {
        self.seq += 1;
        let id = self.seq;
        match op {
            Op::LoadUser(u, r, e) => {
                self.index.load_user(user(*u), u64::from(*r), *e);
                self.reference.load_user(user(*u), u64::from(*r), *e);
            }
            Op::LoadRole(r, ps) => {
                let ps: Vec<Permission> = ps.iter().map(|p| perm(*p)).collect();
                self.index.load_role(role(*r), ps.clone(), format!("{r}"));
                self.reference.load_role(role(*r), ps, format!("{r}"));
            }
            Op::Grant(u, p, s, e) => {
                let g = self.grant(*u, *p, *s, *e, id);
                self.index.load_grant(g.clone());
                self.reference.load_grant(g);
            }
            Op::Binding(u, r, s, e) => {
                let b = self.binding(*u, *r, *s, *e, id);
                self.index.load_binding(b.clone());
                self.reference.load_binding(b);
            }
            _ => unreachable!("not a load"),
        }
    }

    /// Applies `op` as a change to both; returns what each said was affected.
    fn apply(&mut self, op: &Op) -> (Vec<String>, Vec<String>) {
        self.seq += 1;
        let seq = self.seq;
        let kind = match op {
            Op::UserCreated(u) => ChangeKind::UserCreated { user: user(*u) },
            Op::UserDeleted(u) => ChangeKind::UserDeleted { user: user(*u) },
            Op::Grant(u, p, s, e) => ChangeKind::GrantAdded(self.grant(*u, *p, *s, *e, seq)),
            Op::Binding(u, r, s, e) => ChangeKind::BindingAdded(self.binding(*u, *r, *s, *e, seq)),
            Op::GrantRemoved(u, k) => {
                let grants = self.reference.grants(user(*u).as_str());
                // Sometimes an id that is not there.
                let (id, p, s) = match grants.get(*k as usize % (grants.len() + 1)) {
                    Some(g) => (g.id, g.permission.clone(), g.scope.clone()),
                    None => (u64::MAX, perm(0), None),
                };
                ChangeKind::GrantRemoved {
                    user: user(*u),
                    id,
                    permission: p,
                    scope: s,
                    expired: false,
                }
            }
            Op::BindingRemoved(u, k) => {
                let bindings = self.reference.bindings(user(*u).as_str());
                let (id, r, s) = match bindings.get(*k as usize % (bindings.len() + 1)) {
                    Some(b) => (b.id, b.role.clone(), b.scope.clone()),
                    None => (u64::MAX, role(0), None),
                };
                ChangeKind::BindingRemoved {
                    user: user(*u),
                    id,
                    role: r,
                    scope: s,
                    expired: true,
                }
            }
            Op::RoleSet(r, ps) => ChangeKind::RoleSet {
                role: role(*r),
                permissions: ps.iter().map(|p| perm(*p)).collect(),
                description: format!("d{seq}"),
            },
            Op::RoleDeleted(r) => ChangeKind::RoleDeleted { role: role(*r) },
            Op::Invalidated(us) => ChangeKind::Invalidated {
                users: us.iter().map(|u| user(*u)).collect(),
                reason: None,
            },
            Op::SessionsEnded(u) => ChangeKind::SessionsEnded {
                user: user(*u),
                sessions: vec![],
                reason: SessionEnd::Revoked,
            },
            Op::Stale(u) => {
                self.seq -= 1;
                let change = Change {
                    seq: seq.saturating_sub(1 + u64::from(*u % 3)),
                    at: Timestamp(T0),
                    actor: "test".into(),
                    kind: ChangeKind::UserDeleted { user: user(*u) },
                };
                let a = self.index.apply(&change);
                let b = self.reference.apply(&change);
                return (names(a), names(b));
            }
            _ => unreachable!("not a change"),
        };
        let change = Change {
            seq,
            at: Timestamp(T0),
            actor: "test".into(),
            kind,
        };
        (
            names(self.index.apply(&change)),
            names(self.reference.apply(&change)),
        )
    }

    /// Every query, compared.
    fn compare(&self) -> Result<(), TestCaseError> {
        let (ix, rf) = (&self.index, &self.reference);
        prop_assert_eq!(ix.applied_seq(), rf.applied_seq());
        prop_assert_eq!(ix.next_expiry(), rf.next_expiry());
        prop_assert_eq!(ix.roles(), rf.roles());
        for r in ROLES.iter().chain(&["nope"]) {
            prop_assert_eq!(ix.role_exists(r), rf.role_exists(r), "role {}", r);
            prop_assert_eq!(ix.role_permissions(r), rf.role_permissions(r), "role {}", r);
        }
        let checked: Vec<&str> = HELD.iter().chain(&CHECKED_EXTRA).copied().collect();
        let scopes: Vec<Option<&str>> = std::iter::once(None)
            .chain(SCOPES.iter().chain(&CHECKED_SCOPES).map(|s| Some(*s)))
            .collect();
        for u in USERS.iter().chain(&["ghost"]) {
            prop_assert_eq!(ix.revision(u), rf.revision(u), "revision of {}", u);
            prop_assert_eq!(ix.user_exists(u), rf.user_exists(u), "existence of {}", u);
            prop_assert_eq!(ix.grants(u), rf.grants(u), "grants of {}", u);
            prop_assert_eq!(ix.bindings(u), rf.bindings(u), "bindings of {}", u);
            let id = UserId::parse(u).unwrap();
            for now in NOWS.map(Timestamp) {
                prop_assert_eq!(
                    ix.snapshot(&id, now),
                    rf.snapshot(&id, now),
                    "snapshot of {} at {:?}",
                    u,
                    now
                );
                for p in &checked {
                    prop_assert_eq!(
                        ix.can_anywhere(u, p, now),
                        rf.can_anywhere(u, p, now),
                        "can_anywhere({}, {}, {:?})",
                        u,
                        p,
                        now
                    );
                    for s in &scopes {
                        prop_assert_eq!(
                            ix.can(u, p, *s, now),
                            rf.can(u, p, *s, now),
                            "can({}, {}, {:?}, {:?})",
                            u,
                            p,
                            s,
                            now
                        );
                    }
                }
                for p in &HELD {
                    for s in &scopes {
                        prop_assert_eq!(
                            ix.find_grant(u, p, *s, now),
                            rf.find_grant(u, p, *s, now),
                            "find_grant({}, {}, {:?}, {:?})",
                            u,
                            p,
                            s,
                            now
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

fn names(mut users: Vec<UserId>) -> Vec<String> {
    users.sort();
    users.into_iter().map(|u| u.to_string()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn index_agrees_with_the_reference(
        loads in proptest::collection::vec(load_op(), 0..16),
        end_loading in any::<bool>(),
        changes in proptest::collection::vec(change_op(), 0..16),
    ) {
        let mut pair = Pair { index: Index::new(), reference: Reference::new(), seq: 0 };
        for op in &loads {
            pair.load(op);
        }
        // Queries before loading ends read holdings unpacked; after, packed.
        pair.compare()?;
        if end_loading {
            pair.index.set_applied_seq(pair.seq);
            pair.reference.set_applied_seq(pair.seq);
            pair.compare()?;
        }
        for op in &changes {
            let (a, b) = pair.apply(op);
            prop_assert_eq!(a, b, "affected by {:?}", op);
            pair.compare()?;
        }
    }
}

/// Many holdings on one user (more than a record packs) and a long run of changes,
/// so that a user's data is packed, unpacked and packed again.
#[test]
fn a_user_with_many_holdings_agrees_with_the_reference() {
    let mut pair = Pair {
        index: Index::new(),
        reference: Reference::new(),
        seq: 0,
    };
    for r in 0..3u8 {
        pair.load(&Op::LoadRole(r, vec![r, r + 3, r + 6]));
    }
    for i in 0..120u8 {
        pair.load(&Op::Grant(0, i, (i % 3 != 0).then_some(i), i));
        pair.load(&Op::Binding(0, i, (i % 4 != 0).then_some(i / 2), i / 3));
    }
    pair.index.set_applied_seq(pair.seq);
    pair.reference.set_applied_seq(pair.seq);
    pair.compare().unwrap();
    // Down past the packing threshold to nothing, with role edits on the way.
    for i in 0..400u16 {
        let k = i as u8;
        let op = match i % 5 {
            0 | 1 => Op::GrantRemoved(0, k),
            2 | 3 => Op::BindingRemoved(0, k),
            _ if i % 2 == 0 => Op::RoleSet(k, vec![k, k / 2]),
            _ => Op::Grant(1, k, Some(k), k),
        };
        let (a, b) = pair.apply(&op);
        assert_eq!(a, b, "{op:?}");
        if i % 20 == 0 {
            pair.compare().unwrap();
        }
    }
    assert!(pair.index.grants("alice").len() < 5);
    pair.apply(&Op::RoleDeleted(1));
    pair.apply(&Op::UserDeleted(0));
    pair.compare().unwrap();
}
