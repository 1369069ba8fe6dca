//! Opaque random values (refresh tokens, session ids, `jti`, stream tickets) and the
//! hash they are stored under.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// 32 bytes from the operating system's CSPRNG, base64url without padding (43 chars).
///
/// 256 bits make guessing hopeless and collisions irrelevant, so these values can be
/// used as bearer secrets and as unique ids alike.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Lower-case hex SHA-256 of `s`.
///
/// Refresh tokens are stored only as this hash: they are high-entropy random values,
/// so a fast unsalted hash suffices, and a leaked database row cannot be replayed.
pub fn sha256_hex(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 0x0f)]));
    }
    out
}
