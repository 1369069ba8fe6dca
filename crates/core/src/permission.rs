//! Permissions and permission patterns, and their matching.
//!
//! A permission is `seg(:seg)*`, optionally ending in `:*`, or `*` alone; `seg` is
//! `[a-z0-9_-]+`; at most 128 characters. A held pattern `p:*` matches every
//! permission that starts with `p:`; `*` matches everything. A checked permission
//! is taken literally, so asking about `invoice:*` is asking "may they do every
//! invoice action", which only `invoice:*` (or a wider wildcard) answers yes.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use crate::ParseError;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Permission(Arc<str>);

impl Permission {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        const WHAT: &str = "permission";
        if s.is_empty() {
            return Err(ParseError::new(WHAT, s, "must not be empty"));
        }
        if s.len() > 128 {
            return Err(ParseError::new(WHAT, s, "longer than 128 characters"));
        }
        if s == "*" {
            return Ok(Permission(Arc::from(s)));
        }
        let body = s.strip_suffix(":*").unwrap_or(s);
        for seg in body.split(':') {
            if seg.is_empty() {
                return Err(ParseError::new(WHAT, s, "has an empty segment"));
            }
            if !seg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                return Err(ParseError::new(
                    WHAT,
                    s,
                    "segments allow a-z 0-9 _ - and only a final :* wildcard",
                ));
            }
        }
        Ok(Permission(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_wildcard(&self) -> bool {
        self.0.ends_with('*')
    }

    /// Whether this held pattern matches the checked permission `checked`.
    #[inline]
    pub fn matches(&self, checked: &str) -> bool {
        pattern_matches(&self.0, checked)
    }
}

#[inline]
pub(crate) fn pattern_matches(pattern: &str, checked: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        // `p:*` is stored with its colon, so the prefix test stops at a boundary.
        Some(prefix) => checked.len() > prefix.len() && checked.starts_with(prefix),
        None => pattern == checked,
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// A set of permission patterns compiled for matching in a few hash lookups,
/// however large the set (a role may hold 1000 permissions).
#[derive(Debug, Clone, Default)]
pub struct PermissionSet {
    everything: bool,
    exact: HashSet<Arc<str>>,
    /// Wildcard patterns without their `*`, e.g. `invoice:`.
    prefixes: HashSet<Arc<str>>,
}

impl PermissionSet {
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a Permission>) -> Self {
        let mut set = PermissionSet::default();
        for p in patterns {
            if p.as_str() == "*" {
                set.everything = true;
            } else if let Some(prefix) = p.as_str().strip_suffix('*') {
                set.prefixes.insert(Arc::from(prefix));
            } else {
                set.exact.insert(p.0.clone());
            }
        }
        set
    }

    pub fn matches(&self, checked: &str) -> bool {
        if self.everything || self.exact.contains(checked) {
            return true;
        }
        if self.prefixes.is_empty() {
            return false;
        }
        checked
            .bytes()
            .enumerate()
            .filter(|&(i, b)| b == b':' && i + 1 < checked.len())
            .any(|(i, _)| self.prefixes.contains(&checked[..=i]))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let good = [
            "*",
            "a",
            "invoice:approve",
            "invoice:*",
            "a-b_c:d9:*",
            "x:y:z",
        ];
        for g in good {
            assert!(Permission::parse(g).is_ok(), "{g}");
        }
        let bad = [
            "", ":", "a:", ":a", "A", "a::b", "a:*:b", "*:a", "a*", "a:b*", "inv oice", "é", "a:**",
        ];
        for b in bad {
            assert!(Permission::parse(b).is_err(), "{b}");
        }
        assert!(Permission::parse(&"a".repeat(129)).is_err());
        assert!(Permission::parse(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn matching_table() {
        let cases = [
            ("*", "anything:at:all", true),
            ("*", "*", true),
            ("invoice:*", "invoice:approve", true),
            ("invoice:*", "invoice:line:edit", true),
            ("invoice:*", "invoice:*", true),
            ("invoice:*", "invoice", false),
            ("invoice:*", "invoices:read", false),
            ("invoice:*", "*", false),
            ("invoice:approve", "invoice:approve", true),
            ("invoice:approve", "invoice:approve:x", false),
            ("invoice:approve", "invoice:*", false),
            ("invoice:line:*", "invoice:approve", false),
        ];
        for (pattern, checked, want) in cases {
            let p = Permission::parse(pattern).unwrap();
            assert_eq!(p.matches(checked), want, "{pattern} vs {checked}");
            let set = PermissionSet::new([&p]);
            assert_eq!(set.matches(checked), want, "set {pattern} vs {checked}");
        }
    }

    pub(crate) mod props {
        use super::*;
        use proptest::prelude::*;

        /// Valid permission patterns over a small alphabet, so that generated
        /// patterns often match each other.
        pub(crate) fn perm() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("*".to_string()),
                ("[a-c]{1,2}(:[a-c]{1,2}){0,3}", any::<bool>()).prop_map(|(s, w)| if w {
                    format!("{s}:*")
                } else {
                    s
                }),
            ]
        }

        proptest! {
            #[test]
            fn parse_never_panics(s in "\\PC{0,200}") {
                let _ = Permission::parse(&s);
            }

            #[test]
            fn generated_permissions_parse(s in perm()) {
                prop_assert!(Permission::parse(&s).is_ok());
            }

            #[test]
            fn set_agrees_with_linear_scan(patterns in proptest::collection::vec(perm(), 0..8), checked in perm()) {
                let patterns: Vec<Permission> = patterns.iter().map(|p| Permission::parse(p).unwrap()).collect();
                let set = PermissionSet::new(&patterns);
                let linear = patterns.iter().any(|p| p.matches(&checked));
                prop_assert_eq!(set.matches(&checked), linear);
            }

            #[test]
            fn every_pattern_matches_itself(s in perm()) {
                prop_assert!(Permission::parse(&s).unwrap().matches(&s));
            }
        }
    }
}
