//! The in-memory effective-permission index: a projection of the store, kept
//! current by applying changes in `seq` order. It answers `can()` from one compact
//! record per user and tells which users a change touched (the revision rules).
//!
//! # Layout
//!
//! `can()` is bound by memory latency, not arithmetic, so the layout keeps what it
//! reads few and adjacent:
//!
//! - **Interning** ([`intern`]): permission patterns, scopes and role names get
//!   dense `u32` ids, counted by reference so that ids nothing holds any more are
//!   reused. Permission patterns are also kept in a table of one-cache-line slots
//!   keyed by what they match (an exact pattern by itself, `p:*` by `p:`), each
//!   with a Bloom filter of the roles that hold it. A call looks up the checked
//!   permission and its `:`-prefixes there once ([`Matching`]); after that, a grant
//!   matches by comparing ids and a binding by testing one filter bit.
//! - **Per-user records** ([`hot`]): each user's holdings are packed into one
//!   `Box<[u64]>` (the user id, one word per grant or binding with its permission
//!   or role id and flags, expiries where they exist, and the user's distinct scope
//!   strings), found through an open-addressing table whose slots hold the key's
//!   hash and the record. A lookup reads one slot and then one record of a few
//!   adjacent cache lines; the scope strings are compared in place.
//! - **Cold data**: the full [`Grant`] and [`Binding`] records (for `grants()`,
//!   `bindings()`, `find_grant()` and snapshots), the revision, and the holdings as
//!   ids in the same order (`UserState::holdings`), from which records are packed,
//!   live in a separate map that `can()` does not touch. Their strings are replaced
//!   by the interned copies on the way in, so equal strings share one allocation.
//! - **Roles**: a `Vec` by role id with each role's sorted pattern ids, and for
//!   each pattern the sorted roles that hold it, to confirm a filter hit.
//!
//! Users with more than `hot::MAX_PACKED` holdings, and every user while a load
//! is under way (before `set_applied_seq()` or the next `apply()`), are answered
//! from the cold holdings instead: the same test, a few more cache misses.

mod hot;
mod intern;

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};

use crate::scope::covers;
use crate::{Binding, Change, ChangeKind, Grant, Permission, RoleName, Scope, Timestamp, UserId};
use hot::{pack_record, with_holding, Holding, Record, UserTable, GLOBAL, MAX_PACKED};
use intern::{Interner, Matching, Patterns, RoleFilter};

/// Keyed (randomly seeded per map) and much faster than SipHash on short strings.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

fn map<K, V>() -> Map<K, V> {
    Map::with_hasher(foldhash::fast::RandomState::default())
}

/// A binding with its holding.
type BindingHolding = (Binding, Holding);

#[derive(Debug, Default)]
struct UserState {
    /// False for a user that was deleted, or is only known by revision (invalidated
    /// by an app that keeps its own permissions): the revision must outlive it.
    exists: bool,
    revision: u64,
    grants: Vec<Grant>,
    bindings: Vec<Binding>,
    /// The grants then the bindings, as ids: `holdings[i]` is `grants[i]`, and
    /// `holdings[grants.len() + j]` is `bindings[j]`. The user's record in
    /// `Index::hot` is packed from these.
    holdings: Vec<Holding>,
    /// The user's record is out of date (listed in `Index::stale`).
    stale: bool,
}

impl UserState {
    fn add_grant(&mut self, g: Grant, h: Holding) {
        self.holdings.insert(self.grants.len(), h);
        self.grants.push(g);
    }

    fn add_binding(&mut self, b: Binding, h: Holding) {
        self.holdings.push(h);
        self.bindings.push(b);
    }

    fn remove_grant(&mut self, pos: usize) -> (Grant, Holding) {
        let last = self.grants.len() - 1;
        self.holdings.swap(pos, last);
        let h = self.holdings.remove(last);
        (self.grants.swap_remove(pos), h)
    }

    fn remove_binding(&mut self, pos: usize) -> (Binding, Holding) {
        let h = self.holdings.swap_remove(self.grants.len() + pos);
        (self.bindings.swap_remove(pos), h)
    }

    fn take_all(&mut self) -> (Vec<(Grant, Holding)>, Vec<BindingHolding>) {
        let holdings = std::mem::take(&mut self.holdings);
        let grants = std::mem::take(&mut self.grants);
        let bindings = std::mem::take(&mut self.bindings);
        let (gh, bh) = holdings.split_at(grants.len());
        (
            grants.into_iter().zip(gh.iter().copied()).collect(),
            bindings.into_iter().zip(bh.iter().copied()).collect(),
        )
    }

    /// Removes the bindings to role `role`, keeping the others in order.
    fn remove_bindings_of(&mut self, role: u32) -> Vec<BindingHolding> {
        let ng = self.grants.len();
        let mut kept = Vec::with_capacity(self.bindings.len());
        let mut gone = Vec::new();
        let holdings = self.holdings.split_off(ng);
        for (b, h) in std::mem::take(&mut self.bindings).into_iter().zip(holdings) {
            if h.target() == role {
                gone.push((b, h));
            } else {
                kept.push(b);
                self.holdings.push(h);
            }
        }
        self.bindings = kept;
        gone
    }
}

