//! The compact per-user data that `can()` reads: [`Holding`]s (ids), and each
//! user's packed record in an open-addressing [`UserTable`].

use std::hash::BuildHasher;

use super::intern::MAX_ID;
use crate::Timestamp;

/// One grant or binding as interned ids, in 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Holding {
    /// Milliseconds; `i64::MAX` with [`Holding::NEVER`] set for no expiry.
    expires_at: i64,
    /// The permission pattern's id, or with [`Holding::BINDING`] the role's id.
    target: u32,
    /// The scope's id ([`GLOBAL`] for none), with [`Holding::NEVER`] for no expiry.
    scope: u32,
}

/// The scope id of a global holding; never a real scope's.
pub(super) const GLOBAL: u32 = 0;

impl Holding {
    const BINDING: u32 = 1 << 31;
    const NEVER: u32 = 1 << 31;

    fn new(binding: bool, target: u32, scope: u32, expires_at: Option<Timestamp>) -> Self {
        assert!(target <= MAX_ID && scope <= MAX_ID);
        Holding {
            expires_at: expires_at.map_or(i64::MAX, |t| t.0),
            target: if binding {
                target | Self::BINDING
            } else {
                target
            },
            scope: if expires_at.is_none() {
                scope | Self::NEVER
            } else {
                scope
            },
        }
    }

    pub(super) fn grant(permission: u32, scope: u32, expires_at: Option<Timestamp>) -> Self {
        Self::new(false, permission, scope, expires_at)
    }

    pub(super) fn binding(role: u32, scope: u32, expires_at: Option<Timestamp>) -> Self {
        Self::new(true, role, scope, expires_at)
    }

    #[inline]
    pub(super) fn is_binding(self) -> bool {
        self.target & Self::BINDING != 0
    }

    /// The permission or role id.
    #[inline]
    pub(super) fn target(self) -> u32 {
        self.target & !Self::BINDING
    }

    #[inline]
    pub(super) fn scope(self) -> u32 {
        self.scope & !Self::NEVER
    }

    pub(super) fn expires_at(self) -> Option<Timestamp> {
        (self.scope & Self::NEVER == 0).then_some(Timestamp(self.expires_at))
    }

    /// `live()` of the record: counts while `expires_at > now`, always if none.
    #[inline]
    pub(super) fn live(self, now: Timestamp) -> bool {
        // `i64::MAX > now` settles a holding without expiry except at now = MAX.
        self.expires_at > now.0 || self.scope & Self::NEVER != 0
    }
}

// ---- packed records ----
//
// A user's record is one `Box<[u64]>`, so that `can()` finds the name it compares
// and everything it reads of the user in a few adjacent cache lines:
//
// - word 0, the header: the name's length in bits 0–7, [`UNPACKED`] in bit 8, the
//   number of words of holdings in bits 32–63;
// - the name, 8 bytes a word, little-endian, the last word zero-padded;
// - the holdings, one word each: the permission or role id in bits 0–30,
//   [`BINDING`] in bit 31, the scope in bits 32–62 (0 for global, else 1 + the
//   offset of the scope's entry in the scope section), [`EXPIRES`] in bit 63, which
//   says the next word is the expiry (milliseconds, as `i64`);
// - the scope section: for each distinct scope of the holdings, its length in
//   bytes, then its bytes packed as the name's.
//
// A user with more than [`MAX_PACKED`] holdings gets a record of just the header
// (with [`UNPACKED`]) and the name; `can()` then reads the holdings from the user's
// state instead, which costs a few more cache misses next to a scan that long.

const UNPACKED: u64 = 1 << 8;
const BINDING: u64 = 1 << 31;
const EXPIRES: u64 = 1 << 63;
const SCOPE_SHIFT: u32 = 32;
const SCOPE_MASK: u64 = (1 << 31) - 1;

/// Holdings beyond which a user's record stays small and `can()` falls back to the
/// user's state. Rebuilding a record on every change is linear in its size, so
/// this also bounds the cost of loading a user's holdings one by one.
#[cfg(not(test))]
pub(super) const MAX_PACKED: usize = 64;
/// Small in unit tests, so that both paths get exercised.
#[cfg(test)]
pub(super) const MAX_PACKED: usize = 3;

fn words_for(len: usize) -> usize {
    len.div_ceil(8)
}

fn pack_bytes(out: &mut Vec<u64>, s: &[u8]) {
    for chunk in s.chunks(8) {
        let mut buf = [0u8; 8];
        buf[..chunk.len()].copy_from_slice(chunk);
        out.push(u64::from_le_bytes(buf));
    }
}

