//! Interning: permissions, scopes and role names as dense `u32` ids, counted by
//! reference so that the ids of strings no longer held are reused.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash, Hasher};

use super::{map, Map};
use crate::{Permission, RoleName, Scope};

/// A string-like value that can be interned.
pub(super) trait Name: Clone {
    fn as_str(&self) -> &str;
}
impl Name for Permission {
    fn as_str(&self) -> &str {
        Permission::as_str(self)
    }
}
impl Name for Scope {
    fn as_str(&self) -> &str {
        Scope::as_str(self)
    }
}
impl Name for RoleName {
    fn as_str(&self) -> &str {
        RoleName::as_str(self)
    }
}

/// A map key that hashes and compares as its string, so maps can be probed by `&str`.
#[derive(Debug, Clone)]
struct Key<T>(T);

impl<T: Name> Borrow<str> for Key<T> {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}
impl<T: Name> Hash for Key<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.as_str().hash(state)
    }
}
impl<T: Name> PartialEq for Key<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}
impl<T: Name> Eq for Key<T> {}

/// An interned value's id and how many hold it; kept in the map, so that taking
/// a reference to a value already interned touches nothing else.
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: u32,
    refs: u32,
}

/// Ids leave the top bit of a `u32` free for flags.
pub(super) const MAX_ID: u32 = (1 << 31) - 1;

/// Values interned to dense ids up to [`MAX_ID`], counted by reference: an id
/// stays while something holds it, and is reused once nothing does.
#[derive(Debug)]
pub(super) struct Interner<T> {
    ids: Map<Key<T>, Entry>,
    /// By id; None for a free id, or a reserved one.
    values: Vec<Option<T>>,
    free: Vec<u32>,
}

impl<T: Name> Interner<T> {
    pub(super) fn new() -> Self {
        Interner {
            ids: map(),
            values: Vec::new(),
            free: Vec::new(),
        }
    }

    /// An id that is never handed out for a value (a sentinel).
    pub(super) fn reserve(&mut self) -> u32 {
        let id = self.values.len() as u32;
        self.values.push(None);
        id
    }

    pub(super) fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).map(|e| e.id)
    }

    /// Takes one reference to `value`'s id. Returns the id, the interned copy of
    /// the value (sharing its allocation), and whether the id is new.
    pub(super) fn intern(&mut self, value: &T) -> (u32, T, bool) {
        match self.ids.entry(Key(value.clone())) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let entry = e.get_mut();
                entry.refs = entry
                    .refs
                    .checked_add(1)
                    .expect("interner reference overflow");
                (entry.id, e.key().0.clone(), false)
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                let id = match self.free.pop() {
                    Some(id) => {
                        self.values[id as usize] = Some(value.clone());
                        id
                    }
                    None => {
                        let id = self.values.len() as u32;
                        assert!(id <= MAX_ID, "more than 2^31 interned values");
                        self.values.push(Some(value.clone()));
                        id
                    }
                };
                e.insert(Entry { id, refs: 1 });
                (id, value.clone(), true)
            }
        }
    }

    /// The interned value of a live id.
    #[inline]
    pub(super) fn value(&self, id: u32) -> &T {
        self.values[id as usize]
            .as_ref()
            .expect("a live interned id")
    }

    /// Drops one reference; returns the value if that was the last one.
    pub(super) fn release(&mut self, id: u32) -> Option<T> {
        let entry = self
            .ids
            .get_mut(self.values[id as usize].as_ref()?.as_str())
            .expect("an interned value");
        debug_assert!(entry.id == id && entry.refs > 0, "release of a dead id");
        entry.refs -= 1;
        if entry.refs > 0 {
            return None;
        }
        let value = self.values[id as usize].take().expect("a live interned id");
        self.ids.remove(value.as_str());
        self.free.push(id);
        Some(value)
    }

    /// How many values are interned.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether `id` is live.
    #[cfg(test)]
    pub(super) fn values_has(&self, id: u32) -> bool {
        self.values.get(id as usize).is_some_and(Option::is_some)
    }

    #[cfg(test)]
    pub(super) fn refs(&self, id: u32) -> u32 {
        self.ids[self.value(id).as_str()].refs
    }
}

/// The id of the pattern `*`, interned for good when an index is made.
pub(super) const STAR: u32 = 0;
/// Permissions are at most 128 characters, so longer strings match only `*`.
const MAX_PERMISSION_LEN: usize = 128;

/// `p:*` → `p:`; `*` and exact permissions → None.
fn wildcard_prefix(pattern: &str) -> Option<&str> {
    if pattern == "*" {
        None
    } else {
        pattern.strip_suffix('*')
    }
}