#[derive(Debug)]
struct RoleState {
    description: String,
    permissions: Vec<Permission>,
    /// Bound users, with how many bindings each holds to this role.
    members: Map<UserId, u32>,
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

#[derive(Debug)]
pub struct Index {
    users: Map<UserId, UserState>,
    /// Each user's packed record, for every user that has held anything: all that
    /// `can()` reads of a user.
    hot: UserTable,
    /// Users loaded since their records were last packed: loading packs each
    /// record once, when loading ends, rather than once per grant. While any are
    /// listed, `can()` reads every user's holdings unpacked.
    stale: Vec<UserId>,
    /// Role names, held by each binding and by the role's existence.
    role_names: Interner<RoleName>,
    /// By role id; None for a name only known from bindings (or a free id).
    roles: Vec<Option<RoleState>>,
    /// Each role's permission patterns as sorted, distinct ids, by role id; empty
    /// for a role that does not exist.
    role_sets: Vec<Box<[u32]>>,
    /// The other way round, by pattern id: the roles that hold the pattern, sorted.
    /// `can()` reads these only to confirm a hit of the roles' filter, which
    /// `patterns` keeps with each pattern.
    roles_by_pattern: Vec<Vec<u32>>,
    patterns: Patterns,
    scopes: Interner<Scope>,
    /// Pending expiries: (when, grant or binding id).
    expiries: BTreeSet<(Timestamp, u64)>,
    applied_seq: u64,
}

impl Default for Index {
    fn default() -> Self {
        let mut scopes = Interner::new();
        let global = scopes.reserve();
        debug_assert_eq!(global, GLOBAL);
        Index {
            users: map(),
            hot: UserTable::default(),
            stale: Vec::new(),
            role_names: Interner::new(),
            roles: Vec::new(),
            role_sets: Vec::new(),
            roles_by_pattern: Vec::new(),
            patterns: Patterns::new(),
            scopes,
            expiries: BTreeSet::new(),
            applied_seq: 0,
        }
    }
}

/// Where a snapshot entry comes from: a role id, or this for a direct grant.
const DIRECT: u32 = u32::MAX;

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    // ---- interning helpers ----

    /// Takes a reference to the scope's id; returns it and the interned copy.
    fn intern_scope(&mut self, scope: &Option<Scope>) -> (u32, Option<Scope>) {
        match scope {
            None => (GLOBAL, None),
            Some(s) => {
                let (id, canonical, _) = self.scopes.intern(s);
                (id, Some(canonical))
            }
        }
    }

    fn release_scope(&mut self, id: u32) {
        if id != GLOBAL {
            self.scopes.release(id);
        }
    }

    fn scope_value(&self, id: u32) -> Option<Scope> {
        (id != GLOBAL).then(|| self.scopes.value(id).clone())
    }

    /// Releases what a removed grant or binding held.
    fn release_holding(&mut self, h: Holding) {
        if h.is_binding() {
            self.role_names.release(h.target());
        } else {
            self.patterns.release(h.target());
        }
        self.release_scope(h.scope());
    }

    /// Takes a reference to the role name's id, with room for it in `roles`;
    /// returns it and the interned copy of the name.
    fn intern_role_name(&mut self, role: &RoleName) -> (u32, RoleName) {
        let (id, canonical, _) = self.role_names.intern(role);
        let len = id as usize + 1;
        if self.roles.len() < len {
            self.roles.resize_with(len, || None);
            self.role_sets.resize_with(len, Default::default);
        }
        (id, canonical)
    }

    /// Lists role `role` under each of `patterns`.
    fn link_role(&mut self, role: u32, patterns: &[u32]) {
        for &p in patterns {
            if self.roles_by_pattern.len() <= p as usize {
                self.roles_by_pattern.resize_with(p as usize + 1, Vec::new);
            }
            let list = &mut self.roles_by_pattern[p as usize];
            if let Err(at) = list.binary_search(&role) {
                list.insert(at, role);
                self.patterns.set_roles(p, RoleFilter::of(list));
            }
        }
    }

    /// Takes role `role` off the lists of `patterns` it is not (still) linked by.
    fn unlink_role(&mut self, role: u32, patterns: &[u32]) {
        let current = self
            .role_sets
            .get(role as usize)
            .map_or(&[][..], |s| &s[..]);
        for &p in patterns {
            if current.binary_search(&p).is_ok() {
                continue;
            }
            if let Some(list) = self.roles_by_pattern.get_mut(p as usize) {
                if let Ok(at) = list.binary_search(&role) {
                    list.remove(at);
                    self.patterns.set_roles(p, RoleFilter::of(list));
                }
            }
        }
    }

    /// The role's state, if the role exists.
    fn role(&self, role: &str) -> Option<&RoleState> {
        let id = self.role_names.get(role)?;
        self.roles[id as usize].as_ref()
    }

