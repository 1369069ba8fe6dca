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

#[test]
fn a_sealed_successor_opens_only_with_the_token_it_replaces() {
    let (old, new) = (random_token(), random_token());
    let sealed = permsync_auth::seal_successor(&old, &new);
    assert!(
        !sealed.windows(new.len()).any(|w| w == new.as_bytes()),
        "the successor is not stored in the clear"
    );
    assert_eq!(
        permsync_auth::open_successor(&old, &sealed),
        Some(new.clone())
    );
    assert_eq!(permsync_auth::open_successor(&new, &sealed), None);
    assert_eq!(
        permsync_auth::open_successor(&random_token(), &sealed),
        None
    );
    // Every bit is covered by the tag.
    for i in 0..sealed.len() {
        let mut bent = sealed.clone();
        bent[i] ^= 1;
        assert_eq!(permsync_auth::open_successor(&old, &bent), None, "byte {i}");
    }
    assert_eq!(permsync_auth::open_successor(&old, &sealed[..5]), None);
    assert_eq!(permsync_auth::open_successor(&old, &[]), None);
    // A fresh nonce each time: the same successor never seals the same way twice.
    assert_ne!(permsync_auth::seal_successor(&old, &new), sealed);
}