/// A Bloom filter of role ids, one bit each, in half a cache line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct RoleFilter([u64; 4]);

impl RoleFilter {
    #[inline]
    fn bit(role: u32) -> (usize, u64) {
        let h = role.wrapping_mul(0x9E37_79B1) >> 24;
        ((h >> 6) as usize, 1 << (h & 63))
    }

    pub(super) fn add(&mut self, role: u32) {
        let (w, b) = Self::bit(role);
        self.0[w] |= b;
    }

    pub(super) fn of(roles: &[u32]) -> Self {
        let mut f = RoleFilter::default();
        for &r in roles {
            f.add(r);
        }
        f
    }

    #[inline]
    fn union(&mut self, other: &RoleFilter) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }

    /// False if `role` is certainly not among the roles added.
    #[inline]
    pub(super) fn may_hold(&self, role: u32) -> bool {
        let (w, b) = Self::bit(role);
        self.0[w] & b != 0
    }
}

/// How many bytes of a key a [`PatternSlot`] keeps; longer keys compare the rest
/// with the interned pattern.
const INLINE_KEY: usize = 19;

/// One entry of [`PatternTable`], in one cache line: all that a lookup reads.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct PatternSlot {
    /// [`EMPTY`], [`DELETED`], or the key's hash with bit 1 set.
    hash: u64,
    id: u32,
    len: u8,
    /// The key's first bytes, zero-padded.
    key: [u8; INLINE_KEY],
    /// The roles that hold the pattern.
    roles: RoleFilter,
}

const EMPTY: u64 = 0;
const DELETED: u64 = 1;

impl PatternSlot {
    const VACANT: PatternSlot = PatternSlot {
        hash: EMPTY,
        id: 0,
        len: 0,
        key: [0; INLINE_KEY],
        roles: RoleFilter([0; 4]),
    };
}

/// The patterns other than `*` by key, for `matching()`: an exact pattern by
/// itself, a wildcard `p:*` by its prefix `p:` (exact patterns never end in `:`,
/// so the two never share a key). Open addressing with linear probing, at most half
/// full counting deleted slots; each probe reads one cache line.
#[derive(Debug, Default)]
struct PatternTable {
    slots: Vec<PatternSlot>,
    live: usize,
    used: usize,
    hasher: foldhash::fast::RandomState,
}

