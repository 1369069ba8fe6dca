//! `Scope::parse` on arbitrary text; the input's first line is the scope, its last
//! a scope to check. A scope is accepted exactly when it is 1 to 8 `type/id` pairs
//! within 256 characters, prints back unchanged, and its ancestors are scopes that
//! cover it, one per level, nearest first.

#![no_main]

use libfuzzer_sys::fuzz_target;
use permsync_core::Scope;

const MAX_LEN: usize = 256;
const MAX_DEPTH: usize = 8;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (candidate, checked) = match text.split_once('\n') {
        Some((first, rest)) => (first, rest.rsplit('\n').next().unwrap_or(rest)),
        None => (&*text, &*text),
    };
    let expected = depth_in_grammar(candidate).filter(|_| candidate.len() <= MAX_LEN);
    match Scope::parse(candidate) {
        Ok(scope) => {
            let Some(depth) = expected else {
                panic!("accepted {candidate:?}");
            };
            assert_eq!(scope.to_string(), candidate);
            let ancestors: Vec<&str> = scope.ancestors().collect();
            assert_eq!(ancestors.len(), depth, "{candidate:?}: {ancestors:?}");
            assert_eq!(ancestors[0], candidate);
            for pair in ancestors.windows(2) {
                assert!(pair[0].starts_with(pair[1]) && pair[1].len() < pair[0].len());
            }
            for ancestor in &ancestors {
                let ancestor = Scope::parse(ancestor).expect("an ancestor is a scope");
                assert!(ancestor.covers(candidate));
            }
            // Coverage is ancestry: the scope itself or one below it, never a
            // sibling sharing a prefix (`org/a` does not cover `org/ab`).
            let below = checked.len() > candidate.len()
                && checked.starts_with(candidate)
                && checked.as_bytes()[candidate.len()] == b'/';
            assert_eq!(scope.covers(checked), checked == candidate || below);
        }
        Err(e) => {
            assert!(expected.is_none(), "refused {candidate:?}: {e}");
            assert!(e.value.chars().count() <= 140);
        }
    }
});

/// The number of `type/id` pairs if `s` is in the grammar, by a byte walk:
/// `type` is `[a-z0-9_-]{1,64}`, `id` is `[A-Za-z0-9_.-]{1,64}`, at most 8 pairs.
fn depth_in_grammar(s: &str) -> Option<usize> {
    let mut parts = 0;
    let mut run = 0;
    for b in s.bytes() {
        let is_type = parts % 2 == 0;
        match b {
            b'/' if run > 0 => {
                parts += 1;
                run = 0;
                continue;
            }
            b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => {}
            b'A'..=b'Z' | b'.' if !is_type => {}
            _ => return None,
        }
        run += 1;
        if run > 64 {
            return None;
        }
    }
    // The last part is an id, and not empty.
    let parts = parts + 1;
    (run > 0 && parts % 2 == 0 && parts / 2 <= MAX_DEPTH).then_some(parts / 2)
}
