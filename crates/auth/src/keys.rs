//! permsync's own Ed25519 signing keys: generation, key ids and their public JWK form.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use sha2::{Digest, Sha256};

/// One of permsync's own signing keys, as the caller stores it.
///
/// The caller persists all four fields (so the key survives restarts) and hands the
/// list to [`crate::Tokens::new`]. `Debug` never prints the private half.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    /// Key id put in every token's header and in the JWKS; unique among own keys.
    pub kid: String,
    /// The PKCS#8 (v2) document [`Ed25519KeyPair::generate_pkcs8`] produces.
    pub private_der: Vec<u8>,
    /// The raw 32-byte Ed25519 public key.
    pub public: Vec<u8>,
    /// A retired key no longer signs but still verifies until its tokens expire.
    pub retired: bool,
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("kid", &self.kid)
            .field("private_der", &"<redacted>")
            .field("public", &URL_SAFE_NO_PAD.encode(&self.public))
            .field("retired", &self.retired)
            .finish()
    }
}

/// Makes a fresh Ed25519 key pair from the operating system's CSPRNG.
///
/// The `kid` is the RFC 7638 JWK thumbprint of the public key: deterministic, so the
/// same key always gets the same id, and collision-free in practice.
///
/// # Panics
/// Only if the operating system cannot supply random bytes, in which case no secret
/// of any kind could be made safely.
pub fn generate_ed25519() -> KeyMaterial {
    let rng = SystemRandom::new();
    let document = Ed25519KeyPair::generate_pkcs8(&rng)
        .expect("the operating system random source failed while generating a signing key");
    let pair = Ed25519KeyPair::from_pkcs8(document.as_ref())
        .expect("ring accepts the PKCS#8 document it just generated");
    let public = pair.public_key().as_ref().to_vec();
    KeyMaterial {
        kid: ed25519_thumbprint(&public),
        private_der: document.as_ref().to_vec(),
        public,
        retired: false,
    }
}

/// RFC 7638 thumbprint of an Ed25519 public key: base64url(SHA-256 of the JWK's
/// required members in lexicographic order, without whitespace).
pub(crate) fn ed25519_thumbprint(public: &[u8]) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(public)
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The public JWK of an own key, as published at `/.well-known/jwks.json`.
pub(crate) fn ed25519_public_jwk(kid: &str, public: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": URL_SAFE_NO_PAD.encode(public),
        "kid": kid,
        "alg": "EdDSA",
        "use": "sig",
    })
}

/// Parses and cross-checks one own key, returning the ring key pair.
pub(crate) fn load_key_pair(key: &KeyMaterial) -> Result<Ed25519KeyPair, String> {
    // `from_pkcs8` insists on the v2 document carrying the public key, which is what
    // `generate_pkcs8` writes; the check below also catches a `public` field stored
    // out of step with the private half.
    let pair = Ed25519KeyPair::from_pkcs8(&key.private_der).map_err(|e| e.to_string())?;
    if pair.public_key().as_ref() != key.public.as_slice() {
        return Err("public key does not match the private key".to_owned());
    }
    Ok(pair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc_8037_example() {
        // RFC 8037 appendix A.2/A.3: the Ed25519 public key and its JWK thumbprint.
        let public = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        assert_eq!(
            ed25519_thumbprint(&public),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn generated_key_is_consistent_and_debug_hides_the_private_half() {
        let key = generate_ed25519();
        assert_eq!(key.public.len(), 32);
        assert_eq!(key.kid, ed25519_thumbprint(&key.public));
        assert!(!key.retired);
        assert!(load_key_pair(&key).is_ok());
        let debug = format!("{key:?}");
        assert!(debug.contains("<redacted>"));
        assert!(!debug.contains(&format!("{:?}", key.private_der)));
    }

    #[test]
    fn mismatched_public_key_is_refused() {
        let mut key = generate_ed25519();
        key.public = generate_ed25519().public;
        assert!(load_key_pair(&key).is_err());
    }
}