    /// The user's state, created empty if unknown, with the map's own copy of the
    /// id so that records can share its allocation.
    fn user_entry(&mut self, user: &UserId) -> (UserId, &mut UserState) {
        match self.users.entry(user.clone()) {
            Entry::Occupied(e) => (e.key().clone(), e.into_mut()),
            Entry::Vacant(e) => (e.key().clone(), e.insert(UserState::default())),
        }
    }

    /// Repacks `user`'s record in `hot` after a change to their holdings.
    fn repack(&mut self, user: &str) {
        let Some(u) = self.users.get_mut(user) else {
            return;
        };
        u.stale = false;
        let scopes = &self.scopes;
        let record = pack_record(user, &u.holdings, |s| {
            Some(scopes.value(s).as_str().as_bytes())
        });
        self.hot.set(user, record);
    }

    /// Adds holding `h` at `scope` to `user`'s record, just added to their state:
    /// the cheap way if the record stays packed, else by repacking.
    fn add_to_record(&mut self, user: &str, h: Holding, scope: Option<&Scope>) {
        let packed = self
            .users
            .get(user)
            .is_some_and(|u| u.holdings.len() <= MAX_PACKED);
        if packed {
            if let Some(record) = self.hot.get_mut(user) {
                if let Some(new) = with_holding(record, h, scope.map(|s| s.as_str().as_bytes())) {
                    *record = new;
                    return;
                }
            }
        }
        self.repack(user);
    }

    /// Packs the records of the users loaded since the last time.
    fn repack_stale(&mut self) {
        for user in std::mem::take(&mut self.stale) {
            if self.users.get(user.as_str()).is_some_and(|u| u.stale) {
                self.repack(user.as_str());
            }
        }
    }

    // ---- loading (from a store's full state) ----

    pub fn load_user(&mut self, user: UserId, revision: u64, exists: bool) {
        let u = self.users.entry(user).or_default();
        u.revision = revision;
        u.exists = exists;
    }

    pub fn load_role(&mut self, role: RoleName, permissions: Vec<Permission>, description: String) {
        // New references first, then the old ones dropped, so ids in use stay put.
        let id = match self.role_names.get(role.as_str()) {
            Some(id) if self.roles[id as usize].is_some() => id,
            // The role's existence holds a reference to its name.
            _ => self.intern_role_name(&role).0,
        };
        // Canonical copies share the interned strings.
        let (mut set, permissions): (Vec<u32>, Vec<Permission>) =
            permissions.iter().map(|p| self.patterns.intern(p)).unzip();
        set.sort_unstable();
        // A repeated permission keeps one reference, like any other.
        let patterns = &mut self.patterns;
        set.dedup_by(|a, b| {
            let repeated = a == b;
            if repeated {
                patterns.release(*a);
            }
            repeated
        });
        let slot = id as usize;
        self.link_role(id, &set);
        let old = std::mem::replace(&mut self.role_sets[slot], set.into_boxed_slice());
        self.unlink_role(id, &old);
        for p in old.iter() {
            self.patterns.release(*p);
        }
        let members = self.roles[slot]
            .take()
            .map(|r| r.members)
            .unwrap_or_else(map);
        self.roles[slot] = Some(RoleState {
            description,
            permissions,
            members,
        });
    }

    /// Loads a grant. Until loading ends (`set_applied_seq()` or the next
    /// `apply()`), `can()` reads the user's holdings unpacked.
    pub fn load_grant(&mut self, grant: Grant) {
        let (user, _) = self.insert_grant(grant);
        self.mark_stale(user);
    }

    /// Loads a binding; its role must have been loaded first.
    pub fn load_binding(&mut self, binding: Binding) {
        let (user, _) = self.insert_binding(binding);
        self.mark_stale(user);
    }

    /// Lists `user`'s record for `repack_stale()`.
    fn mark_stale(&mut self, user: UserId) {
        let Some(u) = self.users.get_mut(user.as_str()) else {
            return;
        };
        if !u.stale {
            u.stale = true;
            self.stale.push(user);
        }
    }

    /// Adds a grant (its record not yet repacked); returns its user and holding.
    fn insert_grant(&mut self, mut grant: Grant) -> (UserId, Holding) {
        if let Some(e) = grant.expires_at {
            self.expiries.insert((e, grant.id));
        }
        // Canonical copies share the interned strings.
        let (p, permission) = self.patterns.intern(&grant.permission);
        let (s, scope) = self.intern_scope(&grant.scope);
        grant.permission = permission;
        grant.scope = scope;
        let h = Holding::grant(p, s, grant.expires_at);
        let (user, u) = self.user_entry(&grant.user);
        grant.user = user.clone();
        u.add_grant(grant, h);
        (user, h)
    }

    /// Adds a binding (its record not yet repacked); returns its user and holding.
    fn insert_binding(&mut self, mut binding: Binding) -> (UserId, Holding) {
        if let Some(e) = binding.expires_at {
            self.expiries.insert((e, binding.id));
        }
        let (r, role) = self.intern_role_name(&binding.role);
        let (s, scope) = self.intern_scope(&binding.scope);
        binding.role = role;
        binding.scope = scope;
        let h = Holding::binding(r, s, binding.expires_at);
        let (user, u) = self.user_entry(&binding.user);
        binding.user = user.clone();
        u.add_binding(binding, h);
        if let Some(Some(role)) = self.roles.get_mut(r as usize) {
            *role.members.entry(user.clone()).or_default() += 1;
        }
        (user, h)
    }

