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

/// Hashes made elsewhere (the `argon2` crate's own path, other parameters, older
/// versions of permsync) verify, in one reused work area, and ours verify there.
#[test]
fn hashes_agree_with_the_argon2_crate_in_one_reused_work_area() {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
    use argon2::{Algorithm, Argon2, Params, Version};
    let mut memory = permsync_auth::HashMemory::new();
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    let small = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(4096, 3, 1, None).unwrap(),
    );
    let theirs = [
        Argon2::default()
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string(),
        small.hash_password(b"pw", &salt).unwrap().to_string(),
        Argon2::new(
            Algorithm::Argon2i,
            Version::V0x10,
            Params::new(2048, 2, 2, None).unwrap(),
        )
        .hash_password(b"pw", &salt)
        .unwrap()
        .to_string(),
    ];
    for hash in &theirs {
        assert!(
            permsync_auth::verify_password_in(Some(hash), "pw", &mut memory),
            "{hash}"
        );
        assert!(!permsync_auth::verify_password_in(
            Some(hash),
            "pW",
            &mut memory
        ));
    }
    let ours = permsync_auth::hash_password_in("pw", &mut memory);
    let parsed = argon2::password_hash::PasswordHash::new(&ours).unwrap();
    assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
    assert!(Argon2::default().verify_password(b"px", &parsed).is_err());
    assert!(verify_password(Some(&ours), "pw"));
}