/// Whether the first `words_for(s.len())` of `words` hold exactly `s`, packed
/// (zero-padded): together with a length check, whether they hold `s`.
#[inline]
fn packed_eq(words: &[u64], s: &[u8]) -> bool {
    if words.len() < words_for(s.len()) {
        return false;
    }
    let mut chunks = s.chunks_exact(8);
    for (chunk, &w) in (&mut chunks).zip(words) {
        if u64::from_le_bytes(chunk.try_into().expect("8 bytes")) != w {
            return false;
        }
    }
    let rest = chunks.remainder();
    if rest.is_empty() {
        return true;
    }
    let mut buf = [0u8; 8];
    buf[..rest.len()].copy_from_slice(rest);
    words.get(s.len() / 8) == Some(&u64::from_le_bytes(buf))
}

/// A holding's scope for a record: its bytes, or None for global.
pub(super) type ScopeBytes<'a> = Option<&'a [u8]>;

/// Builds a user's record. `scope_of` gives each holding's scope.
pub(super) fn pack_record<'a>(
    name: &str,
    holdings: &[Holding],
    scope_of: impl Fn(u32) -> ScopeBytes<'a>,
) -> Box<[u64]> {
    let name = name.as_bytes();
    assert!(name.len() <= 255, "user ids are at most 128 characters");
    if holdings.len() > MAX_PACKED {
        return unpacked_record(name);
    }
    // First the sizes, so that the record is allocated once at its size: the
    // distinct scopes with their entries' offsets, and the holdings' words.
    let mut scopes = [(GLOBAL, 0u64); MAX_PACKED];
    let mut n_scopes = 0;
    let mut section_words = 0;
    let mut holding_words = 0;
    for h in holdings {
        holding_words += if h.expires_at().is_some() { 2 } else { 1 };
        let s = h.scope();
        if s != GLOBAL && !scopes[..n_scopes].iter().any(|&(id, _)| id == s) {
            let len = scope_of(s).expect("a scoped holding's scope").len();
            scopes[n_scopes] = (s, section_words as u64);
            n_scopes += 1;
            section_words += 1 + words_for(len);
        }
    }
    let mut out = Vec::with_capacity(1 + words_for(name.len()) + holding_words + section_words);
    out.push(name.len() as u64 | (holding_words as u64) << 32);
    pack_bytes(&mut out, name);
    for h in holdings {
        let scope_ref = match h.scope() {
            GLOBAL => 0,
            s => {
                let &(_, at) = scopes[..n_scopes]
                    .iter()
                    .find(|&&(id, _)| id == s)
                    .expect("counted above");
                at + 1
            }
        };
        debug_assert!(scope_ref <= SCOPE_MASK);
        let mut w = u64::from(h.target()) | (scope_ref << SCOPE_SHIFT);
        if h.is_binding() {
            w |= BINDING;
        }
        match h.expires_at() {
            None => out.push(w),
            Some(t) => {
                out.push(w | EXPIRES);
                out.push(t.0 as u64);
            }
        }
    }
    for &(s, _) in &scopes[..n_scopes] {
        let bytes = scope_of(s).expect("a scoped holding's scope");
        out.push(bytes.len() as u64);
        pack_bytes(&mut out, bytes);
    }
    debug_assert_eq!(out.len(), out.capacity());
    out.into_boxed_slice()
}

/// `old`, a packed record, with holding `h` (whose scope is `scope`) added after
/// its others: what `pack_record` gives for the holdings and `h`, but without
/// reading any scope but `h`'s. None if `old` is not packed.
pub(super) fn with_holding(old: &[u64], h: Holding, scope: ScopeBytes<'_>) -> Option<Box<[u64]>> {
    let Record::Packed { holdings, scopes } = Record::read(old) else {
        return None;
    };
    let found = scope.map(|bytes| find_scope(scopes, bytes).ok_or(bytes));
    let (scope_ref, new_entry) = match found {
        None => (0, None),
        Some(Ok(at)) => (at as u64 + 1, None),
        Some(Err(bytes)) => (scopes.len() as u64 + 1, Some(bytes)),
    };
    let expires_at = h.expires_at();
    let added = if expires_at.is_some() { 2 } else { 1 };
    let head = old.len() - holdings.len() - scopes.len();
    let mut out =
        Vec::with_capacity(old.len() + added + new_entry.map_or(0, |b| 1 + words_for(b.len())));
    out.extend_from_slice(&old[..head]);
    out[0] += (added as u64) << 32;
    out.extend_from_slice(holdings);
    let mut w = u64::from(h.target()) | (scope_ref << SCOPE_SHIFT);
    if h.is_binding() {
        w |= BINDING;
    }
    match expires_at {
        None => out.push(w),
        Some(t) => {
            out.push(w | EXPIRES);
            out.push(t.0 as u64);
        }
    }
    out.extend_from_slice(scopes);
    if let Some(bytes) = new_entry {
        out.push(bytes.len() as u64);
        pack_bytes(&mut out, bytes);
    }
    debug_assert_eq!(out.len(), out.capacity());
    Some(out.into_boxed_slice())
}