impl PatternTable {
    #[inline]
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key) | 2
    }

    #[inline]
    fn start(hash: u64, mask: usize) -> usize {
        (hash >> 7) as usize & mask
    }

    /// The slot of `key`; `full(id)` gives the key of a pattern id.
    #[inline]
    fn find<'a>(&self, key: &str, full: impl Fn(u32) -> &'a str) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let hash = self.hash(key);
        let mask = self.slots.len() - 1;
        let bytes = key.as_bytes();
        let inline = bytes.len().min(INLINE_KEY);
        let mut i = Self::start(hash, mask);
        loop {
            let slot = &self.slots[i];
            if slot.hash == EMPTY {
                return None;
            }
            if slot.hash == hash
                && usize::from(slot.len) == bytes.len()
                && slot.key[..inline] == bytes[..inline]
                && (bytes.len() <= INLINE_KEY
                    || full(slot.id).as_bytes()[INLINE_KEY..] == bytes[INLINE_KEY..])
            {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `key` (not in the table) for pattern `id`.
    fn insert(&mut self, key: &str, id: u32) {
        if (self.used + 1) * 2 > self.slots.len() {
            self.rebuild();
        }
        let hash = self.hash(key);
        let mut slot = PatternSlot {
            hash,
            id,
            len: u8::try_from(key.len()).expect("permissions are at most 128 characters"),
            ..PatternSlot::VACANT
        };
        let inline = key.len().min(INLINE_KEY);
        slot.key[..inline].copy_from_slice(&key.as_bytes()[..inline]);
        let mask = self.slots.len() - 1;
        let mut i = Self::start(hash, mask);
        while self.slots[i].hash > DELETED {
            i = (i + 1) & mask;
        }
        if self.slots[i].hash == EMPTY {
            self.used += 1;
        }
        self.slots[i] = slot;
        self.live += 1;
    }

    fn remove(&mut self, at: usize) {
        self.slots[at] = PatternSlot {
            hash: DELETED,
            ..PatternSlot::VACANT
        };
        self.live -= 1;
    }

    /// Rehashes into a table at most a quarter full, without deleted slots.
    fn rebuild(&mut self) {
        let size = ((self.live + 1) * 4).next_power_of_two().max(16);
        let old = std::mem::replace(&mut self.slots, vec![PatternSlot::VACANT; size]);
        let mask = size - 1;
        for slot in old.into_iter().filter(|s| s.hash > DELETED) {
            let mut i = Self::start(slot.hash, mask);
            while self.slots[i].hash != EMPTY {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }
        self.used = self.live;
    }
}

/// The key of pattern `p` in [`PatternTable`]: `p:*` → `p:`, else `p` itself.
fn table_key(pattern: &str) -> &str {
    wildcard_prefix(pattern).unwrap_or(pattern)
}

/// Interned permission patterns, findable by what they match.
#[derive(Debug)]
pub(super) struct Patterns {
    names: Interner<Permission>,
    table: PatternTable,
    /// The roles that hold `*`.
    star_roles: RoleFilter,
}

/// How many ids [`Matching`] holds. A checked permission has at most 63
/// `:`-terminated prefixes within 127 characters that could be a valid pattern's
/// prefix (each colon follows a non-empty segment), so with `*` and an exact match
/// up to 65 ids can match; more than a few takes contrived patterns, and then the
/// caller matches by string instead.
const MATCHING_CAP: usize = 16;

/// The ids of the interned patterns that match one checked permission, and the
/// roles that hold any of them.
#[derive(Debug, Clone)]
pub(super) struct Matching {
    /// How many matched, which may be more than are kept.
    len: usize,
    ids: [u32; MATCHING_CAP],
    roles: RoleFilter,
}

impl Matching {
    #[inline]
    fn push(&mut self, id: u32, roles: &RoleFilter) {
        if let Some(slot) = self.ids.get_mut(self.len) {
            *slot = id;
        }
        self.len += 1;
        self.roles.union(roles);
    }

    /// More patterns matched than are kept: match by string instead.
    #[inline]
    pub(super) fn overflowed(&self) -> bool {
        self.len > MATCHING_CAP
    }

    /// The matching ids, all of them unless `overflowed()`.
    #[inline]
    pub(super) fn ids(&self) -> &[u32] {
        &self.ids[..self.len.min(MATCHING_CAP)]
    }

    #[inline]
    pub(super) fn contains(&self, id: u32) -> bool {
        self.ids().contains(&id)
    }

    /// False if role `role` certainly holds none of the patterns.
    #[inline]
    pub(super) fn may_be_held_by(&self, role: u32) -> bool {
        self.roles.may_hold(role)
    }
}

impl Patterns {
    pub(super) fn new() -> Self {
        let mut names = Interner::new();
        let star = Permission::parse("*").expect("`*` is a permission");
        let (id, _, _) = names.intern(&star);
        debug_assert_eq!(id, STAR);
        Patterns {
            names,
            table: PatternTable::default(),
            star_roles: RoleFilter::default(),
        }
    }

    /// Takes a reference to `p`'s id; returns it and the interned copy of `p`.
    pub(super) fn intern(&mut self, p: &Permission) -> (u32, Permission) {
        let (id, canonical, new) = self.names.intern(p);
        if new {
            self.table.insert(table_key(p.as_str()), id);
        }
        (id, canonical)
    }

    pub(super) fn release(&mut self, id: u32) {
        if id == STAR {
            self.names.release(id);
            return;
        }
        // Found while the id is live: a long key compares against its pattern.
        let at = self
            .slot_of(self.names.value(id).as_str())
            .expect("an interned pattern");
        if self.names.release(id).is_some() {
            self.table.remove(at);
        }
    }

    fn slot_of(&self, pattern: &str) -> Option<usize> {
        let names = &self.names;
        self.table
            .find(table_key(pattern), |id| table_key(names.value(id).as_str()))
    }

    /// Sets the filter of the roles that hold pattern `id`.
    pub(super) fn set_roles(&mut self, id: u32, roles: RoleFilter) {
        if id == STAR {
            self.star_roles = roles;
        } else {
            let at = self
                .slot_of(self.names.value(id).as_str())
                .expect("an interned pattern");
            self.table.slots[at].roles = roles;
        }
    }

    #[inline]
    pub(super) fn value(&self, id: u32) -> &Permission {
        self.names.value(id)
    }

    #[cfg(test)]
    pub(super) fn names(&self) -> &Interner<Permission> {
        &self.names
    }

    #[cfg(test)]
    pub(super) fn roles(&self, id: u32) -> RoleFilter {
        if id == STAR {
            self.star_roles
        } else {
            self.table.slots[self.slot_of(self.value(id).as_str()).unwrap()].roles
        }
    }

    /// The interned patterns that match `checked` (see [`Permission::matches`]): `*`,
    /// the pattern equal to it, and every `p:*` whose `p:` is a proper prefix of it.
    #[inline]
    pub(super) fn matching(&self, checked: &str) -> Matching {
        let mut m = Matching {
            len: 0,
            ids: [0; MATCHING_CAP],
            roles: RoleFilter::default(),
        };
        m.push(STAR, &self.star_roles);
        if self.table.live == 0 {
            return m;
        }
        let names = &self.names;
        let full = |id| table_key(names.value(id).as_str());
        let mut found = |key: &str| {
            if let Some(at) = self.table.find(key, full) {
                let slot = &self.table.slots[at];
                m.push(slot.id, &slot.roles);
            }
        };
        // Exact patterns never end in `:` (the keys of wildcards do) or `*`; a
        // wildcard equal to `checked` is found by its prefix below.
        if checked.len() <= MAX_PERMISSION_LEN && !checked.ends_with([':', '*']) {
            found(checked);
        }
        let bytes = checked.as_bytes();
        for (i, &b) in bytes.iter().enumerate().take(MAX_PERMISSION_LEN - 1) {
            if b == b':' && i + 1 < bytes.len() {
                found(&checked[..=i]);
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Permission {
        Permission::parse(s).unwrap()
    }

    #[test]
    fn the_table_finds_long_and_short_keys() {
        let mut ps = Patterns::new();
        // Longer than a slot keeps, and alike in the part it keeps.
        let long = "organization:department:team:member:read";
        let long_near = "organization:department:team:member:reads";
        let a = ps.intern(&p(long)).0;
        let b = ps.intern(&p(long_near)).0;
        let w = ps.intern(&p("organization:department:team:*")).0;
        assert_eq!(ps.matching(long).ids(), &[STAR, a, w]);
        assert_eq!(ps.matching(long_near).ids(), &[STAR, b, w]);
        assert_eq!(
            ps.matching("organization:department:team:member:rea").ids(),
            &[STAR, w]
        );
        assert_eq!(ps.matching("organization:department:team:").ids(), &[STAR]);
        ps.release(a);
        assert_eq!(ps.matching(long).ids(), &[STAR, w]);
        // Enough patterns to grow the table; a removed one stays gone.
        let ids: Vec<u32> = (0..200)
            .map(|i| ps.intern(&p(&format!("r{i}:x"))).0)
            .collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(ps.matching(&format!("r{i}:x")).ids(), &[STAR, *id]);
        }
        ps.release(ids[7]);
        assert_eq!(ps.matching("r7:x").ids(), &[STAR]);
        assert_eq!(ps.matching(long_near).ids(), &[STAR, b, w]);
        // Interned again, it is found again.
        let again = ps.intern(&p("r7:x")).0;
        assert_eq!(ps.matching("r7:x").ids(), &[STAR, again]);
    }

    #[test]
    fn role_filters_hold_what_was_added() {
        let roles: Vec<u32> = (0..500).step_by(7).collect();
        let f = RoleFilter::of(&roles);
        assert!(roles.iter().all(|&r| f.may_hold(r)));
        let false_hits = (0..500)
            .filter(|r| !roles.contains(r) && f.may_hold(*r))
            .count();
        assert!(false_hits < 300, "{false_hits}");
        assert!(!RoleFilter::default().may_hold(3));
        // A pattern's filter comes with it in `matching`.
        let mut ps = Patterns::new();
        let id = ps.intern(&p("doc:read")).0;
        ps.set_roles(id, RoleFilter::of(&[4]));
        ps.set_roles(STAR, RoleFilter::of(&[9]));
        let m = ps.matching("doc:read");
        assert!(m.may_be_held_by(4) && m.may_be_held_by(9));
        assert!(!ps.matching("doc:write").may_be_held_by(4));
    }

    #[test]
    fn ids_are_counted_and_reused() {
        let mut i: Interner<Scope> = Interner::new();
        let sentinel = i.reserve();
        let a = Scope::parse("org/a").unwrap();
        let b = Scope::parse("org/b").unwrap();
        let (ia, _, new) = i.intern(&a);
        assert!(new);
        assert_ne!(ia, sentinel);
        let (again, canonical, new) = i.intern(&Scope::parse("org/a").unwrap());
        assert_eq!((again, new), (ia, false));
        assert_eq!(canonical, a);
        assert_eq!(i.refs(ia), 2);
        assert_eq!(i.get("org/a"), Some(ia));
        assert_eq!(i.value(ia), &a);
        assert_eq!(i.release(ia), None);
        assert_eq!(i.release(ia), Some(a.clone()));
        assert_eq!(i.get("org/a"), None);
        assert_eq!(i.len(), 0);
        // The freed id goes to the next new value.
        let (ib, _, new) = i.intern(&b);
        assert!(new);
        assert_eq!(ib, ia);
        assert_eq!(i.value(ib), &b);
        assert_eq!(i.len(), 1);
    }

    #[test]
    fn star_is_permanent() {
        let mut ps = Patterns::new();
        assert_eq!(ps.intern(&p("*")).0, STAR);
        assert_eq!(ps.intern(&p("*")).0, STAR);
        ps.release(STAR);
        ps.release(STAR);
        // The index's own reference keeps it.
        assert_eq!(ps.value(STAR).as_str(), "*");
        assert_eq!(ps.names().refs(STAR), 1);
        assert_eq!(ps.matching("anything").ids(), &[STAR]);
    }

    #[test]
    fn wildcards_are_found_by_prefix_until_released() {
        let mut ps = Patterns::new();
        let w = ps.intern(&p("invoice:*")).0;
        let e = ps.intern(&p("invoice:approve")).0;
        let deep = ps.intern(&p("invoice:line:*")).0;
        let m = ps.matching("invoice:line:edit");
        assert_eq!(m.ids(), &[STAR, w, deep]);
        let m = ps.matching("invoice:approve");
        assert_eq!(m.ids(), &[STAR, e, w]);
        assert_eq!(ps.matching("invoice:*").ids(), &[STAR, w]);
        assert_eq!(ps.matching("invoice").ids(), &[STAR]);
        assert_eq!(ps.matching("invoice:").ids(), &[STAR]);
        ps.release(w);
        assert_eq!(ps.matching("invoice:approve").ids(), &[STAR, e]);
    }

    #[test]
    fn matching_holds_the_worst_case() {
        // `a:*`, `a:a:*`, ... up to 128 characters, and the longest such exact one.
        let mut ps = Patterns::new();
        let mut prefix = String::new();
        let mut n = 0;
        while prefix.len() + 3 <= MAX_PERMISSION_LEN {
            prefix.push_str("a:");
            ps.intern(&p(&format!("{prefix}*")));
            n += 1;
        }
        let exact = format!("{prefix}a");
        ps.intern(&p(&exact));
        let checked = format!("{prefix}a:b:c");
        let m = ps.matching(&checked);
        assert_eq!(m.len, 1 + n);
        let m = ps.matching(&exact);
        assert!(m.overflowed());
        assert_eq!(m.len, 2 + n);
        assert_eq!(m.ids().len(), MATCHING_CAP);
        assert!(m.ids().iter().all(|&id| ps.value(id).matches(&exact)));
        // Up to the capacity, all are kept.
        let mut ps = Patterns::new();
        let mut prefix = String::new();
        for _ in 0..MATCHING_CAP - 2 {
            prefix.push_str("b:");
            ps.intern(&p(&format!("{prefix}*")));
        }
        let exact = format!("{prefix}b");
        ps.intern(&p(&exact));
        let m = ps.matching(&exact);
        assert!(!m.overflowed());
        assert_eq!(m.ids().len(), MATCHING_CAP);
    }

    mod props {
        use super::*;
        use crate::permission::tests::props::perm;
        use proptest::prelude::*;

        fn checked() -> impl Strategy<Value = String> {
            prop_oneof![perm(), "[a-c:*]{0,8}"]
        }

        proptest! {
            #[test]
            fn matching_is_exactly_the_matching_patterns(
                held in proptest::collection::vec(perm(), 0..10),
                released in proptest::collection::vec(any::<bool>(), 10),
                checked in checked(),
            ) {
                let mut ps = Patterns::new();
                let ids: Vec<u32> = held.iter().map(|h| ps.intern(&p(h)).0).collect();
                let mut live: Vec<&str> = Vec::new();
                for (k, (h, id)) in held.iter().zip(&ids).enumerate() {
                    if released[k] {
                        ps.release(*id);
                    } else {
                        live.push(h);
                    }
                }
                let m = ps.matching(&checked);
                prop_assert!(!m.overflowed());
                for (h, id) in held.iter().zip(&ids) {
                    if live.contains(&h.as_str()) {
                        prop_assert_eq!(m.contains(*id), p(h).matches(&checked), "{} vs {}", h, checked);
                    }
                }
                // Nothing else: every id found is a live pattern that matches.
                for &id in m.ids() {
                    prop_assert!(ps.value(id).matches(&checked));
                }
            }
        }
    }
}
