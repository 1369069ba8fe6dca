//! Argon2id password hashing.

use permsync_auth::{hash_password, verify_password};

#[test]
fn hash_then_verify_roundtrip() {
    for password in ["correct horse battery staple", "", "pässwörd ✓"] {
        let hash = hash_password(password);
        assert!(verify_password(Some(&hash), password), "{password:?}");
    }
}

#[test]
fn wrong_password_is_refused() {
    let hash = hash_password("secret");
    assert!(!verify_password(Some(&hash), "Secret"));
    assert!(!verify_password(Some(&hash), "secret "));
    assert!(!verify_password(Some(&hash), ""));
}

#[test]
fn unknown_user_and_unreadable_hash_are_refused() {
    assert!(!verify_password(None, "anything"));
    assert!(!verify_password(None, ""));
    assert!(!verify_password(Some("not a phc string"), "anything"));
    assert!(!verify_password(Some(""), ""));
}

#[test]
fn hashes_are_salted_argon2id_with_default_parameters() {
    let a = hash_password("same");
    let b = hash_password("same");
    assert_ne!(a, b);
    assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
}