/// The offset of `bytes`'s entry in a scope section.
fn find_scope(scopes: &[u64], bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    while at < scopes.len() {
        let len = scopes[at] as usize;
        if len == bytes.len() && packed_eq(&scopes[at + 1..], bytes) {
            return Some(at);
        }
        at += 1 + words_for(len);
    }
    None
}

/// A record that says to read `name`'s holdings from the user's state.
fn unpacked_record(name: &[u8]) -> Box<[u64]> {
    assert!(name.len() <= 255, "user ids are at most 128 characters");
    let mut out = Vec::with_capacity(1 + words_for(name.len()));
    out.push(name.len() as u64 | UNPACKED);
    pack_bytes(&mut out, name);
    out.into_boxed_slice()
}

/// Whether the record is `name`'s.
#[inline]
fn record_is(record: &[u64], name: &[u8]) -> bool {
    (record[0] & 0xff) as usize == name.len() && packed_eq(&record[1..], name)
}

/// A user's record, read.
#[derive(Debug, Clone, Copy)]
pub(super) enum Record<'a> {
    Packed {
        holdings: &'a [u64],
        scopes: &'a [u64],
    },
    /// Not packed (too many holdings): read the user's state.
    Unpacked,
}

/// One holding of a packed record, as `can()` needs it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Packed {
    pub(super) binding: bool,
    pub(super) target: u32,
    /// 0 for global, else 1 + the scope's offset in the scope section.
    scope_ref: u32,
}

impl<'a> Record<'a> {
    #[inline]
    pub(super) fn read(record: &'a [u64]) -> Self {
        let header = record[0];
        if header & UNPACKED != 0 {
            return Record::Unpacked;
        }
        let start = 1 + words_for((header & 0xff) as usize);
        let end = start + (header >> 32) as usize;
        Record::Packed {
            holdings: &record[start..end],
            scopes: &record[end..],
        }
    }

    /// Whether any holding live at `now` satisfies `f`.
    #[inline]
    pub(super) fn any_live(
        holdings: &[u64],
        now: Timestamp,
        mut f: impl FnMut(Packed) -> bool,
    ) -> bool {
        let mut i = 0;
        while i < holdings.len() {
            let w = holdings[i];
            i += 1;
            if w & EXPIRES != 0 {
                let expires_at = holdings[i] as i64;
                i += 1;
                if expires_at <= now.0 {
                    continue;
                }
            }
            let p = Packed {
                binding: w & BINDING != 0,
                target: (w & u64::from(MAX_ID)) as u32,
                scope_ref: ((w >> SCOPE_SHIFT) & SCOPE_MASK) as u32,
            };
            if f(p) {
                return true;
            }
        }
        false
    }

    /// Whether the holding's scope applies to a check at `checked` (see `qualifies`).
    #[inline]
    pub(super) fn qualifies(scopes: &[u64], p: Packed, checked: Option<&str>) -> bool {
        if p.scope_ref == 0 {
            return true;
        }
        let Some(checked) = checked else {
            return false;
        };
        let entry = &scopes[p.scope_ref as usize - 1..];
        let len = entry[0] as usize;
        let c = checked.as_bytes();
        // `covers`: the scope itself, or below it at a `/`.
        c.len() >= len && (c.len() == len || c[len] == b'/') && packed_eq(&entry[1..], &c[..len])
    }
}

// ---- the table of records ----

/// Users' records by user id: open addressing with linear probing, at most half
/// full. A slot holds its key's hash (with the low bit set; 0 marks an empty slot)
/// and the record, which holds the key. Users are never removed.
#[derive(Debug, Default)]
pub(super) struct UserTable {
    slots: Vec<(u64, Box<[u64]>)>,
    len: usize,
    hasher: foldhash::fast::RandomState,
}

impl UserTable {
    #[inline]
    fn tag(&self, name: &str) -> u64 {
        self.hasher.hash_one(name) | 1
    }

    #[inline]
    fn start(tag: u64, mask: usize) -> usize {
        (tag >> 7) as usize & mask
    }