    /// Ends loading: records the last change applied, and packs the loaded users.
    pub fn set_applied_seq(&mut self, seq: u64) {
        self.repack_stale();
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
        self.role(role).is_some()
    }

    pub fn role_permissions(&self, role: &str) -> Option<&[Permission]> {
        self.role(role).map(|r| r.permissions.as_slice())
    }

    /// Whether a holding of `target` (a role if `binding`) carries a permission
    /// among `m`, the patterns matching `permission`.
    #[inline(always)]
    fn carries(&self, binding: bool, target: u32, permission: &str, m: &Matching) -> bool {
        if m.overflowed() {
            return self.carries_by_string(binding, target, permission);
        }
        if binding {
            m.may_be_held_by(target)
                && m.ids().iter().any(|&p| {
                    self.roles_by_pattern
                        .get(p as usize)
                        .is_some_and(|roles| roles.binary_search(&target).is_ok())
                })
        } else {
            m.contains(target)
        }
    }

    /// `carries()` for a permission that too many patterns match to list.
    #[cold]
    fn carries_by_string(&self, binding: bool, target: u32, permission: &str) -> bool {
        if binding {
            self.role_sets.get(target as usize).is_some_and(|set| {
                set.iter()
                    .any(|&p| self.patterns.value(p).matches(permission))
            })
        } else {
            self.patterns.value(target).matches(permission)
        }
    }

    /// Whether `user` may do `permission` at `scope` (None: global holdings only).
    pub fn can(&self, user: &str, permission: &str, scope: Option<&str>, now: Timestamp) -> bool {
        if !self.stale.is_empty() {
            return self.unpacked_can(user, permission, Some(scope), now);
        }
        let Some(record) = self.hot.get(user) else {
            return false;
        };
        match Record::read(record) {
            Record::Packed { holdings, scopes } => {
                if holdings.is_empty() {
                    return false;
                }
                let m = self.patterns.matching(permission);
                Record::any_live(holdings, now, |p| {
                    self.carries(p.binding, p.target, permission, &m)
                        && Record::qualifies(scopes, p, scope)
                })
            }
            Record::Unpacked => self.unpacked_can(user, permission, Some(scope), now),
        }
    }

    /// Whether `user` holds `permission` at any scope.
    pub fn can_anywhere(&self, user: &str, permission: &str, now: Timestamp) -> bool {
        if !self.stale.is_empty() {
            return self.unpacked_can(user, permission, None, now);
        }
        let Some(record) = self.hot.get(user) else {
            return false;
        };
        match Record::read(record) {
            Record::Packed { holdings, .. } => {
                if holdings.is_empty() {
                    return false;
                }
                let m = self.patterns.matching(permission);
                Record::any_live(holdings, now, |p| {
                    self.carries(p.binding, p.target, permission, &m)
                })
            }
            Record::Unpacked => self.unpacked_can(user, permission, None, now),
        }
    }

