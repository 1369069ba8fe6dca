//! Hierarchical scopes: `type/id(/type/id)*`, depth at most 8, at most 256 characters.

use std::fmt;
use std::sync::Arc;

use crate::ParseError;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(Arc<str>);

impl Scope {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        const WHAT: &str = "scope";
        if s.is_empty() {
            return Err(ParseError::new(WHAT, s, "must not be empty"));
        }
        if s.len() > 256 {
            return Err(ParseError::new(WHAT, s, "longer than 256 characters"));
        }
        let parts: Vec<&str> = s.split('/').collect();
        if !parts.len().is_multiple_of(2) {
            return Err(ParseError::new(WHAT, s, "must be type/id pairs"));
        }
        if parts.len() / 2 > 8 {
            return Err(ParseError::new(WHAT, s, "deeper than 8 levels"));
        }
        for pair in parts.chunks(2) {
            let (ty, id) = (pair[0], pair[1]);
            if ty.is_empty()
                || ty.len() > 64
                || !ty
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                return Err(ParseError::new(WHAT, s, "a type is 1-64 of a-z 0-9 _ -"));
            }
            if id.is_empty()
                || id.len() > 64
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            {
                return Err(ParseError::new(
                    WHAT,
                    s,
                    "an id is 1-64 of A-Z a-z 0-9 _ . -",
                ));
            }
        }
        Ok(Scope(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this scope is `other` or one of its ancestors.
    #[inline]
    pub fn covers(&self, other: &str) -> bool {
        covers(&self.0, other)
    }

    /// This scope and its ancestors, nearest first.
    pub fn ancestors(&self) -> impl Iterator<Item = &str> {
        let s: &str = &self.0;
        let mut end = Some(s.len());
        std::iter::from_fn(move || {
            let e = end?;
            let current = &s[..e];
            // Step back over one `type/id` pair.
            end = current.rfind('/').and_then(|i| current[..i].rfind('/'));
            Some(current)
        })
    }
}

/// Whether a holding at scope `held` applies to a check at scope `checked`.
#[inline]
pub(crate) fn covers(held: &str, checked: &str) -> bool {
    checked.len() >= held.len()
        && checked.starts_with(held)
        && (checked.len() == held.len() || checked.as_bytes()[held.len()] == b'/')
}

/// Whether a holding at `held` (None = global) applies to a check at `checked`
/// (None = a check about global holdings only).
#[inline]
#[cfg(test)]
pub(crate) fn qualifies(held: Option<&Scope>, checked: Option<&str>) -> bool {
    match (held, checked) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(h), Some(c)) => covers(&h.0, c),
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let good = ["org/acme", "org/acme/project/7", "a/B.c-d_e", "t-1/x"];
        for g in good {
            assert!(Scope::parse(g).is_ok(), "{g}");
        }
        let deep8 = (0..8)
            .map(|i| format!("t/{i}"))
            .collect::<Vec<_>>()
            .join("/");
        assert!(Scope::parse(&deep8).is_ok());
        let deep9 = (0..9)
            .map(|i| format!("t/{i}"))
            .collect::<Vec<_>>()
            .join("/");
        let bad = [
            "",
            "org",
            "org/",
            "/acme",
            "org/acme/",
            "Org/acme",
            "org/ac me",
            "org//acme",
            "org/acme/x",
            &deep9,
        ];
        for b in bad {
            assert!(Scope::parse(b).is_err(), "{b}");
        }
        assert!(Scope::parse(&format!("t/{}", "a".repeat(65))).is_err());
    }

    #[test]
    fn ancestry() {
        let s = Scope::parse("org/acme").unwrap();
        assert!(s.covers("org/acme"));
        assert!(s.covers("org/acme/project/7"));
        assert!(!s.covers("org/acmex"));
        assert!(!s.covers("org/acmex/project/7"));
        assert!(!s.covers("org"));
        assert!(!Scope::parse("org/acme/project/7")
            .unwrap()
            .covers("org/acme"));
        let deep = Scope::parse("a/1/b/2/c/3").unwrap();
        assert_eq!(
            deep.ancestors().collect::<Vec<_>>(),
            vec!["a/1/b/2/c/3", "a/1/b/2", "a/1"]
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_never_panics(s in "\\PC{0,300}") {
                let _ = Scope::parse(&s);
            }

            #[test]
            fn every_ancestor_covers(s in "[a-c]{1,3}/[A-Z0-9]{1,3}(/[a-c]{1,3}/[A-Z0-9]{1,3}){0,7}") {
                let scope = Scope::parse(&s).unwrap();
                for a in scope.ancestors() {
                    prop_assert!(Scope::parse(a).unwrap().covers(&s));
                }
            }

            #[test]
            fn covers_is_ancestry(a in "[a-b]/[0-1](/[a-b]/[0-1]){0,3}", b in "[a-b]/[0-1](/[a-b]/[0-1]){0,3}") {
                let sb = Scope::parse(&b).unwrap();
                let is_ancestor = sb.ancestors().any(|x| x == a);
                prop_assert_eq!(Scope::parse(&a).unwrap().covers(&b), is_ancestor);
            }
        }
    }
}