    /// Where `name` is: `Ok` with its slot, or `Err` with the empty slot that
    /// ends its probe sequence. The table must not be empty.
    #[inline]
    fn probe(&self, tag: u64, name: &str) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut i = Self::start(tag, mask);
        loop {
            let (t, record) = &self.slots[i];
            if *t == 0 {
                return Err(i);
            }
            if *t == tag && record_is(record, name.as_bytes()) {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    fn find(&self, name: &str) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        self.probe(self.tag(name), name).ok()
    }

    /// The record of `name`, if it has one.
    #[inline]
    pub(super) fn get(&self, name: &str) -> Option<&[u64]> {
        self.find(name).map(|i| &*self.slots[i].1)
    }

    /// `name`'s record, to replace.
    pub(super) fn get_mut(&mut self, name: &str) -> Option<&mut Box<[u64]>> {
        self.find(name).map(|i| &mut self.slots[i].1)
    }

    /// Sets `name`'s record (`record` must be `name`'s, from [`pack_record`]).
    pub(super) fn set(&mut self, name: &str, record: Box<[u64]>) {
        debug_assert!(record_is(&record, name.as_bytes()));
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let tag = self.tag(name);
        match self.probe(tag, name) {
            Ok(i) => self.slots[i].1 = record,
            Err(i) => {
                self.slots[i] = (tag, record);
                self.len += 1;
            }
        }
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(16);
        let old = std::mem::take(&mut self.slots);
        self.slots.resize_with(size, || (0, Box::default()));
        let mask = size - 1;
        for (tag, record) in old {
            if tag == 0 {
                continue;
            }
            let mut i = Self::start(tag, mask);
            while self.slots[i].0 != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = (tag, record);
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holding_encoding_round_trips() {
        for binding in [false, true] {
            for expires_at in [None, Some(Timestamp(-5)), Some(Timestamp(i64::MAX))] {
                let h = Holding::new(binding, MAX_ID, 7, expires_at);
                assert_eq!(h.is_binding(), binding);
                assert_eq!(h.target(), MAX_ID);
                assert_eq!(h.scope(), 7);
                assert_eq!(h.expires_at(), expires_at);
            }
        }
        let never = Holding::grant(1, GLOBAL, None);
        let max = Holding::grant(1, GLOBAL, Some(Timestamp(i64::MAX)));
        assert!(never.live(Timestamp(i64::MAX)));
        assert!(!max.live(Timestamp(i64::MAX)));
        assert!(max.live(Timestamp(i64::MAX - 1)));
        let t = Holding::grant(1, GLOBAL, Some(Timestamp(10)));
        assert!(t.live(Timestamp(9)));
        assert!(!t.live(Timestamp(10)));
    }

    #[test]
    fn packed_bytes_compare_exactly() {
        // Callers compare lengths first; `packed_eq` compares the bytes.
        for s in ["a", "abcdefgh", "abcdefghi", "org/acme/project/12345678"] {
            let mut w = Vec::new();
            pack_bytes(&mut w, s.as_bytes());
            assert_eq!(w.len(), words_for(s.len()));
            assert!(packed_eq(&w, s.as_bytes()), "{s}");
            let mut other = s.as_bytes().to_vec();
            for i in 0..other.len() {
                other[i] ^= 1;
                assert!(!packed_eq(&w, &other), "{s} at {i}");
                other[i] ^= 1;
            }
            // A longer string needs more words than there are.
            assert!(!packed_eq(&w, format!("{s}xxxxxxxx").as_bytes()), "{s}");
        }
    }

    fn scope_names(id: u32) -> ScopeBytes<'static> {
        match id {
            1 => Some(b"org/acme"),
            2 => Some(b"org/acme/project/7"),
            3 => Some(b"org/other-org-with-a-long-name"),
            _ => None,
        }
    }

    /// The record's view of each live holding: (binding, target, scope bytes).
    fn unpack(record: &[u64], now: Timestamp) -> Vec<(bool, u32, Option<Vec<u8>>)> {
        let Record::Packed { holdings, scopes } = Record::read(record) else {
            panic!("not packed");
        };
        let mut out = Vec::new();
        Record::any_live(holdings, now, |p| {
            let scope = (p.scope_ref != 0).then(|| {
                let entry = &scopes[p.scope_ref as usize - 1..];
                let len = entry[0] as usize;
                let mut bytes = Vec::new();
                for w in &entry[1..1 + words_for(len)] {
                    bytes.extend_from_slice(&w.to_le_bytes());
                }
                bytes.truncate(len);
                bytes
            });
            out.push((p.binding, p.target, scope));
            false
        });
        out
    }

    #[test]
    fn records_pack_live_holdings_and_their_scopes() {
        let holdings = [
            Holding::grant(5, 1, None),
            Holding::grant(6, GLOBAL, Some(Timestamp(100))),
            Holding::binding(2, 2, Some(Timestamp(200))),
        ];
        let record = pack_record("alice-with-a-long-id@example.com", &holdings, scope_names);
        assert!(record_is(&record, b"alice-with-a-long-id@example.com"));
        assert!(!record_is(&record, b"alice"));
        let all = unpack(&record, Timestamp(0));
        assert_eq!(
            all,
            vec![
                (false, 5, Some(b"org/acme".to_vec())),
                (false, 6, None),
                (true, 2, Some(b"org/acme/project/7".to_vec())),
            ]
        );
        assert_eq!(unpack(&record, Timestamp(100)).len(), 2);
        assert_eq!(unpack(&record, Timestamp(200)).len(), 1);
        let Record::Packed { scopes, .. } = Record::read(&record) else {
            panic!()
        };
        let at = |scope_ref| Packed {
            binding: false,
            target: 0,
            scope_ref,
        };
        assert!(Record::qualifies(scopes, at(0), None));
        assert!(Record::qualifies(scopes, at(1), Some("org/acme")));
        assert!(Record::qualifies(scopes, at(1), Some("org/acme/project/7")));
        assert!(!Record::qualifies(scopes, at(1), Some("org/acmex")));
        assert!(!Record::qualifies(scopes, at(1), Some("org/acm")));
        assert!(!Record::qualifies(scopes, at(1), None));
    }

    #[test]
    fn adding_a_holding_to_a_record_packs_as_packing_them_all() {
        let all = [
            Holding::grant(5, 1, None),
            Holding::binding(2, 2, Some(Timestamp(200))),
            Holding::grant(6, GLOBAL, Some(Timestamp(100))),
            Holding::grant(7, 3, None),
        ];
        // Up to the most a record packs.
        for n in 0..all.len().min(MAX_PACKED) {
            let old = pack_record("carol", &all[..n], scope_names);
            let added = with_holding(&old, all[n], scope_names(all[n].scope())).unwrap();
            assert_eq!(added, pack_record("carol", &all[..=n], scope_names), "{n}");
        }
        // An added scope already in the record is not packed twice.
        let old = pack_record("carol", &all[..2], scope_names);
        let again = with_holding(&old, Holding::grant(9, 2, None), scope_names(2)).unwrap();
        assert_eq!(again.len(), old.len() + 1);
        let unpacked = unpacked_record(b"carol");
        assert!(with_holding(&unpacked, all[0], None).is_none());
    }

    #[test]
    fn repeated_scopes_are_packed_once_and_big_users_are_not_packed() {
        let holdings: Vec<Holding> = (0..MAX_PACKED as u32)
            .map(|i| Holding::grant(i, 3, None))
            .collect();
        let record = pack_record("bob", &holdings, scope_names);
        let Record::Packed {
            holdings: h,
            scopes,
        } = Record::read(&record)
        else {
            panic!()
        };
        assert_eq!(h.len(), MAX_PACKED);
        assert_eq!(
            scopes.len(),
            1 + words_for("org/other-org-with-a-long-name".len())
        );
        let mut more = holdings.clone();
        more.push(Holding::grant(99, GLOBAL, None));
        let big = pack_record("bob", &more, scope_names);
        assert!(matches!(Record::read(&big), Record::Unpacked));
        assert_eq!(big.len(), 2);
    }

    #[test]
    fn table_finds_every_record_across_growth() {
        let mut t = UserTable::default();
        assert!(t.get("nobody").is_none());
        let names: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
        for n in &names {
            t.set(n, pack_record(n, &[], scope_names));
        }
        assert_eq!(t.len(), names.len());
        for n in &names {
            assert!(record_is(t.get(n).unwrap(), n.as_bytes()));
        }
        assert!(t.get("user-1000").is_none());
        assert!(t.get("").is_none());
        assert!(t.get_mut("user-1000").is_none());
        assert!(record_is(t.get_mut("user-9").unwrap(), b"user-9"));
        // Replacing keeps one slot per user.
        t.set(
            "user-7",
            pack_record("user-7", &[Holding::grant(1, GLOBAL, None)], scope_names),
        );
        assert_eq!(t.len(), names.len());
        let Record::Packed { holdings, .. } = Record::read(t.get("user-7").unwrap()) else {
            panic!()
        };
        assert_eq!(holdings.len(), 1);
    }
}
