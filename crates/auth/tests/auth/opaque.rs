//! Random opaque tokens and the SHA-256 they are stored under.

use std::collections::HashSet;

use permsync_auth::{random_token, sha256_hex};

#[test]
fn random_tokens_are_43_url_safe_characters_and_unique() {
    let mut seen = HashSet::new();
    for _ in 0..1000 {
        let token = random_token();
        assert_eq!(token.len(), 43);
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert!(seen.insert(token));
    }
}

#[test]
fn sha256_hex_matches_known_vectors() {
    assert_eq!(
        sha256_hex(""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        sha256_hex("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
