//! `Permission::parse` on arbitrary text. The input's lines are patterns, its last
//! line also a permission to check. Each pattern is accepted exactly when it fits
//! the grammar (PROTOCOL §1) and its length limit, an accepted one prints back
//! unchanged and matches itself, and a compiled `PermissionSet` answers as the
//! patterns one by one do.

#![no_main]

use libfuzzer_sys::fuzz_target;
use permsync_core::{Permission, PermissionSet};

const MAX_LEN: usize = 128;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.split('\n').collect();
    let checked = lines[lines.len() - 1];
    let mut held = Vec::new();
    for &line in &lines {
        let expected = in_grammar(line) && line.len() <= MAX_LEN;
        match Permission::parse(line) {
            Ok(permission) => {
                assert!(expected, "accepted {line:?}");
                assert_eq!(permission.to_string(), line);
                assert_eq!(permission.is_wildcard(), line.ends_with('*'));
                assert!(permission.matches(line), "{line:?} does not match itself");
                held.push(permission);
            }
            Err(e) => {
                assert!(!expected, "refused {line:?}: {e}");
                // Hostile input must not bloat error messages (or logs).
                assert!(e.value.chars().count() <= 140);
                assert!(e.to_string().len() < 1024);
            }
        }
    }
    let set = PermissionSet::new(&held);
    let one_by_one = held.iter().any(|p| p.matches(checked));
    assert_eq!(set.matches(checked), one_by_one, "{held:?} vs {checked:?}");
    for p in &held {
        if p.matches(checked) {
            // A held pattern is `*` (everything), or matches literally, or is a
            // wildcard matching by a prefix that ends at a segment boundary.
            let everything = p.as_str() == "*";
            let literal = p.as_str() == checked;
            let prefix = p.as_str().strip_suffix('*').unwrap_or(p.as_str());
            let wildcard =
                p.is_wildcard() && checked.len() > prefix.len() && checked.starts_with(prefix);
            assert!(
                everything || literal || wildcard,
                "{p:?} matched {checked:?}"
            );
        }
    }
});

/// The grammar, read as a state machine rather than by splitting as the parser does:
/// `*`, or `seg(:seg)*` optionally followed by `:*`, with `seg = [a-z0-9_-]+`.
fn in_grammar(s: &str) -> bool {
    let bytes = s.as_bytes();
    if bytes == b"*" {
        return true;
    }
    let mut segment_open = false;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => segment_open = true,
            b':' if segment_open => segment_open = false,
            b'*' if i + 1 == bytes.len() && i > 0 && bytes[i - 1] == b':' => return i >= 2,
            _ => return false,
        }
    }
    segment_open
}