    /// `can()` (or with `scope` None, `can_anywhere()`) for a user whose holdings
    /// are too many to pack, or while loading: the same test over the user's state.
    #[cold]
    fn unpacked_can(
        &self,
        user: &str,
        permission: &str,
        scope: Option<Option<&str>>,
        now: Timestamp,
    ) -> bool {
        let Some(u) = self.users.get(user) else {
            return false;
        };
        let m = self.patterns.matching(permission);
        u.holdings.iter().any(|&h| {
            h.live(now)
                && self.carries(h.is_binding(), h.target(), permission, &m)
                && match (h.scope(), scope) {
                    (_, None) | (GLOBAL, _) => true,
                    (_, Some(None)) => false,
                    (s, Some(Some(checked))) => covers(self.scopes.value(s).as_str(), checked),
                }
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
            .enumerate()
            .filter_map(|(id, r)| {
                let r = r.as_ref()?;
                Some(RoleInfo {
                    role: self.role_names.value(id as u32).clone(),
                    description: r.description.clone(),
                    permissions: r.permissions.clone(),
                    members: r.members.len(),
                })
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
        /// One source of an effective permission.
        struct Source<'a> {
            permission: &'a str,
            scope: Option<&'a str>,
            ids: (u32, u32),
            expires_at: Option<Timestamp>,
            via: u32,
        }
        let mut sources: Vec<Source<'_>> = Vec::new();
        let mut roles = Vec::new();
        let mut next_change_at: Option<Timestamp> = None;
        let mut revision = 0;
        if let Some(u) = self.users.get(user.as_str()) {
            revision = u.revision;
            let scope_str = |s: u32| (s != GLOBAL).then(|| self.scopes.value(s).as_str());
            let (grants, bindings) = u.holdings.split_at(u.grants.len());
            let role_set = |r: u32| -> &[u32] { self.role_sets.get(r as usize).map_or(&[], |s| s) };
            // Sized up front: a growing vector would reallocate several times.
            sources.reserve_exact(
                grants.len()
                    + bindings
                        .iter()
                        .map(|h| role_set(h.target()).len())
                        .sum::<usize>(),
            );
            roles.reserve_exact(bindings.len());
            for h in grants.iter().filter(|h| h.live(now)) {
                let (p, s) = (h.target(), h.scope());
                sources.push(Source {
                    permission: self.patterns.value(p).as_str(),
                    scope: scope_str(s),
                    ids: (p, s),
                    expires_at: h.expires_at(),
                    via: DIRECT,
                });
                next_change_at = earliest(next_change_at, h.expires_at());
            }
            for (h, b) in bindings.iter().zip(&u.bindings) {
                if !h.live(now) {
                    continue;
                }
                let (r, s) = (h.target(), h.scope());
                for &p in role_set(r) {
                    sources.push(Source {
                        permission: self.patterns.value(p).as_str(),
                        scope: scope_str(s),
                        ids: (p, s),
                        expires_at: h.expires_at(),
                        via: r,
                    });
                }
                roles.push(RoleHolding {
                    role: b.role.clone(),
                    scope: b.scope.clone(),
                    expires_at: b.expires_at,
                });
                next_change_at = earliest(next_change_at, b.expires_at);
            }
        }
        // Ordered as `(Permission, Option<Scope>)` order; equal strings are equal ids.
        sources.sort_unstable_by(|a, b| (a.permission, a.scope).cmp(&(b.permission, b.scope)));
        let mut permissions = Vec::with_capacity(sources.len());
        for group in sources.chunk_by(|a, b| a.ids == b.ids) {
            let first = &group[0];
            let mut expires_at = first.expires_at;
            for s in &group[1..] {
                expires_at = match (expires_at, s.expires_at) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
            let mut via: Vec<Via> = group
                .iter()
                .map(|s| match s.via {
                    DIRECT => Via::Direct,
                    r => Via::Role(self.role_names.value(r).clone()),
                })
                .collect();
            if via.len() > 1 {
                via.sort();
                via.dedup();
            }
            permissions.push(EffectivePermission {
                permission: self.patterns.value(first.ids.0).clone(),
                scope: self.scope_value(first.ids.1),
                expires_at,
                via,
            });
        }
        roles.sort_by(|a, b| (&a.role, &a.scope).cmp(&(&b.role, &b.scope)));
        Snapshot {
            user: user.clone(),
            revision,
            permissions,
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
        self.repack_stale();
        self.applied_seq = change.seq;
        let affected = match &change.kind {
            ChangeKind::UserCreated { user } => {
                self.users.entry(user.clone()).or_default().exists = true;
                vec![user.clone()]
            }
            ChangeKind::UserDeleted { user } => {
                if let Some(u) = self.users.get_mut(user.as_str()) {
                    u.exists = false;
                    let (grants, bindings) = u.take_all();
                    let repack = !grants.is_empty() || !bindings.is_empty();
                    for (g, h) in grants {
                        self.forget_expiry(g.expires_at, g.id);
                        self.release_holding(h);
                    }
                    for (b, h) in bindings {
                        self.forget_binding(&b, h);
                    }
                    if repack {
                        self.repack(user.as_str());
                    }
                }
                vec![user.clone()]
            }
            ChangeKind::GrantAdded(g) => {
                let (user, h) = self.insert_grant(g.clone());
                self.add_to_record(user.as_str(), h, g.scope.as_ref());
                vec![g.user.clone()]
            }
            ChangeKind::GrantRemoved { user, id, .. } => {
                if let Some(u) = self.users.get_mut(user.as_str()) {
                    if let Some(pos) = u.grants.iter().position(|g| g.id == *id) {
                        let (g, h) = u.remove_grant(pos);
                        self.repack(user.as_str());
                        self.forget_expiry(g.expires_at, g.id);
                        self.release_holding(h);
                    }
                }
                vec![user.clone()]
            }
            ChangeKind::BindingAdded(b) => {
                let (user, h) = self.insert_binding(b.clone());
                self.add_to_record(user.as_str(), h, b.scope.as_ref());
                vec![b.user.clone()]
            }
            ChangeKind::BindingRemoved { user, id, .. } => {
                if let Some(u) = self.users.get_mut(user.as_str()) {
                    if let Some(pos) = u.bindings.iter().position(|b| b.id == *id) {
                        let (b, h) = u.remove_binding(pos);
                        self.repack(user.as_str());
                        self.forget_binding(&b, h);
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
                self.role(role.as_str())
                    .expect("just set")
                    .members
                    .keys()
                    .cloned()
                    .collect()
            }
            ChangeKind::RoleDeleted { role } => self.delete_role(role),
            ChangeKind::Invalidated { users, .. } => users.clone(),
            ChangeKind::SessionsEnded { .. } => Vec::new(),
        };
        for user in &affected {
            self.users.entry(user.clone()).or_default().revision = change.seq;
        }
        affected
    }

    /// Deletes a role and its members' bindings to it; returns the members.
    fn delete_role(&mut self, role: &RoleName) -> Vec<UserId> {
        let Some(id) = self.role_names.get(role.as_str()) else {
            return Vec::new();
        };
        let Some(state) = self.roles[id as usize].take() else {
            return Vec::new();
        };
        let set = std::mem::take(&mut self.role_sets[id as usize]);
        self.unlink_role(id, &set);
        for p in set.iter() {
            self.patterns.release(*p);
        }
        let members: Vec<UserId> = state.members.into_keys().collect();
        for m in &members {
            if let Some(u) = self.users.get_mut(m.as_str()) {
                let gone = u.remove_bindings_of(id);
                if !gone.is_empty() {
                    self.repack(m.as_str());
                }
                for (b, h) in gone {
                    self.forget_expiry(b.expires_at, b.id);
                    self.release_holding(h);
                }
            }
        }
        // Last, so the name's id outlives the bindings that held it.
        self.role_names.release(id);
        members
    }

    fn forget_expiry(&mut self, expires_at: Option<Timestamp>, id: u64) {
        if let Some(e) = expires_at {
            self.expiries.remove(&(e, id));
        }
    }

    fn forget_binding(&mut self, b: &Binding, h: Holding) {
        self.forget_expiry(b.expires_at, b.id);
        if let Some(Some(role)) = self.roles.get_mut(h.target() as usize) {
            if let Some(n) = role.members.get_mut(&b.user) {
                *n -= 1;
                if *n == 0 {
                    role.members.remove(&b.user);
                }
            }
        }
        self.release_holding(h);
    }
}

fn live(expires_at: Option<Timestamp>, now: Timestamp) -> bool {
    expires_at.is_none_or(|e| e > now)
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    //! The internal invariants, checked after random changes. Records here pack at
    //! most `MAX_PACKED` = 3 holdings, so users go both ways; the public behaviour
    //! is checked against a reference in `tests/index_model.rs`.

    use super::*;
    use crate::scope::qualifies;
    use proptest::prelude::*;
    use std::collections::HashMap;

    impl Index {
        /// Panics unless every derived structure agrees with the records.
        fn check_invariants(&self) {
            let mut pattern_refs: HashMap<u32, u32> = HashMap::from([(intern::STAR, 1)]);
            let mut scope_refs: HashMap<u32, u32> = HashMap::new();
            let mut role_refs: HashMap<u32, u32> = HashMap::new();
            for (name, u) in &self.users {
                assert_eq!(u.holdings.len(), u.grants.len() + u.bindings.len());
                let (gh, bh) = u.holdings.split_at(u.grants.len());
                for (h, g) in gh.iter().zip(&u.grants) {
                    assert!(!h.is_binding());
                    assert_eq!(self.patterns.value(h.target()), &g.permission);
                    assert_eq!(h.expires_at(), g.expires_at);
                    assert_eq!(self.scope_value(h.scope()), g.scope);
                    *pattern_refs.entry(h.target()).or_default() += 1;
                }
                for (h, b) in bh.iter().zip(&u.bindings) {
                    assert!(h.is_binding());
                    assert_eq!(self.role_names.value(h.target()), &b.role);
                    assert_eq!(h.expires_at(), b.expires_at);
                    assert_eq!(self.scope_value(h.scope()), b.scope);
                    *role_refs.entry(h.target()).or_default() += 1;
                }
                for h in &u.holdings {
                    if h.scope() != GLOBAL {
                        *scope_refs.entry(h.scope()).or_default() += 1;
                    }
                }
                if !self.stale.is_empty() {
                    continue;
                }
                match self.hot.get(name.as_str()) {
                    None => assert!(u.holdings.is_empty(), "{name} has no record"),
                    Some(record) => {
                        let packed = matches!(Record::read(record), Record::Packed { .. });
                        assert_eq!(packed, u.holdings.len() <= MAX_PACKED, "{name}");
                        if packed {
                            let scopes = &self.scopes;
                            let mut want: Vec<Holding> = u.holdings.clone();
                            // The record may list the holdings in another order.
                            let repacked = pack_record(name.as_str(), &want, |s| {
                                Some(scopes.value(s).as_str().as_bytes())
                            });
                            want.reverse();
                            let reversed = pack_record(name.as_str(), &want, |s| {
                                Some(scopes.value(s).as_str().as_bytes())
                            });
                            assert!(
                                same_holdings(record, &repacked)
                                    || same_holdings(record, &reversed),
                                "{name}'s record"
                            );
                        }
                    }
                }
            }
            for (id, role) in self.roles.iter().enumerate() {
                let id = id as u32;
                let set = self.role_sets.get(id as usize).map_or(&[][..], |s| &s[..]);
                if role.is_some() {
                    *role_refs.entry(id).or_default() += 1;
                    let perms = &role.as_ref().unwrap().permissions;
                    let mut ids: Vec<u32> = perms
                        .iter()
                        .map(|p| self.patterns.names().get(p.as_str()).unwrap())
                        .collect();
                    ids.sort_unstable();
                    ids.dedup();
                    assert_eq!(set, &ids[..]);
                } else {
                    assert!(set.is_empty());
                }
                for &p in set {
                    *pattern_refs.entry(p).or_default() += 1;
                    assert!(self.roles_by_pattern[p as usize].binary_search(&id).is_ok());
                }
            }
            for (p, roles) in self.roles_by_pattern.iter().enumerate() {
                for r in roles {
                    assert!(self.role_sets[*r as usize]
                        .binary_search(&(p as u32))
                        .is_ok());
                }
                if self.patterns.names().values_has(p as u32) {
                    assert_eq!(self.patterns.roles(p as u32), RoleFilter::of(roles));
                } else {
                    assert!(roles.is_empty());
                }
            }
            assert_eq!(self.patterns.names().len(), pattern_refs.len());
            for (id, n) in pattern_refs {
                assert_eq!(self.patterns.names().refs(id), n, "pattern {id}");
            }
            assert_eq!(self.scopes.len(), scope_refs.len());
            for (id, n) in scope_refs {
                assert_eq!(self.scopes.refs(id), n, "scope {id}");
            }
            assert_eq!(self.role_names.len(), role_refs.len());
            for (id, n) in role_refs {
                assert_eq!(self.role_names.refs(id), n, "role {id}");
            }
        }
    }

    /// Whether two packed records hold the same holdings (in any order).
    fn same_holdings(a: &[u64], b: &[u64]) -> bool {
        fn view(r: &[u64]) -> Vec<(bool, u32, Option<String>, bool)> {
            let Record::Packed { holdings, scopes } = Record::read(r) else {
                return Vec::new();
            };
            let mut out = Vec::new();
            // Live at the earliest instant: every holding but those expiring at MIN.
            Record::any_live(holdings, Timestamp(i64::MIN), |p| {
                let scope = ["a/1", "a/1/b/2", "a/2", "c/3"]
                    .into_iter()
                    .find(|s| {
                        Record::qualifies(scopes, p, Some(s)) && !Record::qualifies(scopes, p, None)
                    })
                    .map(String::from);
                out.push((
                    p.binding,
                    p.target,
                    scope,
                    Record::qualifies(scopes, p, None),
                ));
                false
            });
            out.sort();
            out
        }
        view(a) == view(b) && a.len() == b.len()
    }

    const PERMS: [&str; 6] = ["*", "a:*", "a:b", "a:b:*", "a:b:c", "z:z"];
    const CHECKED: [&str; 8] = ["a:b", "a:b:c", "a:x", "a:b:c:d", "z:z", "a", "q", "a:*"];
    const SCOPES: [&str; 4] = ["a/1", "a/1/b/2", "a/2", "c/3"];
    const CHECKED_SCOPES: [&str; 6] = ["a/1", "a/1/b/2", "a/1/b/2/c/3", "a/2", "a/10", "c/3"];

    #[derive(Debug, Clone)]
    enum Op {
        Grant(u8, u8, Option<u8>, Option<i8>),
        Binding(u8, u8, Option<u8>, Option<i8>),
        RemoveGrant(u8, u8),
        RemoveBinding(u8, u8),
        Role(u8, Vec<u8>),
        DeleteRole(u8),
        DeleteUser(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        let held = || {
            (
                0u8..3,
                any::<u8>(),
                proptest::option::of(0u8..4),
                proptest::option::of(-2i8..3),
            )
        };
        prop_oneof![
            3 => held().prop_map(|(u, p, s, e)| Op::Grant(u, p, s, e)),
            3 => held().prop_map(|(u, r, s, e)| Op::Binding(u, r % 3, s, e)),
            2 => (0u8..3, any::<u8>()).prop_map(|(u, k)| Op::RemoveGrant(u, k)),
            2 => (0u8..3, any::<u8>()).prop_map(|(u, k)| Op::RemoveBinding(u, k)),
            2 => (0u8..3, proptest::collection::vec(any::<u8>(), 0..4)).prop_map(|(r, ps)| Op::Role(r, ps)),
            1 => (0u8..3).prop_map(Op::DeleteRole),
            1 => (0u8..3).prop_map(Op::DeleteUser),
        ]
    }

    fn uid(u: u8) -> UserId {
        UserId::parse(&format!("user{u}")).unwrap()
    }
    fn rname(r: u8) -> RoleName {
        RoleName::parse(&format!("role{r}")).unwrap()
    }

    /// `can()` straight from the records, for comparison with both paths.
    fn naive_can(
        index: &Index,
        user: &str,
        permission: &str,
        scope: Option<&str>,
        now: Timestamp,
    ) -> bool {
        index.grants(user).iter().any(|g| {
            live(g.expires_at, now)
                && qualifies(g.scope.as_ref(), scope)
                && g.permission.matches(permission)
        }) || index.bindings(user).iter().any(|b| {
            live(b.expires_at, now)
                && qualifies(b.scope.as_ref(), scope)
                && index
                    .role_permissions(b.role.as_str())
                    .is_some_and(|ps| ps.iter().any(|p| p.matches(permission)))
        })
    }

    fn naive_can_anywhere(index: &Index, user: &str, permission: &str, now: Timestamp) -> bool {
        index
            .grants(user)
            .iter()
            .any(|g| live(g.expires_at, now) && g.permission.matches(permission))
            || index.bindings(user).iter().any(|b| {
                live(b.expires_at, now)
                    && index
                        .role_permissions(b.role.as_str())
                        .is_some_and(|ps| ps.iter().any(|p| p.matches(permission)))
            })
    }

    proptest! {
        #[test]
        fn derived_structures_follow_the_records(
            loads in proptest::collection::vec(op(), 0..8),
            ops in proptest::collection::vec(op(), 0..24),
        ) {
            let mut index = Index::new();
            let mut seq = 0;
            let run = |index: &mut Index, seq: &mut u64, op: &Op, load: bool| {
                *seq += 1;
                let seq = *seq;
                let at = |e: Option<i8>| e.map(|e| Timestamp(i64::from(e)));
                let kind = match op {
                    Op::Grant(u, p, s, e) => ChangeKind::GrantAdded(Grant {
                        id: seq,
                        user: uid(*u),
                        permission: Permission::parse(PERMS[*p as usize % PERMS.len()]).unwrap(),
                        scope: s.map(|s| Scope::parse(SCOPES[s as usize]).unwrap()),
                        expires_at: at(*e),
                        created_at: Timestamp(0),
                        created_by: String::new(),
                    }),
                    Op::Binding(u, r, s, e) => ChangeKind::BindingAdded(Binding {
                        id: seq,
                        user: uid(*u),
                        role: rname(*r),
                        scope: s.map(|s| Scope::parse(SCOPES[s as usize]).unwrap()),
                        expires_at: at(*e),
                        created_at: Timestamp(0),
                        created_by: String::new(),
                    }),
                    Op::RemoveGrant(u, k) => {
                        let gs = index.grants(uid(*u).as_str());
                        let id = gs.get(*k as usize % (gs.len() + 1)).map_or(0, |g| g.id);
                        ChangeKind::GrantRemoved { user: uid(*u), id, permission: Permission::parse("x").unwrap(), scope: None, expired: false }
                    }
                    Op::RemoveBinding(u, k) => {
                        let bs = index.bindings(uid(*u).as_str());
                        let id = bs.get(*k as usize % (bs.len() + 1)).map_or(0, |b| b.id);
                        ChangeKind::BindingRemoved { user: uid(*u), id, role: rname(0), scope: None, expired: false }
                    }
                    Op::Role(r, ps) => ChangeKind::RoleSet {
                        role: rname(*r),
                        permissions: ps.iter().map(|p| Permission::parse(PERMS[*p as usize % PERMS.len()]).unwrap()).collect(),
                        description: String::new(),
                    },
                    Op::DeleteRole(r) => ChangeKind::RoleDeleted { role: rname(*r) },
                    Op::DeleteUser(u) => ChangeKind::UserDeleted { user: uid(*u) },
                };
                if load {
                    match kind {
                        ChangeKind::GrantAdded(g) => index.load_grant(g),
                        ChangeKind::BindingAdded(b) => index.load_binding(b),
                        ChangeKind::RoleSet { role, permissions, description } => index.load_role(role, permissions, description),
                        _ => {}
                    }
                } else {
                    index.apply(&Change { seq, at: Timestamp(0), actor: String::new(), kind });
                }
            };
            let check = |index: &Index| -> Result<(), TestCaseError> {
                index.check_invariants();
                for u in 0..4 {
                    let user = uid(u);
                    for now in [-2, 0, 1, 2, i64::MAX].map(Timestamp) {
                        for p in CHECKED {
                            prop_assert_eq!(
                                index.can_anywhere(user.as_str(), p, now),
                                naive_can_anywhere(index, user.as_str(), p, now),
                                "can_anywhere {} {}", user, p
                            );
                            for s in CHECKED_SCOPES.iter().map(|s| Some(*s)).chain([None]) {
                                prop_assert_eq!(
                                    index.can(user.as_str(), p, s, now),
                                    naive_can(index, user.as_str(), p, s, now),
                                    "can {} {} {:?} {:?}", user, p, s, now
                                );
                            }
                        }
                    }
                }
                Ok(())
            };
            for op in &loads {
                run(&mut index, &mut seq, op, true);
            }
            check(&index)?;
            index.set_applied_seq(seq);
            check(&index)?;
            for op in &ops {
                run(&mut index, &mut seq, op, false);
                check(&index)?;
            }
            // Once everything is gone, so is everything interned.
            for u in 0..3 {
                run(&mut index, &mut seq, &Op::DeleteUser(u), false);
            }
            for r in 0..3 {
                run(&mut index, &mut seq, &Op::DeleteRole(r), false);
            }
            check(&index)?;
            prop_assert_eq!(index.patterns.names().len(), 1);
            prop_assert_eq!(index.scopes.len(), 0);
            prop_assert_eq!(index.role_names.len(), 0);
        }
    }
}
