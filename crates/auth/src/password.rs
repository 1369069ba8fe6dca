//! Argon2id password hashing in PHC string format.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::rngs::OsRng;
use rand::RngCore;

/// Hashes `pw` with Argon2id and a fresh 16-byte salt, returning a PHC string such as
/// `$argon2id$v=19$m=19456,t=2,p=1$…`.
///
/// The parameters are the `argon2` crate defaults (m = 19 MiB, t = 2, p = 1), the
/// OWASP baseline; they are recorded in the string, so raising them later leaves old
/// hashes verifiable.
///
/// # Panics
/// Only for a password longer than 4 GiB, which Argon2 cannot take; callers bound
/// request bodies far below that.
pub fn hash_password(pw: &str) -> String {
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes are a valid salt length");
    Argon2::default()
        .hash_password(pw.as_bytes(), &salt)
        .expect("Argon2id with default parameters hashes any password under 4 GiB")
        .to_string()
}

/// Checks `pw` against a stored PHC hash; `None` means the user does not exist.
///
/// Without a hash (or with an unparsable one) this still runs one full Argon2id
/// verification against a fixed dummy hash and answers `false`, so an unknown user
/// takes about as long as a wrong password and the timing does not reveal which
/// usernames exist.
pub fn verify_password(hash: Option<&str>, pw: &str) -> bool {
    let parsed = hash.and_then(|h| PasswordHash::new(h).ok());
    match parsed {
        Some(parsed) => Argon2::default()
            .verify_password(pw.as_bytes(), &parsed)
            .is_ok(),
        None => {
            if let Ok(dummy) = PasswordHash::new(dummy_hash()) {
                // The outcome is irrelevant; only the work is wanted.
                let _ = Argon2::default().verify_password(pw.as_bytes(), &dummy);
            }
            false
        }
    }
}

/// A hash of a random password, made once with the same parameters as real hashes so
/// the dummy verification costs the same.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&crate::random_token()))
}
